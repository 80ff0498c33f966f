"""Every human-readable alert text, made once: notification titles and texts, Slack Block Kit.

- ``format_value``: a metric value in its unit (the unit comes from the catalog, carried by the
  notification);
- ``rule_message``: the title and plain text of a rule's FIRING / ESCALATED / STILL FIRING /
  RESOLVED notification (state.py);
- ``rule_error_message``, ``run_failure_message``, ``evaluation_late_message``: the alerting's
  own notifications (service.py);
- ``render``: the Slack message (Block Kit with a plain-text fallback) of one notification or
  of a burst of one rule's firings (delivery.py).

The first two lines of every message (its text, and the header and first section of its blocks)
say what broke and how bad (line 1: the title), since when and where to look (line 2: the
Dagster asset, run or sensor the alert is about). Every Block Kit element is kept within Slack's
limits (an over-long value is cut with an ellipsis) and text from data (route names such as
``/users/<int:id>``, error texts) is escaped for mrkdwn.

Messages carry what the notification carries (rule, route/queue/service/policy names, aggregate
values and thresholds); nothing here reads raw rows, so tokens, user ids, IPs or emails cannot
reach a message; error texts go through ``redact_secrets``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from analytics.alerts.catalog import BUILTIN_METRICS, GroupBy, Source, Unit, unit_of
from analytics.alerts.model import AlertKey, Notification, NotificationKind, Severity
from analytics.alerts.rules import Rule
from housekeeping.config_types import format_duration

MAX_GROUPS_LISTED = 15
_ICON = {
    Severity.WARNING: ":large_yellow_circle:",
    Severity.HIGH: ":large_orange_circle:",
    Severity.CRITICAL: ":red_circle:",
}

# Slack's limits (https://docs.slack.dev/reference/block-kit/blocks), in characters.
HEADER_LIMIT = 150  # a header block's plain_text
SECTION_LIMIT = 3000  # a section's text
FIELD_LIMIT = 2000  # each of a section's fields
MAX_FIELDS = 10  # fields per section
MAX_CONTEXT_ELEMENTS = 10
MAX_BLOCKS = 50
BUTTON_LIMIT = 75
TEXT_LIMIT = 40000  # the top-level text Slack accepts; we send at most TEXT_SHOWN of it
TEXT_SHOWN = 3000
GROUP_IN_TITLE = 60  # a group (route, error text) is cut to this in titles
GROUP_IN_TITLE_MIN = 20  # ... and down to this when the rule's name is long
# A title fits the header (HEADER_LIMIT) after the longest icon, ":large_yellow_circle: ".
TITLE_BUDGET = HEADER_LIMIT - len(":large_yellow_circle: ")
ERROR_LINE_LIMIT = 300
ELLIPSIS = "…"
_PARTIAL_ENTITY = re.compile(r"&(?:a|am|amp|l|lt|g|gt)?$")
# The Dagster code location (workspace.yaml) whose sensors the links open.
CODE_LOCATION = "housekeeping"
RULES_SENSOR = "alert_rules_sensor"
_SOURCE_ASSET = {
    Source.REQUEST_MINUTES: ("analytics", "requests_minute"),
    Source.ROLLUP_LAG: ("analytics", "requests_minute"),
    Source.JOB_HOURS: ("analytics", "jobs_hourly"),
    Source.API_USAGE_MONTH: ("analytics", "api_usage_daily"),
}
_SECRETS = (
    # user:password@ in any URL (database URLs, webhooks with credentials)
    (re.compile(r"(\b[a-zA-Z][\w+.-]*://[^\s:/@]*:)[^\s@]*@"), r"\1***@"),
    # Slack tokens, and the path of an incoming webhook
    (re.compile(r"\bxox[a-z]-[\w-]+"), "xox?-***"),
    (re.compile(r"(hooks\.slack\.com/services/)\S+"), r"\1***"),
    # password=..., token: ..., api_key=... (connection strings, headers, kwargs)
    (
        re.compile(
            r"(?i)\b(password|passwd|pwd|secret|token|api[_-]?key|authorization)"
            r"(\s*[=:]\s*)(bearer\s+)?[^\s,;&'\")]+"
        ),
        r"\1\2***",
    ),
)


@dataclass(frozen=True)
class SlackMessage:
    channel: str
    text: str  # the fallback, mrkdwn-escaped (notifications, screen readers, webhooks)
    blocks: list[dict[str, Any]]
    # a reply in the thread of the alert's firing message (resolved messages)
    thread_of: Notification | None = None
    plain: str = ""  # the same text unescaped, for the console

    def without_blocks(self) -> SlackMessage:
        """The plain-text message sent when Slack refuses the layout (``invalid_blocks``)."""
        return replace(self, blocks=[])


def escape(text: str) -> str:
    """``text`` escaped for Slack mrkdwn: ``&``, ``<`` and ``>`` (route names, error texts)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, the cut marked with an ellipsis; an escaped
    entity (``&lt;``) is never cut in half."""
    if len(text) <= limit:
        return text
    cut = text[: limit - len(ELLIPSIS)]
    # Only an entity cut at its end (``&l``); a raw ``&`` earlier is text (a route's query).
    return _PARTIAL_ENTITY.sub("", cut) + ELLIPSIS


def one_line(text: str) -> str:
    """``text`` with its line breaks and runs of whitespace as single spaces (a group from data,
    e.g. a multi-line error text, must not break a title or a label onto further lines)."""
    return " ".join(text.split())


def redact_secrets(text: str) -> str:
    """``text`` with passwords in URLs, Slack tokens and ``password=...``-style values replaced
    by ``***`` (error texts reach messages through it)."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def first_error_line(error: str | None) -> str:
    """The first non-empty line of an error text, secrets redacted, at most 300 characters."""
    lines = [line.strip() for line in (error or "").splitlines() if line.strip()]
    return clip(redact_secrets(lines[0]), ERROR_LINE_LIMIT) if lines else "no error message"


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


