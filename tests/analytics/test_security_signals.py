"""The security signals: rate-limited clients and busy users from the request logs, hashed with
the token rollup's key, and the default rules over them (> 100 clients an hour, > 50 a minute)."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from analytics.alerts.model import AlertState
from analytics.alerts.rules import load_rules
from analytics.extract import SourceError
from analytics.rollups.engine import floor_hour
from analytics.rollups.request_clients import refresh_recent_clients, refresh_request_clients
from housekeeping.config import parse_config
from tests.support.alert_support import evaluate_once
from tests.support.analytics_data import (
    empty_reference_schema,
    make_settings,
    make_store,
    publish,
    query,
    stored,
)

KEY = "test-key"


@pytest.fixture(autouse=True)
def hash_key(monkeypatch):
    monkeypatch.setenv("HK_USER_HASH_KEY", KEY)


def insert(db, rows):
    """(ts, ip, user_id, status_code) request rows."""
    with db.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO request_logs (request_id, ts, method, route, status_code, "
                "duration_ms, ip, user_id) VALUES (:request_id, :ts, 'GET', '/api/x', :status, "
                "12.0, :ip, :user_id)"
            ),
            [
                {
                    "request_id": f"r{number}",
                    "ts": stored(db, ts),
                    "ip": ip,
                    "user_id": user,
                    "status": status,
                }
                for number, (ts, ip, user, status) in enumerate(rows)
            ],
        )


def hashed(value: str) -> str:
    return hashlib.sha256(f"{KEY}{value}".encode()).hexdigest()


def evaluate(settings, tmp_path, now):
    pack = load_rules().select(["http_rate_limit_abuse", "http_user_flooding"])
    found = evaluate_once(settings, tmp_path / "alerts.db", pack, now)
    states = {rule: record.state for (rule, _), record in found.items()}
    return {rule.name: states.get(rule.name, AlertState.OK) for rule in pack.rules}


def test_many_rate_limited_clients_and_a_flooding_user_fire_and_nothing_raw_is_stored(
    app_url, tmp_path
):
    db = empty_reference_schema(app_url)
    now = db.clock()
    hour = floor_hour(now - timedelta(hours=2))
    rows = []
    # 120 clients, each throttled once in the hour; user 7 sends 60 requests in one minute.
    for number in range(120):
        rows.append((hour + timedelta(seconds=20 * number), f"10.0.{number}.9", None, 429))
    for number in range(60):
        rows.append((hour + timedelta(minutes=30, seconds=number), "10.9.9.9", "7", 200))
    rows.append((hour + timedelta(minutes=31), None, None, 200))  # no address, no user
    insert(db, rows)
    settings = make_settings(tmp_path)
    store = make_store(settings)
    publish(store, settings)
    config = parse_config({"archive": {"root": str(tmp_path / "archive")}})

    result = refresh_request_clients(db, store, settings, config, hour, hour + timedelta(hours=1))

    assert result.rows_read == len(rows)
    frame = query(
        settings,
        "SELECT client_hash, user_hash, sum(requests) AS requests, sum(rate_limited) AS limited "
        "FROM request_clients_minute GROUP BY ALL",
    )
    assert frame.limited.sum() == 120 and frame.requests.sum() == len(rows)
    busy = frame[frame.user_hash == hashed("7")]
    assert busy.requests.sum() == 60 and set(busy.client_hash) == {hashed("10.9.9.9")}
    assert frame.client_hash.isna().sum() == 1
    # No raw address or user id anywhere in the published files.
    for path in (settings.root_path / "request_clients_minute").glob("*.parquet"):
        text = str(pq.read_table(path).to_pylist())
        assert "10.0." not in text and "10.9.9.9" not in text

    states = evaluate(settings, tmp_path, hour + timedelta(hours=1))
    assert states["http_rate_limit_abuse"] is AlertState.FIRING
    assert states["http_user_flooding"] is not AlertState.FIRING  # its 5-minute window is past
    states = evaluate(settings, tmp_path / "again", hour + timedelta(minutes=33))
    assert states["http_user_flooding"] is AlertState.FIRING
    db.dispose()


def test_ordinary_traffic_stays_below_both_thresholds(sqlite_url, tmp_path):
    db = empty_reference_schema(sqlite_url)
    hour = floor_hour(db.clock() - timedelta(hours=2))
    rows = [
        (hour + timedelta(seconds=30 * number), f"10.1.{number % 40}.1", str(number % 25), 200)
        for number in range(120)
    ]
    rows += [(hour + timedelta(minutes=5, seconds=n), f"10.2.{n}.1", None, 429) for n in range(90)]
    insert(db, rows)
    settings = make_settings(tmp_path)
    store = make_store(settings)
    publish(store, settings)
    config = parse_config({"archive": {"root": str(tmp_path / "archive")}})
    refresh_request_clients(db, store, settings, config, hour, hour + timedelta(hours=1))
    (tmp_path / "second").mkdir()
    for now in (hour + timedelta(hours=1), hour + timedelta(minutes=8)):
        states = evaluate(settings, tmp_path / "second", now)
        assert AlertState.FIRING not in states.values()
    db.dispose()


def test_a_request_log_without_the_columns_is_named_and_the_sensor_step_skips_it(
    sqlite_url, tmp_path
):
    db = empty_reference_schema(sqlite_url)
    settings = make_settings(tmp_path, sources={"request_logs": {"ip": "client_address"}})
    store = make_store(settings)
    config = parse_config({"archive": {"root": str(tmp_path / "archive")}})
    now = db.clock()
    with pytest.raises(SourceError, match=r"analytics.sources.request_logs.ip"):
        refresh_request_clients(
            db, store, settings, config, floor_hour(now), floor_hour(now) + timedelta(hours=1)
        )
    note = refresh_recent_clients(db, store, settings, config, now)
    assert note.startswith("security signals skipped: analytics.sources.request_logs.ip")
    assert not (settings.root_path / "request_clients_minute").exists()
    db.dispose()
