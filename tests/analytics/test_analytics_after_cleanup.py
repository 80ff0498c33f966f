"""Re-running a published period after retention deleted its source rows never lowers it.

The real cleanup policies delete the rows (archive on: the rollup reads them back from the
archive; archive off: it keeps the published partition and says why), then the period is
re-materialised, as a backfill would: the published numbers stay the same.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import duckdb
import numpy as np
import pytest
import sqlalchemy as sa
import yaml

from analytics.datasets import REQUESTS_MINUTE
from analytics.defs.assets import (
    API_USAGE_DAILY_ASSET,
    JOBS_HOURLY_ASSET,
    REQUESTS_MINUTE_ASSET,
    build_rollup_asset,
)
from analytics.defs.partitions import hour_partition_key
from analytics.defs.resources import RESOURCE_KEY, AnalyticsResource
from analytics.rollups.api_usage import refresh_api_usage
from analytics.rollups.engine import floor_hour
from analytics.rollups.jobs import refresh_jobs
from analytics.rollups.requests import refresh_requests
from analytics.settings import analytics_settings
from housekeeping.config import load_config, parse_config
from housekeeping.database import AppDatabase
from housekeeping.demo.seed import create_schema
from housekeeping.policies import run_policy
from tests.support.analytics_data import (
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
ROUTES = ["/api/v1/users/:id", "/api/v1/orders", "/health", "/api/v1/search"]


def issue_requests(hour: datetime, count: int = 1_590, seed: int = 11) -> list[tuple]:
    """The issue's hour: 1,590 requests over four routes, 2 % server errors, lognormal latency."""
    rng = np.random.default_rng(seed)
    offsets = np.sort(rng.uniform(0, 3600, count))
    rows = []
    for offset in offsets:
        status = int(
            rng.choice(
                [200, 201, 304, 404, 429, 500, 503], p=[0.7, 0.1, 0.05, 0.08, 0.05, 0.01, 0.01]
            )
        )
        rows.append(
            (
                hour + timedelta(seconds=float(offset)),
                str(rng.choice(["GET", "POST"])),
                str(rng.choice(ROUTES, p=[0.4, 0.3, 0.2, 0.1])),
                status,
                round(float(rng.lognormal(4.5, 0.8)), 3),
            )
        )
    return rows


def count_between(db: AppDatabase, table: str, column: str, start: datetime, end: datetime) -> int:
    with db.connect() as conn:
        return conn.execute(
            sa.text(f"SELECT count(*) FROM {table} WHERE {column} >= :start AND {column} < :end"),
            {"start": stored(db, start), "end": stored(db, end)},
        ).scalar_one()


AGE_30D = {"kind": "age", "cutoff_column": "ts", "retention": "30d"}


def policy_config(tmp_path, table: str, **policy):
    """A config with one cleanup policy on ``table`` (named after it), archive in tmp_path."""
    return parse_config(
        {
            "archive": {"root": str(tmp_path / "archive")},
            "policies": {table: {"table": table, "max_delete_fraction": 1.0, **policy}},
        }
    )


# ------------------------------------------------------------------------------------------
# Requests, through real Dagster runs


def write_config(tmp_path, *, table: str, policy: dict, partitions_start: date) -> str:
    path = tmp_path / "hk.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "state_database_url": f"sqlite:///{tmp_path / 'state.db'}",
                "archive": {"root": str(tmp_path / "archive")},
                "policies": {table: {"table": table, "max_delete_fraction": 1.0, **policy}},
                "analytics": {
                    "root": str(tmp_path / "analytics"),
                    "database": str(tmp_path / "analytics" / "rollups.duckdb"),
                    "partitions_start": partitions_start.isoformat(),
                },
            }
        )
    )
    return str(path)


def materialize(config_file, instance, row, partition_key) -> dg.AssetMaterialization:
    config = load_config(config_file)
    settings = analytics_settings(config)
    result = dg.materialize(
        [build_rollup_asset(row, settings, settings.day_timezone(config), config.owner)],
        instance=instance,
        resources={RESOURCE_KEY: AnalyticsResource(config_file=config_file)},
        partition_key=partition_key,
    )
    assert result.success
    [key] = row.keys
    [materialization] = result.asset_materializations_for_node("__".join(key.path))
    return materialization


