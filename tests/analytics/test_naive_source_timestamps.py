"""Rollup sources with naive timestamp columns (timestamp without time zone, SQLite text) are read
as wall clock in the source's ``timezone`` (default UTC), whatever the session's ``TimeZone``:
every rollup counts each row in the minute, hour or day it happened."""

from __future__ import annotations

import random
from contextlib import ExitStack
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa

from analytics.rollups.api_usage import refresh_api_usage
from analytics.rollups.jobs import refresh_jobs
from analytics.rollups.requests import refresh_requests
from analytics.rollups.table_stats import snapshot_table_stats
from analytics.rollups.token_revocations import refresh_token_revocations
from housekeeping.config import parse_config
from housekeeping.database import AppDatabase
from housekeeping.history import RunHistory
from housekeeping.policies import RunOptions, run_and_record
from tests.support.analytics_data import make_settings, make_store, publish, query
from tests.support.zoned_postgres import (
    create_app_logs,
    database_in_time_zone,
    fresh_schema,
    session_time_zone,
    stored_naive,
)

HOUR = datetime(2026, 11, 20, 3, tzinfo=UTC)
DAY = date(2026, 11, 20)
# A zone ahead of UTC, another behind: a reading taken for UTC would land in another hour or day.
WRITER_ZONES = ["UTC", "Asia/Tokyo", "America/New_York"]


@pytest.fixture(scope="module")
def tokyo_server(postgres_server):
    with database_in_time_zone(postgres_server, "Asia/Tokyo") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres-Asia/Tokyo"])
def db(request, tmp_path):
    """SQLite, and PostgreSQL whose sessions run in Asia/Tokyo (ALTER DATABASE ... SET timezone)."""
    if request.param == "sqlite":
        database = AppDatabase(f"sqlite:///{tmp_path / 'app.db'}")
    else:
        database = AppDatabase(fresh_schema(request.getfixturevalue("tokyo_server")))
        assert session_time_zone(database) == "Asia/Tokyo"
    yield database
    database.dispose()


def naive(db: AppDatabase) -> str:
    return "timestamp without time zone" if db.is_postgres else "TIMESTAMP"


def key(db: AppDatabase) -> str:
    return "id bigserial primary key" if db.is_postgres else "id INTEGER PRIMARY KEY"


def source_settings(tmp_path, source: str, zone: str):
    return make_settings(tmp_path, sources={source: {"timezone": zone}})


@pytest.mark.parametrize("zone", WRITER_ZONES)
def test_request_minutes_come_from_naive_readings_in_the_source_timezone(db, tmp_path, zone):
    inside = [HOUR + timedelta(minutes=2 * index) for index in range(30)]
    outside = [HOUR - timedelta(minutes=7 * index + 1) for index in range(10)] + [
        HOUR + timedelta(hours=1, minutes=3 * index) for index in range(10)
    ]
    with db.engine.begin() as conn:
        conn.execute(
            sa.text(
                f"CREATE TABLE request_logs ({key(db)}, ts {naive(db)}, method text, route text, "
                "status_code integer, duration_ms double precision)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO request_logs (ts, method, route, status_code, duration_ms) "
                "VALUES (:ts, 'GET', '/api/v1/orders', 200, 12.5)"
            ),
            [{"ts": stored_naive(db, moment, zone)} for moment in inside + outside],
        )
    settings = source_settings(tmp_path, "request_logs", zone)
    store = make_store(settings)

    result = refresh_requests(db, store, settings, HOUR, HOUR + timedelta(hours=1))
    publish(store, settings)

    assert result.rows_read == 30
    minutes = query(settings, "SELECT minute, requests FROM requests_minute ORDER BY minute")
    assert [moment.to_pydatetime() for moment in minutes.minute] == [
        moment.replace(tzinfo=None) for moment in inside
    ]
    assert set(minutes.requests) == {1}


