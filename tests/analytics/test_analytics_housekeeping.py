"""Housekeeping history, token revocations and table stats: counts equal the raw rows exactly."""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
import yaml

from analytics.datasets import (
    HOUSEKEEPING_RUNS,
    TABLE_STATS,
    TOKEN_REVOCATIONS_BY_USER,
    TOKEN_REVOCATIONS_DAILY,
)
from analytics.defs.assets import asset_key
from analytics.defs.definitions import build_analytics_defs
from analytics.defs.resources import RESOURCE_KEY, AnalyticsResource
from analytics.extract import SourceError
from analytics.rollups.engine import day_bounds
from analytics.rollups.housekeeping_runs import (
    refresh_housekeeping_runs,
    refresh_housekeeping_summary,
)
from analytics.rollups.table_stats import snapshot_table_stats
from analytics.rollups.token_revocations import refresh_token_revocations, user_hash_key
from housekeeping.config import ConfigError, load_config, parse_config
from housekeeping.history import PolicyRun, RunHistory, RunStatus
from housekeeping.policies import RunOptions
from tests.support.analytics_data import (
    empty_reference_schema,
    make_settings,
    make_store,
    publish,
    query,
    stored,
)

DAY = date(2026, 11, 20)
HOUSEKEEPING_RUNS_KEY = asset_key(HOUSEKEEPING_RUNS)
TABLE_STATS_KEY = asset_key(TABLE_STATS)
TOKEN_REVOCATIONS_DAILY_KEY = asset_key(TOKEN_REVOCATIONS_DAILY)
TOKEN_REVOCATIONS_BY_USER_KEY = asset_key(TOKEN_REVOCATIONS_BY_USER)


# ------------------------------------------------------------------------------------------
# Housekeeping history


def record(history, policy, status, finished_at, deleted=0, duration_ms=100.0, error=None):
    history.record(
        PolicyRun(
            policy=policy,
            table_name=f"{policy}_table",
            status=status,
            started_at=finished_at - timedelta(seconds=1),
            finished_at=finished_at,
            deleted=deleted,
            expected_deleted=deleted,
            duration_ms=duration_ms,
            error=error,
        )
    )


@pytest.fixture
def history(app_url):
    """The run history in a real state database: a SQLite file, or a PostgreSQL schema."""
    store = RunHistory(app_url)
    yield store
    store.dispose()


def test_a_day_of_housekeeping_runs_holds_exactly_the_runs_that_finished_that_day(
    history, tmp_path
):
    start, end = day_bounds(DAY, "Europe/Berlin")  # 2026-11-19 23:00 .. 2026-11-20 23:00 UTC
    rng = random.Random(5)
    runs = []
    for number in range(60):
        finished = start - timedelta(hours=3) + timedelta(minutes=rng.uniform(0, 30 * 60))
        status = RunStatus.FAILED if number % 7 == 0 else RunStatus.SUCCESS
        deleted = 0 if status is RunStatus.FAILED else rng.randint(0, 500)
        policy = ("revoked_tokens", "request_logs")[number % 2]
        error = "OperationalError: boom" if status is RunStatus.FAILED else None
        record(history, policy, status, finished, deleted, rng.uniform(10, 900), error)
        runs.append((policy, status, finished, deleted))
    settings = make_settings(tmp_path, timezone="Europe/Berlin")
    store = make_store(settings)
    publish(store, settings)

    result = refresh_housekeeping_runs(history, store, DAY, "Europe/Berlin")
    again = refresh_housekeeping_runs(history, store, DAY, "Europe/Berlin")

    inside = [run for run in runs if start <= run[2] < end]
    assert result.rows_written == again.rows_written == len(inside) > 0
    frame = query(settings, "SELECT * FROM housekeeping_runs ORDER BY finished_at")
    assert len(frame) == len(inside)
    assert set(frame.day.astype(str)) == {"2026-11-20"}
    daily = query(settings, "SELECT * FROM housekeeping_daily ORDER BY policy")
    for row in daily.itertuples():
        mine = [run for run in inside if run[0] == row.policy]
        assert row.runs == len(mine)
        assert row.failed_runs == sum(1 for run in mine if run[1] is RunStatus.FAILED)
        assert row.deleted == sum(run[3] for run in mine)


