"""Runs one housekeeping policy: checks, safety refusals, then the batched delete.

Order matters and is the same for every policy: check the config against the live schema, check
that the archive can be written, compare clocks, take the table lock, finish what a crashed run
left in the archive, count, refuse a suspiciously large delete, and only then delete.

Every statement of a run waits at most ``safety.lock_timeout`` for a lock. Rows other sessions
have locked are skipped and reported (``skipped_locked``); a lock on the whole table that outlasts
``lock_timeout`` ends the run with ``RunLockedOut``, which says what the run did before it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import sqlalchemy as sa

from housekeeping.archive import ArchiveStore, LocalArchiveStore, TableArchive
from housekeeping.column_time import column_instant
from housekeeping.config import HousekeepingConfig
from housekeeping.config_types import format_duration
from housekeeping.database import AppDatabase, LockNotAvailable, is_lock_not_available
from housekeeping.deletion import (
    BoundParams,
    DeleteOutcome,
    DeleteTarget,
    delete_in_batches,
    target_conditions,
)
from housekeeping.errors import HkError
from housekeeping.history import PolicyRun, RunHistory, RunStatus
from housekeeping.locking import AlreadyRunning, table_lock
from housekeeping.partition_retention import (
    PartitionOutcome,
    drop_expired_partitions,
    expired_partitions,
    partition_exists,
    range_partitions,
)
from housekeeping.policy_kinds import DeleteStrategy, JobsPolicy, PolicyConfig, PolicyKind
from housekeeping.schema_check import CheckedPolicy, check_policy
from housekeeping.sql import TableName, quote_identifier

# Above this share of expiring rows, walking the whole table beats walking the cutoff index.
PRIMARY_KEY_WALK_FRACTION = 0.10
# Below this many rows (pg_class.reltuples) a table is counted exactly before every run: the
# pass is cheap, and an estimate's margin would be most of a small table.
ESTIMATE_MIN_ROWS = 100_000
# Statistics older than this share of the table (rows changed since ANALYZE, pages added) are not
# trusted at all: the run counts exactly.
ESTIMATE_MAX_STALENESS = 0.10


class SafetyRefusal(HkError):
    """The run refused to delete anything: clocks disagree or the delete looks too large."""


class RunLockedOut(LockNotAvailable):
    """A lock on the policy's table (or SQLite file) was not granted within
    ``safety.lock_timeout``; ``result`` is what the run did before (None: nothing yet)."""

    def __init__(self, message: str, result: PolicyResult | None = None) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class RunOptions:
    dry_run: bool = False
    allow_large_delete: bool = False


@dataclass
class PolicyResult:
    policy: str
    table: str
    kind: PolicyKind
    dry_run: bool
    cutoffs: list[str]
    table_rows: int = 0
    expected_deleted: int = 0
    deleted: int = 0
    not_expiring: int = 0
    remaining_expired: int = 0
    batches: int = 0
    max_batch_ms: float = 0.0
    duration_ms: float = 0.0
    archived_rows: int = 0
    archive_files: int = 0
    recovered_archive_files: int = 0
    partitions_dropped: int = 0
    # Expired rows other sessions had locked: skipped (never waited for); the next run takes them.
    skipped_locked: int = 0
    # Expired partitions a lock kept from being detached (their rows went batch by batch).
    partitions_skipped_locked: int = 0
    strategies: list[DeleteStrategy] = field(default_factory=list)
    stopped_early: bool = False
    exceeds_delete_fraction: bool = False
    # table_rows came from the planner's statistics, not a count (see estimate_rows); the
    # expected_deleted of a run that finished is then what its batches met.
    counts_estimated: bool = False

    def summary_line(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        count = self.expected_deleted if self.dry_run else self.deleted
        about = "about " if self.counts_estimated else ""
        line = (
            f"{self.policy}: {verb} {count:,} of {about}{self.table_rows:,} rows from {self.table} "
            f"(cutoff {', '.join(self.cutoffs)})"
        )
        if not self.dry_run:
            line += f" in {self.batches} batches, {self.duration_ms:,.0f} ms"
            if self.archived_rows:
                line += f", archived {self.archived_rows:,}"
            if self.skipped_locked:
                line += f", skipped {self.skipped_locked:,} rows locked by other sessions"
            if self.stopped_early:
                line += ", stopped early on request"
        return line

    def metadata(self) -> dict[str, Any]:
        """What the Dagster UI shows and plots across runs (numbers only, no row contents)."""
        values = asdict(self)
        values["kind"] = str(self.kind)
        kept_key = "active_revoked" if self.kind is PolicyKind.EXPIRED else "retained_rows"
        values[kept_key] = values.pop("not_expiring")
        values["cutoffs"] = ", ".join(self.cutoffs)
        values["strategies"] = ", ".join(self.strategies) or "none"
        return values


def check_clock_skew(
    db: AppDatabase, tolerance: timedelta, pipeline_clock: Callable[[], datetime]
) -> datetime:
    """The database's now, after refusing when it and this process disagree beyond tolerance."""
    before = pipeline_clock()
    database_now = db.clock()
    after = pipeline_clock()
    local_now = before + (after - before) / 2
    skew = abs(database_now - local_now) - (after - before) / 2
    if skew > tolerance:
        raise SafetyRefusal(
            f"clock skew: the database clock says {database_now.isoformat()} but this process "
            f"says {local_now.isoformat()} (off by {skew.total_seconds():.1f}s, tolerance "
            f"safety.max_clock_skew = {format_duration(tolerance)}); nothing was deleted. "
            "Fix NTP on the database or pipeline host."
        )
    return database_now


