"""The alerting vocabulary shared by the rule evaluator and the notification delivery.

The evaluator (rules.py, state.py, evaluate.py) turns rule results into `AlertRecord` state
changes and `Notification`s; the store (store.py) persists both in one transaction, and delivery
(delivery.py) sends the stored notifications to Slack or the console. Nothing here imports Dagster.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from analytics.alerts.catalog import Unit


class AlertState(StrEnum):
    OK = "ok"
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


class Severity(StrEnum):
    WARNING = "warning"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {Severity.WARNING: 1, Severity.HIGH: 2, Severity.CRITICAL: 3}


class NotificationKind(StrEnum):
    FIRING = "firing"  # an alert started firing
    ESCALATED = "escalated"  # a firing alert moved to a higher severity
    RENOTIFY = "renotify"  # still firing after the rule's renotify interval
    RESOLVED = "resolved"  # back under the recovery threshold
    RUN_FAILURE = "run_failure"  # one of the pipeline's own Dagster runs failed
    SYSTEM = "system"  # the alerting itself is unhealthy (sensor failing, rollups stale)
    SUMMARY = "summary"  # the scheduled daily summary


class OutboxStatus(StrEnum):
    """Where a stored notification is in its delivery (store.py, delivery.py)."""

    PENDING = "pending"  # not sent yet (including while it waits to be retried)
    SENT = "sent"  # Slack (or the console) accepted it
    FAILED = "failed"  # refused for good (a channel error, an invalid message): not retried


@dataclass(frozen=True, order=True)
class AlertKey:
    """One alert instance: a rule and one value of its grouping ("" when the rule is ungrouped)."""

    rule: str
    group: str = ""


@dataclass
class AlertRecord:
    """The persisted state of one (rule, group) between evaluations."""

    key: AlertKey
    state: AlertState = AlertState.OK
    severity: Severity | None = None
    pending_since: datetime | None = None
    firing_since: datetime | None = None
    last_value: float | None = None
    last_notified_at: datetime | None = None
    updated_at: datetime | None = None
    # Since when each severity's threshold has held without a break (its `for` counts from here).
    breach_since: dict[Severity, datetime] = field(default_factory=dict)
    # The first evaluation without data while the rule's no_data is ``keep`` (None: data now).
    no_data_since: datetime | None = None
    # A silence held back the notification of the newest change: FIRING (nobody heard of this
    # alert) or ESCALATED (heard at a lower severity); sent once no silence covers it.
    unannounced: NotificationKind | None = None


@dataclass(frozen=True)
class Notification:
    """One message to send, stored in the outbox before any attempt to send it.

    Times are timezone-aware UTC. ``evaluated_at`` is the evaluation (sensor tick) that produced
    it: delivery groups the FIRING notifications of one rule from one evaluation into one message.
    Messages carry aggregates and route/queue/service names only: never tokens, user ids, IPs or
    emails.
    """

    key: AlertKey
    kind: NotificationKind
    severity: Severity | None
    channel: str
    title: str
    text: str  # plain-text fallback; delivery renders Block Kit from the fields below
    evaluated_at: datetime
    value: float | None = None
    threshold: float | None = None
    comparator: str | None = None
    window: timedelta | None = None
    labels: dict[str, str] = field(default_factory=dict)
    run_id: str | None = None  # RUN_FAILURE: the failed Dagster run
    unit: Unit | None = None  # the metric's unit (catalog.py); None: a SQL rule, or no value
