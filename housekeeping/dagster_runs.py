"""Retention of Dagster's own run history (Dagster has no built-in purge of runs).

Only the public instance API: ``get_run_records`` to find old runs, ``delete_run`` (the run and
every event it logged) and the compute log manager's ``delete_logs`` (the captured stdout/stderr
files, under ``<DAGSTER_HOME>/storage/<run_id>/`` by default).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

import dagster as dg

FAILED_STATUSES = (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
# Everything else that is finished; runs still queued, starting, running or canceling are never
# candidates, whatever their age.
SUCCEEDED_STATUSES = (dg.DagsterRunStatus.SUCCESS,)


@dataclass(frozen=True)
class RunPurgeResult:
    runs_deleted: int
    failed_runs_deleted: int
    would_delete: int
    compute_log_dirs_deleted: int
    oldest_remaining_run_created_at: datetime | None
    stopped_early: bool
    duration_ms: float


def _validate(retention: timedelta, failed_retention: timedelta, batch_size: int) -> None:
    if retention <= timedelta(0):
        raise ValueError(f"retention must be greater than 0, got {retention}")
    if failed_retention <= timedelta(0):
        raise ValueError(f"failed_retention must be greater than 0, got {failed_retention}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")


def purge_dagster_runs(
    instance: dg.DagsterInstance,
    *,
    now: datetime,
    retention: timedelta,
    failed_retention: timedelta,
    dry_run: bool = False,
    batch_size: int = 100,
    should_stop: Callable[[], bool] = lambda: False,
    keep_run_ids: Collection[str] = (),
) -> RunPurgeResult:
    """Delete finished runs created before ``now - retention`` (failed and canceled runs: before
    ``now - failed_retention``), with their event logs and compute logs, oldest first."""
    _validate(retention, failed_retention, batch_size)
    started = time.perf_counter()
    keep = set(keep_run_ids)
    deleted = failed_deleted = would_delete = log_dirs = 0
    stopped = False
    for statuses, cutoff in (
        (SUCCEEDED_STATUSES, now - retention),
        (FAILED_STATUSES, now - failed_retention),
    ):
        cursor = None
        while not stopped:
            records = instance.get_run_records(
                filters=dg.RunsFilter(statuses=list(statuses), created_before=cutoff),
                limit=batch_size,
                ascending=True,
                cursor=cursor,
            )
            if not records:
                break
            for record in records:
                run_id = record.dagster_run.run_id
                if run_id in keep or dry_run:
                    # Page past runs that stay; deleted ones simply vanish from the next query
                    # (a cursor must never name a deleted run: the storage would find no rows).
                    cursor = run_id
                    would_delete += run_id not in keep
                    continue
                instance.delete_run(run_id)
                # The prefix is the run's whole folder of captured step logs.
                instance.compute_log_manager.delete_logs(prefix=[run_id])
                would_delete += 1
                log_dirs += 1
                deleted += 1
                if record.dagster_run.status in FAILED_STATUSES:
                    failed_deleted += 1
            if should_stop():
                stopped = True
    oldest = instance.get_run_records(limit=1, ascending=True)
    return RunPurgeResult(
        runs_deleted=deleted,
        failed_runs_deleted=failed_deleted,
        would_delete=would_delete,
        compute_log_dirs_deleted=log_dirs,
        oldest_remaining_run_created_at=oldest[0].create_timestamp if oldest else None,
        stopped_early=stopped,
        duration_ms=(time.perf_counter() - started) * 1000,
    )