def _where(rule: Rule, key: AlertKey, limit: int = GROUP_IN_TITLE) -> str:
    """`` on route /api/orders``: the group, named by the rule's grouping ("group" for a SQL
    rule, whose groups are whatever its first column holds), cut to ``limit``."""
    if not key.group:
        return ""
    label = rule.group_by.value if rule.group_by is not GroupBy.NONE else "group"
    return f" on {label} {clip(one_line(key.group), limit)}"


def _now_value(unit: Unit | None, value: float | None, window: timedelta) -> str:
    """What a resolved alert's value is now: a count with nothing counted is 0."""
    if value is not None:
        return f"is now {format_value(unit, value)}"
    if unit is Unit.COUNT:
        return f"is now 0 (nothing counted in the last {format_duration(window)})"
    return f"has no data now (nothing measured in the last {format_duration(window)})"


def rule_message(
    rule: Rule, key: AlertKey, kind: NotificationKind, severity: Severity, value: float | None
) -> tuple[str, str]:
    """(title, plain text) of ``rule``'s notification for ``key``, ``value`` being the metric.

    The title is the message's first line: what broke and how bad, e.g. ``FIRING [critical]:
    http_error_rate on route /api/orders is 23.1% (> 10.0%)``; a RESOLVED title says what the
    value is now and what it fired at. The text repeats it with the window and ends with the
    rule's ``summary`` (else its description). A SQL rule's value is named "sql".
    """
    where = _where(rule, key)
    title, text = _rule_texts(rule, where, kind, severity, value)
    excess = len(title) - TITLE_BUDGET
    if excess > 0 and key.group:
        # A long rule name: the group gives way so the header keeps the value and threshold.
        limit = max(GROUP_IN_TITLE_MIN, GROUP_IN_TITLE - excess)
        title, _ = _rule_texts(rule, _where(rule, key, limit), kind, severity, value)
    return title, text


def _rule_texts(
    rule: Rule, where: str, kind: NotificationKind, severity: Severity, value: float | None
) -> tuple[str, str]:
    metric_label = rule.metric or "sql"
    unit = unit_of(rule.metric)
    shown = format_value(unit, value)
    limit = format_value(unit, rule.threshold_value(severity))
    condition = f"{rule.comparator.value} {limit}"
    window = format_duration(rule.window)
    if kind is NotificationKind.RESOLVED:
        now_value = _now_value(unit, value, rule.window)
        title = f"RESOLVED: {rule.name}{where} {now_value} (fired at {severity.value} {condition})"
        text = f"{rule.name}{where} resolved: {metric_label} {now_value} over {window}"
    elif value is None:
        title = f"{_VERB[kind]} [{severity.value}]: {rule.name}{where}: no data for {window}"
        text = f"{rule.name}{where}: no data for {window}"
    else:
        title = f"{_VERB[kind]} [{severity.value}]: {rule.name}{where} is {shown} ({condition})"
        text = f"{rule.name}{where}: {metric_label} is {shown} ({condition}, window {window})"
    explanation = rule.summary or rule.description
    if explanation:
        text = f"{text}. {explanation}"
    return title, text


def rule_error_message(rule: str, error: str) -> tuple[str, str]:
    """(title, text) when a rule cannot be evaluated."""
    line = first_error_line(error)
    return (
        f"Alert rule {rule} cannot be evaluated: {line}",
        f"Rule {rule} failed to evaluate and is not watching anything: {line}",
    )


