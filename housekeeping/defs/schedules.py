"""The housekeeping schedules: each policy's cron, the run-history purge, hourly health."""

from __future__ import annotations

import dagster as dg

from housekeeping.config import HousekeepingConfig
from housekeeping.dagster_runs import BY_SCHEDULE
from housekeeping.defs.jobs import HousekeepingJobs

HEALTH_CHECK_CRON = "17 * * * *"


def build_schedules(
    config: HousekeepingConfig, jobs: HousekeepingJobs
) -> list[dg.ScheduleDefinition]:
    """A schedule per policy with a ``schedule``, the purge's when it has one, and health hourly;
    all run in ``config.timezone`` and start switched on."""
    schedules = [
        dg.ScheduleDefinition(
            name=f"{name}_schedule",
            job=jobs.per_policy[name],
            cron_schedule=policy.schedule,
            execution_timezone=config.timezone,
            default_status=dg.DefaultScheduleStatus.RUNNING,
            tags=BY_SCHEDULE,
            description=f"Runs the {name} policy ({policy.schedule}, {config.timezone}).",
        )
        for name, policy in config.every_policy().items()
        if policy.schedule
    ]
    if jobs.run_history is not None and config.dagster_runs.schedule:
        schedules.append(
            dg.ScheduleDefinition(
                name="dagster_run_history_schedule",
                job=jobs.run_history,
                cron_schedule=config.dagster_runs.schedule,
                execution_timezone=config.timezone,
                default_status=dg.DefaultScheduleStatus.RUNNING,
                tags=BY_SCHEDULE,
                description="Purges old Dagster runs, event logs and compute logs.",
            )
        )
    schedules.append(
        dg.ScheduleDefinition(
            name="housekeeping_health_schedule",
            job=jobs.health,
            cron_schedule=HEALTH_CHECK_CRON,
            execution_timezone=config.timezone,
            default_status=dg.DefaultScheduleStatus.RUNNING,
            tags=BY_SCHEDULE,
            description="Hourly re-evaluation of the health checks, so staleness shows too.",
        )
    )
    return schedules