def count_rows(
    db: AppDatabase, table: TableName, targets: list[DeleteTarget], *, sequential: bool = False
) -> tuple[int, list[int]]:
    """The table's row count and each target's matching rows, in one pass over the table.

    ``sequential`` forbids index scans: right after a mass delete the cutoff index is full of
    dead entries until VACUUM, and walking them is far slower than reading the table once.
    """
    params = BoundParams(numeric=False)
    matches = [
        f"count(CASE WHEN {' AND '.join(target_conditions(db, target, params))} THEN 1 END)"
        for target in targets
    ]
    sql = f"SELECT {', '.join(['count(*)', *matches])} FROM {table.sql}"
    with db.connect() as conn, conn.begin():
        if sequential and db.is_postgres:
            for setting in ("enable_indexscan", "enable_indexonlyscan", "enable_bitmapscan"):
                conn.execute(sa.text(f"SET LOCAL {setting} = off"))
        counts = conn.execute(sa.text(sql), params.as_driver_params()).one()
    return int(counts[0]), [int(value or 0) for value in counts[1:]]


@dataclass(frozen=True)
class RowEstimate:
    """The planner's idea of a table (rows) and of a target (rows matching). Used only where an
    estimate cannot change a decision (no delete-fraction guard can refuse the run): ANALYZE's
    sample may be off, and other sessions' changes reach the statistics seconds late."""

    table_rows: int
    target_rows: int


