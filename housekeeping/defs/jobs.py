"""The housekeeping jobs: all at once, a dry run of every policy, health, one per policy, and the
Dagster run-history purge."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dagster as dg

from housekeeping.config import HousekeepingConfig
from housekeeping.dagster_runs import MANUAL
from housekeeping.defs.assets import DAGSTER_RUNS_ASSET, GROUP, policy_asset_key
from housekeeping.defs.file_assets import readable_check_key

# What dg.define_asset_job returns: Dagster does not export its class (it is resolved later).
AssetJob = Any


@dataclass(frozen=True)
class HousekeepingJobs:
    """The jobs of one config; schedules and sensors target them."""

    everything: AssetJob
    dry_run: AssetJob
    health: AssetJob
    per_policy: dict[str, AssetJob]
    run_history: AssetJob | None

    def all(self) -> list[AssetJob]:
        """Every job, in the order the code location lists them."""
        jobs = [self.everything, self.dry_run, self.health, *self.per_policy.values()]
        return jobs + ([self.run_history] if self.run_history else [])

    def cleanups(self) -> list[AssetJob]:
        """The jobs that delete (or purge) something: their failures degrade health."""
        jobs = [self.everything, *self.per_policy.values()]
        return jobs + ([self.run_history] if self.run_history else [])


def build_jobs(config: HousekeepingConfig, checked: dict[str, dg.AssetKey]) -> HousekeepingJobs:
    """The jobs of ``config``; ``checked`` are the assets whose health checks the health job runs."""
    policy_keys = [policy_asset_key(name) for name in config.every_policy()]
    run_history = None
    if config.dagster_runs.enabled:
        run_history = dg.define_asset_job(
            "dagster_run_history_job",
            tags=MANUAL,
            selection=dg.AssetSelection.assets(DAGSTER_RUNS_ASSET),
            description="Purges old Dagster runs, event logs and compute logs.",
        )
    return HousekeepingJobs(
        everything=dg.define_asset_job(
            "housekeeping_job",
            tags=MANUAL,
            selection=dg.AssetSelection.groups(GROUP),
            description="Every housekeeping policy and the Dagster run-history purge, once.",
        ),
        dry_run=dg.define_asset_job(
            "housekeeping_dry_run_job",
            tags=MANUAL,
            selection=dg.AssetSelection.assets(*policy_keys),
            description=(
                "Counts what every policy would delete, per table and cutoff; deletes nothing."
            ),
            config={
                "ops": {
                    key.to_python_identifier(): {"config": {"dry_run": True}} for key in policy_keys
                }
            },
        ),
        health=dg.define_asset_job(
            "housekeeping_health_job",
            tags=MANUAL,
            # The readable checks are evaluated by the files policies' own runs (check specs
            # of their assets): selected here they would run the cleanups.
            selection=dg.AssetSelection.checks_for_assets(*checked.values())
            - dg.AssetSelection.checks(*map(readable_check_key, config.file_policies)),
            description="Re-evaluates every policy's health checks from its run history.",
        ),
        per_policy={
            name: dg.define_asset_job(
                f"{name}_job",
                tags=MANUAL,
                selection=dg.AssetSelection.assets(policy_asset_key(name)),
                description=f"Runs the {name} policy alone.",
            )
            for name in config.every_policy()
        },
        run_history=run_history,
    )
