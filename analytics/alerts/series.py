"""Rule values for every step of a replay at once: the backtest's fast path (backtest.py).

A replay asks each rule for its values at every step (43,200 steps for 30 days at 1 minute).
Asking ``MetricSource.values`` each time runs one query per rule and step. Here the published
request minutes of the whole replay are read once into dense per-minute arrays (one row per
route, one column per minute), their prefix sums taken, and every request metric of every step
is a difference of two prefix sums: the sums, counts and ratios the catalog's SQL computes, with
the same operands, so the same float64 numbers. The p95 latency merges the minute sketches
through prefix sums of cumulative bucket counts and interpolates as the views' macro does
(analytics/views.py: ``percentile_cont`` ranks, DECIMAL rank positions, the bucket values
computed by DuckDB's own expression, the clamp to the window's min and max).

The window of each step is the one ``MetricSource._requests`` reads: the whole minutes before the
step, from the first published request minute on, over the covered seconds of published hours;
``require_full_window`` and ``min_requests`` as there. tests/alerts/test_alert_backtest.py
compares every notification with the minute-by-minute replay.

``SqlBatch`` runs a SQL rule for many steps in one query (a LATERAL join over the steps' window
bounds) where the rule is one SELECT: the same SQL, the same rows per step.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from analytics.alerts.catalog import BUILTIN_METRICS, GroupBy, Source
from analytics.alerts.metrics import NUMERIC_TYPES, MetricSource, window_bounds
from analytics.alerts.rules import Rule
from analytics.datasets import REQUESTS_MINUTE
from analytics.publish import RollupStore, existing_partition_files, hour_key
from analytics.sandbox import reading_statements, run_reading
from analytics.sketch import bucket_value_sql

_EPOCH = datetime(1970, 1, 1)
# The metrics computed here, by name: the value of a window from its sums.
_SUMMED = {
    "http_requests",
    "http_request_rate",
    "http_error_rate",
    "http_rate_limited_rate",
    "http_latency_p95_ms",
}
_P95 = 0.95


def _minute(moment: datetime) -> int:
    """Minutes since the epoch of a naive UTC minute."""
    return int((moment - _EPOCH).total_seconds()) // 60


@dataclass
class RuleSeries:
    """One rule's values at every step: ``groups`` (sorted; ``""`` ungrouped) by column.

    ``values[s, g]`` is the value of group ``g`` at step ``s`` where ``present[s, g]`` (the
    group is in ``MetricSource.values``'s dict); ``no_data[s]``: the metric has no data at all
    at step ``s`` (``values`` returns None); ``low_volume[s, g]``: the group is in
    ``MetricSource.low_volume``.
    """

    groups: list[str]
    values: np.ndarray  # float64 [steps, groups]
    present: np.ndarray  # bool [steps, groups]
    low_volume: np.ndarray  # bool [steps, groups]
    no_data: np.ndarray  # bool [steps]

    def at(self, step: int) -> tuple[dict[str, float] | None, set[str]]:
        """``(values, low_volume)`` as MetricSource answers them at step ``step``."""
        if self.no_data[step]:
            return None, set()
        columns = np.flatnonzero(self.present[step])
        row = self.values[step]
        values = {self.groups[g]: float(row[g]) for g in columns}
        quiet = {self.groups[g] for g in columns if self.low_volume[step, g]}
        return values, quiet


class _Prefix:
    """Prefix sums over the minute grid: ``window(lo, hi)`` is the sum of columns lo..hi-1."""

    def __init__(self, dense: np.ndarray) -> None:
        shape = (*dense.shape[:-1], dense.shape[-1] + 1)
        self.sums = np.zeros(shape, dtype=dense.dtype)
        np.cumsum(dense, axis=-1, out=self.sums[..., 1:])

    def window(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        return self.sums[..., hi] - self.sums[..., lo]


class _RangeExtreme:
    """Min (or max) over any column range of a grid row, NaN (no value) skipped: a sparse table
    (log2 levels), so each query is two lookups however long the window."""

    def __init__(self, dense: np.ndarray, pick: Any) -> None:
        self.pick = pick
        self.levels = [dense]
        width = 1
        while width * 2 <= dense.shape[-1]:
            last = self.levels[-1]
            self.levels.append(pick(last[..., : last.shape[-1] - width], last[..., width:]))
            width *= 2

    def window(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        length = np.maximum(hi - lo, 1)
        level = np.floor(np.log2(length)).astype(np.int64)
        result = np.full((*self.levels[0].shape[:-1], len(lo)), np.nan)
        for k in np.unique(level):
            rows = np.flatnonzero(level == k)
            table = self.levels[k]
            a = table[..., lo[rows]]
            b = table[..., np.maximum(hi[rows] - (1 << k), lo[rows])]
            result[..., rows] = self.pick(a, b)
        empty = hi <= lo
        result[..., empty] = np.nan
        return result


class RequestSeries:
    """The request minutes of a replay as per-route minute arrays; ``for_rule`` gives a request
    rule's ``RuleSeries``. Built by ``load`` (None: nothing published to read this way)."""

    def __init__(
        self,
        steps: Sequence[datetime],
        base: int,
        routes: list[str],
        columns: dict[str, np.ndarray],
        first_second: int,
        hour_seconds: tuple[int, np.ndarray] | None,
        sketch: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None,
        bucket_values: dict[int, float],
        before: int | None = None,
    ) -> None:
        self.steps = steps
        ends = [window_bounds(now, timedelta(0))[1] for now in steps]
        self.end_seconds = np.array([_minute(end) * 60 for end in ends], dtype=np.int64)
        self.base = base
        self.routes = routes
        self.columns = columns
        self.first_second = first_second
        self.hour_seconds = hour_seconds
        self.sketch = sketch
        self.bucket_values = bucket_values
        if sketch is not None:
            # Every bucket of the sketches, and each entry's place among them (buckets are
            # SMALLINT: a lookup table instead of a sort).
            offset = int(sketch[2].min()) if len(sketch[2]) else 0
            used = np.bincount(sketch[2] - offset) > 0
            lookup = np.cumsum(used) - 1
            everything = np.flatnonzero(used) + offset
            self.places = (everything, lookup[sketch[2] - offset])
        self.before = before
        self._prefix: dict[tuple[str, bool], _Prefix] = {}
        self._extremes: dict[tuple[str, bool], _RangeExtreme] = {}

    @classmethod
    def load(
        cls, metrics: MetricSource, rules: Sequence[Rule], steps: Sequence[datetime]
    ) -> RequestSeries | None:
        """Read the request minutes every step of ``rules`` needs, once.

        None when there is nothing to read this way (no request rule, no rollup root, nothing
        published yet): the replay then asks MetricSource step by step, as the sensor does.
        Raises what reading the published files raises (METRIC_ERRORS in evaluate.py).
        """
        request_rules = [rule for rule in rules if _vectorized(rule)]
        if not request_rules or not steps or metrics.rollup_root is None:
            return None
        if metrics.views_database is None or not Path(metrics.views_database).exists():
            return None
        first = metrics.first_request_minute()
        if first is None:
            return None
        widest = max(rule.window for rule in request_rules)
        low, _ = window_bounds(steps[0], widest)
        _, high = window_bounds(steps[-1], timedelta(0))
        low = max(low.replace(second=0, microsecond=0), first)
        if high <= low:
            return None
        store = RollupStore(metrics.rollup_root, Path(metrics.views_database))
        hours = []
        hour = low.replace(minute=0, tzinfo=UTC)
        while hour < high.replace(tzinfo=UTC):
            hours.append(hour_key(hour))
            hour += timedelta(hours=1)
        files = existing_partition_files(store, REQUESTS_MINUTE.name, hours)
        if files is None:
            return None
        base = _minute(low)
        width = _minute(high) - base + 1
        latency = any(rule.metric == "http_latency_p95_ms" for rule in request_rules)
        definition = ", ".join(f"{name} {kind}" for name, kind in REQUESTS_MINUTE.typed_columns)
        with duckdb.connect() as connection:
            connection.execute("SET TimeZone = 'UTC'")
            connection.execute(f"CREATE TABLE published ({definition})")
            source = "published"
            parameters: dict[str, Any] = {"low": low, "high": high, "base": base}
            if files:
                source = "read_parquet($files)"
                parameters["files"] = [str(path) for path in files]
            window = "WHERE minute >= $low AND minute < $high"
            routes = [
                str(row[0])
                for row in connection.execute(
                    f"SELECT DISTINCT route FROM {source} {window} ORDER BY 1",
                    {key: parameters[key] for key in parameters if key != "base"},
                ).fetchall()
            ]
            connection.execute(
                "CREATE TABLE routes AS SELECT unnest($routes) AS route, "
                "CAST(generate_subscripts($routes, 1) - 1 AS BIGINT) AS id",
                {"routes": routes},
            )
            rows = f"FROM {source} x JOIN routes r ON r.route IS NOT DISTINCT FROM x.route {window}"
            minute = "CAST(epoch(x.minute) // 60 AS BIGINT) - $base"
            raw = connection.execute(
                f"SELECT r.id, {minute}, CAST(requests AS BIGINT), CAST(status_5xx AS BIGINT), "
                "CAST(status_429 AS BIGINT), coalesce(latency_min_ms, 'NaN'::DOUBLE), "
                f"coalesce(latency_max_ms, 'NaN'::DOUBLE) {rows}",
                parameters,
            ).fetchnumpy()
            arrays = [np.asarray(column) for column in raw.values()]
            cell = arrays[0].astype(np.int64) * width + arrays[1].astype(np.int64)
            size = len(routes) * width
            columns: dict[str, np.ndarray] = {}
            for name, position in (("requests", 2), ("status_5xx", 3), ("status_429", 4)):
                # Exact: float64 holds every integer sum below 2**53.
                summed = np.bincount(cell, weights=arrays[position], minlength=size)
                columns[name] = summed.astype(np.int64).reshape(len(routes), width)
            columns["rows"] = np.bincount(cell, minlength=size).reshape(len(routes), width)
            for name, position, pick in (("latency_min", 5, np.fmin), ("latency_max", 6, np.fmax)):
                dense = np.full(size, np.nan)
                pick.at(dense, cell, arrays[position].astype(np.float64))
                columns[name] = dense.reshape(len(routes), width)
            sketch = None
            bucket_values: dict[int, float] = {}
            if latency:
                entries = connection.execute(
                    f"SELECT id, m, CAST(entry.bucket AS BIGINT), CAST(entry.count AS BIGINT) "
                    f"FROM (SELECT r.id, {minute} AS m, unnest(x.latency_sketch) AS entry {rows}) "
                    "ORDER BY id, m",  # by route, then minute
                    parameters,
                ).fetchnumpy()
                parts = [np.asarray(column).astype(np.int64) for column in entries.values()]
                sketch = (parts[0], parts[1], parts[2], parts[3])
                lowest = int(sketch[2].min()) if len(sketch[2]) else 0
                present = np.flatnonzero(np.bincount(sketch[2] - lowest)) + lowest
                distinct = [int(bucket) for bucket in present]
                if distinct:
                    # DuckDB's own expression, so the bucket values are the views' numbers.
                    pairs = connection.execute(
                        f"SELECT b, {bucket_value_sql('CAST(b AS SMALLINT)')} "
                        "FROM unnest($buckets) t(b)",
                        {"buckets": distinct},
                    ).fetchall()
                    bucket_values = {int(b): float(value) for b, value in pairs}
            # The newest minute before the grid, for rollup_lag_minutes (None: none).
            before = None
            published_views = metrics.rollups_connection()
            if published_views is not None:
                query = "SELECT max(minute) FROM requests_minute WHERE minute < $low"
                rows = published_views.execute(query, {"low": low}).fetchall()
                before = _minute(rows[0][0]) if rows and rows[0][0] is not None else None
        published = metrics.published_request_hours()
        hour_seconds = None
        if published is not None:
            first_hour = _minute(min(low, first).replace(minute=0)) // 60
            last_hour = _minute(high) // 60 + 1
            flags = np.array(
                [
                    hour_key(datetime.fromtimestamp(hour * 3600, UTC)) in published
                    for hour in range(first_hour, last_hour + 1)
                ],
                dtype=np.int64,
            )
            hour_seconds = (first_hour, flags)
        return cls(
            steps,
            base,
            routes,
            columns,
            _minute(first) * 60,
            hour_seconds,
            sketch,
            bucket_values,
            before,
        )

    def _covered(self, start: np.ndarray, end: np.ndarray) -> np.ndarray:
        """Seconds of [start, end) in published hours (MetricSource._covered_seconds)."""
        if self.hour_seconds is None:
            return np.maximum(end - start, 0)
        first_hour, flags = self.hour_seconds
        cumulative = np.concatenate([[0], np.cumsum(flags * 3600)])

        def upto(moment: np.ndarray) -> np.ndarray:
            hour = moment // 3600 - first_hour
            return cumulative[hour] + flags[hour] * (moment % 3600)

        return np.where(start < end, upto(end) - upto(np.minimum(start, end)), 0)

    def _grouped(self, name: str, overall: bool) -> np.ndarray:
        dense = self.columns[name]
        return dense.sum(axis=0, keepdims=True) if overall else dense

    def _sums(self, name: str, overall: bool, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        key = (name, overall)
        if key not in self._prefix:
            self._prefix[key] = _Prefix(self._grouped(name, overall))
        return self._prefix[key].window(lo, hi).T  # [steps, groups]

    def _extreme(self, name: str, overall: bool, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        key = (name, overall)
        if key not in self._extremes:
            pick = np.fmin if name == "latency_min" else np.fmax
            dense = self.columns[name]
            if overall:
                with np.errstate(all="ignore"):
                    dense = (np.fmin if name == "latency_min" else np.fmax).reduce(
                        dense, axis=0, keepdims=True
                    )
            self._extremes[key] = _RangeExtreme(dense, pick)
        return self._extremes[key].window(lo, hi).T

    def for_rule(self, rule: Rule) -> RuleSeries | None:
        """The rule's values at every step; None for a rule computed otherwise."""
        if rule.metric == "rollup_lag_minutes":
            return self._lag()
        if not _vectorized(rule):
            return None
        assert rule.metric is not None
        overall = rule.group_by is GroupBy.NONE
        window = int(rule.window.total_seconds())
        end = self.end_seconds
        start = end - window
        covered = np.maximum(start, self.first_second)
        seconds = self._covered(covered, end)
        no_data = (seconds <= 0) | (rule.require_full_window & (seconds < window))
        # Whole minutes m with covered <= m * 60 < end, as grid columns.
        lo = np.clip(-((-covered) // 60) - self.base, 0, None)
        hi = np.clip(end // 60 - self.base, 0, None)
        hi = np.maximum(hi, lo)
        rows = self._sums("rows", overall, lo, hi)
        requests = self._sums("requests", overall, lo, hi)
        present = rows > 0
        metric = rule.metric
        with np.errstate(all="ignore"):
            if metric == "http_requests":
                values = requests.astype(np.float64)
                if overall:
                    present = np.ones_like(present)  # published, nothing counted: 0
            elif metric == "http_request_rate":
                values = requests / np.maximum(seconds.astype(np.float64), 60.0)[:, None]
            elif metric in ("http_error_rate", "http_rate_limited_rate"):
                column = "status_5xx" if metric == "http_error_rate" else "status_429"
                values = self._sums(column, overall, lo, hi) / requests
                present &= requests != 0
            else:
                values = self._p95(overall, lo, hi, present)
                present &= ~np.isnan(values)
        present &= ~no_data[:, None]
        low_volume = np.zeros_like(present)
        if rule.min_requests is not None:
            low_volume = present & (requests < rule.min_requests)
        groups = [""] if overall else list(self.routes)
        return RuleSeries(groups, values, present, low_volume, no_data)

    def _lag(self) -> RuleSeries:
        """rollup_lag_minutes at every step: minutes from the end of the newest published
        minute before the step's minute to it (MetricSource._rollup_lag)."""
        minutes = np.flatnonzero(self.columns["rows"].sum(axis=0) > 0) + self.base
        ends = self.end_seconds // 60
        newest = np.full(len(ends), -1, dtype=np.int64)
        position = np.searchsorted(minutes, ends)  # minutes before each end
        found = position > 0
        newest[found] = minutes[position[found] - 1]
        if not found.all() and self.before is not None:
            newest[~found] = self.before
        no_data = newest < 0
        with np.errstate(invalid="ignore"):
            lag = np.maximum(((ends - newest - 1) * 60).astype(np.float64) / 60, 0.0)
        present = ~no_data[:, None]
        values = lag[:, None]
        return RuleSeries([""], values, present, np.zeros_like(present), no_data)

    def _p95(self, overall: bool, lo: np.ndarray, hi: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The views' latency_p95_ms per step and group (NaN: NULL)."""
        steps, groups = rows.shape
        result = np.full((steps, groups), np.nan)
        low_extreme = self._extreme("latency_min", overall, lo, hi)
        high_extreme = self._extreme("latency_max", overall, lo, hi)
        if self.sketch is not None and len(self.sketch[0]):
            route_ids, minute_ids, buckets, counts = self.sketch
            width = self.columns["rows"].shape[1]
            bounds = np.searchsorted(route_ids, np.arange(len(self.routes) + 1))
            everything, place = self.places
            remap = np.zeros(len(everything), dtype=np.int64)
            for group in range(groups):
                chosen = slice(None) if overall else slice(bounds[group], bounds[group + 1])
                wanted = np.flatnonzero(rows[:, group])
                if not len(buckets[chosen]) or not len(wanted):
                    continue
                used = np.flatnonzero(np.bincount(place[chosen], minlength=len(everything)))
                distinct = everything[used]
                remap[used] = np.arange(len(used))
                position = remap[place[chosen]]
                value_of = np.array([self.bucket_values[int(b)] for b in distinct])
                minutes = minute_ids[chosen]  # in order within a route
                if not overall:
                    first = np.searchsorted(minutes, lo[wanted])
                    entries = np.searchsorted(minutes, hi[wanted]) - first
                if not overall and entries.max() <= len(distinct):
                    # Few sketch entries per window: sort each window's entries by bucket.
                    total, low_place, high_place = _ranked_entries(
                        first, entries, position, counts[chosen], len(distinct)
                    )
                else:
                    total, low_place, high_place = _ranked_grid(
                        minutes, position, counts[chosen], width, len(distinct), lo, hi, wanted
                    )
                timed = total > 0
                fraction = ((95 * (total - 1)) % 100) / 100  # DECIMAL 0.95 (n - 1), its part
                low_value, high_value = value_of[low_place], value_of[high_place]
                interpolated = low_value + fraction * (high_value - low_value)
                result[wanted[timed], group] = interpolated[timed]
        # least(greatest(p95, min), max), NULLs skipped as DuckDB's greatest and least do
        clamped = np.fmax(result, low_extreme)
        clamped = np.fmin(clamped, high_extreme)
        clamped[~rows] = np.nan
        return clamped


def _ranks(total: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 0-based ranks percentile_cont reads for p95 of ``total`` values: ``floor(h)`` and the
    next (at most the last), with ``h = 0.95 (n - 1)`` exact as the views' DECIMAL."""
    rank = (95 * (total - 1)) // 100
    return rank, np.minimum(rank + 1, total - 1)


def _ranked_grid(
    minutes: np.ndarray,
    position: np.ndarray,
    counts: np.ndarray,
    width: int,
    buckets: int,
    lo: np.ndarray,
    hi: np.ndarray,
    wanted: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(n, bucket of rank floor(h), bucket of the next rank)`` per wanted step, from counts up
    to each minute and bucket (exact in float64 below 2**53); buckets as places 0..buckets-1."""
    cumulative = np.zeros((width + 1) * buckets, dtype=np.float64)
    cumulative[buckets:] = np.bincount(
        minutes * buckets + position, weights=counts, minlength=width * buckets
    )
    grid = cumulative.reshape(width + 1, buckets)
    np.cumsum(grid, axis=1, out=grid)
    np.cumsum(grid, axis=0, out=grid)
    window = grid[hi[wanted]] - grid[lo[wanted]]
    total = window[:, -1].astype(np.int64)
    rank, following = _ranks(total)
    return total, (window > rank[:, None]).argmax(axis=1), (window > following[:, None]).argmax(1)


def _ranked_entries(
    first: np.ndarray, entries: np.ndarray, position: np.ndarray, counts: np.ndarray, pad: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """As ``_ranked_grid``, from each window's own sketch entries (``entries`` of them from
    ``first``, in minute order) sorted by bucket: cheaper when windows hold few entries."""
    width = int(entries.max()) if len(entries) else 0
    offsets = np.arange(max(width, 1))
    valid = offsets[None, :] < entries[:, None]
    index = np.where(valid, first[:, None] + offsets[None, :], 0)
    places = np.where(valid, position[index], pad)
    weights = np.where(valid, counts[index], 0)
    order = np.argsort(places, axis=1, kind="stable")
    places = np.take_along_axis(places, order, axis=1)
    running = np.cumsum(np.take_along_axis(weights, order, axis=1), axis=1)
    total = running[:, -1]
    rank, following = _ranks(total)
    rows = np.arange(len(total))
    low = places[rows, (running > rank[:, None]).argmax(axis=1)]
    high = places[rows, (running > following[:, None]).argmax(axis=1)]
    # a window without entries reads place 0 (pad would be out of range); n = 0 drops it
    return total, np.where(total > 0, low, 0), np.where(total > 0, high, 0)


def _vectorized(rule: Rule) -> bool:
    return (
        rule.metric in _SUMMED
        and BUILTIN_METRICS[rule.metric].source is Source.REQUEST_MINUTES
        and rule.group_by in (GroupBy.NONE, GroupBy.ROUTE)
    )


_WINDOW_PARAMETER = re.compile(r"\$(window_start|window_end)\b")
_PARAMETER = re.compile(r"\$([a-z_]+)\b")


def _lateral(
    connection: duckdb.DuckDBPyConnection,
    sql: str,
    bindings: Sequence[dict[str, Any]],
    sandboxed: bool,
    chunk: int = 2000,
) -> list[list[tuple[Any, ...]]] | None:
    """The rows ``sql`` returns under each of ``bindings`` (its ``$name`` parameters), in one
    query per ``chunk`` bindings: ``sql`` in a LATERAL join over a table of the bindings.

    None when that cannot stand for one query per binding: ``sql`` is not one SELECT, its
    result has not two columns (or one), or DuckDB raises (the caller then runs the queries one
    by one, and reports what they raise as the sensor would)."""
    try:
        statements = reading_statements(sql)
    except Exception:  # noqa: BLE001 - the one-by-one path reports it as the sensor does
        return None
    if len(statements) != 1 or statements[0].type is not duckdb.StatementType.SELECT:
        return None
    names = sorted(set(_PARAMETER.findall(sql)))
    if not names or any(name not in bindings[0] for name in names):
        return None
    body = _PARAMETER.sub(lambda match: f"__binding.{match[1]}", sql.strip().rstrip(";"))
    columns = ", ".join(f"unnest(${name}) AS {name}" for name in names)
    query = (
        f"SELECT __binding.__number, __result.* FROM (SELECT unnest($__numbers) AS __number, "
        f"{columns}) __binding, LATERAL ({body}) __result"
    )
    result: list[list[tuple[Any, ...]]] = [[] for _ in bindings]
    for first in range(0, len(bindings), chunk):
        numbers = list(range(first, min(first + chunk, len(bindings))))
        parameters: dict[str, Any] = {"__numbers": numbers}
        for name in names:
            parameters[name] = [bindings[number][name] for number in numbers]
        try:
            if sandboxed:
                cursor = run_reading(connection, query, parameters)
            else:
                cursor = connection.execute(query, parameters)
            description = cursor.description or []
            if len(description) not in (2, 3):
                return None
            if str(description[-1][1]).split("(")[0] not in NUMERIC_TYPES:
                return None
            rows = cursor.fetchall()
        except duckdb.Error:
            return None
        for row in rows:
            result[row[0]].append(row[1:])
    return result


def sql_batch(metrics: MetricSource, rule: Rule, steps: Sequence[datetime]) -> list[dict] | None:
    """A SQL rule's values at every step (``MetricSource._sql``'s dicts), its query run for many
    steps at once over the steps' ``$window_start``/``$window_end``; None when the batch cannot
    stand for the step-by-step queries (see ``_lateral``; also a rule that names no window
    bound, and a group returned twice in a step, whose value would depend on row order)."""
    assert rule.sql is not None
    connection = metrics.rollups_connection()
    if connection is None or not _WINDOW_PARAMETER.search(rule.sql):
        return None
    bindings = []
    for now in steps:
        start, end = window_bounds(now, rule.window)
        bindings.append({"window_start": start, "window_end": end})
    batches = _lateral(connection, rule.sql, bindings, sandboxed=True)
    if batches is None:
        return None
    result: list[dict] = []
    for rows in batches:
        values: dict[str, float] = {}
        for row in rows:
            group, value = ("", row[0]) if len(row) == 1 else row
            if value is None:
                continue  # a NULL value is no value, whatever the order of the rows
            key = "" if group is None else str(group)
            if key in values:
                return None
            values[key] = float(value)
        result.append(values)
    return result


def step_keys(metrics: MetricSource, rule: Rule, steps: Sequence[datetime]) -> list[Any]:
    """``metrics.step_key`` at every step, asked again only where it can change: a job metric's
    key moves with the hour of the window's end and of its start, the API budget's with the
    day; the others are asked at every step."""
    source = BUILTIN_METRICS[rule.metric].source if rule.metric is not None else None
    window = int(rule.window.total_seconds())
    keys: list[Any] = []
    last_hint: Any = None
    key: Any = None
    for now in steps:
        end = int(now.timestamp()) // 60 * 60
        hint: Any = None
        if source is Source.JOB_HOURS:
            hint = (end // 3600, (end - window) // 3600)
        elif source is Source.API_USAGE_MONTH:
            hint = end // 86400
        if hint is None or hint != last_hint:
            key = metrics.step_key(rule, now)
        last_hint = hint
        keys.append(key)
    return keys


def job_batch(metrics: MetricSource, rule: Rule, steps: Sequence[datetime]) -> list[dict] | None:
    """A job metric's values at every step (``MetricSource._jobs``'s dicts), one query per
    distinct window of hours (``step_key``) for all of them; None as for ``sql_batch``."""
    assert rule.metric is not None
    spec = BUILTIN_METRICS[rule.metric]
    connection = metrics.rollups_connection()
    if spec.source is not Source.JOB_HOURS or connection is None:
        return None
    keys = step_keys(metrics, rule, steps)
    distinct = sorted(set(keys))  # type: ignore[type-var]
    bindings = [{"first": first, "last": last} for first, last in distinct]  # type: ignore[misc]
    batches = _lateral(connection, spec.sql[rule.group_by], bindings, sandboxed=False)
    if batches is None:
        return None
    by_key: dict[Any, dict[str, float]] = {}
    for key, rows in zip(distinct, batches, strict=True):
        values = {str(group): float(value) for group, value in rows if value is not None}
        if not values and rule.group_by is GroupBy.NONE and spec.zero_when_empty:
            values[""] = 0.0  # published, but nothing at all in the window
        by_key[key] = values
    return [by_key[key] for key in keys]
