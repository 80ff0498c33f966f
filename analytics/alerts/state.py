"""The alert lifecycle of one (rule, group): ok -> pending -> firing -> resolved -> ok. Pure.

``advance`` takes the previous record, the metric value (None: no data) and the time, and returns
the new record with the notifications the transition calls for:

- a severity *breaches* while its threshold holds; it becomes *active* once it has held for its
  ``for`` duration. Breaching without an active severity is PENDING (nothing is sent);
- the first active severity makes the alert FIRING (one FIRING notification); a higher severity
  later is an ESCALATED notification; while firing, a RENOTIFY goes out every ``renotify``;
- a firing alert RESOLVES only once the value is past the recovery threshold (hysteresis), so a
  value wobbling around the threshold does not flap; the next evaluation returns it to OK;
- no data (``value`` None) follows the rule's ``no_data``: ``keep`` (the default) changes no
  state, so missing data never resolves a firing alert; ``ok`` resolves it; ``alert`` breaches.
  The time without data does not count toward a ``for``: it is the breach observed that holds.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from analytics.alerts.catalog import GroupBy, unit_of
from analytics.alerts.messages import rule_message
from analytics.alerts.model import (
    AlertKey,
    AlertRecord,
    AlertState,
    Notification,
    NotificationKind,
    Severity,
)
from analytics.alerts.rules import NoData, Rule


def _breaching(rule: Rule, value: float | None, low_volume: bool = False) -> list[Severity]:
    if low_volume:
        return []
    if value is None:
        return [rule.no_data_severity] if rule.no_data is NoData.ALERT else []
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


def _renotify_due(rule: Rule, previous: AlertRecord, now: datetime) -> bool:
    return (
        rule.renotify is not None
        and previous.last_notified_at is not None
        and now - previous.last_notified_at >= rule.renotify
    )


def advance(
    rule: Rule,
    record: AlertRecord | None,
    key: AlertKey,
    value: float | None,
    now: datetime,
    channel_for: dict[Severity, str] | None = None,
    low_volume: bool = False,
) -> tuple[AlertRecord, list[Notification]]:
    """The next state of ``key`` after observing ``value`` at ``now`` (None: no data).

    With the rule's ``no_data: keep`` (the default) an evaluation without data changes nothing:
    a firing alert stays firing (and renotifies), its ``no_data_since`` set to the first such
    evaluation, which its notifications name; only a value past the recovery threshold
    resolves it.

    ``low_volume``: the group had fewer requests than the rule's ``min_requests``. Its value
    never breaches (a quiet route does not fire or flap), but it is observed: past the recovery
    threshold it resolves a firing alert; not past it, the alert stays as it is.
    """
    previous = record or AlertRecord(key=key)
    if (
        low_volume
        and value is not None
        and previous.state is AlertState.FIRING
        and not rule.recovered(value)
    ):
        new = replace(previous, updated_at=now, last_value=value, no_data_since=None)
        if not _renotify_due(rule, previous, now):
            return new, []
        assert previous.severity is not None
        new.last_notified_at = now
        kind = NotificationKind.RENOTIFY
        return new, [
            _notification(rule, key, kind, previous.severity, value, now, channel_for or {})
        ]
    if value is None and rule.no_data is NoData.KEEP:
        new = replace(previous, updated_at=now, no_data_since=previous.no_data_since or now)
        if previous.state is not AlertState.FIRING or not _renotify_due(rule, previous, now):
            return new, []
        assert previous.severity is not None
        new.last_notified_at = now
        notification = _notification(
            rule,
            key,
            NotificationKind.RENOTIFY,
            previous.severity,
            None,
            now,
            channel_for or {},
            new.no_data_since,
        )
        return new, [notification]

    breaching = _breaching(rule, value, low_volume)
    held_since = previous.breach_since
    if value is not None and previous.no_data_since is not None:
        # Data is back: the minutes without it are not counted toward ``for`` (a breach seen
        # once before an hour-long gap has held one minute, not an hour).
        gap = now - previous.no_data_since
        held_since = {severity: since + gap for severity, since in held_since.items()}
    breach_since = {severity: held_since.get(severity, now) for severity in breaching}
    active = _active(rule, breach_since, now)
    new = replace(
        previous,
        breach_since=breach_since,
        last_value=value,
        updated_at=now,
        no_data_since=None if value is not None else previous.no_data_since or now,
    )
    notify: list[tuple[NotificationKind, Severity]] = []

    if previous.state is AlertState.FIRING:
        assert previous.severity is not None
        recovered = value is None or rule.recovered(value)
        if value is None and rule.no_data is NoData.ALERT:
            recovered = False
        if active is None and recovered:
            new.state, new.pending_since = AlertState.RESOLVED, None
            notify.append((NotificationKind.RESOLVED, previous.severity))
        elif active is not None and active.rank > previous.severity.rank:
            new.severity = active
            notify.append((NotificationKind.ESCALATED, active))
        elif _renotify_due(rule, previous, now):
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
        _notification(rule, key, kind, severity, value, now, channel_for or {}, new.no_data_since)
        for kind, severity in notify
    ]
    if notifications:
        new.last_notified_at = now
    return new, notifications


def announce(
    rule: Rule, record: AlertRecord, now: datetime, channel_for: dict[Severity, str] | None = None
) -> Notification:
    """The held-back notification of a firing ``record`` (``record.unannounced``: FIRING or
    ESCALATED) at its current severity and value: what a silence kept from the channel, sent
    once no silence covers the alert any more."""
    assert record.severity is not None and record.unannounced is not None
    value = None if record.no_data_since is not None else record.last_value
    return _notification(
        rule,
        record.key,
        record.unannounced,
        record.severity,
        value,
        now,
        channel_for or {},
        record.no_data_since,
    )


def _notification(
    rule: Rule,
    key: AlertKey,
    kind: NotificationKind,
    severity: Severity,
    value: float | None,
    now: datetime,
    channel_for: dict[Severity, str],
    no_data_since: datetime | None = None,
) -> Notification:
    title, text = rule_message(rule, key, kind, severity, value)
    labels = dict(rule.labels)
    if value is None and no_data_since is not None:
        # Messages show labels: a firing alert without data says since when (docs/alerts.md).
        labels["no_data_since"] = no_data_since.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    if rule.metric:
        labels.setdefault("metric", rule.metric)
    if key.group:
        # a SQL rule's groups are whatever its first column holds: "group", as its title says
        labels[rule.group_by.value if rule.group_by is not GroupBy.NONE else "group"] = key.group
    return Notification(
        key=key,
        kind=kind,
        severity=severity,
        channel=rule.channels.get(severity) or channel_for.get(severity, ""),
        title=title,
        text=text,
        evaluated_at=now,
        value=value,
        threshold=rule.threshold_value(severity),
        comparator=rule.comparator.value,
        window=rule.window,
        labels=labels,
        unit=unit_of(rule.metric),
    )
