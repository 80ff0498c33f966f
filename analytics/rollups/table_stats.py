"""Snapshots of the housekept tables: rows, expired rows and size on disk, appended over time.

One row per snapshot x policy. ``expired_rows`` are the rows the policy's next cleanup would
delete, counted by the cleanup's own code (``build_targets`` and ``count_rows``) against the
database clock, so the snapshot and a dry run agree. Sizes come from the database: on PostgreSQL
``pg_total_relation_size``, ``pg_table_size`` and ``pg_indexes_size`` summed over the table's
partitions (a partitioned parent has no storage of its own); on SQLite the ``dbstat`` virtual
table (pages of the table and of its indexes).

Snapshots are appended to one Parquet file per UTC day (``table_stats/<YYYY-MM-DD>.parquet``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
import sqlalchemy as sa

from analytics.datasets import TABLE_STATS
from analytics.publish import RollupStore
from analytics.rollups.engine import (
    RollupResult,
    append_to_partition,
    create_rollup_table,
    duckdb_session,
    preview_rows,
)
from housekeeping.config import HousekeepingConfig
from housekeeping.database import AppDatabase
from housekeeping.policies import build_targets, count_rows
from housekeeping.schema_check import check_policy
from housekeeping.sql import TableName, quote_identifier


@dataclass(frozen=True)
class TableSize:
    """Bytes on disk; None on a SQLite built without the dbstat table (sizes unknown)."""

    total_bytes: int | None
    table_bytes: int | None
    index_bytes: int | None


def table_size(db: AppDatabase, table: TableName) -> TableSize:
    """Size on disk of ``table`` (a name checked against the live schema by the caller)."""
    with db.connect() as conn:
        if db.is_postgres:
            row = conn.execute(
                sa.text(
                    "SELECT coalesce(sum(pg_total_relation_size(relid)), 0), "
                    "coalesce(sum(pg_table_size(relid)), 0), "
                    "coalesce(sum(pg_indexes_size(relid)), 0) "
                    # a plain table is not in its own (empty) partition tree: add it
                    "FROM (SELECT relid FROM pg_partition_tree(to_regclass(:name)) "
                    "UNION SELECT to_regclass(:name)) AS tree"
                ),
                {"name": table.sql},
            ).one()
            return TableSize(int(row[0]), int(row[1]), int(row[2]))
        schema = table.schema or "main"  # SQLite's schemas are its attached databases
        try:
            rows = conn.execute(
                sa.text(
                    "SELECT m.type, coalesce(sum(s.pgsize), 0) "
                    f"FROM {quote_identifier(schema)}.sqlite_master m "
                    "JOIN dbstat s ON s.name = m.name AND s.schema = :schema "
                    "WHERE m.tbl_name = :name AND m.type IN ('table', 'index') GROUP BY m.type"
                ),
                {"name": table.name, "schema": schema},
            ).all()
        except sa.exc.OperationalError as exc:
            if "dbstat" not in str(exc):
                raise
            # SQLite compiled without SQLITE_ENABLE_DBSTAT_VTAB: rows still count, sizes do not.
            return TableSize(None, None, None)
    by_type = {kind: int(size) for kind, size in rows}
    table_bytes, index_bytes = by_type.get("table", 0), by_type.get("index", 0)
    return TableSize(table_bytes + index_bytes, table_bytes, index_bytes)


def _stats_rows(db: AppDatabase, config: HousekeepingConfig, taken_at: datetime) -> list[dict]:
    rows = []
    for name, policy in sorted(config.policies.items()):
        checked = check_policy(db, name, policy)
        with db.connect() as conn:
            targets = build_targets(db, conn, checked, taken_at)
        total, expired_by_target = count_rows(db, policy.table, targets)
        size = table_size(db, policy.table)
        rows.append(
            {
                "taken_at": taken_at.astimezone(UTC).replace(tzinfo=None),
                "policy": name,
                "table_name": str(policy.table),
                "rows": total,
                "expired_rows": sum(expired_by_target),
                "cutoffs": ", ".join(
                    sorted({target.cutoff.isoformat(timespec="seconds") for target in targets})
                ),
                "total_bytes": size.total_bytes,
                "table_bytes": size.table_bytes,
                "index_bytes": size.index_bytes,
            }
        )
    return rows


_SCHEMA = pa.schema(
    [
        ("taken_at", pa.timestamp("us")),
        ("policy", pa.string()),
        ("table_name", pa.string()),
        ("rows", pa.int64()),
        ("expired_rows", pa.int64()),
        ("cutoffs", pa.string()),
        ("total_bytes", pa.int64()),
        ("table_bytes", pa.int64()),
        ("index_bytes", pa.int64()),
    ]
)


def snapshot_table_stats(
    db: AppDatabase, store: RollupStore, config: HousekeepingConfig
) -> RollupResult:
    """Take one snapshot of every policy's table and append it to today's (UTC) file.

    Every policy's table and columns are checked against the live schema first (the same check
    as the cleanup's, naming the key), so a bad mapping fails before anything is written.
    """
    started = time.perf_counter()
    taken_at = db.clock()
    records = _stats_rows(db, config, taken_at)
    key = taken_at.astimezone(UTC).date().isoformat()
    with duckdb_session(store.root / ".tmp") as connection:
        create_rollup_table(connection, TABLE_STATS, pa.Table.from_pylist(records, schema=_SCHEMA))
        written = append_to_partition(connection, store, TABLE_STATS, key, "taken_at, policy")
        preview = preview_rows(connection, "rollup", "policy")
    return RollupResult(
        TABLE_STATS.name,
        taken_at,
        taken_at,
        (key,),
        len(records),
        written,
        time.perf_counter() - started,
        preview,
    )
