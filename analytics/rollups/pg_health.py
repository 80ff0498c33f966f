"""The application database's health snapshots, appended to the published datasets.

Each snapshot (analytics/pg_health.py) adds one ``pg_health`` row, one ``pg_table_health`` row
per housekept table and, with ``pg_stat_statements``, one ``pg_statement_stats`` row per
statement called since the previous snapshot (and one, without deltas, for a statement seen for
the first time). Rows go to one Parquet file per UTC hour (``<dataset>/<YYYY-MM-DDTHH>.parquet``),
rewritten with the new rows added: at one snapshot a minute an hour file holds 60 snapshots.
The previous snapshot's statement counters are read back from the published rows of the last
two hours.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import duckdb
import pyarrow as pa

from analytics.datasets import PG_HEALTH, PG_STATEMENT_STATS, PG_TABLE_HEALTH, Dataset
from analytics.pg_health import HealthSnapshot, statement_deltas, take_snapshot
from analytics.publish import RollupStore, hour_key
from analytics.rollups.engine import (
    RollupResult,
    append_to_partition,
    create_rollup_table,
    duckdb_session,
)
from housekeeping.config import HousekeepingConfig
from housekeeping.database import AppDatabase


def housekept_tables(config: HousekeepingConfig) -> list:
    """The tables of the config's policies, each once, in name order."""
    return sorted({policy.table for policy in config.policies.values()}, key=str)


def _naive(moment: datetime | None) -> datetime | None:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment is not None else None


def _arrow(dataset: Dataset, rows: list[dict]) -> pa.Table:
    columns = {column.name: [row.get(column.name) for row in rows] for column in dataset.columns}
    return pa.table(columns) if rows else pa.table({name: pa.array([]) for name in columns})


def _append(
    connection: duckdb.DuckDBPyConnection,
    store: RollupStore,
    dataset: Dataset,
    key: str,
    rows: list[dict],
    order_by: str,
) -> int:
    connection.execute("DROP TABLE IF EXISTS rollup")
    create_rollup_table(connection, dataset, _arrow(dataset, rows))
    return append_to_partition(connection, store, dataset, key, order_by)


def _previous_statements(
    connection: duckdb.DuckDBPyConnection, store: RollupStore, taken_at: datetime
) -> dict[str, tuple[int, float]]:
    keys = [hour_key(taken_at - timedelta(hours=1)), hour_key(taken_at)]
    files = [
        str(path)
        for key in keys
        if (path := store.existing_partition(PG_STATEMENT_STATS.name, key)) is not None
    ]
    if not files:
        return {}
    rows = connection.execute(
        "SELECT queryid, arg_max(calls_total, taken_at), arg_max(exec_ms_total, taken_at) "
        "FROM read_parquet($files) GROUP BY queryid",
        {"files": files},
    ).fetchall()
    return {queryid: (int(calls), float(total)) for queryid, calls, total in rows}


def health_rows(snapshot: HealthSnapshot) -> dict:
    """The snapshot's ``pg_health`` row."""
    return {
        "taken_at": _naive(snapshot.taken_at),
        "engine": snapshot.engine,
        "database_bytes": snapshot.database_bytes,
        "max_connections": snapshot.max_connections,
        "connections": snapshot.connections,
        "connections_active": snapshot.connections_active,
        "connections_idle": snapshot.connections_idle,
        "connections_idle_in_transaction": snapshot.connections_idle_in_transaction,
        "connections_other": snapshot.connections_other,
        "connections_hidden": snapshot.connections_hidden,
        "connections_used": snapshot.connections_used,
        "longest_transaction_s": snapshot.longest_transaction_s,
        "longest_idle_in_transaction_s": snapshot.longest_idle_in_transaction_s,
        "lock_waiting_sessions": snapshot.lock_waiting_sessions,
        "missing": snapshot.missing_line(),
    }


def publish_snapshot(
    db: AppDatabase, store: RollupStore, config: HousekeepingConfig
) -> tuple[HealthSnapshot, RollupResult]:
    """Take one health snapshot of ``db`` and append it to the current hour's files.

    Returns the snapshot and what was written (``rows_written``: the rows of the hour's
    ``pg_health`` file). Raises ``DatabaseError`` (the snapshot failed: nothing is written) or
    ``PublishError`` (the files cannot be written).
    """
    started = time.perf_counter()
    snapshot = take_snapshot(db, housekept_tables(config))
    taken_at = _naive(snapshot.taken_at)
    key = hour_key(snapshot.taken_at)
    with duckdb_session(store.root / ".tmp") as connection:
        written = _append(
            connection,
            store,
            PG_HEALTH,
            key,
            [health_rows(snapshot)],
            "taken_at",
        )
        if snapshot.engine == "postgresql":
            tables = [
                {
                    "taken_at": taken_at,
                    "table_name": table.table_name,
                    "live_tuples": table.live_tuples,
                    "dead_tuples": table.dead_tuples,
                    "dead_ratio": table.dead_ratio,
                    "last_vacuum": _naive(table.last_vacuum),
                    "last_autovacuum": _naive(table.last_autovacuum),
                    "last_analyze": _naive(table.last_analyze),
                    "last_autoanalyze": _naive(table.last_autoanalyze),
                }
                for table in snapshot.tables
            ]
            _append(
                connection,
                store,
                PG_TABLE_HEALTH,
                key,
                tables,
                "taken_at, table_name",
            )
        if snapshot.statements is not None:
            previous = _previous_statements(connection, store, snapshot.taken_at)
            statements = [
                {
                    "taken_at": taken_at,
                    "queryid": delta.totals.queryid,
                    "query": delta.totals.query,
                    "calls": delta.calls,
                    "exec_ms": delta.exec_ms,
                    "mean_exec_ms": delta.mean_exec_ms,
                    "max_exec_ms": delta.totals.max_exec_ms,
                    "calls_total": delta.totals.calls_total,
                    "exec_ms_total": delta.totals.exec_ms_total,
                }
                for delta in statement_deltas(snapshot.statements, previous)
                if delta.calls != 0  # unchanged since the previous snapshot: nothing to add
            ]
            _append(
                connection,
                store,
                PG_STATEMENT_STATS,
                key,
                statements,
                "taken_at, queryid",
            )
    result = RollupResult(
        PG_HEALTH.name,
        snapshot.taken_at,
        snapshot.taken_at,
        (key,),
        1,
        written,
        time.perf_counter() - started,
    )
    return snapshot, result