@pytest.mark.parametrize("zone", WRITER_ZONES)
def test_job_hours_come_from_naive_readings_in_the_source_timezone(db, tmp_path, zone):
    def job(status, finished):
        created = finished - timedelta(minutes=20)
        return {
            "status": status,
            "created_at": stored_naive(db, created, zone),
            "started_at": stored_naive(db, created + timedelta(minutes=5), zone),
            "finished_at": stored_naive(db, finished, zone),
        }

    jobs = (
        [job("completed", HOUR + timedelta(minutes=10 * index + 1)) for index in range(5)]
        + [job("failed", HOUR + timedelta(minutes=15 * index + 2)) for index in range(3)]
        + [job("completed", HOUR - timedelta(minutes=10 * index + 5)) for index in range(4)]
    )
    with db.engine.begin() as conn:
        conn.execute(
            sa.text(
                f"CREATE TABLE jobs ({key(db)}, queue text, name text, status text, "
                f"created_at {naive(db)}, started_at {naive(db)}, finished_at {naive(db)}, "
                "attempts integer)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO jobs (queue, name, status, created_at, started_at, finished_at, "
                "attempts) VALUES ('emails', 'send', :status, :created_at, :started_at, "
                ":finished_at, 1)"
            ),
            jobs,
        )
    settings = source_settings(tmp_path, "jobs", zone)
    store = make_store(settings)

    refresh_jobs(
        db, store, settings, HOUR, HOUR + timedelta(hours=1), now=HOUR + timedelta(hours=3)
    )
    publish(store, settings)

    row = query(settings, "SELECT * FROM jobs_hourly").iloc[0]
    assert row.hour.to_pydatetime() == HOUR.replace(tzinfo=None)
    assert (row.completed, row.failed) == (5, 3)
    assert row.duration_avg_ms == pytest.approx(15 * 60 * 1000, rel=0.02)


@pytest.mark.parametrize("zone", WRITER_ZONES)
def test_api_usage_days_come_from_naive_readings_in_the_source_timezone(db, tmp_path, zone):
    midnight = datetime.combine(DAY, datetime.min.time(), UTC)
    # Around both ends of the day, so a reading shifted by hours moves calls between days.
    inside = [midnight + timedelta(minutes=50 * index + 5) for index in range(10)] + [
        midnight + timedelta(days=1) - timedelta(minutes=40 * index + 3) for index in range(8)
    ]
    outside = [midnight - timedelta(minutes=45 * index + 2) for index in range(12)] + [
        midnight + timedelta(days=1, minutes=35 * index) for index in range(9)
    ]
    with db.engine.begin() as conn:
        conn.execute(
            sa.text(
                f"CREATE TABLE api_usage ({key(db)}, ts {naive(db)}, service_name text, "
                "endpoint text, response_time_ms double precision, tokens_used integer, "
                "cost_usd double precision, success boolean)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO api_usage (ts, service_name, endpoint, response_time_ms, "
                "tokens_used, cost_usd, success) VALUES (:ts, 'openai', '/v1/chat', 120, 10, "
                "0.01, true)"
            ),
            [{"ts": stored_naive(db, moment, zone)} for moment in inside + outside],
        )
    settings = source_settings(tmp_path, "api_usage", zone)
    store = make_store(settings)

    refresh_api_usage(db, store, settings, DAY, "UTC")
    publish(store, settings)

    row = query(settings, "SELECT * FROM api_usage_daily").iloc[0]
    assert row.calls == len(inside)


@pytest.mark.parametrize("zone", ["UTC", "Asia/Tokyo"])
def test_token_days_count_live_and_archived_naive_readings_in_the_source_timezone(
    db, tmp_path, monkeypatch, zone
):
    monkeypatch.setenv("HK_USER_HASH_KEY", "test-key")
    now = db.clock()
    day = (now - timedelta(days=3)).date()
    start = datetime.combine(day, datetime.min.time(), UTC)
    rng = random.Random(5)
    tokens = []
    for _ in range(300):
        revoked = start - timedelta(days=1) + timedelta(seconds=rng.uniform(0, 3 * 86400))
        expires = revoked + timedelta(hours=rng.uniform(1, 48))
        if abs(expires - now) < timedelta(hours=1):
            expires -= timedelta(hours=2)
        tokens.append((rng.randint(1, 30), revoked, expires))
    with db.engine.begin() as conn:
        conn.execute(
            sa.text(
                f"CREATE TABLE revoked_tokens ({key(db)}, user_id bigint, token_hash text, "
                f"revoked_at {naive(db)}, expires_at {naive(db)})"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO revoked_tokens (user_id, token_hash, revoked_at, expires_at) "
                "VALUES (:user_id, 'h', :revoked_at, :expires_at)"
            ),
            [
                {
                    "user_id": user,
                    "revoked_at": stored_naive(db, revoked, zone),
                    "expires_at": stored_naive(db, expires, zone),
                }
                for user, revoked, expires in tokens
            ],
        )
    end = start + timedelta(days=1)
    revoked_in_day = sum(start <= revoked < end for _, revoked, _ in tokens)
    expired_in_day = sum(start <= expires < min(end, now) for _, _, expires in tokens)
    config = parse_config(
        {
            "archive": {"root": str(tmp_path / "archive")},
            "state_database_url": f"sqlite:///{tmp_path / 'state.db'}",
            "policies": {
                "revoked_tokens": {
                    "kind": "expired",
                    "table": "revoked_tokens",
                    "cutoff_column": "expires_at",
                    "timezone": zone,
                    "archive": True,
                }
            },
        }
    )
    history = RunHistory(config.state_database_url)
    settings = source_settings(tmp_path, "revoked_tokens", zone)
    with ExitStack() as cleanup:
        cleanup.callback(history.dispose)
        store = make_store(settings)
        publish(store, settings)

        refresh_token_revocations(db, store, settings, config, history, day, "UTC", now)
        before = query(settings, "SELECT revoked, expired FROM token_revocations_daily").iloc[0]
        deleted = run_and_record(
            history, db, config, "revoked_tokens", options=RunOptions(allow_large_delete=True)
        )
        # Recounted into an empty store: the expired rows now come from the archive alone.
        fresh = make_settings(tmp_path / "fresh", sources={"revoked_tokens": {"timezone": zone}})
        fresh_store = make_store(fresh)
        publish(fresh_store, fresh)
        refresh_token_revocations(db, fresh_store, fresh, config, history, day, "UTC", now)
        after = query(fresh, "SELECT revoked, expired FROM token_revocations_daily").iloc[0]

    assert deleted.deleted == sum(expires < now for _, _, expires in tokens)
    assert (before.revoked, before.expired) == (revoked_in_day, expired_in_day)
    assert (after.revoked, after.expired) == (revoked_in_day, expired_in_day)