def test_an_empty_day_is_zero_rows_not_a_failure(history, tmp_path):
    settings = make_settings(tmp_path)
    store = make_store(settings)
    publish(store, settings)
    result = refresh_housekeeping_runs(history, store, DAY, "UTC")
    assert result.rows_written == 0
    assert query(settings, "SELECT count(*) AS n FROM housekeeping_runs").n[0] == 0


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        (["success", "success"], "healthy"),
        (["success", "failed", "failed"], "degraded"),
        (["failed", "success", "failed", "failed", "failed"], "critical"),
    ],
)
def test_the_summary_shows_the_reference_metrics_and_the_status_hk_status_shows(
    history, tmp_path, statuses, expected
):
    first = datetime(2026, 11, 1, 3, tzinfo=UTC)
    for number, status in enumerate(statuses):  # oldest first
        failed = status == "failed"
        record(
            history,
            "revoked_tokens",
            RunStatus(status),
            first + timedelta(days=number),
            deleted=0 if failed else 10 * (number + 1),
            duration_ms=200.0 + number,
            error=f"error {number}" if failed else None,
        )
    settings = make_settings(tmp_path)
    store = make_store(settings)
    publish(store, settings)

    refresh_housekeeping_summary(
        history,
        store,
        {"revoked_tokens": "revoked_tokens", "audit_logs": "audit_logs"},
        datetime.now(UTC),
    )

    frame = query(settings, "SELECT * FROM housekeeping_summary ORDER BY policy")
    assert list(frame.policy) == ["audit_logs", "revoked_tokens"]
    never_ran, tokens = frame.itertuples()
    assert (never_ran.total_runs, never_ran.status) == (0, "healthy")
    health = history.health("revoked_tokens")  # what hk status prints
    assert tokens.status == health.status.value == expected
    successes = [n for n, s in enumerate(statuses) if s == "success"]
    failures = [n for n, s in enumerate(statuses) if s == "failed"]
    assert tokens.total_runs == len(statuses)
    assert tokens.successful_runs == len(successes)
    assert tokens.failed_runs == len(failures)
    assert tokens.total_deleted == sum(10 * (n + 1) for n in successes)
    completed = [200.0 + n for n in successes]
    assert tokens.average_cleanup_ms == pytest.approx(sum(completed) / len(completed))
    assert tokens.last_success == (first + timedelta(days=successes[-1])).replace(tzinfo=None)
    if failures:
        assert tokens.last_failure == (first + timedelta(days=failures[-1])).replace(tzinfo=None)
        assert tokens.last_error == f"error {failures[-1]}"
    else:
        assert tokens.last_error is None


# ------------------------------------------------------------------------------------------
# Token revocations


def token_config(tmp_path, *, archive: bool):
    return parse_config(
        {
            "state_database_url": f"sqlite:///{tmp_path / 'state.db'}",
            "archive": {"root": str(tmp_path / "archive")},
            "policies": {
                "revoked_tokens": {
                    "kind": "expired",
                    "table": "revoked_tokens",
                    "cutoff_column": "expires_at",
                    "archive": archive,
                    "max_delete_fraction": 1.0,
                }
            },
        }
    )


def insert_tokens(db, tokens):
    with db.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO revoked_tokens (user_id, token_hash, revoked_at, expires_at) "
                "VALUES (:user_id, :token_hash, :revoked_at, :expires_at)"
            ),
            [
                {
                    "user_id": user,
                    "token_hash": f"h{number}",
                    "revoked_at": stored(db, revoked),
                    "expires_at": stored(db, expires),
                }
                for number, (user, revoked, expires) in enumerate(tokens)
            ],
        )


def generate_tokens(day: date, now: datetime, count: int = 600):
    """Tokens revoked over three days around ``day``; some expired (an hour clear of now)."""
    rng = random.Random(11)
    start = datetime.combine(day, datetime.min.time(), UTC)
    tokens = []
    for _ in range(count):
        revoked = start - timedelta(days=1) + timedelta(seconds=rng.uniform(0, 3 * 86400))
        expires = revoked + timedelta(hours=rng.uniform(1, 72))
        if abs(expires - now) < timedelta(hours=1):
            expires -= timedelta(hours=2)  # never near the cutoff: the cleanup and we agree
        # user ids skewed: a few users revoke a lot
        tokens.append((int(rng.paretovariate(1.2)) % 40 + 1, revoked, expires))
    return tokens


