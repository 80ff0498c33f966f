"""The built-in rule metrics as data: one entry per metric, nothing else to edit to add one.

An entry names the metric, says what it measures, its unit (which also decides how its values are
shown), the source it is computed from, and, for the sources read with SQL, one query per
grouping it supports. The query returns ``(group, value)`` rows; the parameters each source binds
are listed on ``Source``. ``metrics.py`` evaluates an entry; ``rules.py`` validates a rule's
metric and grouping against it; ``messages.py`` formats values by its unit.

Pure data: importing this module loads no database driver.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from housekeeping.history import PolicyHealth


class GroupBy(StrEnum):
    NONE = "none"
    ROUTE = "route"
    QUEUE = "queue"
    JOB = "job"  # queue/name
    SERVICE = "service"
    POLICY = "policy"
    TABLE = "table"  # a housekept table (the database health snapshots)
    STATEMENT = "statement"  # a pg_stat_statements queryid (never its text)


class Unit(StrEnum):
    RATIO = "ratio"  # shown as a percentage
    MILLISECONDS = "ms"
    PER_SECOND = "per_s"
    COUNT = "count"
    MINUTES = "minutes"
    BOOLEAN = "boolean"  # 1 = yes, 0 = no

    def format(self, value: float) -> str:
        """``value`` as messages show it, e.g. ``12.5%``, ``1,200 ms``, ``3.4/s``, ``yes``."""
        if self is Unit.RATIO:
            return f"{value:.1%}"
        if self is Unit.MILLISECONDS:
            return f"{value:,.0f} ms"
        if self is Unit.PER_SECOND:
            return f"{value:,.1f}/s"
        if self is Unit.MINUTES:
            return f"{value:,.0f} min"
        if self is Unit.BOOLEAN:
            return "yes" if value >= 1 else "no"
        return f"{value:,.0f}"


class Source(StrEnum):
    """Where a metric's values come from, and what its SQL (if any) may reference."""

    # The published ``requests_minute`` rows (read once per evaluation pass, see
    # MetricSource.prepare); SQL binds $start and $end (the window's whole minutes, naive UTC)
    # and $window_seconds (the window's length, at least 60).
    REQUEST_MINUTES = "request_minutes"
    # The published ``jobs_hourly`` rows; SQL binds $first and $last, the first and last hour of
    # the window (the current hour so far included, except in a replay).
    JOB_HOURS = "job_hours"
    # The published ``api_usage_month_to_date`` view; SQL binds $month (the first day, a DATE).
    API_USAGE_MONTH = "api_usage_month"
    # The housekeeping run history: ``health_value`` of each policy's health.
    POLICY_HEALTH = "policy_health"
    # The housekeeping run history: failed runs of each policy finished within the window.
    POLICY_FAILURES = "policy_failures"
    # As POLICY_FAILURES while the policy's newest run failed; 0 once a run did not fail (the
    # policy is healthy again), so an alert on it resolves then, not when the window has passed.
    POLICY_UNRECOVERED_FAILURES = "policy_unrecovered_failures"
    # A trivial query on the application database.
    APP_DATABASE = "app_database"
    # Minutes since the end of the newest published request minute; SQL returns that minute
    # among those before $end (the evaluation's minute, naive UTC: a replay sees no later one).
    ROLLUP_LAG = "rollup_lag"
    # A published snapshot dataset (pg_health, pg_table_health, pg_statement_stats); SQL binds
    # $start and $end (the window's whole minutes, naive UTC).
    PUBLISHED_WINDOW = "published_window"


@dataclass(frozen=True)
class MetricSpec:
    """One built-in metric. ``sql`` holds a query per grouping for the SQL sources."""

    name: str
    description: str
    unit: Unit
    source: Source
    groupings: tuple[GroupBy, ...]
    sql: Mapping[GroupBy, str] = field(default_factory=dict)
    # Published, but no row in the window: the ungrouped value is 0 rather than no data.
    zero_when_empty: bool = False
    # POLICY_HEALTH: the value read from a policy's health (None: the policy has no value).
    health_value: Callable[[PolicyHealth], float | None] | None = None


_REQUEST_GROUPS = {GroupBy.NONE: "''", GroupBy.ROUTE: "route"}
_JOB_GROUPS = {GroupBy.NONE: "''", GroupBy.QUEUE: "queue", GroupBy.JOB: "queue || '/' || name"}


def _request_sum(value: str) -> dict[GroupBy, str]:
    # Counts and rates need no sketch: plain sums, much cheaper.
    return {
        grouping: f"SELECT {group}, {value} FROM requests_minute "
        "WHERE minute >= $start AND minute < $end GROUP BY 1"
        for grouping, group in _REQUEST_GROUPS.items()
    }


def _job_sum(value: str, *groupings: GroupBy) -> dict[GroupBy, str]:
    return {
        grouping: f"SELECT {_JOB_GROUPS[grouping]}, {value} FROM jobs_hourly "
        "WHERE hour >= $first AND hour <= $last GROUP BY 1"
        for grouping in groupings or tuple(_JOB_GROUPS)
    }


