"""A run plans on the planner's statistics instead of counting the table, but only where the
delete-fraction guard cannot refuse it (a large delete allowed, or a limit of the whole table):
under a guard, with stale or missing statistics, on small tables and for dry runs it counts
exactly."""

from __future__ import annotations

import time

import psycopg
import pytest
import sqlalchemy as sa

from housekeeping.database import AppDatabase
from housekeeping.policies import RunOptions, SafetyRefusal, run_policy
from tests.housekeeping.test_token_cleanup import token_config

ROWS = 150_000


@pytest.fixture
def pg(pg_url):
    database = AppDatabase(pg_url)
    yield database
    database.dispose()


def create_analyzed_tokens(pg: AppDatabase, expired_share: float) -> int:
    """ROWS tokens, ``expired_share`` of them expired (shuffled), analyzed; returns how many
    expired."""
    expired = int(ROWS * expired_share)
    with pg.engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE revoked_tokens (id bigint PRIMARY KEY, user_id bigint, "
                "token_hash text, revoked_at timestamptz, expires_at timestamptz)"
            )
        )
        conn.execute(sa.text("CREATE INDEX ON revoked_tokens (expires_at)"))
        conn.execute(
            sa.text(
                "INSERT INTO revoked_tokens "
                "SELECT g, g % 500, md5(g::text), now() - interval '31 days', "
                "CASE WHEN (g * 7919) % :rows < :expired "
                "THEN now() - interval '2 hours' - (g % 1000) * interval '1 minute' "
                "ELSE now() + interval '2 hours' + (g % 1000) * interval '1 minute' END "
                "FROM generate_series(1, :rows) g"
            ),
            {"rows": ROWS, "expired": expired},
        )
        # Sessions report their row counts to the statistics up to a second late: flushed
        # after the ANALYZE, this INSERT would count as changed since it (stale statistics).
        conn.execute(sa.text("SELECT pg_stat_force_next_flush()"))
    wait_for_inserts_in_statistics(pg, ROWS)
    with pg.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(
            sa.text("ANALYZE revoked_tokens")
        )
    return expired


def wait_for_inserts_in_statistics(pg: AppDatabase, rows: int, timeout: float = 30.0) -> None:
    """Until pg_stat_user_tables counts ``rows`` inserted into revoked_tokens."""
    deadline = time.monotonic() + timeout
    while True:
        with pg.engine.connect() as conn:
            inserted = conn.execute(
                sa.text(
                    "SELECT n_tup_ins FROM pg_stat_user_tables "
                    "WHERE relid = to_regclass('revoked_tokens')"
                )
            ).scalar_one_or_none()
        if (inserted or 0) >= rows:
            return
        assert time.monotonic() < deadline, f"statistics count {inserted} inserts, not {rows}"
        time.sleep(0.1)


def count_expired(pg: AppDatabase) -> int:
    with pg.connect() as conn:
        return conn.execute(
            sa.text("SELECT count(*) FROM revoked_tokens WHERE expires_at < now()")
        ).scalar_one()


def assert_refused_without_deleting(pg: AppDatabase, tmp_path, expired: int) -> None:
    """A run guarded at 50% quotes the exact ``expired`` count in its refusal and deletes nothing."""
    with pytest.raises(SafetyRefusal, match=f"would delete {expired:,} of {ROWS:,} rows"):
        run_policy(pg, token_config(tmp_path, max_delete_fraction=0.5), "revoked_tokens")
    assert count_expired(pg) == expired


@pytest.mark.postgres
def test_a_run_the_guard_cannot_refuse_plans_on_estimates_and_its_batches_count(pg, tmp_path):
    expired = create_analyzed_tokens(pg, 0.3)
    config = token_config(tmp_path, strategy="page_ranges", max_delete_fraction=1.0)
    config = config.model_copy(
        update={"batch": config.batch.model_copy(update={"max_size": 20000})}
    )

    result = run_policy(pg, config, "revoked_tokens")

    assert result.counts_estimated
    assert result.deleted == expired and result.remaining_expired == 0
    assert result.expected_deleted == expired  # what the batches met, not the estimate
    assert abs(result.table_rows - ROWS) < 0.05 * ROWS
    assert " of about " in result.summary_line()


