"""The housekeeping run history as rollups: one row per cleanup/retention run, and a summary.

The source is the run history the housekeeping assets record in the state database
(``hk_policy_runs``, see housekeeping/history.py), not the application database.

- ``housekeeping_runs``: one row per run, one Parquet file per day (the day the run finished, in
  the analytics time zone); re-materialising a day replaces exactly it.
- ``housekeeping_summary``: one row per policy with the reference document's cleanup metrics
  (total runs, successful, failed, rows deleted, average cleanup ms, last success, last failure,
  last error) and the health status. Every figure comes from ``evaluate_health`` — the very
  function behind ``hk status`` and the health asset checks — so the three never disagree.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, date, datetime

import pyarrow as pa

from analytics.datasets import HOUSEKEEPING_RUNS, HOUSEKEEPING_SUMMARY
from analytics.publish import RollupStore
from analytics.rollups.engine import (
    RollupResult,
    create_rollup_table,
    day_bounds,
    duckdb_session,
    preview_rows,
    replace_dataset_partition,
)
from housekeeping.history import PolicyRun, RecordedRun, RunHistory

SUMMARY_PARTITION = "current"
_TIMESTAMP = pa.timestamp("us", tz="UTC")


def _naive_utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.astimezone(UTC).replace(tzinfo=None)


def _runs_table(day: date, runs: Iterable[RecordedRun]) -> pa.Table:
    rows = [(recorded.id, recorded.run) for recorded in runs]

    def field(name: str) -> list:
        return [getattr(run, name) for _, run in rows]

    return pa.table(
        {
            "day": pa.array([day] * len(rows), pa.date32()),
            "run_id": pa.array([run_id for run_id, _ in rows], pa.int64()),
            "policy": pa.array(field("policy"), pa.string()),
            "table_name": pa.array(field("table_name"), pa.string()),
            "status": pa.array([str(run.status) for _, run in rows], pa.string()),
            "started_at": pa.array(field("started_at"), _TIMESTAMP),
            "finished_at": pa.array(field("finished_at"), _TIMESTAMP),
            "deleted": pa.array(field("deleted"), pa.int64()),
            "expected_deleted": pa.array(field("expected_deleted"), pa.int64()),
            "remaining_expired": pa.array(field("remaining_expired"), pa.int64()),
            "archived_rows": pa.array(field("archived_rows"), pa.int64()),
            "batches": pa.array(field("batches"), pa.int32()),
            "duration_ms": pa.array(field("duration_ms"), pa.float64()),
            "error": pa.array(field("error"), pa.string()),
            "dagster_run_id": pa.array(field("dagster_run_id"), pa.string()),
        }
    )


def refresh_housekeeping_runs(
    history: RunHistory, store: RollupStore, day: date, timezone: str
) -> RollupResult:
    """Replace day ``day``'s file with every run that finished that day (in ``timezone``)."""
    started = time.perf_counter()
    start, end = day_bounds(day, timezone)
    runs = history.finished_between(start, end)
    with duckdb_session(store.root / ".tmp") as connection:
        create_rollup_table(connection, HOUSEKEEPING_RUNS, _runs_table(day, runs))
        written = replace_dataset_partition(
            connection, store, HOUSEKEEPING_RUNS, day.isoformat(), "rollup", "finished_at, run_id"
        )
        preview = preview_rows(connection, "rollup", "finished_at DESC, run_id DESC")
    return RollupResult(
        HOUSEKEEPING_RUNS.name,
        start,
        end,
        (day.isoformat(),),
        len(runs),
        written,
        time.perf_counter() - started,
        preview,
    )


def _latest_table_name(runs: list[PolicyRun]) -> str | None:
    return runs[0].table_name if runs else None


def refresh_housekeeping_summary(
    history: RunHistory,
    store: RollupStore,
    policy_tables: dict[str, str],
    now: datetime,
) -> RollupResult:
    """Rewrite the summary: one row per configured policy and per policy with recorded runs.

    ``policy_tables`` maps each configured policy to its table. A policy no longer configured
    keeps its row (its history is still there) with the table of its newest run.
    """
    started = time.perf_counter()
    names = sorted(set(policy_tables) | set(history.policies()))
    records = []
    for name in names:
        health = history.health(name)
        table_name = policy_tables.get(name) or _latest_table_name(history.recent(name, limit=1))
        records.append(
            {
                "policy": name,
                "table_name": table_name,
                "status": health.status.value,
                "consecutive_failures": health.consecutive_failures,
                "total_runs": health.total_runs,
                "successful_runs": health.successful_runs,
                "failed_runs": health.failed_runs,
                "total_deleted": health.total_deleted,
                "average_cleanup_ms": health.average_duration_ms,
                "last_run": _naive_utc(health.last_run),
                "last_success": _naive_utc(health.last_success),
                "last_failure": _naive_utc(health.last_failure),
                "last_error": health.last_error,
                "zero_deletes_warning": health.zero_deletes_warning,
                "slow_warning": health.slow_warning,
                "computed_at": _naive_utc(now),
            }
        )
    schema = pa.schema(
        [
            (column.name, _ARROW_TYPES[column.type.split("(")[0]])
            for column in HOUSEKEEPING_SUMMARY.columns
        ]
    )
    table = pa.Table.from_pylist(records, schema=schema)
    with duckdb_session(store.root / ".tmp") as connection:
        create_rollup_table(connection, HOUSEKEEPING_SUMMARY, table)
        written = replace_dataset_partition(
            connection, store, HOUSEKEEPING_SUMMARY, SUMMARY_PARTITION, "rollup", "policy"
        )
        preview = preview_rows(connection, "rollup", "policy")
    return RollupResult(
        HOUSEKEEPING_SUMMARY.name,
        now,
        now,
        (SUMMARY_PARTITION,),
        sum(record["total_runs"] for record in records),
        written,
        time.perf_counter() - started,
        preview,
    )


_ARROW_TYPES = {
    "VARCHAR": pa.string(),
    "INTEGER": pa.int32(),
    "BIGINT": pa.int64(),
    "DOUBLE": pa.float64(),
    "BOOLEAN": pa.bool_(),
    "TIMESTAMP": pa.timestamp("us"),
}
