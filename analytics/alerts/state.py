"""The alert lifecycle of one (rule, group): ok -> pending -> firing -> resolved -> ok. Pure.

``advance`` takes the previous record, the metric value (None: no data) and the time, and returns
the new record with the notifications the transition calls for:

- a severity *breaches* while its threshold holds; it becomes *active* once it has held for its
  ``for`` duration. Breaching without an active severity is PENDING (nothing is sent);
- the first active severity makes the alert FIRING (one FIRING notification); a higher severity
  later is an ESCALATED notification; while firing, a RENOTIFY goes out every ``renotify``;
- a firing alert RESOLVES only once the value is past the recovery threshold (hysteresis), so a
  value wobbling around the threshold does not flap; the next evaluation returns it to OK.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from analytics.alerts.metrics import format_value
from analytics.alerts.model import (
    AlertKey,
    AlertRecord,
    AlertState,
    Notification,
    NotificationKind,
    Severity,
)
from analytics.alerts.rules import NoData, Rule
from housekeeping.config_types import format_duration


def _breaching(rule: Rule, value: float | None) -> list[Severity]:
    if value is None:
        return [rule.no_data_severity] if rule.no_data == NoData.ALERT else []
    return [
        severity
        for severity in rule.severities
        if rule.comparator.holds(value, rule.thresholds[severity].value)
    ]


def _active(rule: Rule, breach_since: dict[Severity, datetime], now: datetime) -> Severity | None:
    active = [
        severity
        for severity, since in breach_since.items()
        if now - since >= rule.for_duration(severity)
    ]
    return max(active, key=lambda severity: severity.rank) if active else None


def advance(
    rule: Rule,
    record: AlertRecord | None,
    key: AlertKey,
    value: float | None,
    now: datetime,
    channel_for: dict[Severity, str] | None = None,
) -> tuple[AlertRecord, list[Notification]]:
    """The next state of ``key`` after observing ``value`` at ``now``."""
    previous = record or AlertRecord(key=key)
    if value is None and rule.no_data == NoData.KEEP:
        return replace(previous, updated_at=now), []

    breaching = _breaching(rule, value)
    breach_since = {severity: previous.breach_since.get(severity, now) for severity in breaching}
    active = _active(rule, breach_since, now)
    new = replace(previous, breach_since=breach_since, last_value=value, updated_at=now)
    notify: list[tuple[NotificationKind, Severity]] = []

    if previous.state is AlertState.FIRING:
        assert previous.severity is not None
        recovered = value is None or rule.recovered(value)
        if value is None and rule.no_data == NoData.ALERT:
            recovered = False
        if active is None and recovered:
            new.state, new.pending_since = AlertState.RESOLVED, None
            notify.append((NotificationKind.RESOLVED, previous.severity))
        elif active is not None and active.rank > previous.severity.rank:
            new.severity = active
            notify.append((NotificationKind.ESCALATED, active))
        elif (
            rule.renotify is not None
            and previous.last_notified_at is not None
            and now - previous.last_notified_at >= rule.renotify
        ):
            notify.append((NotificationKind.RENOTIFY, previous.severity))
    elif active is not None:
        new.state, new.severity, new.firing_since = AlertState.FIRING, active, now
        new.pending_since = None
        notify.append((NotificationKind.FIRING, active))
    elif breach_since:
        new.state = AlertState.PENDING
        new.pending_since = min(breach_since.values())
        new.severity = None
    else:
        new.state, new.severity, new.pending_since, new.firing_since = (
            AlertState.OK,
            None,
            None,
            None,
        )

    notifications = [
        _notification(rule, key, kind, severity, value, now, channel_for or {})
        for kind, severity in notify
    ]
    if notifications:
        new.last_notified_at = now
    return new, notifications


def _notification(
    rule: Rule,
    key: AlertKey,
    kind: NotificationKind,
    severity: Severity,
    value: float | None,
    now: datetime,
    channel_for: dict[Severity, str],
) -> Notification:
    threshold = rule.threshold_value(severity)
    metric_label = rule.metric or "sql"
    where = f" on {rule.group_by.value} {key.group}" if key.group else ""
    shown = format_value(rule.metric, value)
    if kind is NotificationKind.RESOLVED:
        title = f"RESOLVED: {rule.name}{where}"
        text = f"{rule.name}{where} resolved: {metric_label} is {shown}"
    else:
        verb = {
            NotificationKind.FIRING: "FIRING",
            NotificationKind.ESCALATED: "ESCALATED",
            NotificationKind.RENOTIFY: "STILL FIRING",
        }[kind]
        title = f"{verb} [{severity.value}]: {rule.name}{where}"
        if value is None:
            text = f"{rule.name}{where}: no data for {format_duration(rule.window)}"
        else:
            limit = format_value(rule.metric, threshold)
            text = (
                f"{rule.name}{where}: {metric_label} is {shown} "
                f"({rule.comparator.value} {limit}, window {format_duration(rule.window)})"
            )
    if rule.summary:
        text = f"{text}. {rule.summary}"
    labels = dict(rule.labels)
    if rule.metric:
        labels.setdefault("metric", rule.metric)
    if key.group:
        labels[rule.group_by.value] = key.group
    return Notification(
        key=key,
        kind=kind,
        severity=severity,
        channel=rule.channels.get(severity) or channel_for.get(severity, ""),
        title=title,
        text=text,
        evaluated_at=now,
        value=value,
        threshold=threshold,
        comparator=rule.comparator.value,
        window=rule.window,
        labels=labels,
    )
