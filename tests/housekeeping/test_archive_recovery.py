"""A crash at any point of a batch neither loses an archived row nor stores one twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from housekeeping import archive as archive_module
from housekeeping import deletion
from housekeeping.archive import LocalArchiveStore, TableArchive
from housekeeping.database import AppDatabase
from housekeeping.policies import run_policy
from tests.housekeeping.test_token_cleanup import token_config
from tests.support.app_tables import create_revoked_tokens, rows_of


class Crash(BaseException):
    """Stands in for the process dying at this exact point."""


@pytest.fixture
def db(app_url):
    database = AppDatabase(app_url)
    yield database
    database.dispose()


def assert_archive_plus_table_is_the_original(db, tmp_path, original):
    archive = TableArchive(LocalArchiveStore(tmp_path / "archive"), "revoked_tokens", "expires_at")
    archived = archive.read_all()
    archived_ids = archived.column("id").to_pylist() if archived is not None else []
    remaining = [row[0] for row in rows_of(db, "revoked_tokens")]
    assert len(archived_ids) == len(set(archived_ids)), "a row was archived twice"
    assert sorted(archived_ids + remaining) == sorted(original), "a row was lost"
    assert not list((tmp_path / "archive").rglob("*.pending")), "a pending file was left behind"
    return archived_ids


def crash_on_call(monkeypatch, owner, name, after_calls=2):
    real = getattr(owner, name)
    calls = []

    def crashing(*args, **kwargs):
        calls.append(1)
        if len(calls) > after_calls:
            raise Crash(f"crash in {name}")
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, crashing)


CRASH_POINTS = {
    # after the batch's rows are staged durably, before the database commits
    # (on PostgreSQL the reading sessions of snapshot batches commit too, at most one batch
    # ahead of each worker's deleting session: by the 7th call some batches have committed)
    "before_commit": lambda mp, db: crash_on_call(
        mp,
        deletion._PostgresSession if db.is_postgres else deletion._SqlAlchemySession,
        "commit",
        after_calls=6 if db.is_postgres else 2,
    ),
    # after the database committed, before the pending file is published
    "after_commit": lambda mp, db: crash_on_call(mp, archive_module.TableArchive, "commit"),
    # after the file is published, before the manifest lists it
    "before_manifest": lambda mp, db: crash_on_call(
        mp, archive_module.TableArchive, "_add_to_manifest"
    ),
}


@pytest.mark.parametrize("crash_point", sorted(CRASH_POINTS))
def test_a_crash_at_any_point_of_a_batch_loses_nothing_and_duplicates_nothing(
    db, tmp_path, monkeypatch, crash_point
):
    create_revoked_tokens(db, rows=800, expired_fraction=0.7)
    original = [row[0] for row in rows_of(db, "revoked_tokens")]
    config = token_config(tmp_path, archive=True)

    with monkeypatch.context() as patch:
        CRASH_POINTS[crash_point](patch, db)
        with pytest.raises(Crash):
            run_policy(db, config, "revoked_tokens")
    db.dispose()  # the crashed process's connections are gone

    result = run_policy(db, config, "revoked_tokens")

    assert result.remaining_expired == 0
    archived = assert_archive_plus_table_is_the_original(db, tmp_path, original)
    assert len(archived) > result.deleted  # the first run's committed batches are kept


KILLED_CLEANUP = textwrap.dedent(
    """
    import sys, time
    from housekeeping.database import AppDatabase
    from housekeeping.policies import run_policy
    from tests.housekeeping.test_token_cleanup import token_config
    from pathlib import Path

    def between_batches():
        print("batch", flush=True)
        time.sleep(0.2)
        return False

    db = AppDatabase(sys.argv[1])
    run_policy(db, token_config(Path(sys.argv[2]), archive=True), "revoked_tokens",
               should_stop=between_batches)
    print("finished", flush=True)
    """
)


def test_killing_the_cleanup_process_between_batches_then_rerunning_loses_nothing(db, tmp_path):
    create_revoked_tokens(db, rows=2000, expired_fraction=0.7)
    original = [row[0] for row in rows_of(db, "revoked_tokens")]
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_CLEANUP, str(db.url.render_as_string(False)), str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.getcwd(),
    )
    seen = 0
    for line in child.stdout:
        seen += line.startswith("batch")
        if seen == 3:
            child.send_signal(signal.SIGKILL)
            break
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert len(rows_of(db, "revoked_tokens")) < len(original)  # it did delete something

    result = run_policy(db, token_config(tmp_path, archive=True), "revoked_tokens")

    assert result.remaining_expired == 0
    assert_archive_plus_table_is_the_original(db, tmp_path, original)
