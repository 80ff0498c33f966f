"""The housekeeping code location: built in one place from the config file.

A config that does not validate fails the code location's load with the same message
`hk config check` prints.
"""

import dagster as dg

from analytics.alerts.defs.definitions import build_alerts_defs
from analytics.defs.definitions import build_analytics_defs
from housekeeping.assets import (
    DAGSTER_RUNS_ASSET,
    GROUP,
    build_dagster_run_history_asset,
    build_policy_asset,
    policy_asset_key,
)
from housekeeping.checks import build_health_checks
from housekeeping.config import HousekeepingConfig, database_url, load_config
from housekeeping.resources import HousekeepingResource

HEALTH_CHECK_CRON = "17 * * * *"


def build_definitions(config: HousekeepingConfig, config_file: str = "") -> dg.Definitions:
    database_kind = "postgres" if database_url().startswith("postgres") else "sqlite"
    assets = [
        build_policy_asset(name, policy, config, database_kind)
        for name, policy in config.policies.items()
    ]
    checked_keys = {name: policy_asset_key(name) for name in config.policies}
    if config.dagster_runs.enabled:
        assets.append(build_dagster_run_history_asset(config))
        checked_keys["dagster_run_history"] = DAGSTER_RUNS_ASSET
    checks = [
        check
        for name, key in checked_keys.items()
        for check in build_health_checks(name, key, config.health)
    ]

    all_housekeeping = dg.AssetSelection.groups(GROUP)
    housekeeping_job = dg.define_asset_job(
        "housekeeping_job",
        selection=all_housekeeping,
        description="Every housekeeping policy and the Dagster run-history purge, once.",
    )
    dry_run_job = dg.define_asset_job(
        "housekeeping_dry_run_job",
        selection=dg.AssetSelection.assets(*(policy_asset_key(name) for name in config.policies)),
        description="Counts what every policy would delete, per table and cutoff; deletes nothing.",
        config={
            "ops": {
                key.to_python_identifier(): {"config": {"dry_run": True}}
                for key in (policy_asset_key(name) for name in config.policies)
            }
        },
    )
    health_job = dg.define_asset_job(
        "housekeeping_health_job",
        selection=dg.AssetSelection.checks_for_assets(*checked_keys.values()),
        description="Re-evaluates every policy's health checks from its run history.",
    )

    policy_jobs = {
        name: dg.define_asset_job(
            f"{name}_job",
            selection=dg.AssetSelection.assets(policy_asset_key(name)),
            description=f"Runs the {name} policy alone.",
        )
        for name in config.policies
    }
    schedules = [
        dg.ScheduleDefinition(
            name=f"{name}_schedule",
            job=policy_jobs[name],
            cron_schedule=policy.schedule,
            execution_timezone=config.timezone,
            default_status=dg.DefaultScheduleStatus.RUNNING,
            description=f"Runs the {name} policy ({policy.schedule}, {config.timezone}).",
        )
        for name, policy in config.policies.items()
        if policy.schedule
    ]
    run_history_jobs = []
    if config.dagster_runs.enabled:
        run_history_job = dg.define_asset_job(
            "dagster_run_history_job",
            selection=dg.AssetSelection.assets(DAGSTER_RUNS_ASSET),
            description="Purges old Dagster runs, event logs and compute logs.",
        )
        run_history_jobs.append(run_history_job)
        if config.dagster_runs.schedule:
            schedules.append(
                dg.ScheduleDefinition(
                    name="dagster_run_history_schedule",
                    job=run_history_job,
                    cron_schedule=config.dagster_runs.schedule,
                    execution_timezone=config.timezone,
                    default_status=dg.DefaultScheduleStatus.RUNNING,
                    description="Purges old Dagster runs, event logs and compute logs.",
                )
            )
    schedules.append(
        dg.ScheduleDefinition(
            name="housekeeping_health_schedule",
            job=health_job,
            cron_schedule=HEALTH_CHECK_CRON,
            execution_timezone=config.timezone,
            default_status=dg.DefaultScheduleStatus.RUNNING,
            description="Hourly re-evaluation of the health checks, so staleness shows too.",
        )
    )

    @dg.run_failure_sensor(
        name="housekeeping_failure_health_sensor",
        monitored_jobs=[housekeeping_job, *policy_jobs.values(), *run_history_jobs],
        request_job=health_job,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="After a failed housekeeping run, re-evaluates health so degraded/critical "
        "shows at once.",
    )
    def failure_health_sensor(context: dg.RunFailureSensorContext) -> dg.RunRequest:
        return dg.RunRequest(run_key=context.dagster_run.run_id)

    housekeeping_defs = dg.Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=[
            housekeeping_job,
            dry_run_job,
            health_job,
            *policy_jobs.values(),
            *run_history_jobs,
        ],
        schedules=schedules,
        sensors=[failure_health_sensor],
        resources={"housekeeping": HousekeepingResource(config_file=config_file)},
    )
    return dg.Definitions.merge(
        housekeeping_defs,
        build_analytics_defs(config, config_file),
        build_alerts_defs(config, config_file),
    )


defs = build_definitions(load_config())