def run_failure_message(
    job_name: str, run_id: str, error: str, step: str | None = None
) -> tuple[str, str]:
    """(title, text) for a failed Dagster run: the failing step and the first line of its error
    (secrets redacted, at most 300 characters)."""
    line = first_error_line(error)
    at_step = f" at step {step}" if step else ""
    return (
        f"FAILED: Dagster run of {job_name}{at_step}: {line}",
        f"Run {run_id[:8]} of {job_name} failed{at_step}: {line}",
    )


def evaluation_late_message(last: datetime) -> tuple[str, str]:
    """(title, text) when the rule evaluation has not completed since ``last`` (UTC)."""
    return (
        f"Alert rules are not being evaluated (none since {last:%Y-%m-%d %H:%M} UTC)",
        f"The alert sensor has not completed an evaluation since {last:%Y-%m-%d %H:%M} UTC: "
        "no rule is watching. Check the alert_rules_sensor ticks in Dagster.",
    )


# --- Block Kit ----------------------------------------------------------------------------
def _plain(text: str, limit: int = HEADER_LIMIT) -> dict[str, Any]:
    return {"type": "plain_text", "text": clip(text, limit), "emoji": True}


def _mrkdwn(text: str, limit: int = SECTION_LIMIT) -> dict[str, Any]:
    """A mrkdwn text object of already-escaped ``text``, cut to ``limit``."""
    return {"type": "mrkdwn", "text": clip(text, limit)}


def _fields(notification: Notification) -> list[dict[str, Any]]:
    unit = notification.unit
    fields = []
    if notification.severity is not None:
        fields.append(f"*Severity*\n{notification.severity.value}")
    if notification.value is not None:
        fields.append(f"*Value*\n{format_value(unit, notification.value)}")
    if notification.threshold is not None:
        fields.append(
            f"*Threshold*\n{escape(notification.comparator or '')} "
            f"{format_value(unit, notification.threshold)}"
        )
    if notification.window is not None:
        fields.append(f"*Window*\n{format_duration(notification.window)}")
    if notification.key.group:
        fields.append(f"*Group*\n{escape(notification.key.group)}")
    return [_mrkdwn(text, FIELD_LIMIT) for text in fields[:MAX_FIELDS]]


def dagster_target(notification: Notification) -> tuple[str, str]:
    """(what, path in the Dagster UI) of what the alert is about: the failed run, the asset a
    metric is computed from (the policy's asset for housekeeping health), else the sensor that
    evaluates the rules."""
    if notification.run_id:
        return f"run {notification.run_id[:8]}", f"/runs/{notification.run_id}"
    labels = notification.labels
    spec = BUILTIN_METRICS.get(labels.get("metric", ""))
    if spec is not None and spec.source in (Source.POLICY_HEALTH, Source.POLICY_FAILURES):
        policy = labels.get(GroupBy.POLICY.value) or notification.key.group
        if policy:
            return f"asset housekeeping/{policy}", f"/assets/housekeeping/{quote(policy)}"
    if spec is not None and spec.source in _SOURCE_ASSET:
        path = "/".join(_SOURCE_ASSET[spec.source])
        return f"asset {path}", f"/assets/{path}"
    return f"sensor {RULES_SENSOR}", f"/locations/{CODE_LOCATION}/sensors/{RULES_SENSOR}"


def _look_at(notification: Notification, webserver_url: str | None) -> tuple[str, str]:
    """("Look at: ..." in mrkdwn, the same in plain text)."""
    what, path = dagster_target(notification)
    if webserver_url:
        return (
            f"Look at: <{webserver_url}{path}|{escape(what)}>",
            f"Look at: {what} ({webserver_url}{path})",
        )
    return f"Look at: {escape(what)} in Dagster", f"Look at: {what} in Dagster"


def _at(moment: datetime, reference: datetime) -> str:
    return (
        f"{moment:%H:%M} UTC"
        if moment.date() == reference.date()
        else f"{moment:%Y-%m-%d %H:%M} UTC"
    )


def _elapsed(delta: timedelta) -> str:
    """How long an alert fired, as a person reads it: whole seconds under a minute, else whole
    minutes (``42s``, ``150m``, ``2h``); the evaluation times are not minute-aligned, so the
    exact difference would print as ``41816.6ms``."""
    seconds = delta.total_seconds()
    unit = 1 if seconds < 60 else 60
    return format_duration(timedelta(seconds=max(round(seconds / unit), 1) * unit))


