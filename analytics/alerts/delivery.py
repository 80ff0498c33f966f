"""Sending the outbox: Slack (bot token or webhook), or the console when Slack is not configured.

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

import json
import os
import socket
import time
import urllib.error
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.webhook import WebhookClient

from analytics.alerts.messages import SlackMessage, render
from analytics.alerts.model import NotificationKind
from analytics.alerts.settings import AlertsSettings
from analytics.alerts.store import AlertStore, OutboxRow
from housekeeping.errors import HkError

DEFAULT_SLACK_API_BASE_URL = "https://slack.com/api/"
# Token-level errors: every message would fail the same way.
AUTH_ERRORS = {
    "invalid_auth",
    "not_authed",
    "account_inactive",
    "token_revoked",
    "token_expired",
    "no_permission",
    "missing_scope",
}
# Channel-level errors: this channel's messages can never be delivered as configured.
CHANNEL_ERRORS = {"channel_not_found", "not_in_channel", "is_archived", "restricted_action"}
CONNECTION_ERRORS = (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, OSError)
BASE_RETRY = timedelta(seconds=10)


class DeliveryError(HkError):
    """Slack refused the messages for a reason an operator must fix (the token, a channel)."""


class TransientError(HkError):
    def __init__(self, message: str, retry_after: timedelta | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Sender(Protocol):
    description: str

    def send(self, message: SlackMessage, thread: tuple[str, str] | None) -> tuple[str, str]:
        """Send; return (channel id, ts) or ("", "") where the transport has none."""


class ConsoleSender:
    description = "console (Slack is not configured: set SLACK_BOT_TOKEN or SLACK_WEBHOOK_URL)"

    def __init__(self, write: Callable[[str], None] = print) -> None:
        self.write = write

    def send(self, message: SlackMessage, thread: tuple[str, str] | None) -> tuple[str, str]:
        self.write(f"[alert -> {message.channel}] {message.text}")
        return "", ""


class SlackWebSender:
    """chat.postMessage through slack-sdk's WebClient; resolved messages reply in the thread."""

    def __init__(self, token: str, base_url: str | None = None, timeout: int = 10) -> None:
        base = (base_url or DEFAULT_SLACK_API_BASE_URL).rstrip("/") + "/"
        # Retries are ours (they must survive restarts): the client itself does not retry.
        self.client = WebClient(token=token, base_url=base, timeout=timeout, retry_handlers=[])
        self.description = f"Slack Web API at {base}"

    def send(self, message: SlackMessage, thread: tuple[str, str] | None) -> tuple[str, str]:
        channel = thread[0] if thread else message.channel
        try:
            response = self.client.chat_postMessage(
                channel=channel,
                text=message.text,
                blocks=message.blocks,
                thread_ts=thread[1] if thread else None,
                reply_broadcast=bool(thread),
                unfurl_links=False,
            )
        except SlackApiError as exc:
            raise _classify(exc) from None
        except SlackRequestError as exc:
            raise TransientError(f"Slack request failed: {exc}") from None
        except CONNECTION_ERRORS as exc:
            raise TransientError(f"cannot reach Slack: {_describe_connection(exc)}") from None
        return str(response.get("channel", "")), str(response.get("ts", ""))

    def upload(
        self, channel: str, content: bytes, filename: str, title: str, thread_ts: str | None
    ) -> None:
        """Attach a file (the summary chart) to a channel, in a thread when given."""
        try:
            self.client.files_upload_v2(
                channel=channel,
                content=content,
                filename=filename,
                title=title,
                thread_ts=thread_ts,
            )
        except SlackApiError as exc:
            raise _classify(exc) from None
        except (SlackRequestError, *CONNECTION_ERRORS) as exc:
            raise TransientError(f"cannot upload to Slack: {_describe_connection(exc)}") from None


class SlackWebhookSender:
    """An incoming webhook: one fixed channel, no threads."""

    description = "Slack incoming webhook"

    def __init__(self, url: str, timeout: int = 10) -> None:
        self.client = WebhookClient(url, timeout=timeout, retry_handlers=[])

    def send(self, message: SlackMessage, thread: tuple[str, str] | None) -> tuple[str, str]:
        try:
            response = self.client.send(text=message.text, blocks=message.blocks)
        except CONNECTION_ERRORS as exc:
            raise TransientError(f"cannot reach Slack: {_describe_connection(exc)}") from None
        if response.status_code == 429:
            raise TransientError("Slack rate limit (429)", _retry_after(response.headers))
        if response.status_code >= 500:
            raise TransientError(f"Slack answered HTTP {response.status_code}")
        if response.status_code != 200:
            body = (response.body or "").strip()[:200]
            if body in CHANNEL_ERRORS:
                raise ChannelError(body)
            raise DeliveryError(
                f"Slack rejected the webhook (HTTP {response.status_code}: {body}); "
                "check SLACK_WEBHOOK_URL"
            )
        return "", ""


class ChannelError(HkError):
    """This channel cannot take messages (not found, archived, the app not invited)."""


class MessageRejected(HkError):
    """Slack refused this one message (e.g. invalid blocks): retrying would not help."""


def _describe_connection(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason or exc) or type(exc).__name__


def _retry_after(headers: dict | None) -> timedelta | None:
    for name, value in (headers or {}).items():
        if name.lower() == "retry-after":
            try:
                return timedelta(
                    seconds=max(1, int(float(value if isinstance(value, str) else value[0])))
                )
            except (TypeError, ValueError, IndexError):
                return None
    return None


def _classify(exc: SlackApiError) -> Exception:
    response = exc.response
    status = getattr(response, "status_code", 0)
    error = ""
    try:
        error = str(response.get("error", ""))
    except (AttributeError, TypeError, json.JSONDecodeError):
        error = ""
    if status == 429 or error == "ratelimited":
        return TransientError("Slack rate limit (429)", _retry_after(response.headers))
    if status >= 500:
        return TransientError(f"Slack answered HTTP {status}")
    if error in AUTH_ERRORS:
        return DeliveryError(
            f"Slack rejected the bot token ({error}): check SLACK_BOT_TOKEN and the app's scopes "
            "(chat:write, files:write)"
        )
    if error in CHANNEL_ERRORS:
        return ChannelError(error)
    return MessageRejected(f"Slack refused the message ({error or f'HTTP {status}'})")


def sender_from_environment(write: Callable[[str], None] = print) -> Sender:
    token = os.environ.get("SLACK_BOT_TOKEN")
    if token:
        return SlackWebSender(token, os.environ.get("SLACK_API_BASE_URL"))
    webhook = os.environ.get("SLACK_WEBHOOK_URL")
    if webhook:
        return SlackWebhookSender(webhook)
    return ConsoleSender(write)


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
