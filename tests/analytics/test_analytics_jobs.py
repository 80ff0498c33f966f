"""Jobs per hour x queue x name: counts equal an independent computation over the raw rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from analytics.alerts.metrics import MetricSource
from analytics.alerts.rules import parse_rules
from analytics.datasets import JOBS_HOURLY
from analytics.extract import SourceError
from analytics.rollups.jobs import refresh_jobs
from tests.support.analytics_data import (
    NOW,
    empty_reference_schema,
    insert_jobs,
    job,
    make_settings,
    make_store,
    publish,
    query,
    random_jobs,
)

H = timedelta(hours=1)
M = timedelta(minutes=1)
START = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)  # NOW is 12:30


JOBS = [
    # 08:xx: two emails complete, one fails after a retry
    job("email", "welcome", "completed", START + 1 * M, START + 2 * M, START + 3 * M),
    job("email", "welcome", "completed", START + 5 * M, START + 6 * M, START + 7 * M),
    job("email", "digest", "failed", START + 10 * M, START + 11 * M, START + 14 * M, attempts=3),
    # created 08:50, waits until 09:10: in the 08:00 hour's backlog
    job("email", "digest", "completed", START + 50 * M, START + 70 * M, START + 71 * M),
    # webhooks: waiting since 09:30, never started (backlog of 09, 10, 11, 12)
    job("webhooks", "deliver", "waiting", START + 90 * M),
    job("webhooks", "deliver", "delayed", START + 95 * M),
    # reports: active since 09:00 and still running: stuck from 11:00 (2 h) on
    job("reports", "monthly", "active", START + 59 * M, START + 60 * M),
    # finished at 12:10 after 1 h 5 min: never stuck
    job(
        "reports",
        "weekly",
        "completed",
        START + 3 * H,
        START + 3 * H + 5 * M,
        START + 4 * H + 10 * M,
    ),
]


def rows_by_key(settings):
    frame = query(settings, "SELECT * FROM jobs_hourly ORDER BY hour, queue, name")
    return {
        (row.hour.to_pydatetime().replace(tzinfo=UTC), row.queue, row.name): row
        for row in frame.itertuples()
    }


def test_hourly_outcomes_durations_backlog_and_stuck(app_url, tmp_path):
    db = empty_reference_schema(app_url)
    insert_jobs(db, JOBS)
    settings = make_settings(tmp_path)
    store = make_store(settings)
    publish(store, settings)

    result = refresh_jobs(db, store, settings, START, START + 5 * H, now=NOW)

    assert result.partitions == tuple(f"2026-11-20T{hour:02d}" for hour in range(8, 13))
    rows = rows_by_key(settings)
    welcome = rows[(START, "email", "welcome")]
    assert (welcome.created, welcome.completed, welcome.failed, welcome.retried) == (2, 2, 0, 0)
    assert welcome.duration_avg_ms == pytest.approx(60_000.0)
    digest = rows[(START, "email", "digest")]
    assert (digest.created, digest.completed, digest.failed, digest.retried) == (2, 0, 1, 1)
    assert digest.backlog == 1  # created 08:50, started 09:10
    assert rows[(START + H, "email", "digest")].completed == 1
    for hour in (1, 2, 3):
        assert rows[(START + hour * H, "webhooks", "deliver")].backlog == 2
    # 12:00 is the current hour: its snapshot is at NOW (12:30)
    assert rows[(START + 4 * H, "webhooks", "deliver")].backlog == 2
    assert rows[(START, "reports", "monthly")].created == 1
    # an hour without events nor a non-zero snapshot has no row: 10:00 + 1 h is 2 h running,
    # not more than stuck_after
    assert (START + 2 * H, "reports", "monthly") not in rows
    assert rows[(START + 3 * H, "reports", "monthly")].stuck == 1  # at 12:00: 3 h running
    assert rows[(START + 4 * H, "reports", "monthly")].stuck == 1
    weekly = rows[(START + 4 * H, "reports", "weekly")]
    assert weekly.completed == 1 and weekly.stuck == 0
    assert weekly.duration_p95_ms == pytest.approx(65 * 60_000.0)


def test_counts_match_the_raw_rows_on_generated_jobs(app_url, tmp_path):
    rows = random_jobs(3000, 7, START, NOW)
    db = empty_reference_schema(app_url)
    insert_jobs(db, rows)
    settings = make_settings(tmp_path)
    store = make_store(settings)
    publish(store, settings)

    refresh_jobs(db, store, settings, START, START + 5 * H, now=NOW)

    published = query(
        settings,
        "SELECT sum(created) AS created, sum(completed) AS completed, sum(failed) AS failed, "
        "sum(retried) AS retried FROM jobs_hourly",
    ).iloc[0]
    done = [row for row in rows if row["status"] in ("completed", "failed")]
    assert published.created == len(rows)
    assert published.completed == sum(1 for row in done if row["status"] == "completed")
    assert published.failed == sum(1 for row in done if row["status"] == "failed")
    assert published.retried == sum(1 for row in done if row["attempts"] > 1)
    # per queue and hour, failures equal the raw count
    frame = query(
        settings, "SELECT hour, queue, sum(failed) AS failed FROM jobs_hourly GROUP BY ALL"
    )
    for item in frame.itertuples():
        hour = item.hour.to_pydatetime().replace(tzinfo=UTC)
        expected = sum(
            1
            for row in done
            if row["status"] == "failed"
            and row["queue"] == item.queue
            and hour <= row["finished_at"] < hour + H
        )
        assert item.failed == expected


def test_rematerialising_an_hour_is_idempotent_and_picks_up_late_rows(sqlite_url, tmp_path):
    db = empty_reference_schema(sqlite_url)
    insert_jobs(db, JOBS)
    settings = make_settings(tmp_path)
    store = make_store(settings)
    publish(store, settings)
    refresh_jobs(db, store, settings, START, START + H, now=NOW)
    before = query(settings, "SELECT * FROM jobs_hourly ORDER BY queue, name")
    refresh_jobs(db, store, settings, START, START + H, now=NOW)
    assert query(settings, "SELECT * FROM jobs_hourly ORDER BY queue, name").equals(before)

    insert_jobs(
        db, [job("email", "late", "failed", START + 30 * M, START + 31 * M, START + 32 * M)]
    )
    refresh_jobs(db, store, settings, START, START + H, now=NOW)
    after = query(settings, "SELECT sum(failed) AS failed FROM jobs_hourly").iloc[0]
    assert after.failed == 2


def test_the_job_rules_read_the_published_jobs(sqlite_url, tmp_path):
    db = empty_reference_schema(sqlite_url)
    insert_jobs(db, JOBS)
    settings = make_settings(tmp_path)
    store = make_store(settings)
    publish(store, settings)
    refresh_jobs(db, store, settings, START, START + 5 * H, now=NOW)
    rules = parse_rules(
        {
            "rules": [
                {
                    "name": "backlog",
                    "metric": "job_backlog",
                    "group_by": "queue",
                    "window": "1h",
                    "thresholds": {"warning": {"value": 1}},
                },
                {
                    "name": "stuck",
                    "metric": "jobs_stuck",
                    "group_by": "queue",
                    "window": "1h",
                    "thresholds": {"high": {"value": 0}},
                },
                {
                    "name": "failures",
                    "metric": "job_failure_rate",
                    "group_by": "queue",
                    "window": "5h",
                    "thresholds": {"warning": {"value": 0.05}},
                },
            ]
        }
    )
    with MetricSource(settings.database_path) as metrics:
        values = {rule.name: metrics.values(rule, NOW) for rule in rules.rules}
    # the newest snapshot: the current hour's, taken at NOW
    assert values["backlog"] == {"webhooks": 2.0, "reports": 0.0}
    assert values["stuck"]["reports"] == 1.0
    assert values["failures"]["email"] == pytest.approx(1 / 4)


def test_a_missing_jobs_column_is_named(sqlite_url, tmp_path):
    db = empty_reference_schema(sqlite_url)
    settings = make_settings(tmp_path, sources={"jobs": {"attempts": "tries"}})
    store = make_store(settings)
    with pytest.raises(
        SourceError,
        match=r"analytics.sources.jobs.attempts: column 'tries' does not exist in table 'jobs'",
    ):
        refresh_jobs(db, store, settings, START, START + H, now=NOW)
    assert not (settings.root_path / JOBS_HOURLY.name).exists() or not list(
        (settings.root_path / JOBS_HOURLY.name).glob("2026*.parquet")
    )
