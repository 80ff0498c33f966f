"""`hk query`: a table or CSV from the published rollups; clear one-line errors."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import yaml
from click.testing import CliRunner

from analytics.cli import query
from analytics.rollups.requests import refresh_requests
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
        query, ["SELECT route, requests, status_5xx FROM requests_hourly", "--config", config]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["route", "requests", "status_5xx"]
    assert lines[2].split() == ["/a", "100", "10"]
    assert lines[-1] == "(1 row)"


def test_query_prints_csv(sqlite_url, tmp_path):
    config = published(sqlite_url, tmp_path)
    result = CliRunner().invoke(
        query, ["SELECT route, error_rate FROM requests_hourly", "--csv", "--config", config]
    )
    assert result.exit_code == 0, result.output
    assert list(csv.reader(io.StringIO(result.output))) == [["route", "error_rate"], ["/a", "0.1"]]


def test_query_errors_are_one_line(sqlite_url, tmp_path):
    config = published(sqlite_url, tmp_path)
    result = CliRunner().invoke(query, ["SELECT * FROM no_such_view", "--config", config])
    assert result.exit_code == 1
    assert result.output.startswith("Error: query failed: Catalog Error")
    missing = CliRunner().invoke(query, ["SELECT 1", "--database", str(tmp_path / "nope.duckdb")])
    assert missing.exit_code == 1 and "cannot open the published rollups" in missing.output


def test_query_cannot_write(sqlite_url, tmp_path):
    config = published(sqlite_url, tmp_path)
    result = CliRunner().invoke(query, ["DROP VIEW requests_hourly", "--config", config])
    assert result.exit_code == 1 and "read-only" in result.output
