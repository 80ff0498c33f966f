"""The rollup schedules: today's daily partitions kept current, and the table snapshots."""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

import dagster as dg

from analytics.defs.assets import API_USAGE_DAILY_ASSET, TABLE_STATS_ASSET, TOKEN_REVOCATIONS_ASSET
from analytics.defs.jobs import AssetJob
from analytics.settings import AnalyticsSettings
from housekeeping.dagster_runs import BY_SCHEDULE


def today_and_first_hour_yesterday(
    context: dg.ScheduleEvaluationContext, settings: AnalyticsSettings, timezone: str, name: str
) -> list[dg.RunRequest]:
    """Run requests for today's partition (in ``timezone``), and in the first hour of a day for
    yesterday's too, so its final numbers land; days before ``partitions_start`` are skipped.

    ``name`` starts each run key, which also carries the day and the tick's time.
    """
    moment = context.scheduled_execution_time.astimezone(ZoneInfo(timezone))
    days = [moment.date()]
    if moment.hour == 0:
        days.insert(0, moment.date() - timedelta(days=1))
    return [
        dg.RunRequest(
            run_key=f"{name}-{day}-{moment:%H%M}", partition_key=day.isoformat(), tags=BY_SCHEDULE
        )
        for day in days
        if day >= settings.partitions_start
    ]


def build_schedules(
    settings: AnalyticsSettings, timezone: str, jobs: dict[str, AssetJob]
) -> list[dg.ScheduleDefinition]:
    """The API-usage, token-revocation and table-stats schedules; ``jobs`` by job name."""

    @dg.schedule(
        name="analytics_api_usage_schedule",
        job=jobs[API_USAGE_DAILY_ASSET.job],
        cron_schedule="*/15 * * * *",
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Every 15 minutes: today's API usage (and, in the first hour of a day, "
        "yesterday's final numbers), so month-to-date budgets are current.",
    )
    def analytics_api_usage_schedule(context: dg.ScheduleEvaluationContext):
        return today_and_first_hour_yesterday(context, settings, timezone, "api-usage")

    @dg.schedule(
        name="analytics_token_revocations_schedule",
        job=jobs[TOKEN_REVOCATIONS_ASSET.job],
        cron_schedule="5 * * * *",
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Hourly: today's token revocations (and, in the first hour of a day, "
        "yesterday's final numbers).",
    )
    def analytics_token_revocations_schedule(context: dg.ScheduleEvaluationContext):
        return today_and_first_hour_yesterday(context, settings, timezone, "tokens")

    @dg.schedule(
        name="analytics_table_stats_schedule",
        job=jobs[TABLE_STATS_ASSET.job],
        cron_schedule="10 * * * *",
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Hourly: a snapshot of every housekept table (rows, expired rows, size).",
    )
    def analytics_table_stats_schedule(context: dg.ScheduleEvaluationContext):
        return dg.RunRequest(
            run_key=f"table-stats-{context.scheduled_execution_time:%Y%m%d%H%M}", tags=BY_SCHEDULE
        )

    return [
        analytics_api_usage_schedule,
        analytics_token_revocations_schedule,
        analytics_table_stats_schedule,
    ]
