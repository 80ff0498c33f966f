"""The analytics half of the code location, merged into housekeeping/definitions.py."""

from __future__ import annotations

import dagster as dg

from analytics.defs.assets import build_rollup_assets
from analytics.defs.jobs import build_rollup_jobs
from analytics.defs.resources import RESOURCE_KEY, AnalyticsResource
from analytics.defs.schedules import build_schedules
from analytics.defs.sensors import build_sensors
from analytics.settings import analytics_settings
from housekeeping.config import HousekeepingConfig


def build_analytics_defs(config: HousekeepingConfig, config_file: str = "") -> dg.Definitions:
    """Every rollup asset, job, schedule and sensor, and the resource they share.

    Raises ``ConfigError`` when the ``analytics:`` section does not validate.
    """
    settings = analytics_settings(config, config_file or "config")
    timezone = settings.day_timezone(config)
    jobs = build_rollup_jobs(settings, timezone)
    return dg.Definitions(
        assets=build_rollup_assets(settings, timezone, config.owner),
        jobs=list(jobs.values()),
        schedules=build_schedules(settings, timezone, jobs),
        sensors=build_sensors(config, settings, timezone, jobs),
        resources={RESOURCE_KEY: AnalyticsResource(config_file=config_file)},
    )