def _job_snapshot(column: str) -> dict[GroupBy, str]:
    # A snapshot column: the latest hour of the window, never a sum over hours.
    return {
        grouping: f"SELECT {group}, sum({column}) FROM jobs_hourly WHERE hour = "
        "(SELECT max(hour) FROM jobs_hourly WHERE hour <= $last) GROUP BY 1"
        for grouping, group in _JOB_GROUPS.items()
    }


def _sql(
    name: str,
    description: str,
    unit: Unit,
    source: Source,
    sql: dict[GroupBy, str],
    zero_when_empty: bool = False,
) -> MetricSpec:
    return MetricSpec(name, description, unit, source, tuple(sql), sql, zero_when_empty)


def _health(
    name: str, description: str, unit: Unit, value: Callable[[PolicyHealth], float | None]
) -> MetricSpec:
    return MetricSpec(
        name, description, unit, Source.POLICY_HEALTH, (GroupBy.POLICY,), {}, False, value
    )


BUILTIN_METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        _sql(
            "http_requests",
            "requests in the window",
            Unit.COUNT,
            Source.REQUEST_MINUTES,
            _request_sum("CAST(sum(requests) AS DOUBLE)"),
            zero_when_empty=True,
        ),
        _sql(
            "http_request_rate",
            "requests per second over the window",
            Unit.PER_SECOND,
            Source.REQUEST_MINUTES,
            _request_sum("sum(requests) / $window_seconds"),
        ),
        _sql(
            "http_error_rate",
            "share of 5xx responses",
            Unit.RATIO,
            Source.REQUEST_MINUTES,
            _request_sum("sum(status_5xx) / nullif(sum(requests), 0)"),
        ),
        _sql(
            "http_rate_limited_rate",
            "share of 429 responses",
            Unit.RATIO,
            Source.REQUEST_MINUTES,
            _request_sum("sum(status_429) / nullif(sum(requests), 0)"),
        ),
        _sql(
            "http_latency_p95_ms",
            "p95 latency from the merged minute sketches",
            Unit.MILLISECONDS,
            Source.REQUEST_MINUTES,
            # Percentiles merge the minute sketches (the request_stats macros); never averaged.
            {
                GroupBy.NONE: "SELECT '', latency_p95_ms FROM request_stats_overall($start, $end)",
                GroupBy.ROUTE: "SELECT route, latency_p95_ms FROM request_stats($start, $end)",
            },
        ),
        _sql(
            "job_failure_rate",
            "failed / (completed + failed) jobs",
            Unit.RATIO,
            Source.JOB_HOURS,
            _job_sum("sum(failed) / nullif(sum(completed) + sum(failed), 0)"),
        ),
        _sql(
            "jobs_failed",
            "failed jobs in the window",
            Unit.COUNT,
            Source.JOB_HOURS,
            _job_sum("sum(failed)"),
            zero_when_empty=True,
        ),
        _sql(
            "job_failures_without_success",
            "failures of a job that did not complete once in the window",
            Unit.COUNT,
            Source.JOB_HOURS,
            _job_sum("CASE WHEN sum(completed) = 0 THEN sum(failed) ELSE 0 END", GroupBy.JOB),
            zero_when_empty=True,
        ),
        _sql(
            "job_backlog",
            "waiting jobs at the latest snapshot",
            Unit.COUNT,
            Source.JOB_HOURS,
            _job_snapshot("backlog"),
        ),
        _sql(
            "jobs_stuck",
            "jobs active longer than stuck_after",
            Unit.COUNT,
            Source.JOB_HOURS,
            _job_snapshot("stuck"),
        ),
        _sql(
            "api_budget_used",
            "month-to-date share of the service's quota or budget",
            Unit.RATIO,
            Source.API_USAGE_MONTH,
            {
                GroupBy.SERVICE: "SELECT service, max(budget_used_fraction) "
                "FROM api_usage_month_to_date WHERE CAST(month AS DATE) = $month "
                "AND budget_used_fraction IS NOT NULL GROUP BY 1"
            },
        ),
        _health(
            "cleanup_consecutive_failures",
            "failed housekeeping runs in a row",
            Unit.COUNT,
            lambda health: float(health.consecutive_failures),
        ),
        MetricSpec(
            "cleanup_failed_runs",
            "failed housekeeping runs in the window",
            Unit.COUNT,
            Source.POLICY_FAILURES,
            (GroupBy.POLICY,),
        ),
        MetricSpec(
            "cleanup_unrecovered_failed_runs",
            "failed housekeeping runs in the window while the newest run failed (0 once one "
            "does not)",
            Unit.COUNT,
            Source.POLICY_UNRECOVERED_FAILURES,
            (GroupBy.POLICY,),
        ),
        _health(
            "cleanup_zero_deleted_runs",
            "successful runs in a row that deleted nothing",
            Unit.COUNT,
            lambda health: float(health.consecutive_zero_deletes),
        ),
        _health(
            "cleanup_average_duration_ms",
            "average duration of the last 10 completed runs (none for a files policy: "
            "it has no `duration` check either)",
            Unit.MILLISECONDS,
            lambda health: health.average_duration_ms if health.timed else None,
        ),
        MetricSpec(
            "app_database_up",
            "1 when the application database answers",
            Unit.BOOLEAN,
            Source.APP_DATABASE,
            (GroupBy.NONE,),
        ),
        _sql(
            "rollup_lag_minutes",
            "minutes since the newest published request minute",
            Unit.MINUTES,
            Source.ROLLUP_LAG,
            {GroupBy.NONE: "SELECT max(minute) FROM requests_minute WHERE minute < $end"},
        ),
    )
}


