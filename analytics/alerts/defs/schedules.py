"""``daily_summary_schedule``: runs ``daily_summary_job`` at ``alerts.summary.cron``."""

import dagster as dg

from analytics.alerts.defs.jobs import daily_summary_job
from analytics.alerts.settings import AlertsSettings
from housekeeping.dagster_runs import BY_SCHEDULE


def build_summary_schedule(settings: AlertsSettings, timezone: str) -> dg.ScheduleDefinition:
    """The summary's schedule, in ``alerts.summary.timezone`` (default: ``timezone``)."""
    return dg.ScheduleDefinition(
        name="daily_summary_schedule",
        job=daily_summary_job,
        cron_schedule=settings.summary.cron,
        execution_timezone=settings.summary.timezone or timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        tags=BY_SCHEDULE,
        description=f"The daily summary ({settings.summary.cron}, "
        f"{settings.summary.timezone or timezone}).",
    )