def estimate_rows(db: AppDatabase, table: TableName, target: DeleteTarget) -> RowEstimate | None:
    """The table's and ``target``'s row counts from PostgreSQL's statistics (pg_class, the
    planner's estimate of the target's condition, pg_stat_user_tables): one catalog query and
    one EXPLAIN instead of a pass over the table. None when they cannot be trusted: not
    PostgreSQL, never analyzed, fewer than ESTIMATE_MIN_ROWS rows, or more than
    ESTIMATE_MAX_STALENESS of the table changed (rows modified, pages added or gone) since.

    Statistics are flushed by other sessions within seconds: a mass change made in the last
    seconds may not be counted in the staleness yet.
    """
    if not db.is_postgres:
        return None
    params = BoundParams(numeric=False)
    where = " AND ".join(target_conditions(db, target, params))
    with db.connect() as conn, conn.begin():
        stats = conn.execute(
            sa.text(
                "SELECT c.reltuples, c.relpages, "
                "pg_relation_size(c.oid) / current_setting('block_size')::int, "
                "coalesce(s.n_mod_since_analyze, 0), "
                "coalesce(s.last_analyze, s.last_autoanalyze) IS NOT NULL "
                "FROM pg_class c LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid "
                "WHERE c.oid = to_regclass(:name) AND c.relkind = 'r'"
            ),
            {"name": table.sql},
        ).one_or_none()
        if stats is None:
            return None
        reltuples, relpages, pages, modified, analyzed = stats
        if not analyzed or reltuples < ESTIMATE_MIN_ROWS or relpages <= 0:
            return None
        plan = conn.execute(
            sa.text(f"EXPLAIN (FORMAT JSON) SELECT 1 FROM {table.sql} WHERE {where}"),
            params.as_driver_params(),
        ).scalar_one()
    plan = json.loads(plan) if isinstance(plan, str) else plan
    target_rows = float(plan[0]["Plan"]["Plan Rows"])
    rows_per_page = reltuples / relpages
    # As the planner does: the rows per page of the last ANALYZE, over the pages there are now.
    table_rows = rows_per_page * pages
    changed = modified + abs(pages - relpages) * rows_per_page
    if changed > ESTIMATE_MAX_STALENESS * reltuples:
        return None
    return RowEstimate(round(table_rows), round(min(target_rows, table_rows)))


def build_targets(
    db: AppDatabase, conn: sa.Connection, checked: CheckedPolicy, database_now: datetime
) -> list[DeleteTarget]:
    """What one run deletes: one target per cutoff, all computed from the database's clock.

    Expired and age policies have one cutoff for the whole table; jobs policies one per status,
    and per queue with keep_last, which needs the database.
    """
    policy = checked.policy
    base = dict(
        table=policy.table,
        primary_key=checked.primary_key,
        cutoff_column=policy.cutoff_column,
        cutoff_zone=checked.cutoff_zone,
    )
    if isinstance(policy, JobsPolicy):
        return _job_targets(conn, policy, database_now, base)
    return [DeleteTarget(cutoff=policy.cutoff(database_now), **base)]


def _job_targets(
    conn: sa.Connection,
    policy: JobsPolicy,
    database_now: datetime,
    base: dict[str, Any],
) -> list[DeleteTarget]:
    """Per status an age cutoff; with keep_last, per queue the newest N are kept as well.

    A finished job goes when it is older than the status's retention OR not among the newest
    keep_last of its queue (BullMQ's removeOnComplete {age, count}, Sidekiq's dead-set limits).
    Ties at the N-th newest are kept, so a queue never keeps fewer than N. The N-th newest value
    is read in the column's zone (``base["cutoff_zone"]``) like every other.
    """
    table = policy.table.sql
    status_column = quote_identifier(policy.status_column)
    cutoff_column = quote_identifier(policy.cutoff_column)
    targets = []
    for status, rule in policy.statuses.items():
        age_cutoff = database_now - rule.retention
        if not rule.keep_last:
            targets.append(
                DeleteTarget(cutoff=age_cutoff, filters=((policy.status_column, status),), **base)
            )
            continue
        assert policy.queue_column is not None
        queue_column = quote_identifier(policy.queue_column)
        queues = (
            conn.execute(
                sa.text(
                    f"SELECT DISTINCT {queue_column} FROM {table} WHERE {status_column} = :status"
                ),
                {"status": status},
            )
            .scalars()
            .all()
        )
        for queue in queues:
            queue_match = f"{queue_column} IS NULL" if queue is None else f"{queue_column} = :queue"
            nth_newest = conn.execute(
                sa.text(
                    f"SELECT {cutoff_column} FROM {table} WHERE {status_column} = :status "
                    f"AND {queue_match} AND {cutoff_column} IS NOT NULL "
                    f"ORDER BY {cutoff_column} DESC LIMIT 1 OFFSET :offset"
                ),
                {"status": status, "queue": queue, "offset": rule.keep_last - 1},
            ).scalar()
            cutoff = age_cutoff
            if nth_newest is not None:
                cutoff = max(age_cutoff, column_instant(nth_newest, base["cutoff_zone"]))
            targets.append(
                DeleteTarget(
                    cutoff=cutoff,
                    filters=((policy.status_column, status), (policy.queue_column, queue)),
                    **base,
                )
            )
    return targets


