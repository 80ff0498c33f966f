"""The freshness sensor: refreshes the current hour every minute, hands closed hours over.

The refresh runs inside the sensor's evaluation (about a second for a busy hour), not as a
Dagster run: a run a minute would be 1,440 runs a day in the run history. The UI shows one tick
per minute (ticks without runs are purged after 7 days by the instance's sensor retention) and
one partition run per closed hour. The watermark is the sensor's cursor.
"""

from typing import Any

import dagster as dg

from analytics.freshness import FreshnessCursor, refresh_recent, refresh_recent_jobs
from analytics.partitions import hour_partition_key
from analytics.resources import AnalyticsResource
from analytics.settings import AnalyticsSettings

FRESHNESS_SENSOR = "analytics_freshness_sensor"


def build_freshness_sensor(
    settings: AnalyticsSettings, finalise_job: dg.JobDefinition | Any
) -> dg.SensorDefinition:
    @dg.sensor(
        name=FRESHNESS_SENSOR,
        job=finalise_job,
        minimum_interval_seconds=max(30, int(settings.refresh_interval.total_seconds())),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Every minute: re-reads the request logs newer than the last watermark (minus the "
            "late-commit overlap) and replaces those minutes in the current hour's rollup, so "
            "the published rollups trail the application by about a minute. Requests one "
            "partition run per closed hour once the late-row grace has passed."
        ),
    )
    def analytics_freshness_sensor(
        context: dg.SensorEvaluationContext, analytics: AnalyticsResource
    ) -> dg.SensorResult:
        config, loaded = analytics.load()
        store = analytics.store(config, loaded)
        db = analytics.app_database()
        try:
            now = db.clock()
            outcome = refresh_recent(
                db, store, loaded, FreshnessCursor.from_json(context.cursor), now
            )
            jobs_note = refresh_recent_jobs(db, store, loaded, now)
        finally:
            db.dispose()
        context.log.info(f"{outcome.summary()}; {jobs_note}")
        run_requests = [
            dg.RunRequest(
                run_key=f"finalise-{hour_partition_key(hour)}",
                partition_key=hour_partition_key(hour),
                tags={"analytics/trigger": "finalise"},
            )
            for hour in outcome.hours_to_finalise
        ]
        return dg.SensorResult(
            run_requests=run_requests,
            cursor=outcome.cursor.to_json(),
            skip_reason=None if run_requests else outcome.summary(),
        )

    return analytics_freshness_sensor