def _since(notification: Notification, since: datetime | None) -> str:
    """Since when: the firing's start (its FIRING notification), the resolution's time."""
    at = notification.evaluated_at
    start = since or at
    if notification.kind is NotificationKind.RESOLVED:
        if since is None:
            return f"Resolved at {_at(at, at)}"
        return (
            f"Fired {_at(start, at)}, resolved {_at(at, at)} "
            f"after {_elapsed(at - start) if at > start else 'under a minute'}"
        )
    if notification.kind is NotificationKind.RUN_FAILURE:
        return f"Failed at {_at(at, at)}"
    if notification.kind in (NotificationKind.ESCALATED, NotificationKind.RENOTIFY) and at > start:
        return f"Firing since {_at(start, at)} ({_elapsed(at - start)})"
    return f"Since {_at(start, at)}"


def _context(notification: Notification) -> dict[str, Any]:
    labels = ", ".join(
        f"{name}={one_line(value)}" for name, value in sorted(notification.labels.items())
    )
    at = notification.evaluated_at.strftime("%Y-%m-%d %H:%M UTC")
    text = f"{at} · rule `{notification.key.rule}`" + (f" · {labels}" if labels else "")
    return {"type": "context", "elements": [_mrkdwn(escape(text))]}


def _link(webserver_url: str | None, notification: Notification) -> list[dict[str, Any]]:
    if not webserver_url:
        return []
    what, path = dagster_target(notification)
    return [
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "text": _plain(f"Open the {what.split()[0]} in Dagster", BUTTON_LIMIT),
                    "url": clip(f"{webserver_url}{path}", 3000),
                }
            ],
        }
    ]


def render(
    notifications: Sequence[Notification],
    webserver_url: str | None = None,
    since: datetime | None = None,
    details: Sequence[str] = (),
) -> SlackMessage:
    """One message for one notification, or for a burst of one rule's firings in one tick.

    Line 1 (the header) is the title: what broke, how bad. Line 2 (the first section) says since
    when (``since``: the alert's FIRING evaluation, from the outbox; default the notification's
    own) and where to look (the Dagster asset, run or sensor; a link with ``webserver_url``).
    ``details`` (e.g. a policy's last error, plain text) follow, then the notification's text,
    its fields, labels and the button. Every element is within Slack's limits.
    """
    first = notifications[0]
    icon = ":white_check_mark:" if first.kind is NotificationKind.RESOLVED else ""
    if first.severity is not None and not icon:
        icon = _ICON[first.severity]
    look_mrkdwn, look_plain = _look_at(first, webserver_url)
    if len(notifications) == 1:
        title = first.title
        body = first.text
        fields = _fields(first)
    else:
        unit = first.unit
        worst = max(
            (item.severity for item in notifications if item.severity is not None),
            key=lambda severity: severity.rank,
            default=first.severity,
        )
        title = (
            f"FIRING [{worst.value if worst else ''}]: {first.key.rule} on "
            f"{len(notifications)} groups"
        )
        lines = [
            f"• {clip(one_line(item.key.group) or 'all', GROUP_IN_TITLE)}: "
            f"{format_value(unit, item.value)}"
            + (f" ({item.severity.value})" if item.severity else "")
            for item in notifications[:MAX_GROUPS_LISTED]
        ]
        if len(notifications) > MAX_GROUPS_LISTED:
            lines.append(f"… and {len(notifications) - MAX_GROUPS_LISTED} more")
        if first.threshold is not None and first.window is not None:
            lines.append(
                f"{first.comparator} {format_value(unit, first.threshold)}, "
                f"window {format_duration(first.window)}"
            )
        body = "\n".join(lines)
        fields = []
    second = "" if first.kind is NotificationKind.SUMMARY else _since(first, since)
    line2_plain = f"{second} · {look_plain}" if second else ""
    line2 = f"{escape(second)} · {look_mrkdwn}" if second else ""
    blocks: list[dict[str, Any]] = [{"type": "header", "text": _plain(f"{icon} {title}".strip())}]
    if line2:
        blocks.append({"type": "section", "text": _mrkdwn(line2)})
    rest = [*details, body]
    blocks.append({"type": "section", "text": _mrkdwn(escape("\n".join(rest)))})
    if fields:
        blocks.append({"type": "section", "fields": fields})
    blocks.append(_context(first))
    blocks.extend(_link(webserver_url, first))
    plain = "\n".join(line for line in (clip(title, 1000), line2_plain, *rest) if line)
    text_lines = [escape(clip(title, 1000)), line2, *(escape(line) for line in rest)]
    return SlackMessage(
        channel=first.channel,
        text=clip("\n".join(line for line in text_lines if line), TEXT_SHOWN),
        blocks=blocks[:MAX_BLOCKS],
        thread_of=first if first.kind is NotificationKind.RESOLVED else None,
        plain=clip(plain, TEXT_SHOWN),
    )
