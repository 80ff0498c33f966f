"""Several workers delete at once (batch.workers): every guarantee of one worker still holds.

A crash in any one worker at any step of a batch loses no row and archives none twice; a stop
request ends every worker after its batch in flight; rows locked by other sessions are skipped
and counted once; the safety guards refuse before any worker starts; SQLite runs one worker.
"""

from __future__ import annotations

import threading

import pytest

from housekeeping import archive as archive_module
from housekeeping import deletion
from housekeeping.archive import LocalArchiveStore, TableArchive
from housekeeping.config import ConfigError, HousekeepingConfig, parse_config
from housekeeping.database import AppDatabase, DatabaseError
from housekeeping.policies import RunOptions, SafetyRefusal, run_policy
from housekeeping.policy_kinds import DeleteStrategy
from tests.housekeeping.test_archive_recovery import (
    Crash,
    assert_archive_plus_table_is_the_original,
)
from tests.housekeeping.test_locked_rows import expired_ids_by_expiry, remaining_ids, rows_locked
from tests.housekeeping.test_token_cleanup import expired_ids, token_config
from tests.support.app_tables import create_revoked_tokens, rows_of
from tests.support.roles import role_database

WORKERS = 3


@pytest.fixture
def pg(pg_url):
    database = AppDatabase(pg_url)
    yield database
    database.dispose()


def with_workers(config: HousekeepingConfig, workers: int) -> HousekeepingConfig:
    return config.model_copy(update={"batch": config.batch.model_copy(update={"workers": workers})})


def workers_config(tmp_path, workers: int = WORKERS, **policy) -> HousekeepingConfig:
    return with_workers(token_config(tmp_path, strategy="page_ranges", **policy), workers)


def crash_in_worker(
    monkeypatch, owner, name: str, worker: int, after_calls: int = 0, *, thread: str = ""
) -> list:
    """``owner.name`` raises Crash on its call number ``after_calls + 1`` (default: the first) made
    for ``worker``'s batches (its own thread or its archive thread; ``thread="archive"``: only
    the archive thread, where snapshot batches DELETE and COMMIT); every other worker's calls go
    through."""
    real = getattr(owner, name)
    calls: list[str] = []
    prefix = f"hk-delete-{worker}"

    def crashing(*args, **kwargs):
        current = threading.current_thread().name
        if thread:
            ours = current.startswith(f"{prefix}-{thread}")
        else:
            ours = current == prefix or current.startswith(f"{prefix}-")
        if ours:
            calls.append(current)
            if len(calls) > after_calls:
                raise Crash(f"crash in {name} of worker {worker}")
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, crashing)
    return calls


# (owner, method, the worker's thread it crashes in: "" any, "archive" the deleting one)
CRASH_POINTS = {
    # rows read in the exported snapshot, before they are staged (nothing deleted)
    "before_stage": (archive_module.TableArchive, "stage", ""),
    # staged durably, before the deleting transaction imports the read's snapshot
    "before_snapshot_delete": (deletion._PostgresSession, "import_snapshot", ""),
    # the DELETE ran in the imported snapshot, before its COMMIT
    "after_delete_before_commit": (deletion._PostgresSession, "commit", "archive"),
    # committed, before the pending file is published
    "after_commit": (archive_module.TableArchive, "commit", ""),
    # published, before the manifest lists it
    "before_manifest": (archive_module.TableArchive, "_add_to_manifest", ""),
}


@pytest.mark.postgres
@pytest.mark.parametrize("worker", range(WORKERS))
@pytest.mark.parametrize("crash_point", sorted(CRASH_POINTS))
def test_a_crash_in_any_worker_at_any_step_loses_nothing_and_duplicates_nothing(
    pg, tmp_path, monkeypatch, crash_point, worker
):
    # Pages enough (about 100, a batch takes one) that every worker gets some on a busy machine.
    create_revoked_tokens(pg, rows=12000, expired_fraction=0.7)
    original = [row[0] for row in rows_of(pg, "revoked_tokens")]
    config = workers_config(tmp_path, archive=True)

    with monkeypatch.context() as patch:
        owner, name, thread = CRASH_POINTS[crash_point]
        calls = crash_in_worker(patch, owner, name, worker, thread=thread)
        with pytest.raises(Crash, match=f"worker {worker}"):
            run_policy(pg, config, "revoked_tokens")
        # the worker's first batch crashed (and its other lane's, if it had one in flight); every
        # other worker ran at least one batch (a stop is asked after a batch, never before)
        assert calls
    pg.dispose()  # the crashed process's connections are gone

    result = run_policy(pg, config, "revoked_tokens")

    assert result.remaining_expired == 0
    archived = assert_archive_plus_table_is_the_original(pg, tmp_path, original)
    assert len(archived) > result.deleted  # the first run's committed batches are kept


