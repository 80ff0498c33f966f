"""The housekeeping domain's Definitions, composed from this folder's parts."""

from __future__ import annotations

import dagster as dg

from housekeeping.config import HousekeepingConfig
from housekeeping.defs.assets import build_assets, checked_asset_keys
from housekeeping.defs.checks import build_health_checks
from housekeeping.defs.file_assets import build_files_assets
from housekeeping.defs.jobs import build_jobs
from housekeeping.defs.resources import HousekeepingResource
from housekeeping.defs.schedules import build_schedules
from housekeeping.defs.sensors import build_failure_health_sensor


def build_housekeeping_defs(config: HousekeepingConfig, config_file: str = "") -> dg.Definitions:
    """Assets, health checks, jobs, schedules and the failure sensor of ``config``'s policies.

    ``config_file`` is handed to the resource, which reloads it when a run starts ("" means
    $HK_CONFIG, else ./hk.yaml).
    """
    checked = checked_asset_keys(config)
    jobs = build_jobs(config, checked)
    return dg.Definitions(
        assets=[*build_assets(config), *build_files_assets(config)],
        asset_checks=[
            check
            for name, key in checked.items()
            for check in build_health_checks(
                name, key, config.health, with_duration=name not in config.file_policies
            )
        ],
        jobs=jobs.all(),
        schedules=build_schedules(config, jobs),
        sensors=[build_failure_health_sensor(jobs)],
        resources={"housekeeping": HousekeepingResource(config_file=config_file)},
    )
