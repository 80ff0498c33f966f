"""Shared helpers of the analytics tests (no tests here): settings, stores, hand-made rows."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import sqlalchemy as sa

from analytics.publish import RollupStore
from analytics.settings import AnalyticsSettings, parse_analytics_settings
from analytics.views import publish_rollup_views
from housekeeping.database import AppDatabase
from housekeeping.demo.schema import after_load_sql, column_names, create_table_sql
from housekeeping.demo.seed import create_schema

SQLITE_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
NOW = datetime(2026, 11, 20, 12, 30, tzinfo=UTC)


def make_settings(tmp_path: Path, **overrides) -> AnalyticsSettings:
    data = {
        "root": str(tmp_path / "analytics"),
        "database": str(tmp_path / "analytics" / "rollups.duckdb"),
    }
    data.update(overrides)
    return parse_analytics_settings(data)


def make_store(settings: AnalyticsSettings) -> RollupStore:
    return RollupStore(settings.root_path, settings.database_path)


def publish(store: RollupStore, settings: AnalyticsSettings, timezone: str = "UTC") -> None:
    publish_rollup_views(store, settings.timezone or timezone)


def query(settings: AnalyticsSettings, sql: str, parameters: list | None = None) -> pd.DataFrame:
    with duckdb.connect(str(settings.database_path), read_only=True) as connection:
        return connection.execute(sql, parameters or []).df()


def stored(db: AppDatabase, value: datetime | None) -> datetime | str | None:
    if value is None or db.is_postgres:
        return value
    return value.astimezone(UTC).strftime(SQLITE_FORMAT)


def drop_not_null(db: AppDatabase, table: str) -> None:
    """Make every column of a reference table but its id nullable, as real schemas often are."""
    with db.engine.begin() as conn:
        if db.is_postgres:
            for column in column_names(table)[1:]:
                conn.execute(
                    sa.text(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" DROP NOT NULL')
                )
            return
        # SQLite cannot drop a constraint: the (empty) table is made again without them.
        conn.execute(sa.text(f'DROP TABLE "{table}"'))
        definition = create_table_sql("sqlite", table, partitioned=False)
        conn.execute(sa.text(definition.replace(" NOT NULL", "")))
        for statement in after_load_sql("sqlite", table, partitioned=False):
            conn.execute(sa.text(statement))


def empty_reference_schema(url: str) -> AppDatabase:
    create_schema(url, now=NOW)
    return AppDatabase(url)


def insert_requests(db: AppDatabase, rows: Iterable[tuple[datetime, str, str, int, float]]) -> None:
    """(ts, method, route, status_code, duration_ms) rows into the reference request_logs."""
    values = [
        {
            "request_id": f"r{number}",
            "ts": stored(db, ts),
            "method": method,
            "route": route,
            "status_code": status,
            "duration_ms": duration,
        }
        for number, (ts, method, route, status, duration) in enumerate(rows)
    ]
    if not values:
        return
    with db.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO request_logs (request_id, ts, method, route, status_code, "
                "duration_ms) VALUES (:request_id, :ts, :method, :route, :status_code, "
                ":duration_ms)"
            ),
            values,
        )


def raw_requests(db: AppDatabase) -> pd.DataFrame:
    """Every request log row, with ts as naive UTC: the independent reference."""
    with db.connect() as conn:
        frame = pd.DataFrame(
            conn.execute(
                sa.text("SELECT ts, method, route, status_code, duration_ms FROM request_logs")
            ).all(),
            columns=["ts", "method", "route", "status_code", "duration_ms"],
        )
    ts = pd.to_datetime(frame["ts"], utc=True, format="mixed")
    frame["ts"] = ts.dt.tz_localize(None)
    frame["minute"] = frame["ts"].dt.floor("min")
    frame["duration_ms"] = frame["duration_ms"].astype(np.float64)
    return frame


def job(queue, name, status, created, started=None, finished=None, attempts=1) -> dict:
    """One row of the reference jobs table (times as aware datetimes or None)."""
    return {
        "queue": queue,
        "name": name,
        "status": status,
        "created_at": created,
        "started_at": started,
        "finished_at": finished,
        "attempts": attempts,
    }


def random_jobs(
    count: int,
    seed: int,
    start: datetime,
    now: datetime,
    precision: timedelta = timedelta(microseconds=1),
) -> list[dict]:
    """``count`` generated ``job`` rows created in the 4 h from ``start``: 70 % completed, 10 %
    failed, waiting and active (one finishing after ``now`` is active), on queues q0-q2 and names
    n0-n4, with 1-3 attempts; times in whole ``precision``."""
    rng = np.random.default_rng(seed)

    def after(moment: datetime, seconds: float) -> datetime:
        return moment + timedelta(seconds=seconds) // precision * precision

    rows = []
    for index in range(count):
        created = after(start, float(rng.uniform(0, 4 * 3600)))
        status = str(
            rng.choice(["completed", "failed", "waiting", "active"], p=[0.7, 0.1, 0.1, 0.1])
        )
        started = after(created, float(rng.exponential(60))) if status != "waiting" else None
        finished = (
            after(started, float(rng.exponential(30)))
            if status in ("completed", "failed") and started is not None
            else None
        )
        if finished is not None and finished >= now:
            finished, status = None, "active"
        rows.append(
            job(
                f"q{index % 3}",
                f"n{index % 5}",
                status,
                created,
                started,
                finished,
                int(rng.integers(1, 4)),
            )
        )
    return rows


def insert_jobs(db: AppDatabase, jobs: Iterable[dict]) -> None:
    """``job`` rows into the reference jobs table."""
    values = [
        {key: stored(db, value) if key.endswith("_at") else value for key, value in row.items()}
        for row in jobs
    ]
    with db.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO jobs (queue, name, status, created_at, started_at, finished_at, "
                "attempts) VALUES (:queue, :name, :status, :created_at, :started_at, "
                ":finished_at, :attempts)"
            ),
            values,
        )
