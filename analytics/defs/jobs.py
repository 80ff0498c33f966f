"""The rollup jobs: one asset job per row of the rollup table, partitioned as its asset."""

from __future__ import annotations

from typing import Any

import dagster as dg

from analytics.defs.assets import ROLLUP_ASSETS, RollupAsset
from analytics.defs.partitions import partitions_for
from analytics.settings import AnalyticsSettings
from housekeeping.dagster_runs import MANUAL

# What dg.define_asset_job returns. Dagster does not export that type (the job is resolved
# against the assets when the Definitions are built).
AssetJob = Any


def build_rollup_job(rollup: RollupAsset, settings: AnalyticsSettings, timezone: str) -> AssetJob:
    """The job that materializes ``rollup``'s datasets (a partition, or a range of them)."""
    return dg.define_asset_job(
        rollup.job,
        # The alert checks on these assets are reported by the alert sensor, not run here.
        selection=dg.AssetSelection.assets(*rollup.keys).without_checks(),
        tags=MANUAL,
        partitions_def=partitions_for(rollup.partitioning, settings, timezone),
        description=rollup.job_description,
    )


def build_rollup_jobs(settings: AnalyticsSettings, timezone: str) -> dict[str, AssetJob]:
    """Every rollup job, by job name."""
    return {rollup.job: build_rollup_job(rollup, settings, timezone) for rollup in ROLLUP_ASSETS}
