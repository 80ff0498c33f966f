"""The analytics half of the code location, merged into housekeeping/definitions.py."""

from __future__ import annotations

import dagster as dg

from analytics.assets import (
    JOBS_HOURLY_KEY,
    REQUESTS_MINUTE_KEY,
    build_jobs_hourly_asset,
    build_requests_minute_asset,
)
from analytics.partitions import hourly_partitions
from analytics.resources import AnalyticsResource
from analytics.sensors import build_freshness_sensor
from analytics.settings import analytics_settings
from housekeeping.config import HousekeepingConfig

RESOURCE_KEY = "analytics"


def build_analytics_definitions(
    config: HousekeepingConfig, config_file: str = ""
) -> dg.Definitions:
    settings = analytics_settings(config, config_file or "config")
    requests_minute = build_requests_minute_asset(settings)
    requests_job = dg.define_asset_job(
        "analytics_requests_job",
        selection=dg.AssetSelection.assets(REQUESTS_MINUTE_KEY),
        partitions_def=hourly_partitions(settings),
        description="Recomputes hours of the minute request rollups from the request logs.",
    )
    jobs_hourly = build_jobs_hourly_asset(settings)
    jobs_job = dg.define_asset_job(
        "analytics_jobs_job",
        selection=dg.AssetSelection.assets(JOBS_HOURLY_KEY),
        partitions_def=hourly_partitions(settings),
        description="Recomputes hours of the jobs rollup from the jobs table.",
    )
    return dg.Definitions(
        assets=[requests_minute, jobs_hourly],
        jobs=[requests_job, jobs_job],
        sensors=[build_freshness_sensor(settings, requests_job)],
        resources={RESOURCE_KEY: AnalyticsResource(config_file=config_file)},
    )
