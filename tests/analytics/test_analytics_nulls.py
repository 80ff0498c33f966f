"""NULLs in rollup inputs: each nullable column has one documented meaning (docs/analytics.md).

The reference schema declares most columns NOT NULL; real schemas often do not, so these tests
drop the constraints first.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa

from analytics.rollups.api_usage import refresh_api_usage
from analytics.rollups.jobs import refresh_jobs
from analytics.rollups.requests import refresh_requests
from analytics.rollups.token_revocations import refresh_token_revocations
from analytics.sketch import RELATIVE_ACCURACY
from housekeeping.config import parse_config
from housekeeping.history import RunHistory
from tests.support.analytics_data import (
    drop_not_null,
    empty_reference_schema,
    insert_jobs,
    insert_requests,
    job,
    make_settings,
    make_store,
    publish,
    query,
    stored,
)

H = timedelta(hours=1)
M = timedelta(minutes=1)
HOUR = datetime(2026, 11, 19, 10, tzinfo=UTC)


def near(value: float, exact: float) -> bool:
    return abs(value - exact) <= RELATIVE_ACCURACY * exact


def test_requests_without_a_duration_count_as_requests_but_not_in_the_latency(app_url, tmp_path):
    db = empty_reference_schema(app_url)
    drop_not_null(db, "request_logs")
    minute = HOUR + 7 * M
    at = [minute + timedelta(milliseconds=10 * i) for i in range(200)]
    rows = (
        [(ts, "GET", "/a", 200, 5.0) for ts in at[:10]]
        + [(ts, "GET", "/a", 200, 500.0) for ts in at[10:100]]
        + [(ts, "GET", "/a", 200, None) for ts in at[100:]]
    )
    insert_requests(db, rows)
    settings = make_settings(tmp_path)
    store = make_store(settings)

    refresh_requests(db, store, settings, HOUR, HOUR + H)
    publish(store, settings)

    for view in (
        "SELECT * FROM requests_hourly_overall",
        "SELECT * FROM requests_hourly",
        "SELECT * FROM requests_daily_overall",
        f"SELECT * FROM request_stats_overall(TIMESTAMP '{HOUR:%Y-%m-%d %H:%M}', "
        f"TIMESTAMP '{HOUR + H:%Y-%m-%d %H:%M}')",
    ):
        row = query(settings, view).iloc[0]
        assert row.requests == 200, view
        assert row.latency_avg_ms == pytest.approx(450.5), view
        assert near(row.latency_p50_ms, 500.0), view
        assert near(row.latency_p99_ms, 500.0), view
        assert (row.latency_min_ms, row.latency_max_ms) == (5.0, 500.0), view
    minute_row = query(
        settings,
        "SELECT requests, latency_sum_ms, list_sum([e.count FOR e IN latency_sketch]) AS timed "
        "FROM requests_minute",
    ).iloc[0]
    assert (minute_row.requests, minute_row.latency_sum_ms, minute_row.timed) == (200, 45_050, 100)


def test_a_null_status_route_method_or_timestamp_has_its_documented_meaning(app_url, tmp_path):
    db = empty_reference_schema(app_url)
    drop_not_null(db, "request_logs")
    at = HOUR + 3 * M
    insert_requests(
        db,
        [
            (at, "GET", "/a", 200, 10.0),
            (at, "GET", "/a", None, 10.0),  # no status: a request, in status_other
            (at, "GET", None, 503, 10.0),  # no route: "(none)"
            (at, None, "/a", 200, None),  # no method: "(none)", and no duration either
            (None, "GET", "/a", 500, 10.0),  # no time: in no minute, reported
            (None, "GET", "/a", 500, 10.0),
        ],
    )
    settings = make_settings(tmp_path)
    store = make_store(settings)

    result = refresh_requests(db, store, settings, HOUR, HOUR + H)
    publish(store, settings)

    rows = query(
        settings,
        "SELECT route, method, requests, status_2xx, status_5xx, status_other, latency_sum_ms "
        "FROM requests_minute ORDER BY route, method",
    )
    as_tuples = [
        tuple(None if value != value else value for value in row)  # NaN (a NULL) as None
        for row in rows.itertuples(index=False)
    ]
    assert as_tuples == [
        ("(none)", "GET", 1, 0, 1, 0, 10.0),
        ("/a", "(none)", 1, 1, 0, 0, None),
        ("/a", "GET", 2, 1, 0, 1, 20.0),
    ]
    assert result.rows_read == 4
    assert result.rows_without_timestamp == 2
    overall = query(settings, "SELECT * FROM requests_hourly_overall").iloc[0]
    assert (overall.requests, overall.error_rate) == (4, 0.25)
    assert overall.latency_avg_ms == pytest.approx(10.0)


def test_nulls_in_the_jobs_table_have_their_documented_meaning(app_url, tmp_path):
    db = empty_reference_schema(app_url)
    drop_not_null(db, "jobs")
    insert_jobs(
        db,
        [
            # no queue, name or attempts: "(none)", not a retry
            job(None, None, "completed", HOUR + M, HOUR + 2 * M, HOUR + 3 * M, attempts=None),
            # no status: created, never finished, waiting or active
            job("q", "no-status", None, HOUR + 5 * M),
            # completed without finished_at: created, not completed in any hour
            job("q", "no-finish", "completed", HOUR + 6 * M, HOUR + 7 * M),
            # failed without started_at: failed, without a duration
            job("q", "no-start", "failed", HOUR + 8 * M, None, HOUR + 20 * M),
            # waiting, never started: in the backlog at the end of the hour
            job("q", "waiting", "waiting", HOUR + 10 * M),
            # no created_at: in no hour
            job("q", "no-created", "completed", None, HOUR + 2 * M, HOUR + 4 * M),
        ],
    )
    settings = make_settings(tmp_path)
    store = make_store(settings)

    result = refresh_jobs(db, store, settings, HOUR, HOUR + H, HOUR + 2 * H)
    publish(store, settings)

    rows = query(
        settings,
        "SELECT queue, name, created, completed, failed, retried, duration_avg_ms, "
        "len(duration_sketch) AS buckets, backlog, stuck FROM jobs_hourly ORDER BY queue, name",
    )
    table = {
        (row.queue, row.name): (
            row.created,
            row.completed,
            row.failed,
            row.retried,
            None if row.duration_avg_ms != row.duration_avg_ms else row.duration_avg_ms,
            row.buckets,
            row.backlog,
            row.stuck,
        )
        for row in rows.itertuples()
    }
    assert table == {
        ("(none)", "(none)"): (1, 1, 0, 0, 60_000.0, 1, 0, 0),
        ("q", "no-status"): (1, 0, 0, 0, None, 0, 0, 0),
        ("q", "no-finish"): (1, 0, 0, 0, None, 0, 0, 0),
        ("q", "no-start"): (1, 0, 1, 0, None, 0, 0, 0),
        ("q", "waiting"): (1, 0, 0, 0, None, 0, 1, 0),
    }
    assert result.rows_without_timestamp == 1


def test_nulls_in_api_usage_have_their_documented_meaning(app_url, tmp_path):
    db = empty_reference_schema(app_url)
    drop_not_null(db, "api_usage")
    day = date(2026, 11, 19)
    at = datetime(2026, 11, 19, 9, tzinfo=UTC)
    calls = [
        (at, "svc", "/e", 100.0, 10, 0.5, True),
        (at, "svc", "/e", None, None, None, None),  # a call; no time, tokens, cost or outcome
        (at, "svc", "/e", 300.0, 30, None, False),
        (at, "svc", "/e", 200.0, None, 0.25, True),
        (at, None, None, 50.0, 1, 0.01, True),  # no service or endpoint: "(none)"
        (None, "svc", "/e", 1.0, 1, 1.0, False),  # no time: in no day
    ]
    with db.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO api_usage (ts, service_name, endpoint, response_time_ms, "
                "tokens_used, cost_usd, success) VALUES (:ts, :service, :endpoint, :ms, "
                ":tokens, :cost, :success)"
            ),
            [
                dict(
                    zip(
                        ["ts", "service", "endpoint", "ms", "tokens", "cost", "success"],
                        c,
                        strict=True,
                    )
                )
                | {"ts": stored(db, c[0])}
                for c in calls
            ],
        )
    settings = make_settings(tmp_path)
    store = make_store(settings)

    result = refresh_api_usage(db, store, settings, day, "UTC")
    publish(store, settings)

    rows = query(
        settings,
        "SELECT service, endpoint, calls, errors, tokens, cost_usd, response_time_p95_ms, "
        "list_sum([e.count FOR e IN response_time_sketch]) AS timed "
        "FROM api_usage_daily ORDER BY service",
    )
    svc = rows[rows.service == "svc"].iloc[0]
    assert (svc.calls, svc.errors, svc.tokens, svc.timed) == (4, 1, 40, 3)
    assert svc.cost_usd == pytest.approx(0.75)
    assert svc.response_time_p95_ms == pytest.approx(290.0)  # quantile_cont of 100, 200, 300
    none = rows[rows.service == "(none)"].iloc[0]
    assert (none.endpoint, none.calls) == ("(none)", 1)
    assert result.rows_without_timestamp == 1


def test_nulls_in_the_token_table_have_their_documented_meaning(app_url, tmp_path, monkeypatch):
    monkeypatch.setenv("HK_USER_HASH_KEY", "k")
    db = empty_reference_schema(app_url)
    drop_not_null(db, "revoked_tokens")
    day = date(2026, 11, 19)
    at = datetime(2026, 11, 19, 9, tzinfo=UTC)
    tokens = [
        (1, at, at + H),
        (None, at, at + H),  # no user: a revocation of no user (user_hash NULL)
        (2, at, None),  # no expiry: revoked, never expired
        (3, None, at),  # no revocation time: revoked on no day, expired that day
    ]
    with db.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO revoked_tokens (user_id, token_hash, revoked_at, expires_at) "
                "VALUES (:user, :hash, :revoked, :expires)"
            ),
            [
                {
                    "user": user,
                    "hash": f"h{n}",
                    "revoked": stored(db, revoked),
                    "expires": stored(db, expires),
                }
                for n, (user, revoked, expires) in enumerate(tokens)
            ],
        )
    config = parse_config({"state_database_url": f"sqlite:///{tmp_path / 'state.db'}"})
    history = RunHistory(config.state_database_url)
    settings = make_settings(tmp_path)
    store = make_store(settings)
    now = datetime(2026, 11, 21, tzinfo=UTC)

    result = refresh_token_revocations(db, store, settings, config, history, day, "UTC", now)
    publish(store, settings)

    daily = query(settings, "SELECT * FROM token_revocations_daily").iloc[0]
    assert (daily.revoked, daily.expired, daily.revoking_users) == (3, 3, 2)
    by_user = query(
        settings,
        "SELECT coalesce(user_hash, 'NULL') AS user_hash, revoked FROM token_revocations_by_user",
    )
    hashes = dict(zip(by_user.user_hash, by_user.revoked, strict=True))
    assert hashes == {
        hashlib.sha256(b"k1").hexdigest(): 1,
        hashlib.sha256(b"k2").hexdigest(): 1,
        "NULL": 1,
    }
    assert result.daily.rows_without_timestamp == 1
    history.dispose()
