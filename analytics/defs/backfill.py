"""Backfills of the rollups from the command line (`hk rollups backfill`), through Dagster.

The partitions of a time window are cut into runs as the asset's own backfill policy says (the
hourly rollups: 24 hours per run, one pass over the source per day; the daily ones: a run per
day), and each run of the rollup's job executes in this process against the Dagster instance, so
it is recorded there like any other run: the UI lists it under Runs (tagged ``hk/backfill``) and
the asset's partitions as materialized. Runs go one after another; the first failed run stops
the backfill (the runs before it are done and stay done).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import dagster as dg

from analytics.datasets import Dataset
from analytics.defs.assets import ROLLUP_ASSETS, RollupAsset, asset_key
from analytics.defs.partitions import Partitioning
from housekeeping.dagster_runs import LAUNCHED_BY_TAG
from housekeeping.errors import HkError, one_line

BACKFILL_TAG = "hk/backfill"
TRIGGER_TAG = "analytics/trigger"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


class BackfillError(HkError):
    """The backfill cannot start (a dataset that is not partitioned, an empty window) or a run of
    it failed; the message names the dataset, the partitions and the run."""


@dataclass(frozen=True)
class BackfillPlan:
    """The runs of one backfill: ``chunks`` are consecutive partition keys, one run each."""

    backfill_id: str
    dataset: Dataset
    rollup: RollupAsset
    partition_keys: tuple[str, ...]
    chunks: tuple[tuple[str, ...], ...]
    max_per_run: int

    @property
    def kind(self) -> str:
        """``hourly`` or ``daily``."""
        return self.rollup.partitioning.value


@dataclass(frozen=True)
class BackfillRun:
    """One finished run of a backfill."""

    run_id: str
    partition_keys: tuple[str, ...]


def rollup_of(dataset_name: str) -> tuple[Dataset, RollupAsset] | None:
    """The rollup row that writes ``dataset_name``; None for a name no rollup writes."""
    for rollup in ROLLUP_ASSETS:
        for dataset, _ in rollup.datasets:
            if dataset.name == dataset_name:
                return dataset, rollup
    return None


def plan_backfill(
    defs: dg.Definitions,
    dataset: Dataset,
    rollup: RollupAsset,
    start: datetime,
    end: datetime,
    now: datetime,
) -> BackfillPlan:
    """The partitions of ``dataset`` whose time window overlaps ``[start, end)`` (aware
    datetimes) and exist at ``now``, cut into runs by the asset's backfill policy.

    Raises BackfillError for a dataset that is not partitioned or a window with no partition.
    """
    if rollup.partitioning is Partitioning.NONE:
        raise BackfillError(
            f"{dataset.name} is not partitioned: each run of {rollup.job} rewrites it whole "
            "(nothing to backfill; launch the job to refresh it)"
        )
    assets_def = defs.resolve_assets_def(asset_key(dataset))
    partitions = assets_def.partitions_def
    assert isinstance(partitions, dg.TimeWindowPartitionsDefinition)  # hourly or daily
    keys = tuple(
        key
        for key in partitions.get_partition_keys(current_time=now)
        if _overlaps(partitions.time_window_for_partition_key(key), start, end)
    )
    if not keys:
        raise BackfillError(
            f"{dataset.name}: no {rollup.partitioning.value} partition between "
            f"{start.isoformat()} and {end.isoformat()} (partitions start at "
            f"{partitions.start.isoformat()}: analytics.partitions_start, and end now)"
        )
    # Dagster's own rule: without a policy, one run per partition; single_run: one run in all.
    policy = assets_def.backfill_policy
    per_run = 1 if policy is None else (policy.max_partitions_per_run or len(keys))
    chunks = tuple(keys[index : index + per_run] for index in range(0, len(keys), per_run))
    return BackfillPlan(uuid.uuid4().hex[:8], dataset, rollup, keys, chunks, per_run)


def _overlaps(window: dg.TimeWindow, start: datetime, end: datetime) -> bool:
    return window.end > start and window.start < end


def run_backfill(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    plan: BackfillPlan,
    on_run: Callable[[BackfillRun], None] = lambda run: None,
) -> list[BackfillRun]:
    """Run ``plan``'s chunks one after another through the rollup's job, in ``instance``.

    ``on_run`` is called after each successful run (the progress bar). Raises BackfillError on
    the first failed run, naming it, its partitions and its first error.
    """
    job = defs.resolve_job_def(plan.rollup.job)
    done: list[BackfillRun] = []
    for chunk in plan.chunks:
        tags = {
            BACKFILL_TAG: plan.backfill_id,
            TRIGGER_TAG: "backfill",
            LAUNCHED_BY_TAG: "backfill",
        }
        partition_key = None
        if len(chunk) == 1:
            partition_key = chunk[0]
        else:
            tags |= {RANGE_START_TAG: chunk[0], RANGE_END_TAG: chunk[-1]}
        result = job.execute_in_process(
            instance=instance,
            partition_key=partition_key,
            tags=tags,
            raise_on_error=False,
            # The progress bar says what happens; each run's log is in the UI.
            run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}},
        )
        if not result.success:
            raise BackfillError(
                f"{plan.dataset.name}: run {result.run_id} for {_describe(chunk)} failed: "
                f"{_first_failure(result)} ({len(done)} of {len(plan.chunks)} runs done)"
            )
        run = BackfillRun(result.run_id, chunk)
        done.append(run)
        on_run(run)
    return done


def _describe(keys: Sequence[str]) -> str:
    return keys[0] if len(keys) == 1 else f"{keys[0]} .. {keys[-1]} ({len(keys)} partitions)"


def _first_failure(result: dg.ExecuteInProcessResult) -> str:
    for event in result.all_events:
        if event.is_step_failure:
            return one_line(event.event_specific_data.error.message)
    return "the run failed"
