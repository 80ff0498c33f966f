"""Rows and tables other sessions have locked: skipped rows, counted; a locked table, one line.

A second, real connection holds the locks (``SELECT ... FOR UPDATE``, ``LOCK TABLE``, a SQLite
write transaction), as the application would.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import dagster as dg
import psycopg
import pytest
import sqlalchemy as sa

from housekeeping.archive import LocalArchiveStore, TableArchive
from housekeeping.config import HousekeepingConfig, parse_config
from housekeeping.config_types import parse_duration
from housekeeping.database import AppDatabase
from housekeeping.defs.assets import policy_asset_key
from housekeeping.history import PolicyRun, RunHistory, RunStatus, policy_runs
from housekeeping.policies import RunLockedOut, run_and_record, run_policy
from housekeeping.sql import quote_identifier
from tests.alerts.test_alert_cli import hk
from tests.conftest import with_search_path
from tests.housekeeping.test_dagster_assets import definitions, metadata_of, write_config
from tests.housekeeping.test_partitions import config as partition_config
from tests.housekeeping.test_partitions import create_daily_partitioned_logs, partitions
from tests.housekeeping.test_token_cleanup import token_config
from tests.support.app_tables import (
    app_inserting_tokens,
    count,
    create_jobs,
    create_revoked_tokens,
    id_column,
)

STRATEGIES = ["page_ranges", "primary_key_ranges", "cutoff_index"]


@pytest.fixture
def pg(pg_url) -> Iterator[AppDatabase]:
    database = AppDatabase(pg_url)
    yield database
    database.dispose()


def with_lock_timeout(config: HousekeepingConfig, lock_timeout: str) -> HousekeepingConfig:
    safety = config.safety.model_copy(update={"lock_timeout": parse_duration(lock_timeout)})
    return config.model_copy(update={"safety": safety})


def locked_config(tmp_path, lock_timeout="2s", **policy_overrides) -> HousekeepingConfig:
    """token_config (small batches: locked rows sit among many transactions) and a lock_timeout."""
    return with_lock_timeout(token_config(tmp_path, **policy_overrides), lock_timeout)


def expired_ids_by_expiry(db: AppDatabase) -> list[int]:
    with db.connect() as conn:
        return list(
            conn.execute(
                sa.text(
                    "SELECT id FROM revoked_tokens WHERE expires_at < now() ORDER BY expires_at"
                )
            ).scalars()
        )


@contextmanager
def rows_locked(url: str, table: str, ids: list[int]) -> Iterator[None]:
    """Another session holds ``SELECT ... FOR UPDATE`` on exactly these rows until the block ends."""
    with psycopg.connect(url) as app:
        locked = app.execute(
            f"SELECT id FROM {quote_identifier(table)} WHERE id = ANY(%s) FOR UPDATE", (ids,)
        ).fetchall()
        assert len(locked) == len(ids)
        yield
        app.rollback()


@contextmanager
def table_locked(
    url: str, table: str, mode: str = "ACCESS EXCLUSIVE"
) -> Iterator[psycopg.Connection]:
    with psycopg.connect(url) as app:
        app.execute(f"LOCK TABLE {quote_identifier(table)} IN {mode} MODE")
        yield app
        app.rollback()


def archived_ids(tmp_path, table="revoked_tokens", column="expires_at") -> list[int]:
    rows = TableArchive(LocalArchiveStore(tmp_path / "archive"), table, column).read_all()
    return [] if rows is None else rows.column("id").to_pylist()


def remaining_ids(db: AppDatabase, table: str = "revoked_tokens") -> set[int]:
    with db.connect() as conn:
        return set(conn.execute(sa.text(f"SELECT id FROM {table}")).scalars())


@pytest.mark.postgres
@pytest.mark.parametrize("archive", [False, True], ids=["no_archive", "archive"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_rows_locked_by_another_session_are_skipped_and_the_next_run_deletes_them(
    pg, pg_url, tmp_path, strategy, archive
):
    create_revoked_tokens(pg, rows=3000, expired_fraction=0.7)
    expired = expired_ids_by_expiry(pg)
    # Three expired rows a third, half and two thirds along the walk (by expiry; by id they
    # are anywhere), so thousands of expired rows lie behind the first of them.
    locked = [
        expired[len(expired) // 3],
        expired[len(expired) // 2],
        expired[2 * len(expired) // 3],
    ]
    before = remaining_ids(pg)
    config = locked_config(tmp_path, strategy=strategy, archive=archive)

    with rows_locked(pg_url, "revoked_tokens", locked):
        first = run_policy(pg, config, "revoked_tokens")
        assert remaining_ids(pg) == (before - set(expired)) | set(locked)

    assert first.strategies == [strategy]
    assert first.deleted == len(expired) - 3
    assert first.skipped_locked == 3
    assert first.remaining_expired == 3
    assert first.batches > 3
    assert "skipped 3 rows locked by other sessions" in first.summary_line()
    assert first.metadata()["skipped_locked"] == 3
    if archive:
        ids = archived_ids(tmp_path)
        assert first.archived_rows == first.deleted
        assert sorted(ids) == sorted(set(expired) - set(locked))

    second = run_policy(pg, config, "revoked_tokens")

    assert second.deleted == 3 and second.skipped_locked == 0 and second.remaining_expired == 0
    assert remaining_ids(pg) == before - set(expired)
    if archive:
        ids = archived_ids(tmp_path)
        assert len(ids) == len(set(ids)) == len(expired)  # every deleted row once, no more
        assert set(ids) == set(expired)


@pytest.mark.postgres
def test_a_locked_row_among_ties_of_the_cutoff_value_is_skipped_once(pg, pg_url, tmp_path):
    # 300 expired tokens share one expiry: a batch that skips a locked row covers all the ties,
    # so the walk never meets it twice (it would count it twice, or never finish).
    moment = datetime.now(UTC) - timedelta(days=2)
    with pg.engine.begin() as conn:
        conn.execute(
            sa.text(
                f"CREATE TABLE revoked_tokens ({id_column(pg)}, token_hash text, "
                "expires_at timestamptz)"
            )
        )
        conn.execute(sa.text("CREATE INDEX ON revoked_tokens (expires_at)"))
        conn.execute(
            sa.text(
                "INSERT INTO revoked_tokens (token_hash, expires_at) SELECT 't' || g, "
                "CASE WHEN g <= 300 THEN :tie ELSE :before + g * interval '1 second' END "
                "FROM generate_series(1, 700) g"
            ),
            {"tie": moment, "before": moment - timedelta(days=1)},
        )
        conn.execute(
            sa.text(
                "INSERT INTO revoked_tokens (token_hash, expires_at) "
                "SELECT 'live' || g, now() + interval '1 day' FROM generate_series(1, 100) g"
            )
        )
    config = locked_config(tmp_path, strategy="cutoff_index", archive=True)

    with rows_locked(pg_url, "revoked_tokens", [17, 250]):
        first = run_policy(pg, config, "revoked_tokens")

    assert (first.deleted, first.skipped_locked, first.remaining_expired) == (698, 2, 2)
    assert sorted(archived_ids(tmp_path)) == sorted(set(range(1, 701)) - {17, 250})
    second = run_policy(pg, config, "revoked_tokens")
    assert (second.deleted, second.skipped_locked, second.remaining_expired) == (2, 0, 0)
    assert sorted(archived_ids(tmp_path)) == list(range(1, 701))


@pytest.mark.postgres
@pytest.mark.parametrize("archive", [False, True], ids=["no_archive", "archive"])
def test_locked_jobs_are_skipped_in_every_status_and_queue_target(pg, pg_url, tmp_path, archive):
    now = datetime.now(UTC)
    old = [now - timedelta(days=10, minutes=minute) for minute in range(300)]
    create_jobs(
        pg,
        [{"queue": "emails", "status": "completed", "finished_at": at} for at in old]
        + [{"queue": None, "status": "completed", "finished_at": at} for at in old]
        + [{"queue": "emails", "status": "failed", "finished_at": at} for at in old],
    )
    # One locked job per target: emails/completed, the NULL queue, failed.
    locked = [100, 450, 700]
    config = parse_config(
        {
            "archive": {"root": str(tmp_path / "archive")},
            "safety": {"max_delete_fraction": 1.0},
            "batch": {"initial_size": 40, "min_size": 10, "max_size": 80},
            "policies": {
                "jobs": {
                    "kind": "jobs",
                    "table": "jobs",
                    "cutoff_column": "finished_at",
                    "status_column": "status",
                    "queue_column": "queue",
                    "archive": archive,
                    "statuses": {
                        "completed": {"retention": "24h", "keep_last": 5},
                        "failed": {"retention": "7d"},
                    },
                }
            },
        }
    )

    with rows_locked(pg_url, "jobs", locked):
        first = run_policy(pg, config, "jobs")

    # keep_last makes one target per queue; every job is past its retention, so all 900 go.
    assert first.strategies and len(first.strategies) == 3
    assert first.deleted == 900 - 3
    assert first.skipped_locked == 3 and first.remaining_expired == 3
    assert remaining_ids(pg, "jobs") >= set(locked)
    second = run_policy(pg, config, "jobs")
    assert (second.deleted, second.skipped_locked, second.remaining_expired) == (3, 0, 0)
    assert count(pg, "jobs") == 0
    if archive:
        ids = archived_ids(tmp_path, "jobs", "finished_at")
        assert sorted(ids) == list(range(1, 901))


@pytest.mark.postgres
def test_the_app_keeps_inserting_while_a_cleanup_skips_its_locked_rows(pg, pg_url, tmp_path):
    create_revoked_tokens(pg, rows=20000, expired_fraction=0.7)
    expired = expired_ids_by_expiry(pg)
    locked = expired[len(expired) // 2 : len(expired) // 2 + 5]
    config = locked_config(tmp_path, archive=True)
    with (
        rows_locked(pg_url, "revoked_tokens", locked),
        app_inserting_tokens(pg) as inserted,
    ):
        result = run_policy(pg, config, "revoked_tokens")

    assert inserted
    assert result.deleted == result.archived_rows == len(expired) - 5
    assert result.skipped_locked == 5 and result.remaining_expired == 5
    assert count(pg, "revoked_tokens", "token_hash = 'new'") == len(inserted)
    assert sorted(archived_ids(tmp_path)) == sorted(set(expired) - set(locked))
    second = run_policy(pg, config, "revoked_tokens")
    assert second.deleted == 5 and second.remaining_expired == 0
    assert sorted(archived_ids(tmp_path)) == sorted(expired)


@pytest.mark.postgres
def test_a_table_lock_ends_the_run_with_one_line_naming_table_and_lock_timeout(
    pg, pg_url, tmp_path
):
    create_revoked_tokens(pg, rows=1000, expired_fraction=0.7)
    before = remaining_ids(pg)
    history = RunHistory(f"sqlite:///{tmp_path / 'state.db'}")
    config = locked_config(tmp_path, lock_timeout="300ms", archive=True)

    with table_locked(pg_url, "revoked_tokens"), pytest.raises(RunLockedOut) as raised:
        run_and_record(history, pg, config, "revoked_tokens")

    message = str(raised.value)
    assert "\n" not in message
    assert "table 'revoked_tokens' stayed locked by another session" in message
    assert "safety.lock_timeout (300ms)" in message and "AccessExclusiveLock" in message
    assert "this run deleted nothing" in message
    assert remaining_ids(pg) == before
    [run] = history.recent("revoked_tokens")
    assert run.status is RunStatus.FAILED and run.error == f"RunLockedOut: {message}"
    assert run.deleted == 0
    history.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_table_lock_taken_mid_run_keeps_what_was_deleted_and_archived_on_record(
    pg, pg_url, tmp_path, strategy
):
    create_revoked_tokens(pg, rows=3000, expired_fraction=0.7)
    expired = set(expired_ids_by_expiry(pg))
    history = RunHistory(f"sqlite:///{tmp_path / 'state.db'}")
    config = locked_config(tmp_path, lock_timeout="300ms", strategy=strategy, archive=True)
    app = psycopg.connect(pg_url)
    asked = []

    def lock_the_table_after_two_batches() -> bool:
        # Asked before each batch but the first: by the third question some worker has asked
        # twice, so its first batch has committed (an archived batch's DELETE may still be
        # waiting to start when its worker asks next, and would then meet the lock).
        asked.append(1)
        if len(asked) == 3:
            # SHARE: the application's reads go on, every write (ours too) waits.
            app.execute("LOCK TABLE revoked_tokens IN SHARE MODE")
        return False

    try:
        with pytest.raises(RunLockedOut) as raised:
            run_and_record(
                history, pg, config, "revoked_tokens", should_stop=lock_the_table_after_two_batches
            )
    finally:
        app.rollback()
        app.close()

    deleted = expired - remaining_ids(pg)
    partial = raised.value.result
    assert deleted and partial.deleted == len(deleted)
    assert f"this run deleted {len(deleted):,} rows, archived {len(deleted):,}" in str(raised.value)
    assert "(ShareLock)" in str(raised.value)
    assert sorted(archived_ids(tmp_path)) == sorted(deleted)
    [run] = history.recent("revoked_tokens")
    assert run.status is RunStatus.FAILED
    assert run.deleted == run.archived_rows == len(deleted)
    assert run.remaining_expired == len(expired) - len(deleted)
    history.dispose()

    second = run_policy(pg, config, "revoked_tokens")
    assert second.deleted == len(expired) - len(deleted) and second.remaining_expired == 0
    assert sorted(archived_ids(tmp_path)) == sorted(expired)


@pytest.mark.postgres
def test_a_locked_row_keeps_its_partition_attached_and_the_rest_goes_row_by_row(
    pg, pg_url, tmp_path
):
    create_daily_partitioned_logs(pg, days=8, rows_per_day=200)
    with pg.connect() as conn:
        cutoff = pg.clock() - timedelta(days=3)
        expired = set(
            conn.execute(
                sa.text("SELECT id FROM request_logs WHERE ts < :c"), {"c": cutoff}
            ).scalars()
        )
        # A row in the oldest partition: its lock (ROW SHARE on the table) blocks every detach.
        [locked] = conn.execute(sa.text("SELECT min(id) FROM request_logs")).scalars()
    before = partitions(pg)
    config = with_lock_timeout(partition_config(tmp_path), "300ms")

    with rows_locked(pg_url, "request_logs", [locked]):
        first = run_policy(pg, config, "request_logs")

    assert first.partitions_dropped == 0 and first.partitions_skipped_locked == 5
    assert partitions(pg) == before
    assert first.deleted == first.archived_rows == len(expired) - 1
    assert (first.skipped_locked, first.remaining_expired) == (1, 1)
    assert sorted(archived_ids(tmp_path, "request_logs", "ts")) == sorted(expired - {locked})

    second = run_policy(pg, config, "request_logs")

    assert second.partitions_dropped == 5 and second.deleted == 1
    assert len(partitions(pg)) == len(before) - 5
    ids = archived_ids(tmp_path, "request_logs", "ts")
    assert len(ids) == len(set(ids)) == len(expired)


def test_sqlite_a_write_transaction_of_another_connection_ends_the_run_with_one_line(
    sqlite_url, tmp_path
):
    db = AppDatabase(sqlite_url)
    create_revoked_tokens(db, rows=500, expired_fraction=0.7)
    before = remaining_ids(db)
    history = RunHistory(f"sqlite:///{tmp_path / 'state.db'}")
    config = locked_config(tmp_path, lock_timeout="200ms", archive=True)
    # SQLite has no row locks: a writer holds the whole file until it commits.
    app = sqlite3.connect(db.url.database, isolation_level=None)
    app.execute("BEGIN IMMEDIATE")
    app.execute("UPDATE revoked_tokens SET token_hash = 'x' WHERE id = 1")
    try:
        with pytest.raises(RunLockedOut) as raised:
            run_and_record(history, db, config, "revoked_tokens")
    finally:
        app.execute("ROLLBACK")
        app.close()

    message = str(raised.value)
    assert "\n" not in message
    assert f"the SQLite database {db.url.database} (table 'revoked_tokens')" in message
    assert "safety.lock_timeout (200ms)" in message and "this run deleted nothing" in message
    assert remaining_ids(db) == before and archived_ids(tmp_path) == []
    [run] = history.recent("revoked_tokens")
    assert run.status is RunStatus.FAILED and "RunLockedOut" in run.error

    result = run_and_record(history, db, config, "revoked_tokens")
    assert result.deleted == len(before) - len(remaining_ids(db)) > 0
    assert result.skipped_locked == 0 and result.remaining_expired == 0
    history.dispose()
    db.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_an_existing_state_database_gets_the_skipped_locked_column(request, tmp_path, backend):
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'state.db'}"
    else:
        url = request.getfixturevalue("pg_url").replace("postgresql://", "postgresql+psycopg://")
    # hk_policy_runs as the previous release created it, with one run recorded.
    previous = sa.MetaData()
    old_runs = sa.Table(
        policy_runs.name,
        previous,
        *(
            sa.Column(column.name, column.type, primary_key=column.primary_key)
            for column in policy_runs.columns
            if column.name != "skipped_locked"
        ),
    )
    engine = sa.create_engine(url)
    previous.create_all(engine)
    start = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(
            old_runs.insert().values(
                policy="revoked_tokens",
                table_name="revoked_tokens",
                status="success",
                started_at=start,
                finished_at=start + timedelta(seconds=1),
                deleted=10,
                expected_deleted=10,
                remaining_expired=0,
                archived_rows=0,
                batches=1,
                duration_ms=5.0,
            )
        )
    engine.dispose()

    history = RunHistory(url)
    history.record(
        PolicyRun(
            policy="revoked_tokens",
            table_name="revoked_tokens",
            status=RunStatus.SUCCESS,
            started_at=start + timedelta(days=1),
            finished_at=start + timedelta(days=1, seconds=1),
            deleted=7,
            skipped_locked=3,
        )
    )
    RunHistory(url).dispose()  # a second start finds the column there

    assert [(run.deleted, run.skipped_locked) for run in history.recent("revoked_tokens")] == [
        (7, 3),
        (10, 0),
    ]
    assert history.health("revoked_tokens").last_skipped_locked == 3
    history.dispose()


@pytest.mark.postgres
def test_with_lock_timeout_keeps_the_urls_own_libpq_options(postgres_server):
    url = with_search_path(postgres_server, "pg_catalog")
    db = AppDatabase(url).with_lock_timeout(timedelta(milliseconds=1500))
    with db.connect() as conn:
        assert conn.execute(sa.text("SHOW lock_timeout")).scalar_one() == "1500ms"
        assert conn.execute(sa.text("SHOW search_path")).scalar_one() == "pg_catalog"
    db.dispose()


@pytest.mark.postgres
def test_the_asset_reports_skipped_rows_and_a_locked_table_fails_in_one_line(
    pg, pg_url, tmp_path, monkeypatch
):
    monkeypatch.setenv("DATABASE_URL", pg_url)
    create_revoked_tokens(pg, rows=2000, expired_fraction=0.6)
    expired = expired_ids_by_expiry(pg)
    config_file = write_config(
        tmp_path,
        safety={"max_delete_fraction": 0.95, "lock_timeout": "300ms"},
        alerts={"database_url": f"sqlite:///{tmp_path / 'alerts.db'}"},
        analytics={"root": str(tmp_path / "analytics")},
    )
    job = definitions(config_file).resolve_job_def("revoked_tokens_job")
    home = tmp_path / "dagster_home"
    home.mkdir()

    with dg.instance_for_test(temp_dir=str(home)) as instance:
        with rows_locked(pg_url, "revoked_tokens", expired[100:102]):
            result = job.execute_in_process(instance=instance)
        metadata = metadata_of(result, policy_asset_key("revoked_tokens"))
        code, output = hk("status", "--json", "--config", config_file)
        _, text = hk("status", "--config", config_file)
        with table_locked(pg_url, "revoked_tokens"):
            failed = job.execute_in_process(instance=instance, raise_on_error=False)

    assert metadata["skipped_locked"] == 2 and metadata["remaining_expired"] == 2
    assert metadata["deleted"] == metadata["archived_rows"] == len(expired) - 2
    assert code == 0
    status = json.loads(output)["policies"]["revoked_tokens"]
    assert status["metrics"]["lastRunSkippedLocked"] == 2
    assert "last run skipped 2 rows locked by other sessions" in text
    assert not failed.success
    [failure] = [event for event in failed.all_events if event.is_step_failure]
    description = failure.event_specific_data.user_failure_data.description
    assert description.startswith("revoked_tokens: table 'revoked_tokens' stayed locked by")
    assert "safety.lock_timeout (300ms)" in description and "\n" not in description
    history = RunHistory(f"sqlite:///{tmp_path / 'state.db'}")
    assert [(run.status, run.skipped_locked) for run in history.recent("revoked_tokens")] == [
        (RunStatus.FAILED, 0),
        (RunStatus.SUCCESS, 2),
    ]
    history.dispose()


@contextmanager
def app_touches_a_row_while_its_batch_is_staged(
    monkeypatch, url: str, change: str
) -> Iterator[dict[str, int]]:
    """While the first archived batch's file is written (its rows read in the exported snapshot,
    the DELETE not yet run), the application changes or locks the first row of that batch:
    ``change`` is 'expiry_extended' (committed, no longer expired), 'rewritten' (committed, still
    expired, token_hash 'rewritten') or 'locked' (FOR UPDATE, held until the block ends).
    Yields {'id': the row's id} once it happened."""
    real = TableArchive.stage
    touched: dict[str, int] = {}
    app = psycopg.connect(url)
    once = threading.Lock()  # several workers stage at once

    def stage(self, rows, **kwargs):
        with once:
            if not touched and rows.num_rows:
                touch(rows)
        return real(self, rows, **kwargs)

    def touch(rows) -> None:
        row_id = rows.column("id")[0].as_py()
        statement = {
            "expiry_extended": "UPDATE revoked_tokens SET expires_at = now() + interval "
            "'30 days' WHERE id = %s",
            "rewritten": "UPDATE revoked_tokens SET token_hash = 'rewritten' WHERE id = %s",
            "locked": "SELECT id FROM revoked_tokens WHERE id = %s FOR UPDATE",
        }[change]
        app.execute(statement, (row_id,))
        if change != "locked":
            app.commit()
        touched["id"] = row_id

    monkeypatch.setattr(TableArchive, "stage", stage)
    try:
        yield touched
    finally:
        app.rollback()
        app.close()
        monkeypatch.setattr(TableArchive, "stage", real)


@pytest.mark.postgres
@pytest.mark.parametrize("workers", [1, 3])
@pytest.mark.parametrize("change", ["expiry_extended", "rewritten", "locked"])
def test_a_row_changed_or_locked_between_read_and_delete_is_neither_lost_nor_deleted_unarchived(
    pg, pg_url, tmp_path, monkeypatch, change, workers
):
    create_revoked_tokens(pg, rows=3000, expired_fraction=0.7)
    original = remaining_ids(pg)
    expired = set(expired_ids_by_expiry(pg))
    config = locked_config(tmp_path, strategy="page_ranges", archive=True)
    config = config.model_copy(
        update={"batch": config.batch.model_copy(update={"workers": workers})}
    )

    with app_touches_a_row_while_its_batch_is_staged(monkeypatch, pg_url, change) as touched:
        first = run_policy(pg, config, "revoked_tokens")
        row = touched["id"]
        remaining = remaining_ids(pg)
        archive = TableArchive(
            LocalArchiveStore(tmp_path / "archive"), "revoked_tokens", "expires_at"
        )
        rows = archive.read_all()

    ids = rows.column("id").to_pylist()
    assert len(ids) == len(set(ids)), "a row was archived twice"
    assert sorted(ids + list(remaining)) == sorted(original), "a row was lost"
    assert set(ids) == original - remaining, "a row was deleted without being archived"
    assert not list((tmp_path / "archive").rglob("*.pending"))
    assert first.deleted == first.archived_rows == len(ids)
    if change == "expiry_extended":
        # No longer expired: the batch ran again on the skip-locked path, which left it.
        assert row in remaining and row not in ids
        assert first.skipped_locked == 0 and first.remaining_expired == 0
        assert set(ids) == expired - {row}
    elif change == "rewritten":
        # Still expired: deleted, and archived as it is now, not as the first read saw it.
        assert row not in remaining and set(ids) == expired
        [hash_of_row] = [
            value
            for value, row_id in zip(rows.column("token_hash").to_pylist(), ids, strict=True)
            if row_id == row
        ]
        assert hash_of_row == "rewritten"
        assert first.skipped_locked == 0 and first.remaining_expired == 0
    else:
        assert row in remaining and row not in ids
        assert first.skipped_locked == 1 and first.remaining_expired == 1
        second = run_policy(pg, config, "revoked_tokens")
        assert second.deleted == 1 and second.remaining_expired == 0
        assert sorted(archived_ids(tmp_path)) == sorted(expired)
