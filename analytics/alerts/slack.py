"""Slack messages: Block Kit with a plain-text fallback, one message per alert or per burst.

Messages carry what the notification carries (rule, route/queue/service/policy names, aggregate
values and thresholds); nothing here reads raw rows, so tokens, user ids, IPs or emails cannot
reach a message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from analytics.alerts.metrics import BUILTIN_METRICS, format_value
from analytics.alerts.model import Notification, NotificationKind, Severity
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


def _metric_of(notification: Notification) -> str | None:
    metric = notification.labels.get("metric")
    return metric if metric in BUILTIN_METRICS else None


def _plain(text: str, limit: int = 150) -> dict[str, Any]:
    return {"type": "plain_text", "text": text[:limit], "emoji": True}


def _fields(notification: Notification) -> list[dict[str, Any]]:
    metric = _metric_of(notification)
    fields = []
    if notification.severity is not None:
        fields.append(f"*Severity*\n{notification.severity.value}")
    if notification.value is not None:
        fields.append(f"*Value*\n{format_value(metric, notification.value)}")
    if notification.threshold is not None:
        fields.append(
            f"*Threshold*\n{notification.comparator or ''} "
            f"{format_value(metric, notification.threshold)}"
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
        metric = _metric_of(first)
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
            f"• `{item.key.group or 'all'}`: {format_value(metric, item.value)}"
            + (f" ({item.severity.value})" if item.severity else "")
            for item in notifications[:MAX_GROUPS_LISTED]
        ]
        if len(notifications) > MAX_GROUPS_LISTED:
            lines.append(f"… and {len(notifications) - MAX_GROUPS_LISTED} more")
        threshold = (
            f"{first.comparator} {format_value(metric, first.threshold)}"
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
            f"{item.key.group or 'all'} {format_value(metric, item.value)}"
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