def expected_counts(tokens, day: date, now: datetime):
    start = datetime.combine(day, datetime.min.time(), UTC)
    end = start + timedelta(days=1)
    revoked = [token for token in tokens if start <= token[1] < end]
    expired = [token for token in tokens if start <= token[2] < min(end, now)]
    per_user: dict[int, int] = {}
    for user, _, _ in revoked:
        per_user[user] = per_user.get(user, 0) + 1
    return len(revoked), len(expired), per_user


def test_token_revocations_match_the_raw_rows_and_survive_the_cleanup_through_the_archive(
    app_url, tmp_path, monkeypatch
):
    monkeypatch.setenv("HK_USER_HASH_KEY", "test-key")
    db = empty_reference_schema(app_url)
    now = db.clock()
    day = (now - timedelta(days=3)).date()
    tokens = generate_tokens(day, now)
    insert_tokens(db, tokens)
    config = token_config(tmp_path, archive=True)
    history = RunHistory(config.state_database_url)
    settings = make_settings(tmp_path)
    store = make_store(settings)
    publish(store, settings)
    revoked, expired, per_user = expected_counts(tokens, day, now)

    before = refresh_token_revocations(db, store, settings, config, history, day, "UTC", now)
    published_before = query(settings, "SELECT * FROM token_revocations_daily").iloc[0]
    # the real cleanup, recorded in the history, archives and deletes the expired tokens
    from housekeeping.policies import run_and_record

    cleanup = run_and_record(
        history, db, config, "revoked_tokens", options=RunOptions(allow_large_delete=True)
    )
    assert cleanup.deleted > 0
    cleanup_day = history.recent("revoked_tokens")[0].finished_at.date()
    after = refresh_token_revocations(db, store, settings, config, history, day, "UTC", now)

    assert before.kept_from_published == after.kept_from_published == 0
    assert (published_before.revoked, published_before.expired) == (revoked, expired)
    row = query(settings, "SELECT * FROM token_revocations_daily").iloc[0]
    assert (row.revoked, row.expired) == (revoked, expired)  # recounted from the archive
    assert row.revoking_users == len(per_user)
    assert row.max_revocations_per_user == max(per_user.values())
    assert row.cleaned_up == (cleanup.deleted if cleanup_day == day else 0)
    by_user = query(settings, "SELECT user_hash, revoked FROM token_revocations_by_user")
    expected_by_hash = {
        hashlib.sha256(f"test-key{user}".encode()).hexdigest(): count
        for user, count in per_user.items()
    }
    assert dict(zip(by_user.user_hash, by_user.revoked, strict=True)) == expected_by_hash
    distribution = query(settings, "SELECT * FROM token_revocations_user_distribution")
    assert distribution.users.sum() == len(per_user)
    assert distribution.revocations.sum() == revoked
    history.dispose()


def test_the_cleaned_up_count_is_the_token_cleanups_deletions_of_the_day(sqlite_url, tmp_path):
    db = empty_reference_schema(sqlite_url)
    config = token_config(tmp_path, archive=False)
    history = RunHistory(config.state_database_url)
    noon = datetime.combine(DAY, datetime.min.time(), UTC) + timedelta(hours=12)
    record(history, "revoked_tokens", RunStatus.SUCCESS, noon, deleted=40)
    record(history, "revoked_tokens", RunStatus.STOPPED, noon + timedelta(hours=1), deleted=2)
    record(history, "revoked_tokens", RunStatus.SUCCESS, noon + timedelta(days=1), deleted=7)
    record(history, "request_logs", RunStatus.SUCCESS, noon, deleted=1000)
    settings = make_settings(tmp_path)
    store = make_store(settings)
    publish(store, settings)

    refresh_token_revocations(db, store, settings, config, history, DAY, "UTC", noon)

    row = query(settings, "SELECT * FROM token_revocations_daily").iloc[0]
    assert (row.revoked, row.expired, row.cleaned_up, row.revoking_users) == (0, 0, 42, 0)
    history.dispose()


