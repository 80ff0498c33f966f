"""Draining the outbox through a sender (slack.py: Slack's bot token or webhook, or the console).

Rows go out in id order. A row is marked sent only after Slack accepted it, so a failing tick or
a restart resends what was not confirmed; the one window for a duplicate is a crash between
Slack's answer and the next statement (marking it sent), which is a few milliseconds.

- 429: the row waits for Retry-After; 5xx, timeouts and connection errors back off (doubling, up to
  ``alerts.max_retry_interval``). Either stops this drain, so later messages never overtake.
- ``invalid_auth`` and other token errors stop the drain with a clear error and back off: the rows
  stay pending (nothing is lost) until the token is fixed. No crash loop, no retry storm.
- ``channel_not_found`` and other per-channel errors mark that channel's rows failed (visible in
  ``hk alerts list --outbox``) and the drain goes on with other channels.
- At most one message per second per channel (``alerts.min_interval_per_channel``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from analytics.alerts.messages import render
from analytics.alerts.model import NotificationKind
from analytics.alerts.settings import AlertsSettings
from analytics.alerts.slack import (
    ChannelError,
    DeliveryError,
    MessageRejected,
    Sender,
    TransientError,
)
from analytics.alerts.store import AlertStore, OutboxRow

BASE_RETRY = timedelta(seconds=10)


@dataclass
class DeliveryReport:
    sent: int = 0  # notifications delivered (a grouped message counts each of its rows)
    messages: int = 0
    failed: int = 0  # rows marked failed for good (channel errors)
    waiting: int = 0  # rows still pending after this drain
    error: str | None = None  # why the drain stopped early, for the log and the UI
    channel_errors: list[str] = field(default_factory=list)


def _batches(rows: Sequence[OutboxRow]) -> list[list[OutboxRow]]:
    """A burst of one rule's FIRING rows from one evaluation (same channel) is one message."""
    batches: list[list[OutboxRow]] = []
    for row in rows:
        item = row.notification
        if batches and item.kind is NotificationKind.FIRING:
            head = batches[-1][0].notification
            if (
                head.kind is NotificationKind.FIRING
                and head.key.rule == item.key.rule
                and head.evaluated_at == item.evaluated_at
                and head.channel == item.channel
            ):
                batches[-1].append(row)
                continue
        batches.append([row])
    return batches


def deliver(
    store: AlertStore,
    sender: Sender,
    settings: AlertsSettings,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    sleep: Callable[[float], None] = time.sleep,
    time_budget: timedelta = timedelta(seconds=40),
) -> DeliveryReport:
    """Send pending outbox rows in order until done, a failure, or the time budget is spent."""
    report = DeliveryReport()
    started = now()
    last_sent: dict[str, datetime] = {}
    pending = store.pending()
    dead_channels: set[str] = set()
    webserver_url = settings.webserver_url()
    for batch in _batches(pending):
        ids = [row.id for row in batch]
        head = batch[0]
        channel = head.notification.channel
        current = now()
        if head.next_attempt_at > current:
            report.error = report.error or (
                f"waiting until {head.next_attempt_at:%H:%M:%S} UTC to retry: {head.last_error}"
            )
            break
        if current - started > time_budget:
            break
        if channel in dead_channels:
            store.mark_failed(ids, f"{channel}: channel error earlier in this drain")
            report.failed += len(ids)
            continue
        previous = last_sent.get(channel)
        gap = settings.min_interval_per_channel
        if previous is not None and current - previous < gap:
            sleep((gap - (current - previous)).total_seconds())
        message = render([row.notification for row in batch], webserver_url)
        thread = None
        if message.thread_of is not None:
            thread = store.thread_of(head.notification.key, head.id)
        try:
            slack_channel, ts = sender.send(message, thread)
        except TransientError as exc:
            backoff = exc.retry_after or min(
                BASE_RETRY * (2 ** min(head.attempts, 10)), settings.max_retry_interval
            )
            store.mark_retry(ids, str(exc), now() + backoff)
            report.error = f"{exc}; retrying in {int(backoff.total_seconds())} s"
            break
        except ChannelError as exc:
            error = f"Slack cannot post to {channel} ({exc}): invite the app or fix the channel"
            store.mark_failed(ids, error)
            report.failed += len(ids)
            report.channel_errors.append(error)
            dead_channels.add(channel)
            continue
        except MessageRejected as exc:
            store.mark_failed(ids, str(exc))
            report.failed += len(ids)
            report.channel_errors.append(str(exc))
            continue
        except DeliveryError as exc:
            backoff = settings.max_retry_interval
            store.mark_retry(ids, str(exc), now() + backoff)
            report.error = str(exc)
            break
        sent_at = now()
        store.mark_sent(ids, sent_at, slack_channel or None, ts or None)
        last_sent[channel] = sent_at
        report.sent += len(ids)
        report.messages += 1
    report.waiting = len(store.pending())
    return report
