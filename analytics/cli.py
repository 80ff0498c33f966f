"""`hk query` (SQL on the published rollups, read-only and sandboxed: a table or CSV) and
`hk rollups` (backfill a dataset through Dagster; what is published up to when).

Registered in housekeeping/cli.py.
"""

from __future__ import annotations

import csv
import sys
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import click
import duckdb

from analytics.datasets import all_datasets
from analytics.publish import RollupStore, published_span
from analytics.sandbox import (
    QueryError,
    newest_published,
    open_rollups,
    reading_statements,
    rollup_store,
    run_reading,
)
from analytics.settings import analytics_settings
from housekeeping.cli_options import config_option, positive_duration
from housekeeping.config import load_config
from housekeeping.errors import first_line

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


def run_query(
    database: str | Path, sql: str, root: str | Path | None = None
) -> tuple[list[str], list[tuple]]:
    """Run ``sql`` on the published rollups: column names and rows of its last statement.

    Sandboxed (analytics/sandbox.py): read-only, no file outside ``root`` (default: the root the
    views file's manifest records), statements that only read; it works while another process
    holds the views file. Raises QueryRefused / QueryError (one line each), NotPublished.
    """
    reading_statements(sql)  # refused before anything is opened
    store = rollup_store(Path(database), Path(root) if root is not None else None)
    with open_rollups(store) as connection:
        try:
            result = run_reading(connection, sql)
            if result.description is None:
                return [], []
            names = [column[0] for column in result.description]
            return names, result.fetchall()
        except duckdb.Error as exc:
            raise QueryError(f"query failed: {first_line(exc)}") from None


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
    """Run SQL on the published rollups (read-only, sandboxed) and print a table, or CSV.

    Example: hk query "SELECT * FROM requests_daily_overall ORDER BY day DESC LIMIT 7"
    """
    reading_statements(sql)  # a refusal needs no config
    root = None
    if database is None:
        config = load_config(config_file)
        settings = analytics_settings(config, config_file or "config")
        database, root = str(settings.database_path), settings.root_path
    names, rows = run_query(database, sql, root)
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(names)
        writer.writerows(rows)
        return
    click.echo(format_table(names, rows))


# --- hk rollups ---------------------------------------------------------------------------
@click.group()
def rollups() -> None:
    """Backfill the rollups through Dagster; what is published up to when.

    `hk rollups backfill` runs the Dagster shell, so the `hk` root adds it (housekeeping/cli.py).
    """


def parse_moment(value: str, option: str, zone: ZoneInfo) -> datetime:
    """An option's ISO date or date and time (``2026-11-01``, ``2026-11-01T13:00``); without an
    offset it is read in ``zone``. click's usage error (exit 2) naming the option otherwise."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(
            f"not a date or a date and time: {value!r} (e.g. 2026-11-01 or 2026-11-01T13:00)",
            param_hint=option,
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=zone)


@rollups.command("status")
@config_option
def rollups_status(config_file: str | None) -> None:
    """Per dataset: what is published up to when: its partitions (first, newest, missing
    between) and the newest time in its rows."""
    config = load_config(config_file)
    settings = analytics_settings(config, config_file or "config")
    store = RollupStore(settings.root_path, settings.database_path)
    newest = _newest_data(store)
    rows = []
    for dataset in all_datasets():
        span = published_span(store, dataset.name)
        if not span.keys:
            rows.append((dataset.name, "-", 0, "-", "-", None, "not published"))
            continue
        missing = len(span.missing) if span.kind != "other" else None
        first, last = span.keys[0], span.keys[-1]
        rows.append(
            (
                dataset.name,
                span.kind,
                len(span.keys),
                first,
                last,
                missing,
                newest.get(dataset.name),
            )
        )
    names = ["dataset", "kind", "partitions", "first", "newest", "missing", "newest data"]
    click.echo(format_table(names, rows))


def _newest_data(store: RollupStore) -> dict[str, str]:
    """The newest time in each published dataset's rows, as ``hk rollups status`` shows it."""
    newest = {}
    for name, (value, dates_only) in newest_published(store).items():
        newest[name] = f"{value:%Y-%m-%d}" if dates_only else f"{value:%Y-%m-%d %H:%M:%S}"
    return newest


# --- hk export --------------------------------------------------------------------------------
@click.command("export")
@click.argument("dataset")
@click.option("--since", default=None, help="Only rows of this far back from now, e.g. 7d or 36h.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "json", "parquet"]),
    default="csv",
    show_default=True,
    help="csv (header line), json (one object per line) or parquet.",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write to this file (complete or not at all) instead of standard output.",
)
@config_option
def export(
    dataset: str, since: str | None, fmt: str, output: Path | None, config_file: str | None
) -> None:
    """Export a published dataset, streamed batch by batch (analytics/export.py).

    Example: hk export requests_minute --since 7d --format parquet --output requests.parquet
    """
    from analytics.export import ExportError, export_dataset, export_to_file, find_dataset

    find_dataset(dataset)  # an unknown name needs no config
    if fmt == "parquet" and output is None and sys.stdout.isatty():
        raise ExportError(
            "--format parquet is binary: give --output FILE, or pipe standard output to a file "
            "or program, rather than print it on a terminal"
        )
    window = positive_duration(since, "--since") if since is not None else None
    config = load_config(config_file)
    settings = analytics_settings(config, config_file or "config")
    store = RollupStore(settings.root_path, settings.database_path)
    if output is None:
        export_dataset(store, dataset, fmt, sys.stdout.buffer, since=window)
        sys.stdout.buffer.flush()
        return
    rows = export_to_file(store, dataset, fmt, output, since=window)
    click.echo(f"{rows} rows of {dataset} written to {output}", err=True)