def test_table_stats_count_the_expired_rows_of_a_naive_cutoff_column_as_the_cleanup_does(
    db, tmp_path
):
    create_app_logs(db)  # 21 of 41 naive UTC readings older than 30 days
    config = parse_config(
        {
            "policies": {
                "app_logs": {
                    "kind": "age",
                    "table": "app_logs",
                    "cutoff_column": "ts",
                    "retention": "30d",
                }
            }
        }
    )
    settings = make_settings(tmp_path)
    store = make_store(settings)

    snapshot_table_stats(db, store, config)
    publish(store, settings)

    row = query(settings, "SELECT table_name, rows, expired_rows FROM table_stats").iloc[0]
    assert (row.table_name, row.rows, row.expired_rows) == ("app_logs", 41, 21)


@pytest.mark.parametrize("zone", ["Asia/Tokyo", "America/New_York"])
def test_a_rerun_after_the_cleanup_reads_archived_naive_readings_in_the_source_timezone(
    db, tmp_path, zone
):
    inside = [HOUR + timedelta(minutes=2 * index) for index in range(30)]
    with db.engine.begin() as conn:
        conn.execute(
            sa.text(
                f"CREATE TABLE request_logs ({key(db)}, ts {naive(db)}, method text, route text, "
                "status_code integer, duration_ms double precision)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO request_logs (ts, method, route, status_code, duration_ms) "
                "VALUES (:ts, 'GET', '/api/v1/orders', 200, 12.5)"
            ),
            [{"ts": stored_naive(db, moment, zone)} for moment in inside],
        )
    config = parse_config(
        {
            "archive": {"root": str(tmp_path / "archive")},
            "policies": {
                "request_logs": {
                    "kind": "age",
                    "table": "request_logs",
                    "cutoff_column": "ts",
                    "retention": "1d",
                    "timezone": zone,
                    "archive": True,
                    "max_delete_fraction": 1.0,
                }
            },
        }
    )
    settings = source_settings(tmp_path, "request_logs", zone)
    store = make_store(settings)
    refresh_requests(db, store, settings, HOUR, HOUR + timedelta(hours=1), config=config)
    publish(store, settings)
    published = query(settings, "SELECT minute, requests FROM requests_minute ORDER BY minute")
    history = RunHistory(f"sqlite:///{tmp_path / 'state.db'}")
    run_and_record(history, db, config, "request_logs", options=RunOptions())
    history.dispose()

    rerun = refresh_requests(db, store, settings, HOUR, HOUR + timedelta(hours=1), config=config)
    publish(store, settings)

    assert rerun.rows_from_archive == 30 and not rerun.kept_from_published
    minutes = query(settings, "SELECT minute, requests FROM requests_minute ORDER BY minute")
    assert [moment.to_pydatetime() for moment in minutes.minute] == [
        moment.replace(tzinfo=None) for moment in inside
    ]
    assert minutes.equals(published)