def test_a_recount_after_cleanup_without_archive_keeps_the_published_counts(
    app_url, tmp_path, monkeypatch
):
    monkeypatch.setenv("HK_USER_HASH_KEY", "test-key")
    db = empty_reference_schema(app_url)
    now = db.clock()
    day = (now - timedelta(days=3)).date()
    tokens = generate_tokens(day, now)
    insert_tokens(db, tokens)
    config = token_config(tmp_path, archive=False)
    history = RunHistory(config.state_database_url)
    settings = make_settings(tmp_path)
    store = make_store(settings)
    publish(store, settings)
    revoked, expired, per_user = expected_counts(tokens, day, now)
    refresh_token_revocations(db, store, settings, config, history, day, "UTC", now)
    from housekeeping.policies import run_and_record

    run_and_record(
        history, db, config, "revoked_tokens", options=RunOptions(allow_large_delete=True)
    )

    result = refresh_token_revocations(db, store, settings, config, history, day, "UTC", now)

    assert result.kept_from_published > 0
    row = query(settings, "SELECT * FROM token_revocations_daily").iloc[0]
    assert (row.revoked, row.expired, row.revoking_users) == (revoked, expired, len(per_user))
    assert (
        query(settings, "SELECT sum(revoked) AS n FROM token_revocations_by_user").n[0] == revoked
    )
    history.dispose()


def test_published_token_files_never_hold_a_raw_user_id(sqlite_url, tmp_path, monkeypatch):
    monkeypatch.delenv("HK_USER_HASH_KEY", raising=False)
    db = empty_reference_schema(sqlite_url)
    now = db.clock()
    day = (now - timedelta(days=2)).date()
    start = datetime.combine(day, datetime.min.time(), UTC)
    insert_tokens(db, [(987654321, start + timedelta(hours=1), start + timedelta(hours=5))])
    config = token_config(tmp_path, archive=False)
    history = RunHistory(config.state_database_url)
    settings = make_settings(tmp_path)
    store = make_store(settings)
    publish(store, settings)

    refresh_token_revocations(db, store, settings, config, history, day, "UTC", now)

    key = user_hash_key(settings, config)  # a key file in the archive root, created once
    assert key and user_hash_key(settings, config) == key
    assert (Path(config.archive.root) / ".user_hash_key").stat().st_mode & 0o077 == 0
    assert not list(settings.root_path.rglob(".user_hash_key")), "analysts must not read the key"
    files = list((settings.root_path / "token_revocations_by_user").glob("2*.parquet"))
    [table] = [pq.read_table(path) for path in files]
    assert table.column("user_hash").to_pylist() == [
        hashlib.sha256(f"{key}987654321".encode()).hexdigest()
    ]
    for path in settings.root_path.rglob("*.parquet"):
        assert b"987654321" not in path.read_bytes()
    history.dispose()


def test_a_missing_token_table_or_column_is_refused_naming_it(sqlite_url, tmp_path):
    db = empty_reference_schema(sqlite_url)
    config = token_config(tmp_path, archive=False)
    history = RunHistory(config.state_database_url)
    now = db.clock()
    store_settings = make_settings(tmp_path, sources={"revoked_tokens": {"table": "tokens"}})
    store = make_store(store_settings)
    with pytest.raises(SourceError, match=r"analytics.sources.revoked_tokens.table.*'tokens'"):
        refresh_token_revocations(db, store, store_settings, config, history, DAY, "UTC", now)
    bad_column = make_settings(tmp_path, sources={"revoked_tokens": {"revoked_at": "revoked"}})
    with pytest.raises(SourceError, match=r"revoked_tokens.revoked_at.*'revoked'"):
        refresh_token_revocations(db, store, bad_column, config, history, DAY, "UTC", now)
    wrong_type = make_settings(tmp_path, sources={"revoked_tokens": {"revoked_at": "token_hash"}})
    with pytest.raises(SourceError, match=r"revoked_tokens.token_hash has type .*timestamp"):
        refresh_token_revocations(db, store, wrong_type, config, history, DAY, "UTC", now)
    history.dispose()