def published(config_file: str, sql: str) -> list[tuple]:
    settings = analytics_settings(load_config(config_file))
    with duckdb.connect(str(settings.database_path), read_only=True) as connection:
        return connection.execute(sql).fetchall()


HOUR_NUMBERS = (
    "SELECT requests, status_2xx, status_3xx, status_4xx, status_5xx, status_429, "
    "status_other, latency_min_ms, latency_max_ms, latency_avg_ms, latency_p50_ms, "
    "latency_p95_ms, latency_p99_ms FROM requests_hourly_overall"
)
MINUTES = "SELECT * FROM requests_minute ORDER BY minute, route, method"


@pytest.mark.parametrize("archive", [True, False], ids=["archive", "no-archive"])
def test_rematerialising_an_hour_after_the_retention_deleted_it_publishes_the_same_numbers(
    app_url, tmp_path, instance, monkeypatch, archive
):
    monkeypatch.setenv("DATABASE_URL", app_url)
    db = empty_reference_schema(app_url)
    now = db.clock()
    hour = floor_hour(now - timedelta(days=31))  # past the 30-day retention, hour end included
    insert_requests(db, issue_requests(hour))
    insert_requests(db, [(now - H, "GET", "/health", 200, 3.0)])  # a recent row that stays
    config_file = write_config(
        tmp_path,
        table="request_logs",
        policy={**AGE_30D, "archive": archive},
        partitions_start=hour.date() - timedelta(days=1),
    )
    key = hour_partition_key(hour)
    first = materialize(config_file, instance, REQUESTS_MINUTE_ASSET, key)
    numbers, minutes = published(config_file, HOUR_NUMBERS), published(config_file, MINUTES)
    assert numbers[0][0] == first.metadata["rows_read"].value == 1_590

    cleanup = run_policy(db, load_config(config_file), "request_logs")  # what retention does
    assert cleanup.deleted == 1_590
    assert count_between(db, "request_logs", "ts", hour, hour + H) == 0
    again = materialize(config_file, instance, REQUESTS_MINUTE_ASSET, key)

    assert published(config_file, HOUR_NUMBERS) == numbers
    assert published(config_file, MINUTES) == minutes
    metadata = {name: value.value for name, value in again.metadata.items()}
    if archive:
        assert (metadata["rows_from_archive"], metadata["kept_from_published"]) == (1_590, 0)
        assert "kept_reason" not in metadata
    else:
        minutes_with_requests = len({row[0] for row in minutes})
        assert metadata["rows_from_archive"] == 0
        assert metadata["kept_from_published"] == minutes_with_requests
        assert (
            "policy request_logs deletes rows of request_logs without archiving"
            in (metadata["kept_reason"])
        )
    assert metadata["rows_without_timestamp"] == 0


def test_a_partition_dropped_whole_by_the_retention_is_read_back_from_its_archive(pg_url, tmp_path):
    now = datetime.now(UTC)
    create_schema(pg_url, partitioned_request_logs=True, days=40, now=now)
    db = AppDatabase(pg_url)
    hour = floor_hour(db.clock() - timedelta(days=31))
    insert_requests(db, issue_requests(hour))
    config = policy_config(tmp_path, "request_logs", archive=True, **AGE_30D)
    settings = make_settings(tmp_path)
    store = make_store(settings)
    refresh_requests(db, store, settings, hour, hour + H, config=config)
    path = store.partition_path(REQUESTS_MINUTE.name, hour.strftime("%Y-%m-%dT%H"))
    before = duckdb.sql(f"SELECT * FROM read_parquet('{path}') ORDER BY ALL").fetchall()

    cleanup = run_policy(db, config, "request_logs")
    assert cleanup.partitions_dropped > 0 and cleanup.deleted >= 1_590
    result = refresh_requests(db, store, settings, hour, hour + H, config=config)

    assert (result.rows_from_archive, result.kept_from_published) == (1_590, 0)
    assert duckdb.sql(f"SELECT * FROM read_parquet('{path}') ORDER BY ALL").fetchall() == before


