"""One evaluation of every rule: the function the sensor, `hk alerts evaluate` and the backtest run.

Metrics are computed for all groups of a rule at once, each (rule, group) advances through the
state machine, and the new states and the notifications are written in one transaction. A rule
whose metric fails (a broken SQL rule, an unreadable file) keeps its previous states and is
reported; the other rules are evaluated as usual.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import duckdb
import sqlalchemy as sa

from analytics.alerts.metrics import MetricSource
from analytics.alerts.model import AlertKey, AlertRecord, AlertState, Notification, Severity
from analytics.alerts.rules import NoData, Rule, RulePack
from analytics.alerts.state import advance
from analytics.alerts.store import AlertStore
from analytics.publish import PublishError
from analytics.sandbox import QueryError

# What a failing metric may raise (a SQL rule the sandbox refuses, published rollups that cannot
# be read); anything else is a bug and should surface as one.
METRIC_ERRORS = (duckdb.Error, sa.exc.SQLAlchemyError, OSError, QueryError, PublishError)


@dataclass
class EvaluationReport:
    evaluated_at: datetime
    rules: int = 0
    groups: int = 0
    # every (rule, group) not OK after this evaluation
    active: dict[AlertKey, AlertRecord] = field(default_factory=dict)
    notifications: list[Notification] = field(default_factory=list)  # enqueued
    silenced: list[Notification] = field(default_factory=list)  # produced, not enqueued
    errors: dict[str, str] = field(default_factory=dict)  # rule name -> what failed

    def count(self, state: AlertState) -> int:
        return sum(1 for record in self.active.values() if record.state is state)


def advance_rule(
    rule: Rule,
    values: dict[str, float] | None,
    previous: dict[AlertKey, AlertRecord],
    now: datetime,
    channel_for: dict[Severity, str],
) -> tuple[list[AlertRecord], list[Notification]]:
    """Every group of one rule through the state machine: groups seen now or remembered."""
    keys = {key for key in previous if key.rule == rule.name}
    if values is not None:
        keys.update(AlertKey(rule.name, group) for group in values)
    elif rule.no_data is NoData.ALERT:
        keys.add(AlertKey(rule.name, ""))
    records, notifications = [], []
    for key in sorted(keys):
        value = values.get(key.group) if values is not None else None
        record, produced = advance(rule, previous.get(key), key, value, now, channel_for)
        records.append(record)
        notifications.extend(produced)
    return records, notifications


def evaluate_rules(
    pack: RulePack,
    metrics: MetricSource,
    store: AlertStore,
    now: datetime,
    channel_for: dict[Severity, str] | None = None,
) -> EvaluationReport:
    report = EvaluationReport(evaluated_at=now, rules=len(pack.rules))
    channels = channel_for or {}
    # Metrics first, outside the transaction: the store's lock is held only for the writes.
    values: dict[str, dict[str, float] | None] = {}
    try:
        metrics.prepare(pack.rules, now, now)
    except METRIC_ERRORS as exc:
        report.errors["(request rollups)"] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    for rule in pack.rules:
        try:
            values[rule.name] = metrics.values(rule, now)
        except METRIC_ERRORS as exc:
            report.errors[rule.name] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    names = [rule.name for rule in pack.rules if rule.name not in report.errors]
    with store.transaction() as conn:
        previous = store.load_states(conn, names)
        silences = store.active_silences(conn, now)
        records: list[AlertRecord] = []
        for rule in pack.rules:
            if rule.name in report.errors:
                continue
            rule_records, produced = advance_rule(rule, values[rule.name], previous, now, channels)
            records.extend(rule_records)
            report.groups += len(rule_records)
            for notification in produced:
                if any(silence.matches(notification.key, now) for silence in silences):
                    report.silenced.append(notification)
                else:
                    report.notifications.append(notification)
        store.save_states(conn, records, names)
        store.enqueue(conn, report.notifications, now=now)
    report.active = {record.key: record for record in records if record.state is not AlertState.OK}
    return report
