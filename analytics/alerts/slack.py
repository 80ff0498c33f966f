"""The transports to Slack: the Web API (bot token), an incoming webhook, or the console.

``sender_from_environment`` picks one from SLACK_BOT_TOKEN / SLACK_WEBHOOK_URL. A sender sends one
rendered message (messages.py) and turns Slack's answers into the errors delivery.py acts on:
``TransientError`` (retry later: 429, 5xx, timeouts), ``DeliveryError`` (the token: an operator
must fix it), ``ChannelError`` (this channel cannot take messages), ``MessageRejected`` (this one
message is refused). The bot token never appears in an error.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.error
from collections.abc import Callable
from datetime import timedelta
from typing import Protocol

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.webhook import WebhookClient

from analytics.alerts.messages import SlackMessage
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


class DeliveryError(HkError):
    """Slack refused the messages for a reason an operator must fix (the token, a channel)."""


class TransientError(HkError):
    """Slack cannot take the message now (429, 5xx, a timeout); ``retry_after`` when it said."""

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
    """The Web API with $SLACK_BOT_TOKEN, else the webhook $SLACK_WEBHOOK_URL, else ``write``."""
    token = os.environ.get("SLACK_BOT_TOKEN")
    if token:
        return SlackWebSender(token, os.environ.get("SLACK_API_BASE_URL"))
    webhook = os.environ.get("SLACK_WEBHOOK_URL")
    if webhook:
        return SlackWebhookSender(webhook)
    return ConsoleSender(write)