def test_a_lower_recount_keeps_only_the_minutes_that_lost_rows_and_late_rows_still_count(
    app_url, tmp_path
):
    db = empty_reference_schema(app_url)
    hour = datetime(2026, 11, 19, 10, tzinfo=UTC)
    insert_requests(db, issue_requests(hour))
    settings = make_settings(tmp_path)
    store = make_store(settings)
    refresh_requests(db, store, settings, hour, hour + H)
    publish(store, settings)
    before = query(settings, "SELECT minute, sum(requests) AS n FROM requests_minute GROUP BY ALL")
    before = dict(zip(before.minute, before.n, strict=True))
    minute_5 = hour + 5 * M
    with db.engine.begin() as conn:  # rows deleted by something other than housekeeping
        conn.execute(
            sa.text("DELETE FROM request_logs WHERE ts >= :start AND ts < :end"),
            {"start": stored(db, minute_5), "end": stored(db, minute_5 + M)},
        )
    insert_requests(db, [(hour + 10 * M + timedelta(seconds=1), "GET", "/late", 200, 9.0)])

    result = refresh_requests(db, store, settings, hour, hour + H)

    after = query(settings, "SELECT minute, sum(requests) AS n FROM requests_minute GROUP BY ALL")
    after = dict(zip(after.minute, after.n, strict=True))
    naive = {
        name: (hour + offset * M).replace(tzinfo=None) for name, offset in (("5", 5), ("10", 10))
    }
    assert result.kept_from_published == 1
    assert "no housekeeping policy cleans request_logs" in result.kept_reason
    assert after[naive["5"]] == before[naive["5"]] > 0  # kept from the published file
    assert after[naive["10"]] == before[naive["10"]] + 1  # the late row is counted
    assert {k: v for k, v in after.items() if k != naive["10"]} == {
        k: v for k, v in before.items() if k != naive["10"]
    }


# ------------------------------------------------------------------------------------------
# Jobs


def finished_jobs(hour: datetime, seed: int = 5) -> list[dict]:
    """Three hours of jobs; some wait past the first hour's end, so its backlog counts them."""
    rng = np.random.default_rng(seed)
    jobs = []
    for number in range(300):
        created = hour + timedelta(seconds=float(rng.uniform(0, 3 * 3600)))
        started = created + timedelta(seconds=float(rng.uniform(1, 1800)))
        finished = started + timedelta(seconds=float(rng.lognormal(3, 1)))
        jobs.append(
            job(
                ["email", "webhooks"][number % 2],
                ["send", "retry"][number % 3 == 0],
                "failed" if rng.random() < 0.1 else "completed",
                created,
                started,
                finished,
                int(rng.integers(1, 4)),
            )
        )
    return jobs


JOBS_24H = {
    "kind": "jobs",
    "cutoff_column": "finished_at",
    "status_column": "status",
    "statuses": {"completed": {"retention": "24h"}, "failed": {"retention": "24h"}},
}


JOB_NUMBERS = "SELECT * FROM jobs_hourly ORDER BY hour, queue, name"


@pytest.mark.parametrize("archive", [True, False], ids=["archive", "no-archive"])
def test_rematerialising_job_hours_after_the_job_retention_publishes_the_same_numbers(
    app_url, tmp_path, archive
):
    db = empty_reference_schema(app_url)
    now = db.clock()
    first = floor_hour(now - timedelta(days=3))
    insert_jobs(db, finished_jobs(first))
    config = policy_config(tmp_path, "jobs", archive=archive, **JOBS_24H)
    settings = make_settings(tmp_path)
    store = make_store(settings)
    publish(store, settings)
    refresh_jobs(db, store, settings, first, first + 4 * H, now, config=config)
    before = query(settings, JOB_NUMBERS)
    assert before.backlog.sum() > 0 and before.created.sum() == 300

    cleanup = run_policy(db, config, "jobs")
    assert cleanup.deleted == 300
    result = refresh_jobs(db, store, settings, first, first + 4 * H, db.clock(), config=config)

    assert query(settings, JOB_NUMBERS).equals(before)
    if archive:
        assert (result.rows_from_archive, result.kept_from_published) == (300, 0)
    else:
        assert result.kept_from_published == 4
        assert "policy jobs deletes rows of jobs without archiving" in result.kept_reason