def test_a_foreign_file_in_the_token_archive_is_refused_naming_the_archive(sqlite_url, tmp_path):
    db = empty_reference_schema(sqlite_url)
    config = token_config(tmp_path, archive=True)
    history = RunHistory(config.state_database_url)
    foreign = tmp_path / "archive" / "revoked_tokens" / "date=2026-11-21" / "x.parquet"
    foreign.parent.mkdir(parents=True)
    foreign.write_bytes(b"not parquet")
    settings = make_settings(tmp_path)
    with pytest.raises(SourceError, match=r"the archive of revoked_tokens .* cannot be read"):
        refresh_token_revocations(
            db, make_store(settings), settings, config, history, DAY, "UTC", db.clock()
        )
    history.dispose()


# ------------------------------------------------------------------------------------------
# Table stats


def stats_config(tmp_path):
    return parse_config(
        {
            "policies": {
                "revoked_tokens": {
                    "kind": "expired",
                    "table": "revoked_tokens",
                    "cutoff_column": "expires_at",
                    "grace": "1h",
                },
                "request_logs": {
                    "kind": "age",
                    "table": "request_logs",
                    "cutoff_column": "ts",
                    "retention": "2d",
                },
            }
        }
    )


def test_table_stats_snapshots_count_rows_and_expired_rows_exactly_and_append(app_url, tmp_path):
    db = empty_reference_schema(app_url)
    now = db.clock()
    rng = random.Random(2)
    tokens = []
    for _ in range(300):
        expires = now + timedelta(hours=rng.choice([-1, 1]) * rng.uniform(3, 48))
        tokens.append((rng.randint(1, 9), expires - timedelta(days=1), expires))
    insert_tokens(db, tokens)
    request_times = [now - timedelta(hours=rng.uniform(0, 24 * 5)) for _ in range(400)]
    request_times = [
        ts for ts in request_times if abs(ts - (now - timedelta(days=2))) > timedelta(hours=1)
    ]
    from tests.support.analytics_data import insert_requests

    insert_requests(db, [(ts, "GET", "/a", 200, 1.0) for ts in request_times])
    settings = make_settings(tmp_path)
    store = make_store(settings)
    publish(store, settings)
    config = stats_config(tmp_path)

    first = snapshot_table_stats(db, store, config)
    second = snapshot_table_stats(db, store, config)

    assert first.rows_read == second.rows_read == 2
    frame = query(settings, "SELECT * FROM table_stats ORDER BY taken_at, policy")
    assert len(frame) == 4 and frame.taken_at.nunique() == 2
    latest = query(settings, "SELECT * FROM table_stats_latest ORDER BY policy")
    requests, revoked = latest.itertuples()
    assert (revoked.rows, revoked.expired_rows) == (
        len(tokens),
        sum(1 for token in tokens if token[2] < now - timedelta(hours=1)),
    )
    assert (requests.rows, requests.expired_rows) == (
        len(request_times),
        sum(1 for ts in request_times if ts < now - timedelta(days=2)),
    )
    for row in latest.itertuples():
        assert row.total_bytes == row.table_bytes + row.index_bytes or db.is_postgres
        assert row.table_bytes > 0 and row.index_bytes > 0 and row.total_bytes >= row.table_bytes


def test_table_stats_of_a_missing_table_are_refused_naming_the_policy(sqlite_url, tmp_path):
    db = empty_reference_schema(sqlite_url)
    config = parse_config(
        {
            "policies": {
                "sessions": {
                    "kind": "age",
                    "table": "sessions",
                    "cutoff_column": "ts",
                    "retention": "1d",
                }
            }
        }
    )
    settings = make_settings(tmp_path)
    with pytest.raises(ConfigError, match=r"policies.sessions.table: table 'sessions'"):
        snapshot_table_stats(db, make_store(settings), config)
    assert not (settings.root_path / "table_stats").exists()


# ------------------------------------------------------------------------------------------
# The Dagster shell


