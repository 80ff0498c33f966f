"""The analytics half of the code location, merged into housekeeping/definitions.py."""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

import dagster as dg

from analytics.assets import (
    API_USAGE_DAILY_KEY,
    JOBS_HOURLY_KEY,
    REQUESTS_MINUTE_KEY,
    build_api_usage_daily_asset,
    build_jobs_hourly_asset,
    build_requests_minute_asset,
)
from analytics.partitions import daily_partitions, hourly_partitions
from analytics.resources import AnalyticsResource
from analytics.sensors import build_freshness_sensor
from analytics.settings import analytics_settings
from housekeeping.config import HousekeepingConfig

RESOURCE_KEY = "analytics"


def build_analytics_definitions(
    config: HousekeepingConfig, config_file: str = ""
) -> dg.Definitions:
    settings = analytics_settings(config, config_file or "config")
    requests_minute = build_requests_minute_asset(settings, config.owner)
    requests_job = dg.define_asset_job(
        "analytics_requests_job",
        selection=dg.AssetSelection.assets(REQUESTS_MINUTE_KEY),
        partitions_def=hourly_partitions(settings),
        description="Recomputes hours of the minute request rollups from the request logs.",
    )
    jobs_hourly = build_jobs_hourly_asset(settings, config.owner)
    jobs_job = dg.define_asset_job(
        "analytics_jobs_job",
        selection=dg.AssetSelection.assets(JOBS_HOURLY_KEY),
        partitions_def=hourly_partitions(settings),
        description="Recomputes hours of the jobs rollup from the jobs table.",
    )
    day_timezone = settings.day_timezone(config)
    api_usage_daily = build_api_usage_daily_asset(settings, day_timezone, config.owner)
    api_usage_job = dg.define_asset_job(
        "analytics_api_usage_job",
        selection=dg.AssetSelection.assets(API_USAGE_DAILY_KEY),
        partitions_def=daily_partitions(settings, day_timezone),
        description="Recomputes days of the API-usage rollup from the api_usage table.",
    )

    @dg.schedule(
        name="analytics_api_usage_schedule",
        job=api_usage_job,
        cron_schedule="*/15 * * * *",
        execution_timezone=day_timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Every 15 minutes: today's API usage (and, in the first hour of a day, "
        "yesterday's final numbers), so month-to-date budgets are current.",
    )
    def analytics_api_usage_schedule(context: dg.ScheduleEvaluationContext):
        moment = context.scheduled_execution_time.astimezone(ZoneInfo(day_timezone))
        days = [moment.date()]
        if moment.hour == 0:
            days.insert(0, moment.date() - timedelta(days=1))
        return [
            dg.RunRequest(
                run_key=f"api-usage-{day}-{moment:%H%M}",
                partition_key=day.isoformat(),
            )
            for day in days
            if day >= settings.partitions_start
        ]

    return dg.Definitions(
        assets=[requests_minute, jobs_hourly, api_usage_daily],
        jobs=[requests_job, jobs_job, api_usage_job],
        schedules=[analytics_api_usage_schedule],
        sensors=[build_freshness_sensor(settings, requests_job)],
        resources={RESOURCE_KEY: AnalyticsResource(config_file=config_file)},
    )
