"""The analytics sensors: freshness, and the housekeeping run history.

The freshness sensor refreshes the current hour every minute and hands closed hours over. The
refresh runs inside the sensor's evaluation (about a second for a busy hour), not as a
Dagster run: a run a minute would be 1,440 runs a day in the run history. The UI shows one tick
per minute (ticks without runs are purged after 7 days by the instance's sensor retention) and
one partition run per closed hour. The watermark is the sensor's cursor.
"""

from zoneinfo import ZoneInfo

import dagster as dg

from analytics.defs.assets import (
    HOUSEKEEPING_RUNS_ASSET,
    HOUSEKEEPING_SUMMARY_ASSET,
    REQUESTS_MINUTE_ASSET,
    TOKEN_REVOCATIONS_ASSET,
    RollupRun,
)
from analytics.defs.jobs import AssetJob
from analytics.defs.partitions import hour_partition_key
from analytics.defs.resources import AnalyticsResource
from analytics.freshness import FreshnessCursor, refresh_recent, refresh_recent_jobs
from analytics.pg_health import snapshot_summary
from analytics.rollups.pg_health import publish_snapshot
from analytics.rollups.request_clients import refresh_recent_clients
from analytics.rollups.token_revocations import token_policies
from analytics.settings import AnalyticsSettings
from housekeeping.config import HousekeepingConfig
from housekeeping.dagster_runs import BY_SENSOR
from housekeeping.history import RunHistory

FRESHNESS_SENSOR = "analytics_freshness_sensor"


def build_freshness_sensor(
    settings: AnalyticsSettings, finalise_job: AssetJob
) -> dg.SensorDefinition:
    """The freshness sensor; ``finalise_job`` is the requests job it hands closed hours to."""

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
        with RollupRun(context, analytics) as run:
            db, store, loaded = run.app_database, run.store, run.settings
            now = db.clock()
            outcome = refresh_recent(
                db, store, loaded, FreshnessCursor.from_json(context.cursor), now
            )
            jobs_note = refresh_recent_jobs(db, store, loaded, now)
            clients_note = refresh_recent_clients(db, store, loaded, run.config, now)
        context.log.info(f"{outcome.summary()}; {jobs_note}; {clients_note}")
        run_requests = [
            dg.RunRequest(
                run_key=f"finalise-{hour_partition_key(hour)}",
                partition_key=hour_partition_key(hour),
                tags={"analytics/trigger": "finalise", **BY_SENSOR},
            )
            for hour in outcome.hours_to_finalise
        ]
        return dg.SensorResult(
            run_requests=run_requests,
            cursor=outcome.cursor.to_json(),
            skip_reason=None if run_requests else outcome.summary(),
        )

    return analytics_freshness_sensor


HOUSEKEEPING_HISTORY_SENSOR = "analytics_housekeeping_history_sensor"
# On its first tick the sensor refreshes the days of at most this many recent days' runs; older
# days are a backfill from the UI.
FIRST_TICK_DAYS = 7


