"""Token cleanup: batched deletes of expired revoked tokens, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from housekeeping.archive import LocalArchiveStore, TableArchive
from housekeeping.config import parse_config
from housekeeping.database import AppDatabase
from housekeeping.locking import AlreadyRunning, table_lock
from housekeeping.policies import RunOptions, SafetyRefusal, run_policy
from tests.support.app_tables import app_inserting_tokens, count, create_revoked_tokens, rows_of


def token_config(tmp_path, **policy_overrides):
    policy = {
        "kind": "expired",
        "table": "revoked_tokens",
        "cutoff_column": "expires_at",
        "max_delete_fraction": 0.95,
    }
    policy.update(policy_overrides)
    return parse_config(
        {
            "archive": {"root": str(tmp_path / "archive")},
            # Small batches so even small tables take several transactions.
            "batch": {"initial_size": 50, "min_size": 10, "max_size": 200},
            "policies": {"revoked_tokens": policy},
        }
    )


@pytest.fixture
def db(app_url):
    database = AppDatabase(app_url)
    yield database
    database.dispose()


def expired_ids(db: AppDatabase) -> set[int]:
    with db.connect() as conn:
        cutoff = db.bind_timestamp(db.clock())
        return set(
            conn.execute(
                sa.text("SELECT id FROM revoked_tokens WHERE expires_at < :cutoff"),
                {"cutoff": cutoff},
            ).scalars()
        )


def test_cleanup_deletes_exactly_the_expired_tokens_and_reports_the_counts(db, tmp_path):
    create_revoked_tokens(db, rows=1000, expired_fraction=0.7)
    before = {row[0] for row in rows_of(db, "revoked_tokens")}
    expired = expired_ids(db)

    result = run_policy(db, token_config(tmp_path), "revoked_tokens")

    after = {row[0] for row in rows_of(db, "revoked_tokens")}
    assert after == before - expired
    assert result.deleted == result.expected_deleted == len(expired)
    assert result.metadata()["active_revoked"] == len(before) - len(expired)
    assert result.remaining_expired == 0
    assert result.batches > 1
    assert result.table_rows == 1000


@pytest.mark.parametrize("strategy", ["primary_key_ranges", "cutoff_index"])
def test_every_strategy_deletes_the_same_rows(db, tmp_path, strategy):
    assert_strategy_deletes_exactly_the_expired_rows(db, tmp_path, strategy)


@pytest.mark.postgres
def test_page_ranges_delete_the_same_rows_on_postgres(pg_url, tmp_path):
    db = AppDatabase(pg_url)
    assert_strategy_deletes_exactly_the_expired_rows(db, tmp_path, "page_ranges")
    db.dispose()


def assert_strategy_deletes_exactly_the_expired_rows(db, tmp_path, strategy):
    create_revoked_tokens(db, rows=800, expired_fraction=0.4)
    expected_survivors = {row[0] for row in rows_of(db, "revoked_tokens")} - expired_ids(db)

    result = run_policy(db, token_config(tmp_path, strategy=strategy), "revoked_tokens")

    assert {row[0] for row in rows_of(db, "revoked_tokens")} == expected_survivors
    assert result.strategies == [strategy]
    assert result.remaining_expired == 0


def test_archive_holds_every_deleted_row_exactly_once(db, tmp_path):
    create_revoked_tokens(db, rows=600, expired_fraction=0.6)
    original = {row[0]: row for row in rows_of(db, "revoked_tokens")}
    config = token_config(tmp_path, archive=True)

    result = run_policy(db, config, "revoked_tokens")

    archive = TableArchive(LocalArchiveStore(tmp_path / "archive"), "revoked_tokens", "expires_at")
    archived = archive.read_all()
    archived_ids = archived.column("id").to_pylist()
    assert len(archived_ids) == len(set(archived_ids)) == result.deleted
    remaining = {row[0] for row in rows_of(db, "revoked_tokens")}
    assert set(archived_ids) | remaining == set(original)
    assert not set(archived_ids) & remaining
    manifests = archive.manifests()
    assert sum(manifest["rows"] for manifest in manifests.values()) == result.deleted
    assert result.archive_files == sum(len(m["files"]) for m in manifests.values())
    # Archived rows keep their column values (token_hash is what an auditor looks up).
    some = archived.slice(0, 5).to_pylist()
    for row in some:
        assert row["token_hash"] == original[row["id"]][2]


def test_dry_run_deletes_nothing_and_reports_what_it_would_delete(db, tmp_path):
    create_revoked_tokens(db, rows=300, expired_fraction=0.5)
    before = rows_of(db, "revoked_tokens")

    result = run_policy(
        db, token_config(tmp_path, archive=True), "revoked_tokens", options=RunOptions(dry_run=True)
    )

    assert rows_of(db, "revoked_tokens") == before
    assert result.dry_run and result.deleted == 0
    assert result.expected_deleted == len(expired_ids(db))
    assert not (tmp_path / "archive").exists()
    assert result.summary_line().startswith("revoked_tokens: would delete")


def test_a_run_that_would_delete_too_much_refuses_unless_overridden(db, tmp_path):
    create_revoked_tokens(db, rows=200, expired_fraction=0.8)
    before = rows_of(db, "revoked_tokens")
    config = token_config(tmp_path, max_delete_fraction=0.5)

    with pytest.raises(SafetyRefusal, match=r"above the limit of 50%.*nothing was deleted"):
        run_policy(db, config, "revoked_tokens")
    assert rows_of(db, "revoked_tokens") == before

    result = run_policy(db, config, "revoked_tokens", options=RunOptions(allow_large_delete=True))
    assert result.deleted == len(before) - count(db, "revoked_tokens")
    assert result.deleted > 0


def test_clock_skew_beyond_tolerance_refuses_and_deletes_nothing(db, tmp_path):
    create_revoked_tokens(db, rows=100, expired_fraction=0.5)
    before = rows_of(db, "revoked_tokens")

    def skewed_clock() -> datetime:
        return datetime.now(UTC) + timedelta(minutes=10)

    with pytest.raises(SafetyRefusal, match="clock skew"):
        run_policy(db, token_config(tmp_path), "revoked_tokens", pipeline_clock=skewed_clock)
    assert rows_of(db, "revoked_tokens") == before


def test_a_second_cleanup_of_the_same_table_says_already_running(db, tmp_path):
    create_revoked_tokens(db, rows=100, expired_fraction=0.5)
    before = rows_of(db, "revoked_tokens")

    with (
        table_lock(db, "revoked_tokens"),
        pytest.raises(AlreadyRunning, match="already running"),
    ):
        run_policy(db, token_config(tmp_path), "revoked_tokens")
    assert rows_of(db, "revoked_tokens") == before


def test_stopping_finishes_the_batch_in_flight_and_the_next_run_carries_on(db, tmp_path):
    create_revoked_tokens(db, rows=1000, expired_fraction=0.7)
    expired = expired_ids(db)
    config = token_config(tmp_path, archive=True, strategy="primary_key_ranges")
    asked = []

    def stop_after_two_batches() -> bool:
        asked.append(1)
        return len(asked) >= 2

    first = run_policy(db, config, "revoked_tokens", should_stop=stop_after_two_batches)

    assert first.stopped_early
    assert 0 < first.deleted < len(expired)
    assert first.archived_rows == first.deleted
    assert first.remaining_expired == len(expired) - first.deleted

    second = run_policy(db, config, "revoked_tokens")
    assert first.deleted + second.deleted == len(expired)
    assert second.remaining_expired == 0
    archive = TableArchive(LocalArchiveStore(tmp_path / "archive"), "revoked_tokens", "expires_at")
    ids = archive.read_all().column("id").to_pylist()
    assert sorted(ids) == sorted(expired)


def test_tokens_expiring_later_are_left_alone_and_grace_delays_deletion(db, tmp_path):
    create_revoked_tokens(db, rows=500, expired_fraction=0.5)
    with db.connect() as conn:
        cutoff = db.bind_timestamp(db.clock() - timedelta(days=7))
        older_than_grace = set(
            conn.execute(
                sa.text("SELECT id FROM revoked_tokens WHERE expires_at < :c"), {"c": cutoff}
            ).scalars()
        )

    result = run_policy(db, token_config(tmp_path, grace="7d"), "revoked_tokens")

    assert result.deleted == len(older_than_grace)
    with db.connect() as conn:
        left = conn.execute(sa.text("SELECT min(expires_at) FROM revoked_tokens")).scalar_one()
    assert db.read_timestamp(left) >= db.clock() - timedelta(days=7, minutes=1)


@pytest.mark.postgres
def test_the_app_keeps_inserting_tokens_during_a_cleanup(pg_url, tmp_path):
    db = AppDatabase(pg_url)
    create_revoked_tokens(db, rows=20000, expired_fraction=0.7)
    config = token_config(tmp_path, archive=True)
    config = config.model_copy(
        update={"batch": config.batch.model_copy(update={"max_size": 2000, "initial_size": 500})}
    )
    batch_times: list[float] = []
    with app_inserting_tokens(db) as inserted:
        result = run_policy(
            db,
            config,
            "revoked_tokens",
            should_stop=lambda: batch_times.append(time.perf_counter()) and False,
        )

    assert result.batches > 3 and result.remaining_expired == 0
    # Inserts kept landing between the first and the last batch: the app was never blocked for
    # longer than a batch, let alone the whole cleanup.
    during = [moment for moment in inserted if batch_times[0] < moment < batch_times[-1]]
    assert len(during) >= result.batches - 2
    assert count(db, "revoked_tokens", "token_hash = 'new'") == len(inserted)
