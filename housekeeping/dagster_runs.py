"""Dagster's own storage: opening the instance for `hk`, and retention of its run history
(Dagster has no built-in purge of runs).

Only the public instance API: ``get_run_records`` finds old runs, the compute log manager's
``delete_logs`` removes a run's captured stdout/stderr (``<DAGSTER_HOME>/storage/<run_id>/`` with
the default local manager) and ``delete_run`` removes the run and every event it logged.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dagster as dg
import yaml

from housekeeping.errors import one_line
from housekeeping.instance_preflight import InstanceConfigError, dagster_home

# Allowlists, not blocklists: a run is a candidate only in a finished status, so queued, starting,
# running, canceling, managed and suspended runs (and any status a later Dagster adds) are never
# touched, whatever their age.
SUCCEEDED_STATUSES = (dg.DagsterRunStatus.SUCCESS,)
FAILED_STATUSES = (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)

# Dagster's run ids are UUIDs. The run id becomes a path segment of the compute-log prefix, so an
# id such as ".." must never reach delete_logs (it would remove the folder above the run's logs).
_PLAIN_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def open_instance() -> dg.DagsterInstance:
    """The Dagster instance of ``$DAGSTER_HOME``, for `hk` commands that run jobs in it.

    Raises InstanceConfigError naming DAGSTER_HOME (unset, relative, not a directory) or the
    instance's own complaint about its dagster.yaml, in one line.
    """
    home = dagster_home()
    try:
        return dg.DagsterInstance.get()
    except (dg.DagsterError, yaml.YAMLError, OSError) as exc:
        raise InstanceConfigError(
            f"DAGSTER_HOME {home}: cannot open the Dagster instance: {one_line(str(exc))}"
        ) from None


@dataclass(frozen=True)
class RunPurgeResult:
    runs_deleted: int
    # The FAILURE and CANCELED runs among runs_deleted.
    failed_runs_deleted: int
    # In a dry run, how many runs a real run would delete; otherwise equal to runs_deleted.
    would_delete: int
    # Runs whose compute-log prefix was removed (the manager does not say whether files existed).
    compute_log_dirs_deleted: int
    oldest_remaining_run_created_at: datetime | None
    stopped_early: bool
    duration_ms: float


@dataclass
class _Tally:
    runs_deleted: int = 0
    failed_runs_deleted: int = 0
    would_delete: int = 0
    compute_log_dirs_deleted: int = 0


def _validate(
    now: datetime, retention: timedelta, failed_retention: timedelta, batch_size: int
) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware, got the naive datetime {now.isoformat()}")
    if retention <= timedelta(0):
        raise ValueError(f"retention must be greater than 0, got {retention}")
    if failed_retention <= timedelta(0):
        raise ValueError(f"failed_retention must be greater than 0, got {failed_retention}")
    if failed_retention < retention:
        raise ValueError(
            f"failed_retention ({failed_retention}) must be at least as long as "
            f"retention ({retention})"
        )
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
    ``now - failed_retention``) with their event logs and compute logs, oldest first.

    Reads at most ``batch_size`` run records at a time. ``should_stop`` is asked before each run;
    once it answers True the purge returns with ``stopped_early``, every run either wholly deleted
    or untouched.
    """
    _validate(now, retention, failed_retention, batch_size)
    started = time.perf_counter()
    # Dagster drops the tzinfo of created_before and compares with its naive UTC timestamps.
    now_utc = now.astimezone(UTC)
    keep = frozenset(keep_run_ids)
    tally = _Tally()
    stopped = False
    for statuses, cutoff in (
        (SUCCEEDED_STATUSES, now_utc - retention),
        (FAILED_STATUSES, now_utc - failed_retention),
    ):
        stopped = _purge_runs_created_before(
            instance,
            statuses=statuses,
            cutoff=cutoff,
            dry_run=dry_run,
            batch_size=batch_size,
            should_stop=should_stop,
            keep=keep,
            tally=tally,
        )
        if stopped:
            break
    oldest = instance.get_run_records(limit=1, order_by="create_timestamp", ascending=True)
    return RunPurgeResult(
        runs_deleted=tally.runs_deleted,
        failed_runs_deleted=tally.failed_runs_deleted,
        would_delete=tally.would_delete,
        compute_log_dirs_deleted=tally.compute_log_dirs_deleted,
        oldest_remaining_run_created_at=oldest[0].create_timestamp if oldest else None,
        stopped_early=stopped,
        duration_ms=(time.perf_counter() - started) * 1000,
    )


def _purge_runs_created_before(
    instance: dg.DagsterInstance,
    *,
    statuses: Sequence[dg.DagsterRunStatus],
    cutoff: datetime,
    dry_run: bool,
    batch_size: int,
    should_stop: Callable[[], bool],
    keep: frozenset[str],
    tally: _Tally,
) -> bool:
    """Returns True when stopped on request."""
    cursor: str | None = None
    deleted_in_last_batch: set[str] = set()
    while True:
        records = instance.get_run_records(
            filters=dg.RunsFilter(statuses=list(statuses), created_before=cutoff),
            limit=batch_size,
            ascending=True,
            cursor=cursor,
        )
        if not records:
            return False
        batch_run_ids = {record.dagster_run.run_id for record in records}
        if lingering := deleted_in_last_batch & batch_run_ids:
            # Without this, a storage that silently keeps deleted runs would loop forever.
            raise RuntimeError(
                f"Dagster still lists run {sorted(lingering)[0]} after delete_run; "
                "stopping the purge instead of retrying it forever"
            )
        deleted_in_last_batch = set()
        for record in records:
            if should_stop():
                return True
            run = record.dagster_run
            if run.run_id in keep or dry_run:
                # Page past runs that stay; deleted runs simply drop out of the next query (and a
                # cursor must never name a deleted run: the storage would find no rows after it).
                cursor = run.run_id
                tally.would_delete += run.run_id not in keep
                continue
            # Logs first: if the process dies in between, the run is still listed and the next
            # purge finishes it; the other order would leave log files no run points to.
            if _delete_compute_logs(instance, run.run_id):
                tally.compute_log_dirs_deleted += 1
            instance.delete_run(run.run_id)
            deleted_in_last_batch.add(run.run_id)
            tally.runs_deleted += 1
            tally.would_delete += 1
            if run.status in FAILED_STATUSES:
                tally.failed_runs_deleted += 1


def _delete_compute_logs(instance: dg.DagsterInstance, run_id: str) -> bool:
    # Every compute-log key of a run starts with its run id ([run_id, "compute_logs", ...]), so
    # the run id as prefix removes all of its captured stdout/stderr and nothing else.
    if not _PLAIN_RUN_ID.fullmatch(run_id):
        return False
    instance.compute_log_manager.delete_logs(prefix=[run_id])
    return True
