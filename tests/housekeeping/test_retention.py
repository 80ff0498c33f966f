"""Log and job retention: age per table, per job status, and keep-last-N per queue."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from housekeeping.archive import LocalArchiveStore, TableArchive
from housekeeping.config import parse_config
from housekeeping.database import AppDatabase
from housekeeping.policies import RunOptions, run_policy
from tests.support.app_tables import count, create_jobs, create_request_logs


@pytest.fixture
def db(app_url):
    database = AppDatabase(app_url)
    yield database
    database.dispose()


def retention_config(tmp_path, name, policy):
    return parse_config(
        {
            "archive": {"root": str(tmp_path / "archive")},
            "safety": {"max_delete_fraction": 1.0},
            "batch": {"initial_size": 20, "min_size": 5, "max_size": 50},
            "policies": {name: policy},
        }
    )


def test_request_logs_older_than_retention_are_archived_then_deleted(db, tmp_path):
    # 10 rows a day for 40 days: 30-day retention keeps the newest 30 days.
    create_request_logs(
        db, hours_back=[day * 24 + hour * 2.4 + 1 for day in range(40) for hour in range(10)]
    )
    policy = {
        "kind": "age",
        "table": "request_logs",
        "cutoff_column": "ts",
        "retention": "30d",
        "archive": True,
    }

    result = run_policy(db, retention_config(tmp_path, "request_logs", policy), "request_logs")

    assert count(db, "request_logs") == 300
    assert result.deleted == 100 and result.remaining_expired == 0
    archived = TableArchive(
        LocalArchiveStore(tmp_path / "archive"), "request_logs", "ts"
    ).read_all()
    assert archived.num_rows == 100
    assert sorted(archived.column("request_id").to_pylist()) == sorted(
        f"r{n}" for n in range(300, 400)
    )


def jobs_at(now, queue, status, ages_hours):
    return [
        {
            "queue": queue,
            "status": status,
            "finished_at": now - timedelta(hours=age) if age is not None else None,
        }
        for age in ages_hours
    ]


def test_completed_and_failed_jobs_have_their_own_retention_and_unfinished_jobs_stay(db, tmp_path):
    now = datetime.now(UTC)
    create_jobs(
        db,
        jobs_at(now, "emails", "completed", [1, 23, 25, 48])
        + jobs_at(now, "emails", "failed", [25, 24 * 6, 24 * 8])
        + jobs_at(now, "emails", "active", [None])
        + jobs_at(now, "emails", "waiting", [None])
        + [{"queue": "emails", "status": "delayed", "finished_at": now - timedelta(days=60)}],
    )
    policy = {
        "kind": "jobs",
        "table": "jobs",
        "cutoff_column": "finished_at",
        "status_column": "status",
        "queue_column": "queue",
        "statuses": {"completed": {"retention": "24h"}, "failed": {"retention": "7d"}},
    }

    result = run_policy(db, retention_config(tmp_path, "jobs", policy), "jobs")

    assert result.deleted == 3  # completed 25 h and 48 h, failed 8 days
    assert count(db, "jobs", "status = 'completed'") == 2
    assert count(db, "jobs", "status = 'failed'") == 2
    assert count(db, "jobs", "status IN ('active', 'waiting', 'delayed')") == 3


def test_keep_last_keeps_the_newest_n_per_queue_even_within_the_age(db, tmp_path):
    now = datetime.now(UTC)
    create_jobs(
        db,
        jobs_at(now, "emails", "completed", [1, 2, 3, 4, 5, 30])
        + jobs_at(now, "reports", "completed", [1, 2])
        + jobs_at(now, "billing", "completed", [40, 50]),
    )
    policy = {
        "kind": "jobs",
        "table": "jobs",
        "cutoff_column": "finished_at",
        "status_column": "status",
        "queue_column": "queue",
        "statuses": {"completed": {"retention": "24h", "keep_last": 3}},
    }

    dry = run_policy(
        db, retention_config(tmp_path, "jobs", policy), "jobs", options=RunOptions(dry_run=True)
    )
    result = run_policy(db, retention_config(tmp_path, "jobs", policy), "jobs")

    # emails: beyond the newest 3 (4 h, 5 h) and older than 24 h (30 h) go; reports stays whole;
    # billing: both older than 24 h go (age and count together, as BullMQ's {age, count}).
    assert dry.expected_deleted == result.deleted == 5
    assert count(db, "jobs", "queue = 'emails'") == 3
    assert count(db, "jobs", "queue = 'reports'") == 2
    assert count(db, "jobs", "queue = 'billing'") == 0