def choose_strategy(
    db: AppDatabase, configured: DeleteStrategy, checked: CheckedPolicy, expected: int, total: int
) -> DeleteStrategy:
    if configured is not DeleteStrategy.AUTO:
        return configured
    has_cutoff_index = checked.policy.cutoff_column in checked.table.indexed_leading_columns
    if checked.table.is_partitioned and has_cutoff_index:
        return DeleteStrategy.CUTOFF_INDEX  # prunes partitions; key ranges would visit them all
    if not has_cutoff_index or (total and expected / total >= PRIMARY_KEY_WALK_FRACTION):
        if db.is_postgres and not checked.table.is_partitioned:
            return DeleteStrategy.PAGE_RANGES
        return DeleteStrategy.PRIMARY_KEY_RANGES
    return DeleteStrategy.CUTOFF_INDEX


def _rows_still_in_table(db: AppDatabase, checked: CheckedPolicy) -> Callable[[pa.Table], bool]:
    """For archive recovery: does any row of a pending file still exist in the table?"""
    key = checked.primary_key

    def lookup(rows: pa.Table) -> bool:
        if any(column not in rows.column_names for column in key):
            return True  # cannot tell: keep the rows in the table, re-archive them later
        values = list(zip(*(rows.column(column).to_pylist() for column in key), strict=True))
        with db.connect() as conn:
            for start in range(0, len(values), 500):
                chunk = values[start : start + 500]
                params = BoundParams(numeric=False)
                if len(key) == 1:
                    listed = ", ".join(params.bind(value[0]) for value in chunk)
                    where = f"{quote_identifier(key[0])} IN ({listed})"
                else:
                    columns = ", ".join(quote_identifier(column) for column in key)
                    listed = ", ".join(
                        "(" + ", ".join(params.bind(item) for item in value) + ")"
                        for value in chunk
                    )
                    where = f"({columns}) IN ({listed})"
                sql = f"SELECT 1 FROM {checked.policy.table.sql} WHERE {where} LIMIT 1"
                if conn.execute(sa.text(sql), params.as_driver_params()).first() is not None:
                    return True
        return False

    return lookup


def _drop_whole_partitions(
    db: AppDatabase,
    checked: CheckedPolicy,
    target: DeleteTarget,
    archive: TableArchive | None,
    config: HousekeepingConfig,
    run_id: str,
    should_stop: Callable[[], bool],
    log: Callable[[str], None],
) -> PartitionOutcome:
    partitions = expired_partitions(
        range_partitions(db, checked.table.name, checked.policy.cutoff_column, checked.cutoff_zone),
        target.cutoff,
    )
    if not partitions:
        return PartitionOutcome()
    return drop_expired_partitions(
        db,
        checked.table.name,
        partitions,
        archive=archive,
        safety=config.safety,
        run_id=run_id,
        should_stop=should_stop,
        log=log,
    )


def archive_store(config: HousekeepingConfig) -> ArchiveStore:
    return LocalArchiveStore(config.archive.root)


