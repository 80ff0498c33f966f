"""The values rules compare against thresholds: the catalog's metrics and SQL rules, evaluated.

Every metric is computed for all groups at once (one query per metric, grouping and window), read
only from the published rollups through the sandboxed, read-only connection every reader uses
(analytics/sandbox.py: it keeps working while an analyst holds the views file, and a SQL rule
can read nothing but the published rollups), from the housekeeping run history, or, for
``app_database_up``, from a short connection attempt. What each
metric computes is data in catalog.py; this module runs it, by the metric's source.

Windows cover whole minutes: a window of 5 minutes evaluated at 12:07:30 covers 12:02 to 12:07
(the minute in progress is not complete yet). A metric returns ``None`` when it has no data at all
(the views file or the dataset does not exist yet): the rule's no-data policy decides.

A request window is read over the part the rollups cover: from the first published request
minute on, in hours whose partition is published (the rollup job writes every hour it runs for,
an empty one too; a missing hour was never rolled up). A 1-hour rate evaluated 5 minutes after
the rollups started is requests / 300 s, not requests / 3,600 s; a rule with
``require_full_window`` has no data until the whole window is covered, and a window with nothing
covered (before the first minute, or days the pipeline did not run) has no data.
``low_volume`` names the groups under a rule's ``min_requests`` (state.py: what their values
may do).
"""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from analytics.alerts.catalog import BUILTIN_METRICS, GroupBy, MetricSpec, Source
from analytics.datasets import REQUESTS_MINUTE
from analytics.publish import HOUR_FILE_FORMAT, RollupStore, existing_partition_files, hour_key
from analytics.sandbox import QueryError, open_rollups, rollup_store, run_reading
from analytics.views import request_stat_macros
from housekeeping.errors import first_line
from housekeeping.history import RunHistory, RunStatus

if TYPE_CHECKING:
    from analytics.alerts.rules import Rule

GroupValues = dict[str, float]
# DuckDB's type names (cursor.description) of the values a SQL rule may return.
_NUMERIC_TYPES = frozenset(
    {
        "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
        "UINTEGER", "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "DECIMAL", "BOOLEAN", "NUMBER",
    }
)  # fmt: skip
NUMERIC_TYPES = _NUMERIC_TYPES  # for the backtest's batched SQL rules (series.py)
_PARAMETER = re.compile(r"\$([a-z_]+)")


