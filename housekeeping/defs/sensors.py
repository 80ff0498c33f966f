"""The housekeeping sensor: health is re-evaluated at once after a failed cleanup."""

from __future__ import annotations

import dagster as dg

from housekeeping.dagster_runs import BY_SENSOR
from housekeeping.defs.jobs import HousekeepingJobs


def build_failure_health_sensor(jobs: HousekeepingJobs) -> dg.SensorDefinition:
    """A run-failure sensor over every cleanup job that requests the health job, once per run."""

    @dg.run_failure_sensor(
        name="housekeeping_failure_health_sensor",
        monitored_jobs=jobs.cleanups(),
        request_job=jobs.health,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="After a failed housekeeping run, re-evaluates health so degraded/critical "
        "shows at once.",
    )
    def failure_health_sensor(context: dg.RunFailureSensorContext) -> dg.RunRequest:
        return dg.RunRequest(run_key=context.dagster_run.run_id, tags=BY_SENSOR)

    return failure_health_sensor
