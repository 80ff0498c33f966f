"""`hk query`: run SQL on the published rollups, read-only, and print a table or CSV.

Register with ``main.add_command(query)`` in housekeeping/cli.py.
"""

from __future__ import annotations

import csv
import sys
from datetime import date, datetime

import click
import duckdb

from analytics.settings import analytics_settings
from housekeeping.cli_options import config_option
from housekeeping.config import load_config

MAX_CELL = 60


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, datetime | date):
        return value.isoformat(sep=" ") if isinstance(value, datetime) else value.isoformat()
    text = str(value)
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def format_table(names: list[str], rows: list[tuple]) -> str:
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [
        max([len(name)] + [len(row[index]) for row in cells]) for index, name in enumerate(names)
    ]
    numeric = [
        all(isinstance(row[index], int | float) or row[index] is None for row in rows)
        for index in range(len(names))
    ]

    def line(values: list[str]) -> str:
        return "  ".join(
            value.rjust(width) if right else value.ljust(width)
            for value, width, right in zip(values, widths, numeric, strict=True)
        ).rstrip()

    output = [line(names), line(["-" * width for width in widths])]
    output += [line(row) for row in cells]
    output.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(output)


def run_query(database: str, sql: str) -> tuple[list[str], list[tuple]]:
    """Run ``sql`` on the published views file, opened read-only (never blocks the pipeline)."""
    try:
        connection = duckdb.connect(database, read_only=True)
    except duckdb.Error as exc:
        raise click.ClickException(
            f"cannot open the published rollups {database}: {str(exc).splitlines()[0]} "
            "(run the analytics assets once, or check analytics.database)"
        ) from None
    try:
        relation = connection.execute(sql)
        if relation.description is None:
            return [], []
        names = [column[0] for column in relation.description]
        return names, relation.fetchall()
    except duckdb.Error as exc:
        raise click.ClickException(f"query failed: {str(exc).splitlines()[0]}") from None
    finally:
        connection.close()


@click.command()
@click.argument("sql")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV (with a header) instead of a table.")
@config_option
@click.option(
    "--database",
    type=click.Path(dir_okay=False),
    default=None,
    help="The published DuckDB file to query (default: analytics.database from the config).",
)
def query(sql: str, as_csv: bool, config_file: str | None, database: str | None) -> None:
    """Run SQL on the published rollups (read-only) and print a table, or CSV with --csv.

    Example: hk query "SELECT * FROM requests_daily_overall ORDER BY day DESC LIMIT 7"
    """
    if database is None:
        config = load_config(config_file)
        database = str(analytics_settings(config, config_file or "config").database_path)
    names, rows = run_query(database, sql)
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(names)
        writer.writerows(rows)
        return
    click.echo(format_table(names, rows))