def run_policy(
    db: AppDatabase,
    config: HousekeepingConfig,
    name: str,
    *,
    options: RunOptions = RunOptions(),
    run_id: str | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    log: Callable[[str], None] = lambda message: None,
    pipeline_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    store: ArchiveStore | None = None,
) -> PolicyResult:
    """Run one policy end to end. Raises (deleting nothing) on bad config or a safety refusal.

    Rows other sessions have locked are skipped (``PolicyResult.skipped_locked``). Raises
    ``RunLockedOut`` when a lock on the table is not granted within ``safety.lock_timeout``;
    its ``result`` holds what the run did before.
    """
    started = time.perf_counter()
    policy: PolicyConfig = config.policy(name)
    result = PolicyResult(
        policy=name, table=str(policy.table), kind=policy.kind, dry_run=options.dry_run, cutoffs=[]
    )
    # Every statement of the run, not only the batches, gives up on a lock after lock_timeout.
    run_db = db.with_lock_timeout(config.safety.lock_timeout)
    try:
        return _run_policy(
            run_db,
            config,
            result,
            options=options,
            run_id=run_id or uuid.uuid4().hex[:12],
            should_stop=should_stop,
            log=log,
            pipeline_clock=pipeline_clock,
            store=store,
        )
    except sa.exc.DBAPIError as exc:
        if not is_lock_not_available(exc):
            raise
        result.duration_ms = (time.perf_counter() - started) * 1000
        reason = run_db.lock_not_granted(policy.table, config.safety.lock_timeout)
        raise _locked_out(result, reason) from None
    finally:
        if run_db is not db:
            run_db.dispose()


def _locked_out(result: PolicyResult, reason: str) -> RunLockedOut:
    # Rows counted before the lock and not deleted are still there (and still expired).
    result.remaining_expired = max(0, result.expected_deleted - result.deleted)
    if result.deleted:
        archived = f", archived {result.archived_rows:,}" if result.archived_rows else ""
        done = f"this run deleted {result.deleted:,} rows{archived} before it"
    else:
        done = "this run deleted nothing"
    if result.skipped_locked:
        done += f" and skipped {result.skipped_locked:,} locked rows"
    return RunLockedOut(f"{result.policy}: {reason}; {done}; the next run carries on", result)


