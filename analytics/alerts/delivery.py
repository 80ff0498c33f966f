"""Draining the outbox through a sender (slack.py: Slack's bot token or webhook, or the console).

Rows go out in id order, exactly once as far as Slack lets us know:

- an attempt is counted in the row BEFORE the post, and every post carries the row's
  notification id in Slack message metadata. A row still pending with an earlier attempt (the
  answer timed out, the connection was reset, Slack answered 5xx, or the process died before
  marking it sent) is first looked up in the channel's history (``conversations.history``, or
  the thread's replies): found, its ts is recorded and nothing is posted again;
- the remaining window for a duplicate (docs/alerts.md): a webhook (no history to search), a
  bot without the ``channels:history`` / ``groups:history`` scopes (``LookupUnavailable``: the
  row is posted again and the outbox notes why), or a post Slack makes visible in the history
  only after our look-up;
- 429: the row waits for Retry-After; 5xx, timeouts and connection errors back off (doubling, up to
  ``alerts.max_retry_interval``). Either stops this drain, so later messages never overtake.
  ``respect_backoff=False`` (``hk alerts deliver``) tries now whatever the wait;
- ``invalid_auth`` and other token errors stop the drain with a clear error and back off: the rows
  stay pending (nothing is lost) until the token is fixed. No crash loop, no retry storm;
- ``channel_not_found`` and other per-channel errors mark that channel's rows failed (visible in
  ``hk alerts list --outbox``) and the drain goes on with other channels;
- a layout Slack refuses (``invalid_blocks``, ``msg_too_long``, ...) is sent again as plain text
  (the row is sent, its ``last_error`` says so); only a refused plain text fails the row;
- a RESOLVED replies in the thread of the alert's latest message in EVERY channel it was posted
  to since it started firing (an escalation to ``#oncall`` hears the all-clear there too);
- at most one message per second per channel (``alerts.min_interval_per_channel``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from analytics.alerts.messages import SlackMessage, render
from analytics.alerts.model import Notification, NotificationKind
from analytics.alerts.settings import AlertsSettings
from analytics.alerts.slack import (
    ChannelError,
    DeliveryError,
    LookupUnavailable,
    MessageRejected,
    Sender,
    TransientError,
)
from analytics.alerts.store import AlertStore, Episode, OutboxRow

BASE_RETRY = timedelta(seconds=10)


@dataclass
class DeliveryReport:
    sent: int = 0  # notifications delivered (a grouped message counts each of its rows)
    messages: int = 0
    failed: int = 0  # rows marked failed for good (channel errors)
    waiting: int = 0  # rows still pending after this drain
    error: str | None = None  # why the drain stopped early, for the log and the UI
    channel_errors: list[str] = field(default_factory=list)
    found: int = 0  # messages an earlier attempt had posted (found in Slack's history)
    plain_text: int = 0  # messages sent as plain text because Slack refused their blocks
    notes: list[str] = field(default_factory=list)  # what the outbox rows' last_error say


# Kinds that belong to an alert's firing episode: their messages carry "since" from its FIRING.
_EPISODE_KINDS = (
    NotificationKind.ESCALATED,
    NotificationKind.RENOTIFY,
    NotificationKind.RESOLVED,
)


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


def _post(
    sender: Sender,
    store: AlertStore,
    head: OutboxRow,
    message: SlackMessage,
    targets: list[tuple[str, str] | None],
    report: DeliveryReport,
) -> tuple[str, str, list[str]]:
    """Post ``message`` to each target (a thread, or None: the message's channel), looking each
    up first when an earlier attempt may have posted it; (channel id, ts) of the last one
    posted, and notes for the outbox row. Raises what the sender raises; of several threads, a
    channel Slack cannot post to (the app removed from it) is a note and a channel error of the
    report, and the others are still replied to: ChannelError only when every one fails."""
    notes: list[str] = []
    result = ("", "")
    refused: list[ChannelError] = []
    for thread in targets:
        notification_id = head.notification_id
        if len(targets) > 1 and thread is not None:
            notification_id = f"{notification_id}@{thread[0]}"
        found = None
        if head.attempts > 0 and sender.finds_posts:
            channel = store.channel_id(message.channel) or message.channel
            try:
                found = sender.find(
                    channel, notification_id, head.created_at or head.next_attempt_at, thread
                )
            except LookupUnavailable as exc:
                notes.append(f"posted again without a look-up: {exc}")
        if found is not None:
            result = found
            report.found += 1
            notes.append("an earlier attempt had posted it (found in Slack's history)")
            continue
        try:
            try:
                result = sender.send(message, thread, notification_id)
            except MessageRejected as exc:
                # A refused metadata goes too: the fallback must not fail for the same reason.
                tag = None if "metadata" in str(exc) else notification_id
                result = sender.send(message.without_blocks(), thread, tag)
                report.plain_text += 1
                notes.append(f"sent as plain text: {exc}")
        except ChannelError as exc:
            if thread is None or len(targets) == 1:
                raise
            refused.append(exc)
            error = f"Slack cannot reply in the thread in {thread[0]} ({exc}): invite the app"
            notes.append(error)
            report.channel_errors.append(error)
    if refused and len(refused) == len(targets):
        raise refused[-1]
    return result[0], result[1], notes


def deliver(
    store: AlertStore,
    sender: Sender,
    settings: AlertsSettings,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    sleep: Callable[[float], None] = time.sleep,
    time_budget: timedelta = timedelta(seconds=40),
    respect_backoff: bool = True,
    details: Callable[[Notification], Sequence[str]] | None = None,
) -> DeliveryReport:
    """Send pending outbox rows in order until done, a failure, or the time budget is spent.

    ``respect_backoff=False`` sends rows still waiting out a retry backoff (or a Retry-After)
    now. ``details`` gives extra lines of a notification's message (e.g. a policy's last error,
    service.py). Returns what was sent, failed, found already posted, and why it stopped.
    """
    report = DeliveryReport()
    started = now()
    last_sent: dict[str, datetime] = {}
    pending = store.pending()
    dead_channels: set[str] = set()
    webserver_url = settings.webserver_url()
    for batch in _batches(pending):
        ids = [row.id for row in batch]
        head = batch[0]
        item = head.notification
        channel = item.channel
        current = now()
        if respect_backoff and head.next_attempt_at > current:
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
        episode = (
            store.episode(item.key, head.id) if item.kind in _EPISODE_KINDS else Episode(None, [])
        )
        message = render(
            [row.notification for row in batch],
            webserver_url,
            since=episode.since,
            details=details(item) if details is not None else (),
        )
        targets: list[tuple[str, str] | None] = [None]
        if message.thread_of is not None and episode.posts:
            targets = list(episode.posts)
        store.mark_attempt(ids)
        try:
            slack_channel, ts, notes = _post(sender, store, head, message, targets, report)
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
            error = f"{exc}, even as plain text"
            store.mark_failed(ids, error)
            report.failed += len(ids)
            report.channel_errors.append(error)
            continue
        except DeliveryError as exc:
            backoff = settings.max_retry_interval
            store.mark_retry(ids, str(exc), now() + backoff)
            report.error = str(exc)
            break
        sent_at = now()
        store.mark_sent(ids, sent_at, slack_channel or None, ts or None, "; ".join(notes) or None)
        report.notes.extend(notes)
        last_sent[channel] = sent_at
        report.sent += len(ids)
        report.messages += 1
    report.waiting = len(store.pending())
    return report