def test_the_assets_materialise_through_dagster_and_the_sensor_follows_the_history(
    app_url, tmp_path, instance, monkeypatch
):
    monkeypatch.setenv("DATABASE_URL", app_url)
    monkeypatch.setenv("HK_USER_HASH_KEY", "test-key")
    db = empty_reference_schema(app_url)
    now = db.clock()
    day = (now - timedelta(days=1)).date()
    tokens = generate_tokens(day, now, count=200)
    insert_tokens(db, tokens)
    config_file = tmp_path / "hk.yaml"
    config_file.write_text(
        yaml.safe_dump(
            {
                "state_database_url": f"sqlite:///{tmp_path / 'state.db'}",
                "archive": {"root": str(tmp_path / "archive")},
                "policies": {
                    "revoked_tokens": {
                        "kind": "expired",
                        "table": "revoked_tokens",
                        "cutoff_column": "expires_at",
                        "archive": True,
                        "max_delete_fraction": 1.0,
                    }
                },
                "analytics": {
                    "root": str(tmp_path / "analytics"),
                    "database": str(tmp_path / "analytics" / "rollups.duckdb"),
                    "partitions_start": "2026-01-01",
                },
            }
        )
    )
    config = load_config(config_file)
    history = RunHistory(config.state_database_url)
    record(
        history,
        "revoked_tokens",
        RunStatus.SUCCESS,
        datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=3),
        deleted=5,
    )
    defs = build_analytics_defs(config, str(config_file))
    resources = {RESOURCE_KEY: AnalyticsResource(config_file=str(config_file))}

    sensor = defs.get_sensor_def("analytics_housekeeping_history_sensor")
    context = dg.build_sensor_context(
        instance=instance, cursor=None, resources=resources, definitions=defs
    )
    tick = sensor(context)
    requested = sorted((request.job_name, request.partition_key) for request in tick.run_requests)
    assert requested == [
        ("analytics_housekeeping_runs_job", day.isoformat()),
        ("analytics_housekeeping_summary_job", None),
        ("analytics_token_revocations_job", day.isoformat()),
    ]
    quiet = sensor(
        dg.build_sensor_context(
            instance=instance, cursor=tick.cursor, resources=resources, definitions=defs
        )
    )
    assert not quiet.run_requests

    for job_name, partition in requested:
        job = defs.resolve_job_def(job_name)
        result = job.execute_in_process(
            instance=instance, partition_key=partition, resources=resources
        )
        assert result.success
    stats = dg.materialize(
        [defs.get_assets_def(TABLE_STATS_KEY)], instance=instance, resources=resources
    )
    assert stats.success

    revoked, expired, _ = expected_counts(tokens, day, now)
    for key, expected_rows in (
        (HOUSEKEEPING_RUNS_KEY, 1),
        (TOKEN_REVOCATIONS_DAILY_KEY, 1),
        (TABLE_STATS_KEY, 1),
    ):
        event = instance.get_latest_materialization_event(key)
        metadata = event.asset_materialization.metadata
        assert metadata["dagster/row_count"].value == expected_rows, key
        assert "preview" in metadata
    by_user = instance.get_latest_materialization_event(TOKEN_REVOCATIONS_BY_USER_KEY)
    assert by_user is not None
    settings = make_settings(tmp_path)
    row = query(settings, "SELECT * FROM token_revocations_daily").iloc[0]
    assert (row.revoked, row.expired, row.cleaned_up) == (revoked, expired, 5)
    summary = query(settings, "SELECT * FROM housekeeping_summary")
    assert list(summary.status) == ["healthy"] and list(summary.total_deleted) == [5]
    history.dispose()


def test_the_schedules_refresh_today_hourly_and_take_table_snapshots(tmp_path):
    config = parse_config(
        {
            "timezone": "Europe/Berlin",
            "analytics": {
                "root": str(tmp_path / "a"),
                "database": str(tmp_path / "a" / "v.duckdb"),
            },
        }
    )
    defs = build_analytics_defs(config)

    def requests(name, moment):
        context = dg.build_schedule_context(
            scheduled_execution_time=moment, repository_def=defs.get_repository_def()
        )
        return list(defs.get_schedule_def(name).evaluate_tick(context).run_requests)

    tokens = "analytics_token_revocations_schedule"
    noon = datetime(2026, 11, 20, 11, 5, tzinfo=UTC)
    assert [r.partition_key for r in requests(tokens, noon)] == ["2026-11-20"]
    first_hour = datetime(2026, 11, 20, 23, 5, tzinfo=UTC)  # 00:05 in Berlin
    assert [r.partition_key for r in requests(tokens, first_hour)] == ["2026-11-20", "2026-11-21"]
    [snapshot] = requests("analytics_table_stats_schedule", noon)
    assert snapshot.partition_key is None