@pytest.mark.postgres
def test_near_the_limit_the_guard_counts_exactly_and_quotes_exact_numbers(pg, tmp_path):
    expired = create_analyzed_tokens(pg, 0.6)
    config = token_config(tmp_path, max_delete_fraction=0.61)

    with pytest.raises(SafetyRefusal) as refused:
        run_policy(pg, token_config(tmp_path, max_delete_fraction=0.59), "revoked_tokens")
    assert f"would delete {expired:,} of {ROWS:,} rows" in str(refused.value)

    result = run_policy(pg, config, "revoked_tokens")
    assert not result.counts_estimated
    assert result.expected_deleted == result.deleted == expired and result.table_rows == ROWS


@pytest.mark.postgres
def test_stale_statistics_are_not_trusted_by_the_guard(pg, pg_url, tmp_path):
    create_analyzed_tokens(pg, 0.1)
    # After ANALYZE, most tokens become expired: the statistics still say 10%.
    with psycopg.connect(pg_url, autocommit=True) as app:
        app.execute(
            "UPDATE revoked_tokens SET expires_at = now() - interval '1 day' WHERE id % 10 < 8"
        )
        app.execute("SELECT pg_stat_force_next_flush()")
    assert_refused_without_deleting(pg, tmp_path, count_expired(pg))


@pytest.mark.postgres
def test_a_guarded_run_counts_exactly_even_well_under_the_limit(pg, tmp_path):
    expired = create_analyzed_tokens(pg, 0.3)

    result = run_policy(pg, token_config(tmp_path, max_delete_fraction=0.9), "revoked_tokens")

    assert not result.counts_estimated
    assert result.expected_deleted == result.deleted == expired and result.table_rows == ROWS


@pytest.mark.postgres
def test_a_mass_update_whose_statistics_are_not_flushed_yet_is_refused(pg, pg_url, tmp_path):
    create_analyzed_tokens(pg, 0.1)
    # Room on every page, so the updated rows stay on their pages: the table does not grow.
    with pg.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.execute(sa.text("ALTER TABLE revoked_tokens SET (fillfactor = 45)"))
        conn.execute(sa.text("VACUUM FULL revoked_tokens"))
        conn.execute(sa.text("ANALYZE revoked_tokens"))
    # The application's session flushes its statistics after one small change, then makes most
    # tokens expire within the second after and stays connected: its changes are not in
    # pg_stat_user_tables yet, so the statistics still look fresh and say 10%.
    with psycopg.connect(pg_url, autocommit=True) as app:
        app.execute("UPDATE revoked_tokens SET user_id = user_id WHERE id = 1")
        app.execute("SELECT pg_stat_force_next_flush()")
        app.execute("SELECT 1")
        app.execute(
            "UPDATE revoked_tokens SET expires_at = now() - interval '2 days' WHERE id % 10 < 7"
        )
        assert_refused_without_deleting(pg, tmp_path, count_expired(pg))


@pytest.mark.postgres
def test_a_dry_run_and_a_small_table_count_exactly(pg, tmp_path):
    expired = create_analyzed_tokens(pg, 0.3)
    dry = run_policy(pg, token_config(tmp_path), "revoked_tokens", options=RunOptions(dry_run=True))
    assert not dry.counts_estimated and dry.expected_deleted == expired
    with pg.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM revoked_tokens WHERE id > 1000"))
    with pg.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(
            sa.text("VACUUM ANALYZE revoked_tokens")
        )
    small = run_policy(pg, token_config(tmp_path, max_delete_fraction=1.0), "revoked_tokens")
    assert not small.counts_estimated
