"""The values rules compare against thresholds: built-in metrics and SQL over the published rollups.

Every metric is computed for all groups at once (one query per metric, grouping and window), read
only from the published DuckDB views file (never the file the rollups write), from the
housekeeping run history, or, for ``app_database_up``, from a short connection attempt.

Windows cover whole minutes: a window of 5 minutes evaluated at 12:07:30 covers 12:02 to 12:07
(the minute in progress is not complete yet). A metric returns ``None`` when it has no data at all
(the views file or the dataset does not exist yet): the rule's no-data policy decides.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from analytics.datasets import REQUESTS_MINUTE
from analytics.publish import hour_key
from analytics.views import request_stat_macros
from housekeeping.history import RunHistory, RunStatus, evaluate_health

if TYPE_CHECKING:
    from analytics.alerts.rules import Rule

GroupValues = dict[str, float]


class GroupBy(StrEnum):
    NONE = "none"
    ROUTE = "route"
    QUEUE = "queue"
    JOB = "job"  # queue/name
    SERVICE = "service"
    POLICY = "policy"


class Unit(StrEnum):
    RATIO = "ratio"  # shown as a percentage
    MILLISECONDS = "ms"
    PER_SECOND = "per_s"
    COUNT = "count"
    MINUTES = "minutes"
    BOOLEAN = "boolean"  # 1 = yes, 0 = no


@dataclass(frozen=True)
class MetricSpec:
    name: str
    description: str
    unit: Unit
    groupings: tuple[GroupBy, ...]


def _spec(name: str, description: str, unit: Unit, *groupings: GroupBy) -> MetricSpec:
    return MetricSpec(name, description, unit, groupings or (GroupBy.NONE,))


_REQ = (GroupBy.NONE, GroupBy.ROUTE)
_JOB = (GroupBy.NONE, GroupBy.QUEUE, GroupBy.JOB)
_POLICY = (GroupBy.POLICY,)
BUILTIN_METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        _spec("http_requests", "requests in the window", Unit.COUNT, *_REQ),
        _spec("http_request_rate", "requests per second over the window", Unit.PER_SECOND, *_REQ),
        _spec("http_error_rate", "share of 5xx responses", Unit.RATIO, *_REQ),
        _spec("http_rate_limited_rate", "share of 429 responses", Unit.RATIO, *_REQ),
        _spec(
            "http_latency_p95_ms",
            "p95 latency from the merged minute sketches",
            Unit.MILLISECONDS,
            *_REQ,
        ),
        _spec("job_failure_rate", "failed / (completed + failed) jobs", Unit.RATIO, *_JOB),
        _spec("jobs_failed", "failed jobs in the window", Unit.COUNT, *_JOB),
        _spec(
            "job_failures_without_success",
            "failures of a job that did not complete once in the window",
            Unit.COUNT,
            GroupBy.JOB,
        ),
        _spec("job_backlog", "waiting jobs at the latest snapshot", Unit.COUNT, *_JOB),
        _spec("jobs_stuck", "jobs active longer than stuck_after", Unit.COUNT, *_JOB),
        _spec(
            "api_budget_used",
            "month-to-date share of the service's quota or budget",
            Unit.RATIO,
            GroupBy.SERVICE,
        ),
        _spec(
            "cleanup_consecutive_failures",
            "failed housekeeping runs in a row",
            Unit.COUNT,
            *_POLICY,
        ),
        _spec(
            "cleanup_failed_runs", "failed housekeeping runs in the window", Unit.COUNT, *_POLICY
        ),
        _spec(
            "cleanup_zero_deleted_runs",
            "successful runs in a row that deleted nothing",
            Unit.COUNT,
            *_POLICY,
        ),
        _spec(
            "cleanup_average_duration_ms",
            "average duration of the last 10 completed runs",
            Unit.MILLISECONDS,
            *_POLICY,
        ),
        _spec("app_database_up", "1 when the application database answers", Unit.BOOLEAN),
        _spec(
            "rollup_lag_minutes",
            "minutes since the newest published request minute",
            Unit.MINUTES,
        ),
    )
}
_REQUEST_METRICS = {
    "http_requests",
    "http_request_rate",
    "http_error_rate",
    "http_rate_limited_rate",
    "http_latency_p95_ms",
}
_COUNT_METRICS = {"http_requests", "jobs_failed", "job_failures_without_success"}


def format_value(metric: str | None, value: float | None) -> str:
    if value is None:
        return "no data"
    unit = BUILTIN_METRICS[metric].unit if metric in BUILTIN_METRICS else None
    if unit is Unit.RATIO:
        return f"{value:.1%}"
    if unit is Unit.MILLISECONDS:
        return f"{value:,.0f} ms"
    if unit is Unit.PER_SECOND:
        return f"{value:,.1f}/s"
    if unit is Unit.MINUTES:
        return f"{value:,.0f} min"
    if unit is Unit.BOOLEAN:
        return "yes" if value >= 1 else "no"
    if unit is Unit.COUNT:
        return f"{value:,.0f}"
    return f"{value:,.4g}"


def window_bounds(now: datetime, window: timedelta) -> tuple[datetime, datetime]:
    """The whole minutes of a window ending at ``now`` (naive UTC, as the rollups store time)."""
    end = now.astimezone(UTC).replace(tzinfo=None, second=0, microsecond=0)
    return end - window, end


class MetricSource:
    """Computes metric values for rules at a given time; one instance per evaluation pass.

    ``views_database`` is the published DuckDB views file (opened read-only, once per pass);
    ``history`` the housekeeping run history; ``database_probe`` answers whether the application
    database is reachable (None: the metric has no data).
    """

    def __init__(
        self,
        views_database: Path | None,
        history: RunHistory | None = None,
        database_probe: Callable[[], bool] | None = None,
        rollup_root: Path | None = None,
        replay: bool = False,
    ) -> None:
        self.views_database = views_database
        # A replay (the backtest) reads hourly rollups finished after the moment it evaluates:
        # it uses whole hours that had ended by then only, never a later snapshot.
        self.replay = replay
        self.history = history
        self.database_probe = database_probe
        self.rollup_root = rollup_root
        self._connection: duckdb.DuckDBPyConnection | None = None
        # The request minutes of one evaluation (or one replay), read once: see prepare().
        self._requests_memory: duckdb.DuckDBPyConnection | None = None
        self._requests_span: tuple[datetime, datetime] | None = None
        self._cache: dict[tuple[Any, ...], GroupValues | None] = {}
        self._hour_cache: dict[tuple[Any, ...], GroupValues] = {}
        self._probe_result: bool | None = None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        if self._requests_memory is not None:
            self._requests_memory.close()
            self._requests_memory = None
            self._requests_span = None
        self._cache.clear()
        self._probe_result = None

    def prepare(self, rules: Sequence[Rule], first: datetime, last: datetime) -> None:
        """Read, once, the request minutes that evaluations from ``first`` to ``last`` need.

        Every request rule then aggregates a small in-memory table instead of scanning the
        published files again: one evaluation of 50 rules reads the files once, not 50 times.
        """
        windows = [rule.window for rule in rules if rule.metric in _REQUEST_METRICS]
        if not windows or self._duck() is None:
            return
        low, _ = window_bounds(first, max(windows))
        _, high = window_bounds(last, timedelta(0))
        source = self._request_files(low, high)
        if source is None:
            return  # not published: the view answers "no data"
        memory = duckdb.connect()
        memory.execute("SET TimeZone = 'UTC'")
        columns = ", ".join(name for name, _ in REQUESTS_MINUTE.typed_columns)
        if source:
            memory.execute(
                f"CREATE TABLE requests_minute AS SELECT {columns} FROM read_parquet($files) "
                "WHERE minute >= $low AND minute < $high ORDER BY minute",
                {"files": source, "low": low, "high": high},
            )
        else:
            definition = ", ".join(f"{name} {kind}" for name, kind in REQUESTS_MINUTE.typed_columns)
            memory.execute(f"CREATE TABLE requests_minute ({definition})")
        for statement in request_stat_macros():
            memory.execute(statement)
        if self._requests_memory is not None:
            self._requests_memory.close()
        self._requests_memory, self._requests_span = memory, (low, high)

    def _request_files(self, low: datetime, high: datetime) -> list[str] | None:
        """The published hour files covering [low, high); None when the dataset is not there."""
        if self.rollup_root is None:
            return None
        folder = Path(self.rollup_root) / REQUESTS_MINUTE.name
        if not folder.is_dir():
            return None
        files = []
        hour = low.replace(minute=0, second=0, microsecond=0)
        while hour < high:
            path = folder / f"{hour_key(hour.replace(tzinfo=UTC))}.parquet"
            if path.exists():
                files.append(str(path))
            hour += timedelta(hours=1)
        return files

    def clear_cache(self) -> None:
        """Forget computed values (a replay moves on to the next step)."""
        self._cache.clear()
        self._probe_result = None

    def __enter__(self) -> MetricSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _duck(self) -> duckdb.DuckDBPyConnection | None:
        if self._connection is None:
            if self.views_database is None or not Path(self.views_database).exists():
                return None
            self._connection = duckdb.connect(str(self.views_database), read_only=True)
            self._connection.execute("SET TimeZone = 'UTC'")
        return self._connection

    def _query(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]] | None:
        connection = self._duck()
        if connection is None:
            return None
        try:
            return connection.execute(sql, params).fetchall()
        except duckdb.CatalogException:
            return None  # the dataset is not published yet

    def values(self, rule: Rule, now: datetime) -> GroupValues | None:
        """The rule's metric for each group at ``now``; None when there is no data at all."""
        key = (rule.metric, rule.sql, rule.group_by, rule.window, now)
        if key not in self._cache:
            self._cache[key] = self._compute(rule, now)
        return self._cache[key]

    def _compute(self, rule: Rule, now: datetime) -> GroupValues | None:
        if rule.sql is not None:
            return self._sql(rule.sql, rule.window, now)
        metric = rule.metric
        assert metric is not None
        if metric in _REQUEST_METRICS:
            return self._requests(metric, rule.group_by, rule.window, now)
        if metric.startswith("job"):
            return self._jobs(metric, rule.group_by, rule.window, now)
        if metric == "api_budget_used":
            return self._api_budget(now)
        if metric.startswith("cleanup_"):
            return self._housekeeping(metric, rule.window, now)
        if metric == "app_database_up":
            if self.database_probe is None:
                return None
            if self._probe_result is None:
                self._probe_result = bool(self.database_probe())
            return {"": 1.0 if self._probe_result else 0.0}
        if metric == "rollup_lag_minutes":
            return self._rollup_lag(now)
        raise AssertionError(f"unhandled metric {metric}")

    def _sql(self, sql: str, window: timedelta, now: datetime) -> GroupValues | None:
        start, end = window_bounds(now, window)
        rows = self._query(sql, {"window_start": start, "window_end": end})
        if rows is None:
            return None
        result: GroupValues = {}
        for row in rows:
            if len(row) == 1:
                group, value = "", row[0]
            else:
                group, value = row[0], row[1]
            if value is not None:
                result["" if group is None else str(group)] = float(value)
        return result

    def _requests(
        self, metric: str, group_by: GroupBy, window: timedelta, now: datetime
    ) -> GroupValues | None:
        start, end = window_bounds(now, window)
        group = "route" if group_by is GroupBy.ROUTE else "''"
        if metric == "http_latency_p95_ms":
            # Percentiles merge the minute sketches (request_stats); never averaged.
            macro = "request_stats" if group_by is GroupBy.ROUTE else "request_stats_overall"
            sql = f"SELECT {group}, latency_p95_ms FROM {macro}($start, $end)"
        else:
            # Counts and rates need no sketch: plain sums, much cheaper.
            seconds = max(window.total_seconds(), 60.0)
            value = {
                "http_requests": "CAST(sum(requests) AS DOUBLE)",
                "http_request_rate": f"sum(requests) / {seconds!r}",
                "http_error_rate": "sum(status_5xx) / nullif(sum(requests), 0)",
                "http_rate_limited_rate": "sum(status_429) / nullif(sum(requests), 0)",
            }[metric]
            sql = (
                f"SELECT {group}, {value} FROM requests_minute "
                "WHERE minute >= $start AND minute < $end GROUP BY 1"
            )
        span = self._requests_span
        if self._requests_memory is not None and span and span[0] <= start and end <= span[1]:
            rows = self._requests_memory.execute(sql, {"start": start, "end": end}).fetchall()
        else:
            rows = self._query(sql, {"start": start, "end": end})
        if rows is None:
            return None
        result = {str(group): float(value) for group, value in rows if value is not None}
        if not result and group_by is GroupBy.NONE and metric in _COUNT_METRICS:
            result[""] = 0.0  # published, but no requests at all in the window
        return result

    def _jobs(
        self, metric: str, group_by: GroupBy, window: timedelta, now: datetime
    ) -> GroupValues | None:
        group = {
            GroupBy.NONE: "''",
            GroupBy.QUEUE: "queue",
            GroupBy.JOB: "queue || '/' || name",
        }[group_by]
        _, end = window_bounds(now, window)
        # Hourly rollups: the window is the current (partial) hour and the whole hours before it
        # back to ``now - window``, so the value is stable within an hour instead of flapping
        # as a minute-aligned window slides across hour boundaries.
        last_hour = end.replace(minute=0)
        if self.replay:
            last_hour -= timedelta(hours=1)
        first_hour = min((end - window).replace(minute=0), last_hour)
        cache_key = (metric, group_by, first_hour, last_hour)
        if cache_key in self._hour_cache:
            return self._hour_cache[cache_key]
        if metric in ("job_backlog", "jobs_stuck"):
            column = "backlog" if metric == "job_backlog" else "stuck"
            sql = (
                f"SELECT {group}, sum({column}) FROM jobs_hourly WHERE hour = "
                "(SELECT max(hour) FROM jobs_hourly WHERE hour <= $last) GROUP BY 1"
            )
            rows = self._query(sql, {"last": last_hour})
        else:
            value = {
                "job_failure_rate": "sum(failed) / nullif(sum(completed) + sum(failed), 0)",
                "jobs_failed": "sum(failed)",
                "job_failures_without_success": (
                    "CASE WHEN sum(completed) = 0 THEN sum(failed) ELSE 0 END"
                ),
            }[metric]
            sql = (
                f"SELECT {group}, {value} FROM jobs_hourly "
                "WHERE hour >= $first AND hour <= $last GROUP BY 1"
            )
            rows = self._query(sql, {"first": first_hour, "last": last_hour})
        if rows is None:
            return None
        result = {str(key): float(value) for key, value in rows if value is not None}
        if not result and group_by is GroupBy.NONE and metric in _COUNT_METRICS:
            result[""] = 0.0
        # Within one evaluation (or a replay over published files) an hour's rows do not change.
        self._hour_cache[cache_key] = result
        return result

    def _api_budget(self, now: datetime) -> GroupValues | None:
        month = now.astimezone(UTC).date().replace(day=1)
        rows = self._query(
            "SELECT service, max(budget_used_fraction) FROM api_usage_month_to_date "
            "WHERE CAST(month AS DATE) = $month AND budget_used_fraction IS NOT NULL GROUP BY 1",
            {"month": month},
        )
        if rows is None:
            return None
        return {str(service): float(value) for service, value in rows if value is not None}

    def _housekeeping(self, metric: str, window: timedelta, now: datetime) -> GroupValues | None:
        if self.history is None:
            return None
        result: GroupValues = {}
        for policy in self.history.policies():
            runs = [run for run in self.history.recent(policy, limit=500) if run.finished_at <= now]
            if not runs:
                continue
            if metric == "cleanup_failed_runs":
                since = now - window
                result[policy] = float(
                    sum(
                        1
                        for run in runs
                        if run.status is RunStatus.FAILED and run.finished_at > since
                    )
                )
                continue
            health = evaluate_health(policy, runs)
            if metric == "cleanup_consecutive_failures":
                result[policy] = float(health.consecutive_failures)
            elif metric == "cleanup_zero_deleted_runs":
                result[policy] = float(health.consecutive_zero_deletes)
            elif health.average_duration_ms is not None:
                result[policy] = health.average_duration_ms
        return result

    def _rollup_lag(self, now: datetime) -> GroupValues | None:
        rows = self._query("SELECT max(minute) FROM requests_minute", {})
        if rows is None or rows[0][0] is None:
            return None
        newest: datetime = rows[0][0]
        _, end = window_bounds(now, timedelta(0))
        # The newest minute ends one minute after its start.
        lag = (end - (newest + timedelta(minutes=1))).total_seconds() / 60
        return {"": max(0.0, lag)}
