"""Asset checks: each policy's health, judged from its run history (see history.py)."""

import dagster as dg

from housekeeping.defs.resources import HousekeepingResource
from housekeeping.history import (
    AVERAGE_DURATION_WARNING_MS,
    AVERAGE_OVER_RUNS,
    CONSECUTIVE_FAILURES_CRITICAL,
    ZERO_DELETE_RUNS_WARNING,
    HealthStatus,
    PolicyHealth,
)


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


def build_health_checks(policy: str, asset_key: dg.AssetKey) -> list[dg.AssetChecksDefinition]:
    @dg.asset_check(
        asset=asset_key,
        name="health",
        description=(
            "healthy; degraded after 1-2 consecutive failed runs; critical after "
            f"{CONSECUTIVE_FAILURES_CRITICAL}+ (page the on-call)."
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
            f"Warns when {ZERO_DELETE_RUNS_WARNING}+ runs in a row deleted nothing: are rows still "
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
            f"Warns when the last {AVERAGE_OVER_RUNS} runs averaged over "
            f"{AVERAGE_DURATION_WARNING_MS:.0f} ms (a missing index, or a table outgrowing its "
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

    return [health, deletes_progress, duration]