def _bound(sql: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """The ``parameters`` that ``sql`` references ($name): DuckDB refuses unused named ones."""
    return {name: parameters[name] for name in set(_PARAMETER.findall(sql)) if name in parameters}


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
        # The first published request minute (naive UTC); False: not looked up yet.
        self._first_minute: datetime | None | bool = False
        # The hour keys of the published request partitions (None: not known, all count).
        self._hours: set[str] | None | bool = False
        # The replay's step_key: finish times of each policy's runs (ascending).
        self._finished: dict[str, list[datetime]] | None = None

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
        self._first_minute = False
        self._hours = False

    def prepare(self, rules: Sequence[Rule], first: datetime, last: datetime) -> None:
        """Read, once, the request minutes that evaluations from ``first`` to ``last`` need.

        Every request rule then aggregates a small in-memory table instead of scanning the
        published files again: one evaluation of 50 rules reads the files once, not 50 times.
        """
        windows = [
            rule.window
            for rule in rules
            if rule.metric is not None
            and BUILTIN_METRICS[rule.metric].source is Source.REQUEST_MINUTES
        ]
        if not windows or self._duck() is None:
            return
        low, _ = window_bounds(first, max(windows))
        _, high = window_bounds(last, timedelta(0))
        hours = []
        hour = low.replace(minute=0, second=0, microsecond=0, tzinfo=UTC)
        while hour < high.replace(tzinfo=UTC):
            hours.append(hour_key(hour))
            hour += timedelta(hours=1)
        assert self.views_database is not None  # _duck() answered
        files = (
            existing_partition_files(
                RollupStore(self.rollup_root, self.views_database), REQUESTS_MINUTE.name, hours
            )
            if self.rollup_root is not None
            else None
        )
        if files is None:
            return  # not published: the view answers "no data"
        memory = duckdb.connect()
        memory.execute("SET TimeZone = 'UTC'")
        columns = ", ".join(name for name, _ in REQUESTS_MINUTE.typed_columns)
        if files:
            memory.execute(
                f"CREATE TABLE requests_minute AS SELECT {columns} FROM read_parquet($files) "
                "WHERE minute >= $low AND minute < $high ORDER BY minute",
                {"files": [str(path) for path in files], "low": low, "high": high},
            )
        else:
            definition = ", ".join(f"{name} {kind}" for name, kind in REQUESTS_MINUTE.typed_columns)
            memory.execute(f"CREATE TABLE requests_minute ({definition})")
        for statement in request_stat_macros():
            memory.execute(statement)
        if self._requests_memory is not None:
            self._requests_memory.close()
        self._requests_memory, self._requests_span = memory, (low, high)

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
            store = rollup_store(Path(self.views_database), self.rollup_root)
            self._connection = open_rollups(store, timezone="UTC")
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
        key = (
            rule.metric,
            rule.sql,
            rule.group_by,
            rule.window,
            rule.require_full_window,
            rule.min_requests,
            now,
        )
        if key not in self._cache:
            self._cache[key] = self._compute(rule, now)
        return self._cache[key]

    def low_volume(self, rule: Rule, now: datetime) -> set[str]:
        """The groups with fewer than the rule's ``min_requests`` requests in its window at
        ``now`` (empty without the guard): their values may resolve an alert, never start one."""
        if rule.min_requests is None:
            return set()
        counts = self._requests(
            BUILTIN_METRICS["http_requests"],
            rule.group_by,
            rule.window,
            now,
            rule.require_full_window,
        )
        values = self.values(rule, now) or {}
        return {group for group in values if (counts or {}).get(group, 0.0) < rule.min_requests}

    def _compute(self, rule: Rule, now: datetime) -> GroupValues | None:
        if rule.sql is not None:
            return self._sql(rule.sql, rule.window, now)
        assert rule.metric is not None
        spec = BUILTIN_METRICS[rule.metric]
        if spec.source is Source.REQUEST_MINUTES:
            return self._requests(spec, rule.group_by, rule.window, now, rule.require_full_window)
        if spec.source is Source.JOB_HOURS:
            return self._jobs(spec, rule.group_by, rule.window, now)
        if spec.source is Source.API_USAGE_MONTH:
            month = now.astimezone(UTC).date().replace(day=1)
            return self._grouped(spec, self._query(spec.sql[rule.group_by], {"month": month}))
        if spec.source in (
            Source.POLICY_HEALTH,
            Source.POLICY_FAILURES,
            Source.POLICY_UNRECOVERED_FAILURES,
        ):
            return self._housekeeping(spec, rule.window, now)
        if spec.source is Source.APP_DATABASE:
            if self.database_probe is None:
                return None
            if self._probe_result is None:
                self._probe_result = bool(self.database_probe())
            return {"": 1.0 if self._probe_result else 0.0}
        if spec.source is Source.PUBLISHED_WINDOW:
            start, end = window_bounds(now, rule.window)
            sql = spec.sql[rule.group_by]
            rows = self._query(sql, _bound(sql, {"start": start, "end": end}))
            return self._grouped(spec, rows, rule.group_by)
        return self._rollup_lag(spec, now)

    def check_sql(self, rule: Rule, now: datetime) -> GroupValues | None:
        """Run a SQL rule as its evaluation does (same binding, same sandbox), for ``hk rules
        check``: also a name the published catalog lacks (which an evaluation takes for a dataset
        not published yet) raises QueryError. Raises what the evaluation raises otherwise."""
        assert rule.sql is not None
        return self._sql(rule.sql, rule.window, now, strict=True)

    def _sql(
        self, sql: str, window: timedelta, now: datetime, strict: bool = False
    ) -> GroupValues | None:
        """A SQL rule's ``(group, value)`` rows (or one ``value`` column) as values per group.

        Binds the ``$window_start``/``$window_end`` the query names (the window's whole minutes,
        naive UTC). A NULL or NaN value (DuckDB's 0/0) is no value for its group; a one-column
        query without a value is None (no data at all, as ``no_data: alert`` needs). Raises
        QueryError when the result has another number of columns, a value column that is not a
        number, or a group in several rows (``hk rules check`` runs this very method).
        """
        start, end = window_bounds(now, window)
        connection = self._duck()
        if connection is None:
            return None
        try:
            cursor = run_reading(connection, sql, {"window_start": start, "window_end": end})
        except duckdb.CatalogException as exc:
            if strict:
                raise QueryError(first_line(exc)) from None
            return None  # the dataset is not published yet
        description = cursor.description or []
        if len(description) not in (1, 2):
            raise QueryError(
                f"returns {len(description)} columns: give (group, value) or one value column"
            )
        name, kind = description[-1][0], str(description[-1][1])
        if kind.split("(")[0] not in _NUMERIC_TYPES:
            raise QueryError(f"value column {name!r} is {kind}, not a number")
        result: GroupValues = {}
        seen: Counter[str] = Counter()
        for row in cursor.fetchall():
            group, value = ("", row[0]) if len(row) == 1 else (row[0], row[1])
            name = "" if group is None else str(group)
            seen[name] += 1
            # NULL and NaN (DuckDB's 0/0) are no value: no data for the group, never a recovery
            if value is not None and not math.isnan(float(value)):
                result[name] = float(value)
        twice = [(name, count) for name, count in seen.items() if count > 1]
        if twice:
            name, count = twice[0]
            raise QueryError(f"returns group {name!r} in {count} rows: give one row per group")
        if not result and len(description) == 1:
            return None  # one value column, no value (sum() of no rows): no data at all
        return result

    def _grouped(
        self, spec: MetricSpec, rows: list[tuple[Any, ...]] | None, group_by: GroupBy | None = None
    ) -> GroupValues | None:
        """``(group, value)`` rows as values per group (rows without a value are left out)."""
        if rows is None:
            return None
        result = {str(group): float(value) for group, value in rows if value is not None}
        if not result and group_by is GroupBy.NONE and spec.zero_when_empty:
            result[""] = 0.0  # published, but nothing at all in the window
        return result

    def first_request_minute(self) -> datetime | None:
        """The first published request minute (naive UTC), read once per MetricSource: where
        the rollups' coverage starts. None when no request minute is published."""
        if self._first_minute is False:
            self._first_minute = self._read_first_minute()
        return self._first_minute  # type: ignore[return-value]

    def _read_first_minute(self) -> datetime | None:
        connection = self._duck()
        if connection is None:
            return None
        if self.rollup_root is not None:
            # The oldest hour's file answers; the view would scan every published hour.
            store = RollupStore(self.rollup_root, Path(self.views_database or ""))
            keys = store.partition_keys(REQUESTS_MINUTE.name)
            oldest = store.existing_partition(REQUESTS_MINUTE.name, min(keys)) if keys else None
            if oldest is None:
                return None
            rows = connection.execute(
                "SELECT min(minute) FROM read_parquet($file)", {"file": str(oldest)}
            ).fetchall()
            if rows[0][0] is None:
                # An empty hour: rolled up, nothing logged. Covered from its start.
                return datetime.strptime(min(keys), HOUR_FILE_FORMAT)
            return rows[0][0]
        rows = self._query("SELECT min(minute) FROM requests_minute", {})
        return rows[0][0] if rows else None

    def published_request_hours(self) -> set[str] | None:
        """The hour keys of the published request partitions, read once (None: not known, every
        hour counts as covered)."""
        if self._hours is False:
            self._hours = None
            if self.rollup_root is not None and self.views_database is not None:
                store = RollupStore(self.rollup_root, Path(self.views_database))
                self._hours = set(store.partition_keys(REQUESTS_MINUTE.name))
        return self._hours  # type: ignore[return-value]

    def rollups_connection(self) -> duckdb.DuckDBPyConnection | None:
        """The sandboxed connection to the published rollups (None: no views file yet)."""
        return self._duck()

    def step_key(self, rule: Rule, now: datetime) -> tuple[Any, ...] | None:
        """For a replay: a key equal at two moments where ``values`` and ``low_volume`` of
        ``rule`` are equal too, so the backtest computes them once per key; None when every
        moment may differ (request metrics, SQL rules naming a window bound, the rollup lag).

        Job metrics read whole hours (the key is the window's first and last hour), the API
        budget the month, the housekeeping metrics the runs finished by ``now`` (and, for the
        failure counts, those finished by the window's start)."""
        if rule.sql is not None:
            return None if _PARAMETER.search(rule.sql) else ("constant",)
        assert rule.metric is not None
        spec = BUILTIN_METRICS[rule.metric]
        if spec.source is Source.JOB_HOURS:
            return self._job_hours(rule.window, now)
        if spec.source is Source.API_USAGE_MONTH:
            return (now.astimezone(UTC).date().replace(day=1),)
        if spec.source is Source.APP_DATABASE:
            return ("no probe",) if self.database_probe is None else None
        if spec.source in (
            Source.POLICY_HEALTH,
            Source.POLICY_FAILURES,
            Source.POLICY_UNRECOVERED_FAILURES,
        ):
            if self.history is None:
                return ("no history",)
            if self._finished is None:
                self._finished = {
                    policy: sorted(run.finished_at for run in self.history.recent(policy, 500))
                    for policy in self.history.policies()
                }
            since = now - rule.window
            return tuple(
                (policy, bisect_right(times, now), bisect_right(times, since))
                for policy, times in self._finished.items()
            )
        return None

    def _covered_seconds(self, start: datetime, end: datetime) -> float:
        """Seconds of ``[start, end)`` (naive UTC) in hours whose request partition is published.

        The rollup job writes every hour it processes, an empty one too: an hour without a
        partition was never rolled up (the pipeline was off), which is not the same as an hour
        without traffic."""
        hours = self.published_request_hours()
        if hours is None:
            return (end - start).total_seconds()
        seconds = 0.0
        hour = start.replace(minute=0, second=0, microsecond=0)
        while hour < end:
            if hour_key(hour.replace(tzinfo=UTC)) in hours:  # type: ignore[operator]
                seconds += (min(end, hour + timedelta(hours=1)) - max(start, hour)).total_seconds()
            hour += timedelta(hours=1)
        return seconds

    def _requests(
        self,
        spec: MetricSpec,
        group_by: GroupBy,
        window: timedelta,
        now: datetime,
        require_full_window: bool = False,
    ) -> GroupValues | None:
        start, end = window_bounds(now, window)
        first = self.first_request_minute()
        covered = start if first is None else max(start, first)
        seconds = (end - start).total_seconds()
        if first is not None:
            # Nothing published yet (first None): the view answers (no data, or none counted).
            seconds = self._covered_seconds(covered, end) if covered < end else 0.0
            if seconds <= 0 or (require_full_window and seconds < window.total_seconds()):
                return None  # the rollups do not cover (enough of) the window
        sql = spec.sql[group_by]
        parameters = _bound(
            sql, {"start": covered, "end": end, "window_seconds": max(seconds, 60.0)}
        )
        span = self._requests_span
        if self._requests_memory is not None and span and span[0] <= start and end <= span[1]:
            rows = self._requests_memory.execute(sql, parameters).fetchall()
        else:
            rows = self._query(sql, parameters)
        return self._grouped(spec, rows, group_by)

    def _job_hours(self, window: timedelta, now: datetime) -> tuple[datetime, datetime]:
        _, end = window_bounds(now, window)
        # Hourly rollups: the window is the current (partial) hour and the whole hours before it
        # back to ``now - window``, so the value is stable within an hour instead of flapping
        # as a minute-aligned window slides across hour boundaries.
        last_hour = end.replace(minute=0)
        if self.replay:
            last_hour -= timedelta(hours=1)
        first_hour = min((end - window).replace(minute=0), last_hour)
        return first_hour, last_hour

    def _jobs(
        self, spec: MetricSpec, group_by: GroupBy, window: timedelta, now: datetime
    ) -> GroupValues | None:
        first_hour, last_hour = self._job_hours(window, now)
        cache_key = (spec.name, group_by, first_hour, last_hour)
        if cache_key in self._hour_cache:
            return self._hour_cache[cache_key]
        sql = spec.sql[group_by]
        rows = self._query(sql, _bound(sql, {"first": first_hour, "last": last_hour}))
        result = self._grouped(spec, rows, group_by)
        if result is None:
            return None
        # Within one evaluation (or a replay over published files) an hour's rows do not change.
        self._hour_cache[cache_key] = result
        return result

    def _housekeeping(
        self, spec: MetricSpec, window: timedelta, now: datetime
    ) -> GroupValues | None:
        if self.history is None:
            return None
        result: GroupValues = {}
        for policy in self.history.policies():
            runs = [run for run in self.history.recent(policy, limit=500) if run.finished_at <= now]
            if not runs:
                continue
            if spec.source is Source.POLICY_UNRECOVERED_FAILURES and (
                runs[0].status is not RunStatus.FAILED
            ):
                result[policy] = 0.0  # healthy again: the newest run did not fail
                continue
            if spec.source in (Source.POLICY_FAILURES, Source.POLICY_UNRECOVERED_FAILURES):
                since = now - window
                result[policy] = float(
                    sum(
                        1
                        for run in runs
                        if run.status is RunStatus.FAILED and run.finished_at > since
                    )
                )
                continue
            assert spec.health_value is not None
            value = spec.health_value(self.history.health(policy, runs))
            if value is not None:
                result[policy] = value
        return result

    def _rollup_lag(self, spec: MetricSpec, now: datetime) -> GroupValues | None:
        _, end = window_bounds(now, timedelta(0))
        # Minutes before ``end`` only: a replay must not see minutes published after ``now``.
        span = self._requests_span
        if self._requests_memory is not None and span and span[0] < end <= span[1]:
            rows = self._requests_memory.execute(spec.sql[GroupBy.NONE], {"end": end}).fetchall()
            if rows[0][0] is None:
                rows = self._query(spec.sql[GroupBy.NONE], {"end": end})
        else:
            rows = self._query(spec.sql[GroupBy.NONE], {"end": end})
        if rows is None or rows[0][0] is None:
            return None
        newest: datetime = rows[0][0]
        # The newest minute ends one minute after its start.
        lag = (end - (newest + timedelta(minutes=1))).total_seconds() / 60
        return {"": max(0.0, lag)}
