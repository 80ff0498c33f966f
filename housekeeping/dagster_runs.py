"""Dagster's own storage: opening the instance for `hk`, and retention of its run history
(Dagster has no built-in purge of runs).

Deleting a run deletes every event it logged, its asset materializations included: after a plain
purge, ``get_materialized_partitions`` of a rollup asset forgets every hour materialized by a
purged run, the UI shows published hours as never materialized, and a backfill of "missing"
partitions would recompute them from sources retention has emptied. So before a run is deleted,
each materialization in it that is still the latest of its asset partition is reported back as
a runless materialization (``report_runless_asset_event``, with the original metadata plus the
purged run's id and time): the partition stays materialized, and the run goes.

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


# The run tag that says what launched a run: manual (the UI, the Launchpad, `hk`), schedule,
# sensor or backfill (`hk rollups backfill`). Filter the UI's runs list with
# `hk/launched_by=manual` to see only the runs people started.
LAUNCHED_BY_TAG = "hk/launched_by"
MANUAL = {LAUNCHED_BY_TAG: "manual"}
BY_SCHEDULE = {LAUNCHED_BY_TAG: "schedule"}
BY_SENSOR = {LAUNCHED_BY_TAG: "sensor"}


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
    # Latest materializations of an asset (partition) reported back before their run went.
    materializations_reported: int
    oldest_remaining_run_created_at: datetime | None
    stopped_early: bool
    duration_ms: float


@dataclass
class _Tally:
    runs_deleted: int = 0
    failed_runs_deleted: int = 0
    would_delete: int = 0
    compute_log_dirs_deleted: int = 0
    materializations_reported: int = 0


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
    ``now - failed_retention``) with their event logs and compute logs, oldest first; every
    materialization in them that is the latest of its asset partition is reported back first
    (see the module docstring), so ``get_materialized_partitions`` lists what it listed before.

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
        materializations_reported=tally.materializations_reported,
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
            # Materializations, then logs, then the run: if the process dies in between, the run
            # is still listed and the next purge finishes it (a reported materialization is then
            # no longer the latest, so it is not reported twice).
            tally.materializations_reported += _report_latest_materializations(
                instance, run.run_id, record.create_timestamp
            )
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


# Metadata a reported-back materialization carries besides the original's.
PURGED_RUN_METADATA = "purged_run_id"
PURGED_RUN_TIME_METADATA = "purged_run_created_at"


def _report_latest_materializations(
    instance: dg.DagsterInstance, run_id: str, created_at: datetime
) -> int:
    """Report again, as runless events, the materializations of ``run_id`` that are the latest
    of their asset partition; returns how many."""
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
    ).records
    # Each asset partition once (a run may materialize one several times). Storage ids are not
    # compared: SQLite storage numbers a run's events and the asset index separately.
    partitions = {
        (materialization.asset_key, materialization.partition)
        for record in records
        if (materialization := record.event_log_entry.asset_materialization) is not None
    }
    reported = 0
    for asset_key, partition in sorted(partitions, key=lambda item: (item[0].path, item[1] or "")):
        latest = instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=asset_key,
                asset_partitions=[partition] if partition is not None else None,
            ),
            limit=1,
        ).records
        if not latest or latest[0].run_id != run_id:
            continue  # a later materialization (still in its run, or reported) holds it
        materialization = latest[0].asset_materialization
        assert materialization is not None  # fetched as a materialization
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                asset_key=asset_key,
                partition=partition,
                description=materialization.description,
                metadata={
                    **materialization.metadata,
                    PURGED_RUN_METADATA: run_id,
                    PURGED_RUN_TIME_METADATA: created_at.astimezone(UTC).isoformat(),
                },
                tags=materialization.tags,
            )
        )
        reported += 1
    return reported
