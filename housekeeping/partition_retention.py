"""Range-partitioned tables (PostgreSQL): whole expired partitions go at once.

A partition whose upper bound is at or before the cutoff holds only expired rows. It is streamed
to the archive (durably), then detached and dropped in one transaction, then the archive file is
published: the same stage -> commit -> publish protocol as row batches, so a crash anywhere is
repaired by the next run (see archive.TableArchive.recover).

Detaching needs ACCESS EXCLUSIVE on the table, which any other session's lock blocks, also a row
lock (``SELECT ... FOR UPDATE`` holds ROW SHARE on the table). When it is not granted within
``safety.lock_timeout`` no more partitions are tried this run (the lock would stop each one
again): their rows stay expired, so the batched deleter that runs next deletes them row by row,
skipping only the rows that are locked, and a later run drops the partitions.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import adbc_driver_postgresql.dbapi as adbc
import sqlalchemy as sa

from housekeeping.archive import TableArchive, partition_file_name
from housekeeping.column_time import column_instant
from housekeeping.config import SafetyConfig
from housekeeping.database import LOCK_NOT_AVAILABLE, AppDatabase, libpq_url, timeout_ms
from housekeeping.sql import TableName

_RANGE_KEY = re.compile(r"^RANGE \((.+)\)$")
_BOUNDS = re.compile(r"^FOR VALUES FROM \((.+)\) TO \((.+)\)$")


@dataclass(frozen=True)
class Partition:
    name: TableName  # always schema-qualified: a partition may live in another schema
    lower: datetime | None  # None: MINVALUE
    upper: datetime | None  # None: MAXVALUE


@dataclass
class PartitionOutcome:
    partitions_dropped: int = 0
    rows: int = 0
    archived_rows: int = 0
    archive_files: int = 0
    max_transaction_ms: float = 0.0
    # Expired partitions left in place because a lock kept them from being detached.
    partitions_skipped_locked: int = 0


def _bound(text: str, zone: str | None) -> datetime | None:
    text = text.strip()
    if text.upper() in ("MINVALUE", "MAXVALUE"):
        return None
    return column_instant(text.strip("'"), zone)


def range_partitions(
    db: AppDatabase, table: TableName, column: str, zone: str | None
) -> list[Partition]:
    """The table's range partitions on ``column`` (empty when partitioned otherwise).

    Bounds are instants: a naive partition key's bounds are readings of a clock in ``zone``
    (None: a timestamptz key), as the cutoff predicate reads the column's values.
    """
    with db.connect() as conn:
        key = conn.execute(
            sa.text("SELECT pg_get_partkeydef(to_regclass(:name))"), {"name": table.sql}
        ).scalar()
        match = _RANGE_KEY.match(key or "")
        if not match or match.group(1).strip('"') != column:
            return []
        conn.execute(sa.text("SET LOCAL TimeZone = 'UTC'"))
        rows = conn.execute(
            sa.text(
                "SELECT n.nspname, c.relname, pg_get_expr(c.relpartbound, c.oid) "
                "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE i.inhparent = to_regclass(:name) ORDER BY c.relname"
            ),
            {"name": table.sql},
        ).all()
    partitions = []
    for schema, name, bound in rows:
        bounds = _BOUNDS.match(bound or "")
        if bounds is None:
            continue  # the DEFAULT partition: its rows go row by row
        partitions.append(
            Partition(
                TableName(name, schema),
                _bound(bounds.group(1), zone),
                _bound(bounds.group(2), zone),
            )
        )
    return partitions


def expired_partitions(partitions: list[Partition], cutoff: datetime) -> list[Partition]:
    return [p for p in partitions if p.upper is not None and p.upper <= cutoff]


def partition_exists(db: AppDatabase) -> Callable[[str], bool]:
    """For archive recovery: does the partition an archive file is named after still exist?"""

    def exists(name: str) -> bool:
        try:
            partition = TableName.parse(name)
        except ValueError:  # a name with dots of its own, from before names were qualified
            partition = TableName(name)
        with db.connect() as conn:
            return (
                conn.execute(sa.text("SELECT to_regclass(:name)"), {"name": partition.sql}).scalar()
                is not None
            )

    return exists


def drop_expired_partitions(
    db: AppDatabase,
    table: TableName,
    partitions: list[Partition],
    *,
    archive: TableArchive | None,
    safety: SafetyConfig,
    run_id: str,
    should_stop: Callable[[], bool] = lambda: False,
    log: Callable[[str], None] = lambda message: None,
) -> PartitionOutcome:
    outcome = PartitionOutcome()
    lock_ms = timeout_ms(safety.lock_timeout)
    statement_ms = timeout_ms(safety.statement_timeout)
    conn = adbc.connect(libpq_url(db.url))
    try:
        cursor = conn.cursor()
        for position, partition in enumerate(partitions):
            if outcome.partitions_dropped and should_stop():
                break
            quoted = partition.name.sql
            staged = None
            try:
                # Every lock of the transaction waits at most lock_timeout, the archive read's too.
                cursor.execute(
                    "SELECT set_config('lock_timeout', $1, true)", parameters=[f"{lock_ms}ms"]
                )
                cursor.fetchall()
                if archive is not None:
                    # Read inside the dropping transaction: nobody can add rows to a partition
                    # wholly in the past, and what we archive is exactly what we drop.
                    cursor.execute(f"SELECT * FROM {quoted}")
                    staged = archive.stage_stream(
                        cursor.fetch_record_batch(),
                        name=partition_file_name(run_id, str(partition.name)),
                        run_id=run_id,
                        now=datetime.now(UTC),
                    )
                    rows = staged.entry.rows
                else:
                    cursor.execute(f"SELECT count(*) FROM {quoted}")
                    rows = int(cursor.fetchone()[0])
                # The statement timeout guards the short exclusive part; the archive read above
                # only holds ACCESS SHARE on the partition, so the application is never blocked.
                cursor.execute(
                    "SELECT set_config('statement_timeout', $1, true)",
                    parameters=[f"{statement_ms}ms"],
                )
                cursor.fetchall()
                started = datetime.now(UTC)
                cursor.execute(f"ALTER TABLE {table.sql} DETACH PARTITION {quoted}")
                cursor.execute(f"DROP TABLE {quoted}")
            except BaseException as exc:
                conn.rollback()
                if archive is not None and staged is not None:
                    archive.discard(staged)
                if not isinstance(exc, adbc.Error) or exc.sqlstate != LOCK_NOT_AVAILABLE:
                    raise
                outcome.partitions_skipped_locked = len(partitions) - position
                log(
                    f"partition {partition.name} of {table} was not detached: a lock was not "
                    f"granted within safety.lock_timeout; {outcome.partitions_skipped_locked} "
                    "expired partitions stay, their rows are deleted batch by batch instead"
                )
                break
            conn.commit()  # unknown outcome on failure: recovery checks whether the table exists
            if archive is not None and staged is not None:
                archive.commit(staged)
                outcome.archived_rows += rows
                outcome.archive_files += 1
            outcome.partitions_dropped += 1
            outcome.rows += rows
            outcome.max_transaction_ms = max(
                outcome.max_transaction_ms, (datetime.now(UTC) - started).total_seconds() * 1000
            )
            log(f"dropped partition {partition.name} of {table} ({rows:,} rows)")
        cursor.close()
    finally:
        conn.close()
    return outcome