def build_housekeeping_history_sensor(
    settings: AnalyticsSettings,
    timezone: str,
    runs_job: AssetJob,
    summary_job: AssetJob,
    tokens_job: AssetJob,
    token_table_policies: frozenset[str],
) -> dg.SensorDefinition:
    """The sensor that refreshes the housekeeping rollups of the days new runs finished on.

    ``token_table_policies`` are the policies that clean the token table: their runs change a
    day's ``cleaned_up`` count, so that day's token revocations are refreshed too.
    """

    @dg.sensor(
        name=HOUSEKEEPING_HISTORY_SENSOR,
        jobs=[runs_job, summary_job, tokens_job],
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Watches the housekeeping run history: when cleanup or retention runs are recorded, "
            "requests the housekeeping_runs partition of their days, the housekeeping_summary, "
            "and (for token cleanups) the token_revocations day whose cleaned-up count changed. "
            "The cursor is the last history id seen; no new runs, no Dagster runs."
        ),
    )
    def analytics_housekeeping_history_sensor(
        context: dg.SensorEvaluationContext, analytics: AnalyticsResource
    ) -> dg.SensorResult:
        config, _ = analytics.load()
        history = RunHistory.from_config(config)
        try:
            recorded = history.recorded_after(int(context.cursor or 0))
        finally:
            history.dispose()
        if not recorded:
            return dg.SensorResult(skip_reason="no housekeeping runs recorded since last tick")
        last_id = recorded[-1].id
        zone = ZoneInfo(timezone)
        days = {run.run.finished_at.astimezone(zone).date() for run in recorded}
        token_days = {
            run.run.finished_at.astimezone(zone).date()
            for run in recorded
            if run.run.policy in token_table_policies
        }
        if context.cursor is None:
            newest = max(days)
            days = {day for day in days if (newest - day).days < FIRST_TICK_DAYS}
            token_days &= days
        valid = {day for day in days if day >= settings.partitions_start}
        requests = [
            dg.RunRequest(
                run_key=f"hk-runs-{day}-{last_id}",
                job_name=runs_job.name,
                partition_key=day.isoformat(),
                tags=BY_SENSOR,
            )
            for day in sorted(valid)
        ]
        requests += [
            dg.RunRequest(
                run_key=f"tokens-{day}-{last_id}",
                job_name=tokens_job.name,
                partition_key=day.isoformat(),
                tags=BY_SENSOR,
            )
            for day in sorted(token_days & valid)
        ]
        requests.append(
            dg.RunRequest(
                run_key=f"hk-summary-{last_id}", job_name=summary_job.name, tags=BY_SENSOR
            )
        )
        context.log.info(f"{len(recorded)} new housekeeping run(s) up to id {last_id}")
        return dg.SensorResult(run_requests=requests, cursor=str(last_id))

    return analytics_housekeeping_history_sensor


PG_HEALTH_SENSOR = "analytics_pg_health_sensor"


def build_pg_health_sensor() -> dg.SensorDefinition:
    """The sensor that takes a health snapshot of the application database every minute.

    Like the freshness sensor, it works inside the tick (a snapshot costs milliseconds): a run
    a minute would fill the run history. ``hk`` and the asset take one on demand.
    """

    @dg.sensor(
        name=PG_HEALTH_SENSOR,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Every minute: one health snapshot of the application database (connections, the "
            "oldest transaction, lock waits, dead tuples of the housekept tables, "
            "pg_stat_statements deltas), appended to pg_health, pg_table_health and "
            "pg_statement_stats. On SQLite: the file size."
        ),
    )
    def analytics_pg_health_sensor(
        context: dg.SensorEvaluationContext, analytics: AnalyticsResource
    ) -> dg.SensorResult:
        with RollupRun(context, analytics) as run:
            snapshot, _ = publish_snapshot(run.app_database, run.store, run.config)
        summary = snapshot_summary(snapshot)
        context.log.info(summary)
        return dg.SensorResult(skip_reason=summary)

    return analytics_pg_health_sensor


def build_sensors(
    config: HousekeepingConfig,
    settings: AnalyticsSettings,
    timezone: str,
    jobs: dict[str, AssetJob],
) -> list[dg.SensorDefinition]:
    """The freshness and housekeeping-history sensors; ``jobs`` by job name."""
    token_table = settings.sources.revoked_tokens.table
    return [
        build_freshness_sensor(settings, jobs[REQUESTS_MINUTE_ASSET.job]),
        build_housekeeping_history_sensor(
            settings,
            timezone,
            jobs[HOUSEKEEPING_RUNS_ASSET.job],
            jobs[HOUSEKEEPING_SUMMARY_ASSET.job],
            jobs[TOKEN_REVOCATIONS_ASSET.job],
            frozenset(token_policies(config, token_table)),
        ),
        build_pg_health_sensor(),
    ]