def _run_policy(
    db: AppDatabase,
    config: HousekeepingConfig,
    result: PolicyResult,
    *,
    options: RunOptions,
    run_id: str,
    should_stop: Callable[[], bool],
    log: Callable[[str], None],
    pipeline_clock: Callable[[], datetime],
    store: ArchiveStore | None,
) -> PolicyResult:
    """``run_policy``'s steps; fills ``result`` in as it goes, so a failure can say how far."""
    started = time.perf_counter()
    name = result.policy
    policy: PolicyConfig = config.policy(name)
    checked = check_policy(db, name, policy)
    archive = None
    if policy.archive and not options.dry_run:
        store = store or archive_store(config)
        store.check_writable()
        archive = TableArchive(store, str(policy.table), policy.cutoff_column)
    database_now = check_clock_skew(db, config.safety.max_clock_skew, pipeline_clock)

    with table_lock(db, policy.table):
        if archive is not None:
            recovery = archive.recover(
                _rows_still_in_table(db, checked),
                partition_exists(db) if checked.table.is_partitioned else None,
            )
            result.recovered_archive_files = recovery.completed
            if recovery.completed or recovery.discarded:
                log(
                    f"{name}: archive recovery finished {recovery.completed} and discarded "
                    f"{recovery.discarded} files a previous run left pending"
                )
        with db.connect() as conn:
            targets = build_targets(db, conn, checked, database_now)
        limit = config.delete_fraction_limit(policy)
        total, expected_by_target, result.counts_estimated = planned_counts(
            db, checked, targets, limit=limit, options=options
        )
        expected = sum(expected_by_target)
        result.cutoffs = sorted({target.cutoff.isoformat(timespec="seconds") for target in targets})
        result.table_rows = total
        result.expected_deleted = expected
        result.not_expiring = total - expected
        result.remaining_expired = expected if options.dry_run else 0
        result.exceeds_delete_fraction = bool(total) and expected / total > limit
        if options.dry_run:
            result.duration_ms = (time.perf_counter() - started) * 1000
            return result
        if result.exceeds_delete_fraction and not options.allow_large_delete:
            raise SafetyRefusal(
                f"{name}: this run would delete {expected:,} of {total:,} rows of "
                f"{policy.table!r} ({expected / total:.0%}), above the limit of {limit:.0%} "
                f"(policies.{name}.max_delete_fraction or safety.max_delete_fraction); nothing "
                "was deleted. Check the cutoff, or rerun with allow_large_delete."
            )
        if checked.table.is_partitioned and not isinstance(policy, JobsPolicy):
            dropped = _drop_whole_partitions(
                db, checked, targets[0], archive, config, run_id, should_stop, log
            )
            result.partitions_dropped = dropped.partitions_dropped
            result.partitions_skipped_locked = dropped.partitions_skipped_locked
            result.deleted += dropped.rows
            result.archived_rows += dropped.archived_rows
            result.archive_files += dropped.archive_files
            result.max_batch_ms = max(result.max_batch_ms, dropped.max_transaction_ms)
            expected_by_target = [max(0, expected_by_target[0] - dropped.rows)]
        sequence = 0
        # Rows of the count above the batches met (deleted or skipped as locked); dropped
        # partitions are accounted for in the counts already.
        accounted = 0
        for target, target_expected in zip(targets, expected_by_target, strict=True):
            if target_expected == 0:
                continue
            strategy = choose_strategy(db, policy.strategy, checked, target_expected, total)
            result.strategies.append(strategy)
            outcome: DeleteOutcome = delete_in_batches(
                db,
                target,
                strategy=strategy,
                batch=config.batch,
                safety=config.safety,
                archive=archive,
                run_id=run_id,
                first_sequence=sequence,
                should_stop=should_stop,
            )
            sequence += outcome.batches
            accounted += outcome.deleted + outcome.skipped_locked
            result.deleted += outcome.deleted
            result.skipped_locked += outcome.skipped_locked
            result.batches += outcome.batches
            result.archived_rows += outcome.archived_rows
            result.archive_files += outcome.archive_files
            result.max_batch_ms = max(result.max_batch_ms, outcome.max_batch_ms)
            skipped = (
                f", skipped {outcome.skipped_locked:,} locked" if outcome.skipped_locked else ""
            )
            log(
                f"{name}: deleted {outcome.deleted:,} rows ({target.describe()}) "
                f"in {outcome.batches} batches{skipped}"
            )
            if outcome.locked_out is not None:
                result.duration_ms = (time.perf_counter() - started) * 1000
                raise _locked_out(result, outcome.locked_out)
            if outcome.stopped_early:
                result.stopped_early = True
                break
        result.remaining_expired = _remaining_expired(
            db, policy.table, targets, result, accounted, sum(expected_by_target)
        )
    result.duration_ms = (time.perf_counter() - started) * 1000
    return result


def planned_counts(
    db: AppDatabase,
    checked: CheckedPolicy,
    targets: list[DeleteTarget],
    *,
    limit: float,
    options: RunOptions,
) -> tuple[int, list[int], bool]:
    """(table rows, each target's rows, estimated?) for the run's plan and its delete-fraction
    guard (``limit``, a share of the table).

    The planner's estimate (``estimate_rows``: no pass over the table) is used only for a real
    run of one target on a plain PostgreSQL table, and only when the guard cannot refuse it: the
    run allows a large delete, or ``limit`` is the whole table. Statistics cannot be trusted to
    guard: another session's changes reach them only when it flushes them (up to seconds after
    its commit, longer while it stays busy), so a mass UPDATE just before a run can leave them
    saying 10% while 70% has expired. With a guard, for a dry run (which reports exact
    numbers), and whenever the statistics are missing or stale, the rows are counted exactly
    (``count_rows``), so a refusal always quotes exact counts.
    """
    table = checked.policy.table
    guarded = limit < 1.0 and not options.allow_large_delete
    if not guarded and not options.dry_run and len(targets) == 1:
        estimate = None if checked.table.is_partitioned else estimate_rows(db, table, targets[0])
        if estimate is not None:
            return estimate.table_rows, [estimate.target_rows], True
    total, expected = count_rows(db, table, targets)
    return total, expected, False


