"""`hk query`: a table or CSV from the published rollups; clear one-line errors; sandboxed.

Sandboxed by DuckDB's own settings (analytics/sandbox.py): every attempt to write, to read a file
outside the published rollups, to attach, install, load or reconfigure is a one-line refusal
that leaves every file as it was.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from analytics.rollups.requests import refresh_requests
from housekeeping.cli import main
from housekeeping.database import AppDatabase
from tests.support.analytics_data import (
    empty_reference_schema,
    insert_requests,
    make_settings,
    make_store,
    publish,
)

HOUR = datetime(2026, 11, 19, 15, tzinfo=UTC)


def published(sqlite_url, tmp_path) -> str:
    db: AppDatabase = empty_reference_schema(sqlite_url)
    insert_requests(
        db,
        [
            (HOUR + timedelta(seconds=i), "GET", "/a", 500 if i % 10 == 0 else 200, 10.0 + i)
            for i in range(100)
        ],
    )
    settings = make_settings(tmp_path)
    store = make_store(settings)
    refresh_requests(db, store, settings, HOUR, HOUR + timedelta(hours=1))
    publish(store, settings)
    config = tmp_path / "hk.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "analytics": {
                    "database": str(settings.database_path),
                    "root": str(settings.root_path),
                }
            }
        )
    )
    return str(config)


def test_query_prints_a_table(sqlite_url, tmp_path):
    config = published(sqlite_url, tmp_path)
    result = CliRunner().invoke(
        main,
        ["query", "SELECT route, requests, status_5xx FROM requests_hourly", "--config", config],
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["route", "requests", "status_5xx"]
    assert lines[2].split() == ["/a", "100", "10"]
    assert lines[-1] == "(1 row)"


def test_query_prints_csv(sqlite_url, tmp_path):
    config = published(sqlite_url, tmp_path)
    result = CliRunner().invoke(
        main,
        ["query", "SELECT route, error_rate FROM requests_hourly", "--csv", "--config", config],
    )
    assert result.exit_code == 0, result.output
    assert list(csv.reader(io.StringIO(result.output))) == [["route", "error_rate"], ["/a", "0.1"]]


def test_query_errors_are_one_line(sqlite_url, tmp_path):
    config = published(sqlite_url, tmp_path)
    result = CliRunner().invoke(main, ["query", "SELECT * FROM no_such_view", "--config", config])
    assert result.exit_code == 1
    assert result.output.startswith("Error: query failed: Catalog Error")
    missing = CliRunner().invoke(
        main, ["query", "SELECT 1", "--database", str(tmp_path / "nope.duckdb")]
    )
    assert missing.exit_code == 1 and "no published rollups at" in missing.output


def test_query_cannot_write(sqlite_url, tmp_path):
    config = published(sqlite_url, tmp_path)
    result = CliRunner().invoke(main, ["query", "DROP VIEW requests_hourly", "--config", config])
    assert result.exit_code == 1 and "read-only" in result.output


def hour_file(tmp_path) -> Path:
    return tmp_path / "analytics" / "requests_minute" / f"{HOUR:%Y-%m-%dT%H}.parquet"


@pytest.mark.parametrize(
    "sql, refusal",
    [
        # The reported attack: rewriting a published hour through COPY under the root.
        (
            "COPY (SELECT * FROM requests_minute LIMIT 1) TO '{hour_file}' (FORMAT parquet)",
            "COPY refused",
        ),
        ("COPY (SELECT 1 AS x) TO '{outside}/x.csv'", "COPY refused"),
        ("SELECT 1; COPY (SELECT 1 AS x) TO '{outside}/x.csv'", "COPY refused"),
        ("EXPORT DATABASE '{outside}/export'", "EXPORT refused"),
        ("SELECT * FROM read_csv('/etc/passwd')", 'Cannot access file "/etc/passwd"'),
        ("SELECT * FROM read_text('{outside}/secret.txt')", "secret.txt"),
        ("SELECT * FROM read_text('{root}/../secret.txt')", "secret.txt"),
        ("SELECT * FROM glob('/etc/*')", "Cannot access file"),
        ("ATTACH '{outside}/other.duckdb' AS other", "ATTACH refused"),
        ("ATTACH ':memory:' AS scratch", "ATTACH refused"),
        ("INSTALL httpfs", "INSTALL refused"),
        ("LOAD httpfs", "LOAD refused"),
        ("SET enable_external_access = true", "SET refused"),
        ("RESET lock_configuration", "RESET refused"),
        ("SET allowed_directories = ['/']", "SET refused"),
        ("CREATE TABLE notes AS SELECT 1", "CREATE refused"),
        ("DROP VIEW requests_hourly", "DROP refused"),
        ("EXPLAIN ANALYZE COPY (SELECT 1) TO '{outside}/x.csv'", "EXPLAIN refused"),
        ("PRAGMA enable_profiling", "PRAGMA refused"),
        ("CALL checkpoint()", "CALL refused"),
    ],
)
def test_query_is_sandboxed_each_attempt_a_one_line_refusal(sqlite_url, tmp_path, sql, refusal):
    config = published(sqlite_url, tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "secret.txt").write_text("secret")
    (outside / "secret.txt").write_text("secret")
    published_hour = hour_file(tmp_path).read_bytes()
    before = sorted(path.name for path in outside.iterdir())
    statement = sql.format(
        hour_file=hour_file(tmp_path), outside=outside, root=tmp_path / "analytics"
    )
    result = CliRunner().invoke(main, ["query", statement, "--config", config])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert refusal in result.output
    assert hour_file(tmp_path).read_bytes() == published_hour
    assert sorted(path.name for path in outside.iterdir()) == before


def test_query_reads_what_is_published_and_nothing_else(sqlite_url, tmp_path):
    config = published(sqlite_url, tmp_path)
    root = tmp_path / "analytics"
    result = CliRunner().invoke(
        main,
        [
            "query",
            f"SELECT sum(requests) AS n FROM read_parquet('{root}/requests_minute/*.parquet')",
            "--csv",
            "--config",
            config,
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["n", "100"]


def test_an_empty_query_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(main, ["query", "", "--config", str(tmp_path / "none.yaml")])
    assert result.exit_code == 1
    assert result.output == "Error: no SQL statement given\n"
