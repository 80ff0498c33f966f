"""Replaying rules over the rollup history: which notifications they would have sent, and when.

The reference replay (``exact=True``) runs the very code the sensor runs (``MetricSource.values``
and ``advance_rule``) at each step from ``since`` to ``until``, with the states kept in memory
instead of the alert store: nothing is stored or sent. Silences are ignored (a backtest asks what
the rules say).

The default replay gives the same notifications in seconds (issue 13): the request metrics of
every step come from one read of the minutes (series.py), and the state machine (state.py, pure)
runs for one (rule, group) only from a step where it breaches until it is OK again: an OK alert
that does not breach stays OK and sends nothing, whatever the time. Each (rule, group) advances
independently of the others, so the steps in between are skipped. SQL rules are run for many
steps per query (``series.sql_batch``); the other metrics are computed once per ``step_key``
(an hour of job rollups, a month of API usage, a change in the run history) and their rules
skipped while that key and their all-OK states stay the same. tests/alerts/test_alert_backtest.py
compares both replays.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from analytics.alerts.catalog import BUILTIN_METRICS, Source
from analytics.alerts.evaluate import METRIC_ERRORS, advance_rule
from analytics.alerts.metrics import MetricSource
from analytics.alerts.model import AlertKey, AlertRecord, AlertState, Notification, Severity
from analytics.alerts.rules import NoData, Rule, RulePack
from analytics.alerts.series import RequestSeries, RuleSeries, job_batch, sql_batch, step_keys
from analytics.alerts.state import advance
from housekeeping.history import PolicyHealth, PolicyRun, RunHistory


class _HistorySnapshot:
    """The run history read once, answering as RunHistory does (the replay asks every step)."""

    def __init__(self, history: RunHistory) -> None:
        self._runs = {policy: history.recent(policy, limit=500) for policy in history.policies()}
        self._history = history

    def policies(self) -> list[str]:
        return sorted(self._runs)

    def recent(self, policy: str, limit: int = 100) -> list[PolicyRun]:
        return self._runs.get(policy, [])[:limit]

    def health(self, policy: str, runs: list[PolicyRun]) -> PolicyHealth:
        return self._history.health(policy, runs)


@dataclass(frozen=True)
class BacktestResult:
    since: datetime
    until: datetime
    step: timedelta
    evaluations: int
    notifications: list[Notification]
    errors: dict[str, str]

    def as_json(self) -> dict:
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "step_seconds": self.step.total_seconds(),
            "evaluations": self.evaluations,
            "errors": self.errors,
            "notifications": [
                {
                    "at": item.evaluated_at.isoformat(),
                    "rule": item.key.rule,
                    "group": item.key.group,
                    "kind": item.kind.value,
                    "severity": item.severity.value if item.severity else None,
                    "value": item.value,
                    "threshold": item.threshold,
                    "text": item.text,
                }
                for item in self.notifications
            ],
        }


def _steps(since: datetime, until: datetime, step: timedelta) -> Iterator[datetime]:
    moment = since
    while moment <= until:
        yield moment
        moment += step


def backtest(
    pack: RulePack,
    views_database: Path,
    history: RunHistory | None,
    since: datetime,
    until: datetime,
    step: timedelta,
    channel_for: dict[Severity, str] | None = None,
    rollup_root: Path | None = None,
    exact: bool = False,
) -> BacktestResult:
    """The notifications ``pack`` would have sent evaluated every ``step`` from ``since`` to
    ``until`` (aware datetimes, both included) over the published rollups and the run history.

    ``exact``: the reference replay, every rule at every step (minutes per day replayed at 100
    routes); the default gives the same notifications, in the same order, in seconds. A rule
    whose metric fails is reported in ``errors`` (its name: what failed) from the step it failed
    at on. Raises ValueError for a step that is not positive or ``since`` not before ``until``.
    """
    if step <= timedelta(0):
        raise ValueError("the step must be positive")
    if since >= until:
        raise ValueError("since must be before until")
    snapshot = _HistorySnapshot(history) if history is not None else None
    steps = list(_steps(since, until, step))
    channels = channel_for or {}
    with MetricSource(
        views_database,
        snapshot,  # type: ignore[arg-type]
        rollup_root=rollup_root,
        replay=True,
    ) as metrics:
        replay = _replay if exact else _fast_replay
        notifications, errors = replay(pack, metrics, steps, channels)
    return BacktestResult(since, until, step, len(steps), notifications, errors)


def _failure(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"


def _replay(
    pack: RulePack, metrics: MetricSource, steps: list[datetime], channels: dict[Severity, str]
) -> tuple[list[Notification], dict[str, str]]:
    """The reference: every rule through MetricSource and advance_rule at every step."""
    states: dict[AlertKey, AlertRecord] = {}
    notifications: list[Notification] = []
    errors: dict[str, str] = {}
    metrics.prepare(pack.rules, steps[0], steps[-1])
    for now in steps:
        for rule in pack.rules:
            if rule.name in errors:
                continue
            try:
                values = metrics.values(rule, now)
                quiet = metrics.low_volume(rule, now)
            except METRIC_ERRORS as exc:
                errors[rule.name] = _failure(exc)
                continue
            records, produced = advance_rule(rule, values, states, now, channels, quiet)
            for key in [key for key in states if key.rule == rule.name]:
                del states[key]
            states.update({record.key: record for record in records})
            notifications.extend(produced)
        metrics.clear_cache()
    return notifications, errors


# A notification of the fast replay, with what orders it as the reference replay does: the
# step, the rule's place in the pack, the group, its place among that alert's notifications.
_Event = tuple[int, int, str, int, Notification]


def _fast_replay(
    pack: RulePack, metrics: MetricSource, steps: list[datetime], channels: dict[Severity, str]
) -> tuple[list[Notification], dict[str, str]]:
    events: list[_Event] = []
    failures: list[tuple[int, int, str, str]] = []
    try:
        series = RequestSeries.load(metrics, pack.rules, steps)
    except METRIC_ERRORS:
        series = None  # the step-by-step path meets (and reports) the same failure
    stepwise: list[tuple[int, Rule, RuleSeries | list[dict[str, float]] | None]] = []
    for index, rule in enumerate(pack.rules):
        found: RuleSeries | list[dict[str, float]] | None = None
        if series is not None:
            found = series.for_rule(rule)
        if isinstance(found, RuleSeries) and rule.no_data is not NoData.ALERT:
            _advance_groups(rule, index, found, steps, channels, events)
            continue
        if found is None and rule.sql is not None:
            found = sql_batch(metrics, rule, steps)
        elif found is None and rule.metric is not None:
            found = job_batch(metrics, rule, steps)
        stepwise.append((index, rule, found))
    unprepared = [
        rule
        for _, rule, found in stepwise
        if found is None
        and rule.metric is not None
        and BUILTIN_METRICS[rule.metric].source is Source.REQUEST_MINUTES
    ]
    if unprepared:
        metrics.prepare(unprepared, steps[0], steps[-1])
    if stepwise:
        _advance_stepwise(stepwise, metrics, steps, channels, events, failures)
    events.sort(key=lambda event: event[:4])
    errors = {name: message for _, _, name, message in sorted(failures)}
    return [event[4] for event in events], errors


def _advance_groups(
    rule: Rule,
    index: int,
    series: RuleSeries,
    steps: list[datetime],
    channels: dict[Severity, str],
    events: list[_Event],
) -> None:
    """One rule's groups through the state machine, at the steps where the outcome can change.

    An alert advances at a step where it breaches from OK; then, until it is OK again, at each
    step whose inputs differ from the step before (which severities breach, a value or none,
    low volume, past the recovery threshold), the step after a RESOLVED, and the steps a timer
    falls on (a severity's ``for`` elapsing, the renotify interval). At any other step
    ``advance`` would return the same state and send nothing (only the record's last value and
    update time move, which no notification of a backtest reads), so it is skipped.

    A group is remembered from the first step it has a value on (as the reference keeps its
    state); a remembered group of a count (``zero_when_empty``) without a row counts 0 while the
    metric answers, as advance_rule has it."""
    count = len(steps)
    present = series.present
    counted = rule.metric is not None and BUILTIN_METRICS[rule.metric].zero_when_empty
    if counted:
        seen = present.any(axis=0)
        first_seen = np.where(seen, present.argmax(axis=0), count)
        remembered = np.arange(count)[:, None] >= first_seen[None, :]
        has_value = remembered & ~series.no_data[:, None]
        values = np.where(present, series.values, 0.0)
    else:
        has_value, values = present, series.values
    signature = has_value.astype(np.int64) | (series.low_volume.astype(np.int64) << 1)
    breaching = np.zeros(present.shape, dtype=bool)
    with np.errstate(invalid="ignore"):
        for bit, severity in enumerate(rule.severities):
            holds = _holds(rule.comparator.value, values, rule.thresholds[severity].value)
            holds &= has_value & ~series.low_volume
            breaching |= holds
            signature |= holds.astype(np.int64) << (3 + bit)
        if rule.recovery is not None:
            held = _holds(rule.comparator.value, values, rule.recovery) | (values == rule.recovery)
            recovered = ~held
        else:
            mildest = rule.thresholds[rule.severities[0]].value
            recovered = ~_holds(rule.comparator.value, values, mildest)
    signature |= (recovered & has_value).astype(np.int64) << 2
    changed = np.ones(present.shape, dtype=bool)
    changed[1:] = signature[1:] != signature[:-1]
    for group in np.flatnonzero(breaching.any(axis=0)):
        candidates = np.flatnonzero(breaching[:, group]).tolist()
        changes = np.flatnonzero(changed[:, group]).tolist()
        column = values[:, group].tolist()
        valued = has_value[:, group].tolist()
        quiet = series.low_volume[:, group].tolist()
        key = AlertKey(rule.name, series.groups[group])
        record: AlertRecord | None = None
        moment = candidates[0]
        while moment < count:
            value = column[moment] if valued[moment] else None
            now = steps[moment]
            record, produced = advance(rule, record, key, value, now, channels, quiet[moment])
            for number, item in enumerate(produced):
                events.append((moment, index, key.group, number, item))
            if record.state is AlertState.OK:
                position = bisect_right(candidates, moment)
                moment = candidates[position] if position < len(candidates) else count
                continue
            if record.state is AlertState.RESOLVED:
                moment += 1
                continue
            position = bisect_right(changes, moment)
            upcoming = changes[position] if position < len(changes) else count
            timer = _next_timer(rule, record, now)
            if timer is not None:
                upcoming = min(upcoming, max(moment + 1, bisect_left(steps, timer)))
            moment = upcoming


def _next_timer(rule: Rule, record: AlertRecord, now: datetime) -> datetime | None:
    """The first moment after ``now`` at which time alone changes what ``advance`` does to
    ``record``: a breaching severity's ``for`` elapses, or a firing alert's renotify is due."""
    moments = [
        since + rule.for_duration(severity)
        for severity, since in record.breach_since.items()
        if since + rule.for_duration(severity) > now
    ]
    if (
        record.state is AlertState.FIRING
        and rule.renotify is not None
        and record.last_notified_at is not None
    ):
        moments.append(max(record.last_notified_at + rule.renotify, now + timedelta.resolution))
    return min(moments) if moments else None


def _holds(symbol: str, values: np.ndarray, threshold: float) -> np.ndarray:
    """``Comparator.holds`` over an array (``symbol``: the comparator's value)."""
    if symbol == ">":
        return values > threshold
    if symbol == ">=":
        return values >= threshold
    if symbol == "<":
        return values < threshold
    return values <= threshold


def _advance_stepwise(
    rules: list[tuple[int, Rule, RuleSeries | list[dict[str, float]] | None]],
    metrics: MetricSource,
    steps: list[datetime],
    channels: dict[Severity, str],
    events: list[_Event],
    failures: list[tuple[int, int, str, str]],
) -> None:
    """The other rules step by step, as the reference does, except that a rule whose alerts are
    all OK is not advanced while its values stay the same (same ``step_key``, or equal values)."""
    states: dict[AlertKey, AlertRecord] = {}
    failed: set[str] = set()
    all_ok: dict[int, bool] = {}
    last_key: dict[int, object] = {}
    last_values: dict[int, tuple[dict[str, float] | None, set[str]]] = {}
    keys = {
        index: step_keys(metrics, rule, steps) for index, rule, source in rules if source is None
    }
    for moment, now in enumerate(steps):
        for index, rule, source in rules:
            if rule.name in failed:
                continue
            key = keys[index][moment] if source is None else None
            if key is not None and all_ok.get(index) and last_key.get(index) == key:
                continue
            try:
                if isinstance(source, RuleSeries):
                    values, quiet = source.at(moment)
                elif source is not None:
                    values, quiet = source[moment], set()
                else:
                    values = metrics.values(rule, now)
                    quiet = metrics.low_volume(rule, now)
            except METRIC_ERRORS as exc:
                failed.add(rule.name)
                failures.append((moment, index, rule.name, _failure(exc)))
                continue
            last_key[index] = key
            if all_ok.get(index) and last_values.get(index) == (values, quiet):
                continue
            last_values[index] = (values, quiet)
            records, produced = advance_rule(rule, values, states, now, channels, quiet)
            for old in [old for old in states if old.rule == rule.name]:
                del states[old]
            states.update({record.key: record for record in records})
            all_ok[index] = all(record.state is AlertState.OK for record in records)
            for number, item in enumerate(produced):
                events.append((moment, index, item.key.group, number, item))
        metrics.clear_cache()