def _remaining_expired(
    db: AppDatabase,
    table: TableName,
    targets: list[DeleteTarget],
    result: PolicyResult,
    accounted: int,
    expected: int,
) -> int:
    """The target rows still in the table after a run.

    When the batches met exactly the rows counted before the run (each deleted or skipped as
    locked) and the run was not stopped, that is the skipped rows: no second pass over the
    table. So it is after a run planned on estimates that was not stopped: its batches met every
    row of the target as their snapshots saw it (rows added or changed meanwhile are the next
    run's), and ``result``'s expected_deleted becomes what they met. Otherwise (stopped early, or
    rows were added, changed or deleted by others meanwhile) they are counted again, in one
    sequential pass.
    """
    if not result.stopped_early and result.counts_estimated:
        result.expected_deleted = accounted
        result.not_expiring = max(0, result.table_rows - accounted)
        return result.skipped_locked
    if not result.stopped_early and accounted == expected:
        return result.skipped_locked
    walked_whole_table = any(
        strategy is not DeleteStrategy.CUTOFF_INDEX for strategy in result.strategies
    )
    _, remaining = count_rows(db, table, targets, sequential=walked_whole_table)
    return sum(remaining)


@contextmanager
def failure_recorded(
    history: RunHistory, policy: str, table_name: str, dagster_run_id: str | None
) -> Iterator[datetime]:
    """Yields the run's start time (UTC); when the block raises, records a failed run, re-raises.

    A refused or failed run is recorded as failed: the operator has to look either way. A run
    that found another cleanup of the same table in progress (AlreadyRunning) is not recorded.
    A run locked out of its table (RunLockedOut) is recorded with what it did before.
    """
    started = datetime.now(UTC)
    try:
        yield started
    except AlreadyRunning:
        raise
    except Exception as exc:
        done = exc.result if isinstance(exc, RunLockedOut) else None
        history.record(
            PolicyRun(
                policy=policy,
                table_name=table_name,
                status=RunStatus.FAILED,
                started_at=started,
                finished_at=datetime.now(UTC),
                duration_ms=(datetime.now(UTC) - started).total_seconds() * 1000,
                error=f"{type(exc).__name__}: {exc}",
                dagster_run_id=dagster_run_id,
                **(_recorded_counts(done) if done is not None else {}),
            )
        )
        raise


def _recorded_counts(result: PolicyResult) -> dict[str, int]:
    """What a run did, as the run history records it."""
    return {
        "deleted": result.deleted,
        "expected_deleted": result.expected_deleted,
        "remaining_expired": result.remaining_expired,
        "archived_rows": result.archived_rows,
        "batches": result.batches,
        "skipped_locked": result.skipped_locked,
    }


def run_and_record(
    history: RunHistory,
    db: AppDatabase,
    config: HousekeepingConfig,
    name: str,
    *,
    dagster_run_id: str | None = None,
    **run_options: Any,
) -> PolicyResult:
    """``run_policy`` plus one history row per real run (dry runs are not history).

    Failures are recorded as ``failure_recorded`` says, then re-raised.
    """
    policy = config.policy(name)
    with failure_recorded(history, name, str(policy.table), dagster_run_id) as started:
        result = run_policy(db, config, name, **run_options)
    if not result.dry_run:
        history.record(
            PolicyRun(
                policy=name,
                table_name=str(policy.table),
                status=RunStatus.STOPPED if result.stopped_early else RunStatus.SUCCESS,
                started_at=started,
                finished_at=datetime.now(UTC),
                duration_ms=result.duration_ms,
                dagster_run_id=dagster_run_id,
                **_recorded_counts(result),
            )
        )
    return result
