"""The analytics half of the code location, merged into housekeeping/definitions.py."""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

import dagster as dg

from analytics.defs.assets import (
    API_USAGE_DAILY_KEY,
    HOUSEKEEPING_RUNS_KEY,
    HOUSEKEEPING_SUMMARY_KEY,
    JOBS_HOURLY_KEY,
    REQUESTS_MINUTE_KEY,
    TABLE_STATS_KEY,
    TOKEN_REVOCATIONS_BY_USER_KEY,
    TOKEN_REVOCATIONS_DAILY_KEY,
    build_api_usage_daily_asset,
    build_housekeeping_runs_asset,
    build_housekeeping_summary_asset,
    build_jobs_hourly_asset,
    build_requests_minute_asset,
    build_table_stats_asset,
    build_token_revocations_assets,
)
from analytics.defs.partitions import daily_partitions, hourly_partitions
from analytics.defs.resources import AnalyticsResource
from analytics.defs.sensors import build_freshness_sensor, build_housekeeping_history_sensor
from analytics.rollups.token_revocations import token_policies
from analytics.settings import AnalyticsSettings, analytics_settings
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
        return _today_and_first_hour_yesterday(context, settings, day_timezone, "api-usage")

    housekeeping = _housekeeping_definitions(config, settings, day_timezone)
    return dg.Definitions.merge(
        dg.Definitions(
            assets=[requests_minute, jobs_hourly, api_usage_daily],
            jobs=[requests_job, jobs_job, api_usage_job],
            schedules=[analytics_api_usage_schedule],
            sensors=[build_freshness_sensor(settings, requests_job)],
            resources={RESOURCE_KEY: AnalyticsResource(config_file=config_file)},
        ),
        housekeeping,
    )


def _today_and_first_hour_yesterday(
    context: dg.ScheduleEvaluationContext, settings: AnalyticsSettings, day_timezone: str, name: str
) -> list[dg.RunRequest]:
    moment = context.scheduled_execution_time.astimezone(ZoneInfo(day_timezone))
    days = [moment.date()]
    if moment.hour == 0:
        days.insert(0, moment.date() - timedelta(days=1))
    return [
        dg.RunRequest(run_key=f"{name}-{day}-{moment:%H%M}", partition_key=day.isoformat())
        for day in days
        if day >= settings.partitions_start
    ]


def _housekeeping_definitions(
    config: HousekeepingConfig, settings: AnalyticsSettings, day_timezone: str
) -> dg.Definitions:
    """Housekeeping history, token revocations and table stats: assets, jobs, how kept current."""
    daily = daily_partitions(settings, day_timezone)
    runs_job = dg.define_asset_job(
        "analytics_housekeeping_runs_job",
        selection=dg.AssetSelection.assets(HOUSEKEEPING_RUNS_KEY),
        partitions_def=daily,
        description="Recomputes days of the housekeeping run history rollup.",
    )
    summary_job = dg.define_asset_job(
        "analytics_housekeeping_summary_job",
        selection=dg.AssetSelection.assets(HOUSEKEEPING_SUMMARY_KEY),
        description="Rewrites the per-policy housekeeping summary (hk status's figures).",
    )
    tokens_job = dg.define_asset_job(
        "analytics_token_revocations_job",
        selection=dg.AssetSelection.assets(
            TOKEN_REVOCATIONS_DAILY_KEY, TOKEN_REVOCATIONS_BY_USER_KEY
        ),
        partitions_def=daily,
        description="Recomputes days of the token revocation rollups (daily and per hashed user).",
    )
    table_stats_job = dg.define_asset_job(
        "analytics_table_stats_job",
        selection=dg.AssetSelection.assets(TABLE_STATS_KEY),
        description="Takes one snapshot of every housekept table's rows, expired rows and size.",
    )

    @dg.schedule(
        name="analytics_token_revocations_schedule",
        job=tokens_job,
        cron_schedule="5 * * * *",
        execution_timezone=day_timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Hourly: today's token revocations (and, in the first hour of a day, "
        "yesterday's final numbers).",
    )
    def analytics_token_revocations_schedule(context: dg.ScheduleEvaluationContext):
        return _today_and_first_hour_yesterday(context, settings, day_timezone, "tokens")

    @dg.schedule(
        name="analytics_table_stats_schedule",
        job=table_stats_job,
        cron_schedule="10 * * * *",
        execution_timezone=day_timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Hourly: a snapshot of every housekept table (rows, expired rows, size).",
    )
    def analytics_table_stats_schedule(context: dg.ScheduleEvaluationContext):
        return dg.RunRequest(run_key=f"table-stats-{context.scheduled_execution_time:%Y%m%d%H%M}")

    token_table = settings.sources.revoked_tokens.table
    return dg.Definitions(
        assets=[
            build_housekeeping_runs_asset(settings, day_timezone, config.owner),
            build_housekeeping_summary_asset(config.owner),
            build_token_revocations_assets(settings, day_timezone, config.owner),
            build_table_stats_asset(config.owner),
        ],
        jobs=[runs_job, summary_job, tokens_job, table_stats_job],
        schedules=[analytics_token_revocations_schedule, analytics_table_stats_schedule],
        sensors=[
            build_housekeeping_history_sensor(
                settings,
                day_timezone,
                runs_job,
                summary_job,
                tokens_job,
                frozenset(token_policies(config, token_table)),
            )
        ],
    )
