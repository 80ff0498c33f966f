"""Replaying rules over the rollup history: which notifications they would have sent, and when.

The replay runs the very code the sensor runs (``MetricSource.values`` and ``advance_rule``) at
each step from ``since`` to ``until``, with the states kept in memory instead of the alert store:
nothing is stored or sent. Silences are ignored (a backtest asks what the rules say).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from analytics.alerts.evaluate import METRIC_ERRORS, advance_rule
from analytics.alerts.metrics import MetricSource
from analytics.alerts.model import AlertKey, AlertRecord, Notification, Severity
from analytics.alerts.rules import RulePack
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
) -> BacktestResult:
    if step <= timedelta(0):
        raise ValueError("the step must be positive")
    if since >= until:
        raise ValueError("since must be before until")
    snapshot = _HistorySnapshot(history) if history is not None else None
    states: dict[AlertKey, AlertRecord] = {}
    notifications: list[Notification] = []
    errors: dict[str, str] = {}
    evaluations = 0
    with MetricSource(
        views_database,
        snapshot,  # type: ignore[arg-type]
        rollup_root=rollup_root,
        replay=True,
    ) as metrics:
        metrics.prepare(pack.rules, since, until)
        for now in _steps(since, until, step):
            evaluations += 1
            for rule in pack.rules:
                if rule.name in errors:
                    continue
                try:
                    values = metrics.values(rule, now)
                    quiet = metrics.low_volume(rule, now)
                except METRIC_ERRORS as exc:
                    errors[rule.name] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
                    continue
                records, produced = advance_rule(
                    rule, values, states, now, channel_for or {}, quiet
                )
                for key in [key for key in states if key.rule == rule.name]:
                    del states[key]
                states.update({record.key: record for record in records})
                notifications.extend(produced)
            metrics.clear_cache()
    return BacktestResult(since, until, step, evaluations, notifications, errors)
