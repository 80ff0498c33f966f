"""One evaluation of every rule: the function the sensor, `hk alerts evaluate` and the backtest run.

Metrics are computed for all groups of a rule at once, each (rule, group) advances through the
state machine, and the new states and the notifications are written in one transaction. A rule
whose metric fails (a broken SQL rule, an unreadable file) keeps its previous states and is
reported; the other rules are evaluated as usual.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

import duckdb
import sqlalchemy as sa

from analytics.alerts.catalog import BUILTIN_METRICS, GroupBy
from analytics.alerts.messages import one_line
from analytics.alerts.metrics import MetricSource
from analytics.alerts.model import (
    AlertKey,
    AlertRecord,
    AlertState,
    Notification,
    NotificationKind,
    Severity,
)
from analytics.alerts.rules import NoData, Rule, RulePack
from analytics.alerts.state import advance, announce
from analytics.alerts.store import AlertStore, Silence
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
    low_volume: set[str] | frozenset[str] = frozenset(),
) -> tuple[list[AlertRecord], list[Notification]]:
    """Every group of one rule through the state machine: groups seen now or remembered.

    ``low_volume``: the groups under the rule's ``min_requests`` (``MetricSource.low_volume``).

    ``values`` is the metric per group (None, or no group of an ungrouped metric: the metric has
    no data at all, which ``no_data: alert`` alerts on). A remembered group
    missing from ``values`` has no data, except for a count (``zero_when_empty`` in catalog.py):
    its source answered, so nothing counted is 0, an observed value.
    """
    if values == {} and rule.metric is not None and rule.group_by is GroupBy.NONE:
        # An ungrouped metric answered no row for its window (traffic stopped): no data, as
        # when nothing is published (a count's empty window is 0 already, catalog.py).
        values = None
    keys = {key for key in previous if key.rule == rule.name}
    if values is not None:
        keys.update(AlertKey(rule.name, group) for group in values)
    elif rule.no_data is NoData.ALERT:
        keys.add(AlertKey(rule.name, ""))
    counted = (
        values is not None
        and rule.metric is not None
        and BUILTIN_METRICS[rule.metric].zero_when_empty
    )
    records, notifications = [], []
    for key in sorted(keys):
        value = values.get(key.group) if values is not None else None
        if value is None and counted:
            value = 0.0
        if key.group == "" and values and rule.group_by is not GroupBy.NONE:
            # A grouped rule's "no data at all" alert (no_data: alert) ends when its groups
            # answer again: it has no value of its own to recover with.
            quiet = rule.model_copy(update={"no_data": NoData.OK})
            record, produced = advance(quiet, previous.get(key), key, None, now, channel_for)
            back = f"values for {len(values)} {rule.group_by.value}(s)"
            produced = [
                replace(
                    item,
                    title=f"RESOLVED: {rule.name} has data again ({back}; it fired at "
                    f"{_severity_name(item)} for no data)",
                    text=f"{rule.name} has data again ({back}): each is evaluated on its own.",
                )
                for item in produced
            ]
        else:
            record, produced = advance(
                rule, previous.get(key), key, value, now, channel_for, key.group in low_volume
            )
        records.append(record)
        notifications.extend(produced)
    return records, notifications


def _severity_name(item: Notification) -> str:
    """The severity a notification names ("none" for one without)."""
    return item.severity.value if item.severity is not None else "none"


_ANNOUNCING = (NotificationKind.FIRING, NotificationKind.ESCALATED)


def apply_silences(
    rule: Rule,
    record: AlertRecord,
    produced: list[Notification],
    silences: list[Silence],
    now: datetime,
    channel_for: dict[Severity, str],
) -> tuple[list[Notification], list[Notification]]:
    """Which of ``produced`` (one alert's notifications of this evaluation) go out, and which a
    silence holds back: ``(sent, held)``. Updates ``record.unannounced``.

    A held FIRING or ESCALATED is remembered on the record; once no silence covers the alert
    (unsilenced, or expired) while it still fires, that notification goes out at the alert's
    current severity, so the channel learns of an alert that fired during a silence. A RESOLVED
    of an alert nobody heard of (its FIRING held back) is not sent; the RESOLVED of an alert
    the channel heard fire is sent even under a silence (its thread gets the all-clear).
    """
    if any(silence.matches(record.key, now) for silence in silences):
        # The channel heard this alert fire (its FIRING was not held): its all-clear closes
        # the thread it has, so a RESOLVED goes out through a silence.
        heard = record.unannounced is not NotificationKind.FIRING
        for item in produced:
            if item.kind in _ANNOUNCING and record.unannounced is not NotificationKind.FIRING:
                record.unannounced = item.kind
        if record.state is not AlertState.FIRING:
            record.unannounced = None
        closing = [item for item in produced if heard and item.kind is NotificationKind.RESOLVED]
        return closing, [item for item in produced if item not in closing]
    unannounced, record.unannounced = record.unannounced, None
    if unannounced is None:
        return produced, []
    if record.state is AlertState.FIRING:
        # One message with the current state instead of a RENOTIFY or ESCALATED nobody can place.
        held = [item for item in produced if item.kind is not NotificationKind.FIRING]
        record.last_notified_at = now
        return [announce(rule, replace(record, unannounced=unannounced), now, channel_for)], held
    if unannounced is NotificationKind.FIRING:
        return [], produced  # resolved before anyone heard it fire
    return produced, []


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
    quiet: dict[str, set[str]] = {}
    try:
        metrics.prepare(pack.rules, now, now)
    except METRIC_ERRORS as exc:
        report.errors["(request rollups)"] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    for rule in pack.rules:
        try:
            values[rule.name] = metrics.values(rule, now)
            quiet[rule.name] = metrics.low_volume(rule, now)
        except METRIC_ERRORS as exc:
            report.errors[rule.name] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    names = [rule.name for rule in pack.rules if rule.name not in report.errors]
    with store.transaction() as conn:
        stored = store.load_states(conn)  # once: the evaluated rules' and removed rules' states
        evaluated = set(names)
        previous = {key: record for key, record in stored.items() if key.rule in evaluated}
        silences = store.active_silences(conn, now)
        records: list[AlertRecord] = []
        for rule in pack.rules:
            if rule.name in report.errors:
                continue
            rule_records, produced = advance_rule(
                rule, values[rule.name], previous, now, channels, quiet[rule.name]
            )
            report.groups += len(rule_records)
            for record in rule_records:
                own = [item for item in produced if item.key == record.key]
                sent, held = apply_silences(rule, record, own, silences, now, channels)
                report.notifications.extend(sent)
                report.silenced.extend(held)
            records.extend(rule_records)
        store.save_states(conn, records, names)
        closed = _removed_rules(store, conn, stored, pack, now, channels)
        report.notifications.extend(closed)
        store.enqueue(conn, report.notifications, now=now)
    report.active = {record.key: record for record in records if record.state is not AlertState.OK}
    return report


def _removed_rules(
    store: AlertStore,
    conn: sa.Connection,
    stored: dict[AlertKey, AlertRecord],
    pack: RulePack,
    now: datetime,
    channel_for: dict[Severity, str],
) -> list[Notification]:
    """Drop the ``stored`` states of rules no longer in ``pack`` (removed or renamed in the rule
    file) and return a RESOLVED for each of their firing alerts the channel heard of (it replies in the
    alert's threads), so neither ``hk alerts list`` nor a Slack thread keeps a ghost firing."""
    kept = {rule.name for rule in pack.rules}
    stale = {key: record for key, record in stored.items() if key.rule not in kept}
    if not stale:
        return []
    closed = [
        Notification(
            key=key,
            kind=NotificationKind.RESOLVED,
            severity=record.severity,
            channel=channel_for.get(record.severity, ""),
            title=f"RESOLVED: {key.rule}{' on ' + one_line(key.group) if key.group else ''} "
            "is no longer watched (its rule was removed from the rule file)",
            text=f"The rule {key.rule} is no longer in the rule file: its alert is closed "
            "without a new value.",
            evaluated_at=now,
            labels={"group": key.group} if key.group else {},
        )
        for key, record in sorted(stale.items())
        if record.state is AlertState.FIRING
        and record.severity is not None
        and record.unannounced is not NotificationKind.FIRING
    ]
    store.save_states(conn, [], sorted({key.rule for key in stale}))
    return closed