def test_the_backlog_of_the_running_hour_may_fall_when_waiting_jobs_start(sqlite_url, tmp_path):
    db = empty_reference_schema(sqlite_url)
    hour = datetime(2026, 11, 20, 12, tzinfo=UTC)
    insert_jobs(db, [job("q", "n", "waiting", hour + M)])
    settings = make_settings(tmp_path)
    store = make_store(settings)
    publish(store, settings)
    refresh_jobs(db, store, settings, hour, hour + H, hour + 10 * M)
    with db.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE jobs SET status = 'active', started_at = :at"),
            {"at": stored(db, hour + 20 * M)},
        )

    result = refresh_jobs(db, store, settings, hour, hour + H, hour + 30 * M)

    assert result.kept_from_published == 0
    assert query(settings, "SELECT backlog FROM jobs_hourly").backlog.tolist() == [0]


# ------------------------------------------------------------------------------------------
# API usage


def insert_api_calls(db: AppDatabase, day_start: datetime, count: int = 400) -> None:
    rng = np.random.default_rng(3)
    with db.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO api_usage (ts, service_name, endpoint, response_time_ms, "
                "tokens_used, cost_usd, success) VALUES (:ts, :service, :endpoint, :ms, "
                ":tokens, :cost, :success)"
            ),
            [
                {
                    "ts": stored(db, day_start + timedelta(seconds=float(rng.uniform(0, 86400)))),
                    "service": ["openai", "stripe"][number % 2],
                    "endpoint": ["/v1/chat", "/v1/charges", "/v1/embed"][number % 3],
                    "ms": float(rng.lognormal(6, 0.5)),
                    "tokens": int(rng.integers(0, 4000)),
                    "cost": round(float(rng.uniform(0, 0.05)), 5),
                    "success": bool(rng.random() > 0.05),
                }
                for number in range(count)
            ],
        )


@pytest.mark.parametrize("archive", [True, False], ids=["archive", "no-archive"])
def test_rematerialising_an_api_usage_day_after_the_retention_publishes_the_same_numbers(
    app_url, tmp_path, archive
):
    db = empty_reference_schema(app_url)
    day = (db.clock() - timedelta(days=35)).date()
    insert_api_calls(db, datetime.combine(day, datetime.min.time(), UTC))
    config = policy_config(tmp_path, "api_usage", archive=archive, **AGE_30D)
    settings = make_settings(tmp_path)
    store = make_store(settings)
    publish(store, settings)
    refresh_api_usage(db, store, settings, day, "UTC", config=config)
    before = query(settings, "SELECT * FROM api_usage_daily ORDER BY service, endpoint")

    assert run_policy(db, config, "api_usage").deleted == 400
    result = refresh_api_usage(db, store, settings, day, "UTC", config=config)

    assert query(settings, "SELECT * FROM api_usage_daily ORDER BY service, endpoint").equals(
        before
    )
    if archive:
        assert (result.rows_from_archive, result.kept_from_published) == (400, 0)
    else:
        assert result.kept_from_published == 1
        assert "policy api_usage deletes rows of api_usage" in result.kept_reason


@pytest.mark.parametrize(
    "row", [JOBS_HOURLY_ASSET, API_USAGE_DAILY_ASSET], ids=["jobs", "api_usage"]
)
def test_the_jobs_and_api_usage_assets_report_what_they_kept(
    sqlite_url, tmp_path, instance, monkeypatch, row
):
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    db = empty_reference_schema(sqlite_url)
    hour = floor_hour(db.clock() - timedelta(days=3))
    insert_jobs(db, finished_jobs(hour))
    insert_api_calls(db, datetime.combine(hour.date(), datetime.min.time(), UTC))
    config_file = write_config(
        tmp_path,
        table="jobs",
        policy=JOBS_24H,
        partitions_start=hour.date() - timedelta(days=1),
    )
    key = hour_partition_key(hour) if row is JOBS_HOURLY_ASSET else hour.date().isoformat()
    materialize(config_file, instance, row, key)
    run_policy(db, load_config(config_file), "jobs")
    with db.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM api_usage"))  # outside housekeeping

    again = materialize(config_file, instance, row, key)

    assert again.metadata["kept_from_published"].value == 1
    table = "jobs" if row is JOBS_HOURLY_ASSET else "api_usage"
    expected = (
        "policy jobs deletes rows of jobs without archiving"
        if table == "jobs"
        else "no housekeeping policy cleans api_usage"
    )
    assert expected in again.metadata["kept_reason"].value