def _latest_snapshot(
    dataset: str, value: str, grouping: GroupBy = GroupBy.NONE
) -> dict[GroupBy, str]:
    # The newest snapshot of the window: a gauge, never summed over snapshots.
    group = {GroupBy.NONE: "''", GroupBy.TABLE: "table_name"}[grouping]
    return {
        grouping: f"SELECT {group}, {value} FROM {dataset} WHERE taken_at = "
        f"(SELECT max(taken_at) FROM {dataset} WHERE taken_at >= $start AND taken_at < $end) "
        "GROUP BY 1"
    }


# The application database's health (analytics/pg_health.py) and the other latency percentiles.
BUILTIN_METRICS.update(
    {
        spec.name: spec
        for spec in (
            _sql(
                "pg_connections_used",
                "client connections / max_connections at the newest snapshot",
                Unit.RATIO,
                Source.PUBLISHED_WINDOW,
                _latest_snapshot("pg_health", "max(connections_used)"),
            ),
            _sql(
                "pg_connections",
                "client connections at the newest snapshot",
                Unit.COUNT,
                Source.PUBLISHED_WINDOW,
                _latest_snapshot("pg_health", "max(connections)"),
            ),
            _sql(
                "pg_longest_transaction_minutes",
                "age of the oldest open transaction at the newest snapshot",
                Unit.MINUTES,
                Source.PUBLISHED_WINDOW,
                _latest_snapshot("pg_health", "max(longest_transaction_s) / 60"),
            ),
            _sql(
                "pg_lock_waiting_sessions",
                "sessions waiting for a lock at the newest snapshot",
                Unit.COUNT,
                Source.PUBLISHED_WINDOW,
                _latest_snapshot("pg_health", "max(lock_waiting_sessions)"),
            ),
            _sql(
                "pg_dead_tuple_ratio",
                "dead / live tuples of a housekept table with 1,000+ dead tuples, newest snapshot",
                Unit.RATIO,
                Source.PUBLISHED_WINDOW,
                _latest_snapshot(
                    "pg_table_health",
                    "max(CASE WHEN dead_tuples >= 1000 THEN dead_ratio END)",
                    GroupBy.TABLE,
                ),
            ),
            _sql(
                "pg_statement_mean_ms",
                "mean execution time of a statement's calls in the window (pg_stat_statements)",
                Unit.MILLISECONDS,
                Source.PUBLISHED_WINDOW,
                {
                    grouping: f"SELECT {group}, sum(exec_ms) / nullif(sum(calls), 0) "
                    "FROM pg_statement_stats WHERE taken_at >= $start AND taken_at < $end "
                    "AND calls IS NOT NULL GROUP BY 1"
                    for grouping, group in ((GroupBy.NONE, "''"), (GroupBy.STATEMENT, "queryid"))
                },
            ),
            *(
                _sql(
                    f"http_latency_{name}_ms",
                    f"{name} latency from the merged minute sketches",
                    Unit.MILLISECONDS,
                    Source.REQUEST_MINUTES,
                    {
                        GroupBy.NONE: f"SELECT '', latency_{name}_ms "
                        "FROM request_stats_overall($start, $end)",
                        GroupBy.ROUTE: f"SELECT route, latency_{name}_ms "
                        "FROM request_stats($start, $end)",
                    },
                )
                for name in ("p50", "p99")
            ),
            # The security signals (request_clients_minute: hashed clients and users only).
            _sql(
                "http_rate_limited_clients",
                "distinct hashed client addresses answered 429 in the window",
                Unit.COUNT,
                Source.PUBLISHED_WINDOW,
                {
                    GroupBy.NONE: "SELECT '', count(DISTINCT client_hash) "
                    "FROM request_clients_minute WHERE minute >= $start AND minute < $end "
                    "AND rate_limited > 0 AND client_hash IS NOT NULL"
                },
            ),
            _sql(
                "http_user_requests_per_minute_max",
                "requests of the busiest hashed user in any one minute of the window",
                Unit.COUNT,
                Source.PUBLISHED_WINDOW,
                {
                    GroupBy.NONE: "SELECT '', max(requests) FROM (SELECT minute, user_hash, "
                    "sum(requests) AS requests FROM request_clients_minute "
                    "WHERE minute >= $start AND minute < $end AND user_hash IS NOT NULL "
                    "GROUP BY ALL)"
                },
            ),
        )
    }
)


def unit_of(metric: str | None) -> Unit | None:
    """The unit of a built-in metric; None for a SQL rule (``metric`` None) or an unknown name."""
    spec = BUILTIN_METRICS.get(metric) if metric is not None else None
    return spec.unit if spec is not None else None
