"""Every human-readable alert text, made once: notification titles and texts, Slack Block Kit.

- ``format_value``: a metric value in its unit (the unit comes from the catalog, carried by the
  notification);
- ``rule_message``: the title and plain text of a rule's FIRING / ESCALATED / STILL FIRING /
  RESOLVED notification (state.py);
- ``rule_error_message``, ``run_failure_message``, ``evaluation_late_message``: the alerting's
  own notifications (service.py);
- ``render``: the Slack message (Block Kit with a plain-text fallback) of one notification or
  of a burst of one rule's firings (delivery.py).

Messages carry what the notification carries (rule, route/queue/service/policy names, aggregate
values and thresholds); nothing here reads raw rows, so tokens, user ids, IPs or emails cannot
reach a message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from analytics.alerts.catalog import Unit, unit_of
from analytics.alerts.model import AlertKey, Notification, NotificationKind, Severity
from analytics.alerts.rules import Rule
from housekeeping.config_types import format_duration

MAX_GROUPS_LISTED = 15
_ICON = {
    Severity.WARNING: ":large_yellow_circle:",
    Severity.HIGH: ":large_orange_circle:",
    Severity.CRITICAL: ":red_circle:",
}


@dataclass(frozen=True)
class SlackMessage:
    channel: str
    text: str  # the plain-text fallback (notifications, screen readers, webhooks without blocks)
    blocks: list[dict[str, Any]]
    # a reply in the thread of the alert's firing message (resolved messages)
    thread_of: Notification | None = None


def format_value(unit: Unit | None, value: float | None) -> str:
    """``value`` as messages show it: in ``unit``; without one (a SQL rule) 4 significant digits."""
    if value is None:
        return "no data"
    if unit is None:
        return f"{value:,.4g}"
    return unit.format(value)


SUMMARY_CHART_TITLE = "Error rate and p95, last 24 h"
_VERB = {
    NotificationKind.FIRING: "FIRING",
    NotificationKind.ESCALATED: "ESCALATED",
    NotificationKind.RENOTIFY: "STILL FIRING",
}


def rule_message(
    rule: Rule, key: AlertKey, kind: NotificationKind, severity: Severity, value: float | None
) -> tuple[str, str]:
    """(title, plain text) of ``rule``'s notification for ``key``, ``value`` being the metric.

    A SQL rule's value is named "sql"; the rule's ``summary`` ends the text.
    """
    where = f" on {rule.group_by.value} {key.group}" if key.group else ""
    metric_label = rule.metric or "sql"
    unit = unit_of(rule.metric)
    shown = format_value(unit, value)
    if kind is NotificationKind.RESOLVED:
        title = f"RESOLVED: {rule.name}{where}"
        text = f"{rule.name}{where} resolved: {metric_label} is {shown}"
    else:
        title = f"{_VERB[kind]} [{severity.value}]: {rule.name}{where}"
        if value is None:
            text = f"{rule.name}{where}: no data for {format_duration(rule.window)}"
        else:
            limit = format_value(unit, rule.threshold_value(severity))
            text = (
                f"{rule.name}{where}: {metric_label} is {shown} "
                f"({rule.comparator.value} {limit}, window {format_duration(rule.window)})"
            )
    if rule.summary:
        text = f"{text}. {rule.summary}"
    return title, text


def rule_error_message(rule: str, error: str) -> tuple[str, str]:
    """(title, text) when a rule cannot be evaluated."""
    return (
        f"Alert rule {rule} cannot be evaluated",
        f"Rule {rule} failed to evaluate and is not watching anything: {error}",
    )


def run_failure_message(job_name: str, run_id: str, error: str) -> tuple[str, str]:
    """(title, text) for a failed Dagster run: the first line of its error, at most 300 chars."""
    first_line = (error or "no error message").strip().splitlines()[0][:300]
    return (
        f"Dagster run of {job_name} failed",
        f"Run {run_id[:8]} of {job_name} failed: {first_line}",
    )


def evaluation_late_message(last: datetime) -> tuple[str, str]:
    """(title, text) when the rule evaluation has not completed since ``last`` (UTC)."""
    return (
        "Alert rules are not being evaluated",
        f"The alert sensor has not completed an evaluation since {last:%Y-%m-%d %H:%M} UTC: "
        "no rule is watching. Check the alert_rules_sensor ticks in Dagster.",
    )


def _plain(text: str, limit: int = 150) -> dict[str, Any]:
    return {"type": "plain_text", "text": text[:limit], "emoji": True}


def _fields(notification: Notification) -> list[dict[str, Any]]:
    unit = notification.unit
    fields = []
    if notification.severity is not None:
        fields.append(f"*Severity*\n{notification.severity.value}")
    if notification.value is not None:
        fields.append(f"*Value*\n{format_value(unit, notification.value)}")
    if notification.threshold is not None:
        fields.append(
            f"*Threshold*\n{notification.comparator or ''} "
            f"{format_value(unit, notification.threshold)}"
        )
    if notification.window is not None:
        fields.append(f"*Window*\n{format_duration(notification.window)}")
    if notification.key.group:
        fields.append(f"*Group*\n{notification.key.group}")
    return [{"type": "mrkdwn", "text": text} for text in fields[:10]]


def _link(webserver_url: str | None, notification: Notification) -> list[dict[str, Any]]:
    if not webserver_url:
        return []
    if notification.run_id:
        url, label = f"{webserver_url}/runs/{notification.run_id}", "Open the run in Dagster"
    else:
        url, label = f"{webserver_url}/overview/activity/timeline", "Open Dagster"
    return [
        {
            "type": "actions",
            "elements": [{"type": "button", "text": _plain(label), "url": url}],
        }
    ]


def _context(notification: Notification) -> dict[str, Any]:
    labels = ", ".join(f"{name}={value}" for name, value in sorted(notification.labels.items()))
    at = notification.evaluated_at.strftime("%Y-%m-%d %H:%M UTC")
    text = f"{at} · rule `{notification.key.rule}`" + (f" · {labels}" if labels else "")
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def render(notifications: Sequence[Notification], webserver_url: str | None = None) -> SlackMessage:
    """One message for one notification, or for a burst of one rule's firings in one tick."""
    first = notifications[0]
    icon = ":white_check_mark:" if first.kind is NotificationKind.RESOLVED else ""
    if first.severity is not None and not icon:
        icon = _ICON[first.severity]
    if len(notifications) == 1:
        title = first.title
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": _plain(f"{icon} {title}".strip())},
            {"type": "section", "text": {"type": "mrkdwn", "text": first.text[:2900]}},
        ]
        fields = _fields(first)
        if fields:
            blocks.append({"type": "section", "fields": fields})
        text = first.text
    else:
        unit = first.unit
        worst = max(
            (item.severity for item in notifications if item.severity is not None),
            key=lambda severity: severity.rank,
            default=first.severity,
        )
        title = (
            f"FIRING [{worst.value if worst else ''}]: {first.key.rule} "
            f"({len(notifications)} groups)"
        )
        lines = [
            f"• `{item.key.group or 'all'}`: {format_value(unit, item.value)}"
            + (f" ({item.severity.value})" if item.severity else "")
            for item in notifications[:MAX_GROUPS_LISTED]
        ]
        if len(notifications) > MAX_GROUPS_LISTED:
            lines.append(f"… and {len(notifications) - MAX_GROUPS_LISTED} more")
        threshold = (
            f"{first.comparator} {format_value(unit, first.threshold)}"
            if first.threshold is not None
            else ""
        )
        summary = f"{threshold}, window {format_duration(first.window)}" if first.window else ""
        blocks = [
            {"type": "header", "text": _plain(f"{icon} {title}".strip())},
            {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)[:2900]}},
        ]
        if summary:
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": summary}})
        text = f"{title}: " + "; ".join(
            f"{item.key.group or 'all'} {format_value(unit, item.value)}"
            for item in notifications[:MAX_GROUPS_LISTED]
        )
    blocks.append(_context(first))
    blocks.extend(_link(webserver_url, first))
    return SlackMessage(
        channel=first.channel,
        text=text[:3000],
        blocks=blocks,
        thread_of=first if first.kind is NotificationKind.RESOLVED else None,
    )
