"""The published file is never locked against readers; bad input gets a clear error naming it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta

import duckdb
import pytest
import sqlalchemy as sa

from analytics.datasets import all_datasets
from analytics.extract import SourceError
from analytics.publish import PublishError
from analytics.rollups.requests import refresh_requests
from analytics.settings import parse_analytics_settings
from analytics.views import view_statements
from housekeeping.config import ConfigError
from housekeeping.database import AppDatabase
from housekeeping.demo.seed import seed_database
from tests.support.analytics_data import (
    NOW,
    empty_reference_schema,
    make_settings,
    make_store,
    publish,
)

HOUR = datetime(2026, 11, 19, 15, tzinfo=UTC)


def test_an_analyst_holding_the_file_open_read_only_is_never_locked_out(sqlite_url, tmp_path):
    db = AppDatabase(sqlite_url)
    seed_database(sqlite_url, tokens=10, requests=20_000, days=2, now=NOW)
    settings = make_settings(tmp_path)
    store = make_store(settings)
    refresh_requests(db, store, settings, HOUR, HOUR + timedelta(hours=1))
    publish(store, settings)
    report = tmp_path / "reader.json"
    reader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import json, time, duckdb
                queries, errors = 0, []
                # One connection held open for the whole run, plus fresh ones.
                held = duckdb.connect({str(settings.database_path)!r}, read_only=True)
                deadline = time.monotonic() + 6
                while time.monotonic() < deadline:
                    try:
                        held.execute("SELECT sum(requests) FROM requests_hourly").fetchall()
                        with duckdb.connect({str(settings.database_path)!r}, read_only=True) as c:
                            c.execute("SELECT count(*) FROM requests_minute").fetchall()
                        queries += 1
                    except Exception as exc:
                        errors.append(str(exc))
                json.dump({{"queries": queries, "errors": errors[:3]}}, open({str(report)!r}, "w"))
                """
            ),
        ]
    )
    time.sleep(1.0)
    runs = 0
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        start = HOUR - timedelta(hours=runs % 3)
        refresh_requests(db, store, settings, start, start + timedelta(hours=1))
        # A config change republishes the views file while the reader holds the old one open.
        timezone = "Europe/Berlin" if runs % 2 else "UTC"
        store.publish_views(view_statements(store, all_datasets(), timezone))
        runs += 1
    assert reader.wait(timeout=30) == 0
    outcome = json.loads(report.read_text())
    assert outcome["errors"] == []
    assert outcome["queries"] > 5 and runs > 2


def test_a_corrupt_file_at_the_published_path_is_refused_and_left_alone(tmp_path):
    settings = make_settings(tmp_path)
    settings.database_path.parent.mkdir(parents=True)
    settings.database_path.write_bytes(b"not a database at all" * 100)
    store = make_store(settings)
    with pytest.raises(
        PublishError, match=r"analytics\.database: .*rollups\.duckdb is not a readable"
    ):
        publish(store, settings)
    assert settings.database_path.read_bytes().startswith(b"not a database")


def test_a_foreign_duckdb_file_at_the_published_path_is_refused_and_left_alone(tmp_path):
    settings = make_settings(tmp_path)
    settings.database_path.parent.mkdir(parents=True)
    with duckdb.connect(str(settings.database_path)) as connection:
        connection.execute("CREATE TABLE precious AS SELECT 42 AS answer")
    with pytest.raises(PublishError, match="was not published by the analytics pipeline"):
        publish(make_store(settings), settings)
    with duckdb.connect(str(settings.database_path), read_only=True) as connection:
        assert connection.execute("SELECT answer FROM precious").fetchone() == (42,)


def test_a_missing_source_table_is_named(app_url, tmp_path):
    settings = make_settings(tmp_path, sources={"request_logs": {"table": "http_log"}})
    with pytest.raises(
        SourceError,
        match=r"analytics\.sources\.request_logs\.table: table 'http_log' does not exist",
    ):
        refresh_requests(
            AppDatabase(app_url), make_store(settings), settings, HOUR, HOUR + timedelta(hours=1)
        )


def test_a_missing_source_column_is_named(app_url, tmp_path):
    db = empty_reference_schema(app_url)
    settings = make_settings(tmp_path, sources={"request_logs": {"duration_ms": "latency"}})
    with pytest.raises(
        SourceError,
        match=r"analytics\.sources\.request_logs\.duration_ms: column 'latency' does not exist in table 'request_logs'",
    ):
        refresh_requests(db, make_store(settings), settings, HOUR, HOUR + timedelta(hours=1))


def test_a_source_column_of_the_wrong_type_is_named(app_url, tmp_path):
    db = empty_reference_schema(app_url)
    # The route is text, not a timestamp.
    settings = make_settings(tmp_path, sources={"request_logs": {"ts": "route"}})
    with pytest.raises(
        SourceError,
        match=r"analytics\.sources\.request_logs\.ts: column request_logs\.route has type .*, expected a timestamp",
    ):
        refresh_requests(db, make_store(settings), settings, HOUR, HOUR + timedelta(hours=1))


def test_unparseable_sqlite_timestamps_are_named(sqlite_url, tmp_path):
    db = empty_reference_schema(sqlite_url)
    with db.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO request_logs (request_id, ts, method, route, status_code, duration_ms)"
                " VALUES ('x', '2026-11-19 15:xx', 'GET', '/a', 200, 1.0)"
            )
        )
    settings = make_settings(tmp_path)
    with pytest.raises(
        SourceError, match=r"analytics\.sources\.request_logs\.ts: .* not a timestamp"
    ):
        refresh_requests(db, make_store(settings), settings, HOUR, HOUR + timedelta(hours=1))


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"late_row_grace": "soon"}, "analytics.late_row_grace: expected a duration"),
        ({"refresh_interval": "0s"}, "analytics.refresh_interval: must be greater than 0"),
        ({"timezone": "Mars/Olympus"}, "analytics.timezone: unknown time zone"),
        ({"sourcez": {}}, "analytics.sourcez: unknown key"),
        ({"sources": {"jobs": {"tabel": "x"}}}, "analytics.sources.jobs.tabel: unknown key"),
        ({"budgets": {"openai": {}}}, "analytics.budgets.openai: set at least one of"),
    ],
)
def test_bad_settings_name_the_analytics_key(section, message):
    with pytest.raises(ConfigError) as caught:
        parse_analytics_settings(section, "hk.yaml")
    assert f"hk.yaml: {message}" in str(caught.value)


def test_defaults_map_the_reference_schema(tmp_path):
    settings = parse_analytics_settings({})
    assert settings.sources.request_logs.duration_ms == "duration_ms"
    assert settings.sources.api_usage.service == "service_name"
    assert settings.database_path.name == "rollups.duckdb"


def test_the_views_file_follows_the_root_unless_it_is_set(tmp_path):
    """Setting analytics.root alone must not leave the views file in var/ of the working dir."""
    from analytics.settings import parse_analytics_settings

    moved = parse_analytics_settings({"root": str(tmp_path / "rollups")})
    assert moved.database_path == (tmp_path / "rollups" / "rollups.duckdb").resolve()
    pinned = parse_analytics_settings(
        {"root": str(tmp_path / "rollups"), "database": str(tmp_path / "views.duckdb")}
    )
    assert pinned.database_path == (tmp_path / "views.duckdb").resolve()
