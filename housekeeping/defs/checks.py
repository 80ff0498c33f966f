"""Asset checks: each policy's health, judged from its run history (see history.py)."""

import dagster as dg

from housekeeping.config import HealthConfig
from housekeeping.config_types import format_duration
from housekeeping.defs.resources import HousekeepingResource
from housekeeping.history import HealthStatus, PolicyHealth


def _health_metadata(health: PolicyHealth) -> dict:
    values = {
        "status": str(health.status),
        "consecutive_failures": health.consecutive_failures,
        "consecutive_zero_deletes": health.consecutive_zero_deletes,
        "average_duration_ms": round(health.average_duration_ms or 0.0, 1),
        "total_runs": health.total_runs,
        "failed_runs": health.failed_runs,
        "total_deleted": health.total_deleted,
        "last_success": health.last_success.isoformat() if health.last_success else None,
        "last_failure": health.last_failure.isoformat() if health.last_failure else None,
        "last_error": health.last_error,
    }
    return {key: value for key, value in values.items() if value is not None}


def _load_health(housekeeping: HousekeepingResource, policy: str) -> PolicyHealth:
    settings = housekeeping.load()
    history = housekeeping.run_history(settings)
    try:
        return history.health(policy)
    finally:
        history.dispose()


def build_health_checks(
    policy: str, asset_key: dg.AssetKey, thresholds: HealthConfig, *, with_duration: bool = True
) -> list[dg.AssetChecksDefinition]:
    """The health, deletes_progress and duration checks of one policy's asset; `thresholds` (the
    config's ``health:`` section) only words the descriptions: the verdicts come from the run
    history, which judges by the same section. Files policies go without ``duration``
    (``with_duration=False``): gzipping a day of logs takes seconds, which says nothing about an
    index or a schedule."""

    @dg.asset_check(
        asset=asset_key,
        name="health",
        description=(
            "healthy; degraded after a failed run; critical after "
            f"{thresholds.critical_after_failures}+ consecutive failed runs (page the on-call)."
        ),
    )
    def health(housekeeping: HousekeepingResource) -> dg.AssetCheckResult:
        status = _load_health(housekeeping, policy)
        return dg.AssetCheckResult(
            passed=status.status is HealthStatus.HEALTHY,
            severity=(
                dg.AssetCheckSeverity.ERROR
                if status.status is HealthStatus.CRITICAL
                else dg.AssetCheckSeverity.WARN
            ),
            description=f"{policy} is {status.status}",
            metadata=_health_metadata(status),
        )

    @dg.asset_check(
        asset=asset_key,
        name="deletes_progress",
        description=(
            f"Warns when {thresholds.zero_deleted_runs_warning}+ runs in a row deleted nothing: are rows still "
            "being written, or is a clock wrong?"
        ),
    )
    def deletes_progress(housekeeping: HousekeepingResource) -> dg.AssetCheckResult:
        status = _load_health(housekeeping, policy)
        return dg.AssetCheckResult(
            passed=not status.zero_deletes_warning,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"consecutive_zero_deletes": status.consecutive_zero_deletes},
        )

    @dg.asset_check(
        asset=asset_key,
        name="duration",
        description=(
            f"Warns when the last {thresholds.average_over_runs} runs averaged over "
            f"{format_duration(thresholds.slow_average)} (a missing index, or a table outgrowing its "
            "schedule)."
        ),
    )
    def duration(housekeeping: HousekeepingResource) -> dg.AssetCheckResult:
        status = _load_health(housekeeping, policy)
        return dg.AssetCheckResult(
            passed=not status.slow_warning,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"average_duration_ms": round(status.average_duration_ms or 0.0, 1)},
        )

    return [health, deletes_progress, duration] if with_duration else [health, deletes_progress]