@pytest.mark.postgres
def test_a_stop_request_ends_every_worker_after_its_batch_in_flight(pg, tmp_path):
    create_revoked_tokens(pg, rows=3000, expired_fraction=0.7)
    expired = expired_ids(pg)
    config = workers_config(tmp_path, archive=True)
    asked = []

    def stop_once_two_workers_asked() -> bool:
        asked.append(threading.current_thread().name)
        return len(asked) >= 4 and len(set(asked)) >= 2

    first = run_policy(pg, config, "revoked_tokens", should_stop=stop_once_two_workers_asked)

    assert first.stopped_early and first.strategies == [DeleteStrategy.PAGE_RANGES]
    assert len({name for name in asked}) > 1  # more than one worker asked
    assert 0 < first.deleted < len(expired)
    # Every batch that ran finished: committed and archived, nothing half-done.
    assert first.archived_rows == first.deleted == len(expired) - len(expired_ids(pg))
    assert first.remaining_expired == len(expired) - first.deleted
    assert not list((tmp_path / "archive").rglob("*.pending"))

    second = run_policy(pg, config, "revoked_tokens")

    assert first.deleted + second.deleted == len(expired) and second.remaining_expired == 0
    archive = TableArchive(LocalArchiveStore(tmp_path / "archive"), "revoked_tokens", "expires_at")
    ids = archive.read_all().column("id").to_pylist()
    assert sorted(ids) == sorted(expired)


@pytest.mark.postgres
@pytest.mark.parametrize("archive", [False, True], ids=["no_archive", "archive"])
def test_locked_rows_are_skipped_and_counted_once_across_workers(pg, pg_url, tmp_path, archive):
    create_revoked_tokens(pg, rows=3000, expired_fraction=0.7)
    expired = expired_ids_by_expiry(pg)
    locked = expired[:: len(expired) // 5][:5]
    before = remaining_ids(pg)
    config = workers_config(tmp_path, workers=4, archive=archive)

    with rows_locked(pg_url, "revoked_tokens", locked):
        first = run_policy(pg, config, "revoked_tokens")

    assert first.skipped_locked == len(locked) == first.remaining_expired
    assert first.deleted == len(expired) - len(locked)
    assert remaining_ids(pg) == (before - set(expired)) | set(locked)
    second = run_policy(pg, config, "revoked_tokens")
    assert second.deleted == len(locked) and second.remaining_expired == 0
    if archive:
        archived = TableArchive(
            LocalArchiveStore(tmp_path / "archive"), "revoked_tokens", "expires_at"
        ).read_all()
        ids = archived.column("id").to_pylist()
        assert len(ids) == len(set(ids)) and set(ids) == set(expired)


@pytest.mark.parametrize("workers", [1, 4])
def test_the_guards_refuse_before_any_worker_deletes(app_url, tmp_path, workers):
    db = AppDatabase(app_url)
    try:
        create_revoked_tokens(db, rows=600, expired_fraction=0.7)
        before = rows_of(db, "revoked_tokens")
        config = with_workers(token_config(tmp_path, max_delete_fraction=0.5), workers)

        with pytest.raises(SafetyRefusal, match="above the limit of 50%"):
            run_policy(db, config, "revoked_tokens")
        dry = run_policy(db, config, "revoked_tokens", options=RunOptions(dry_run=True))
        assert rows_of(db, "revoked_tokens") == before
        assert dry.expected_deleted == len(expired_ids(db)) and dry.deleted == 0

        done = run_policy(db, config, "revoked_tokens", options=RunOptions(allow_large_delete=True))
        assert done.deleted == dry.expected_deleted and done.remaining_expired == 0
    finally:
        db.dispose()


def test_sqlite_runs_one_worker_whatever_the_config_says(sqlite_url, tmp_path):
    db = AppDatabase(sqlite_url)
    try:
        create_revoked_tokens(db, rows=600, expired_fraction=0.7)
        config = with_workers(token_config(tmp_path, archive=True), 8)
        assert deletion.worker_count(db, DeleteStrategy.PAGE_RANGES, 8) == 1
        result = run_policy(db, config, "revoked_tokens")
        assert result.remaining_expired == 0 and result.archived_rows == result.deleted > 0
    finally:
        db.dispose()


@pytest.mark.parametrize("workers", [0, -1, 33, 1000, "two", "3", True, None, 2.0, 2.5])
def test_a_bad_worker_count_is_one_line_naming_the_key(workers):
    with pytest.raises(ConfigError) as error:
        parse_config({"batch": {"workers": workers}}, "hk.yaml")
    message = str(error.value)
    assert "batch.workers" in message and "\n" not in message


@pytest.mark.postgres
def test_a_connection_limit_below_the_workers_is_one_line_naming_the_key_and_deletes_nothing(
    pg, postgres_server, tmp_path
):
    create_revoked_tokens(pg, rows=300, expired_fraction=0.5)
    before = rows_of(pg, "revoked_tokens")
    with role_database(
        postgres_server, pg, "hk_limited", "SELECT, DELETE", connection_limit=3
    ) as limited:
        config = workers_config(tmp_path, workers=4, archive=True, max_delete_fraction=0.9)
        with pytest.raises(DatabaseError) as error:
            run_policy(limited, config, "revoked_tokens")
    message = str(error.value)
    assert "too many connections" in message and "batch.workers 4" in message
    assert "\n" not in message
    assert rows_of(pg, "revoked_tokens") == before
