"""The transports to Slack: the Web API (bot token), an incoming webhook, or the console.

``sender_from_environment`` picks one from SLACK_BOT_TOKEN / SLACK_WEBHOOK_URL. A sender sends one
rendered message (messages.py) and turns Slack's answers into the errors delivery.py acts on:
``TransientError`` (retry later: 429, 5xx, timeouts), ``DeliveryError`` (the token: an operator
must fix it), ``ChannelError`` (this channel cannot take messages), ``MessageRejected`` (this one
message is refused). The bot token never appears in an error.

Exactly once: the Web API sender tags every post with the notification's id in Slack message
metadata (``event_type`` hk_alert_notification, ``event_payload.notification_id``), and
``find`` looks that id up in the channel's history (or the thread's replies) so delivery.py can
tell, after an attempt whose outcome it does not know (a timeout, a reset connection, a 5xx),
whether Slack posted it after all. Looking up needs the ``channels:history`` (and
``groups:history`` for private channels) scopes; without them ``find`` raises
``LookupUnavailable``.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.error
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

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
# This message's layout or text is refused: a plain-text message may still go through.
MESSAGE_ERRORS = {
    "invalid_blocks",
    "invalid_blocks_format",
    "msg_too_long",
    "no_text",
    "invalid_attachments",
    "too_many_attachments",
    "invalid_metadata_format",
    "invalid_metadata_schema",
    "metadata_too_large",
    "invalid_payload",
}
CONNECTION_ERRORS = (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, OSError)
# The message metadata every post carries: its notification id (delivery.py) is how a retry
# finds a post whose answer never came.
EVENT_TYPE = "hk_alert_notification"
HISTORY_PAGE = 200
HISTORY_PAGES = 10  # at most 2,000 messages are searched for a post
# A post is searched from this long before the notification was stored (clock skew).
HISTORY_MARGIN = timedelta(minutes=2)


class DeliveryError(HkError):
    """Slack refused the messages for a reason an operator must fix (the token, a channel)."""


class TransientError(HkError):
    """Slack cannot take the message now (429, 5xx, a timeout); ``retry_after`` when it said."""

    def __init__(self, message: str, retry_after: timedelta | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class LookupUnavailable(HkError):
    """Slack's history cannot be searched for an earlier post (a missing scope, no channel id)."""


class Sender:
    """A transport. ``send`` posts one message; ``find`` tells whether an earlier attempt
    posted it (the Web API only: ``finds_posts``)."""

    description: str = ""
    finds_posts = False

    def send(
        self,
        message: SlackMessage,
        thread: tuple[str, str] | None,
        notification_id: str | None = None,
    ) -> tuple[str, str]:
        """Send; return (channel id, ts) or ("", "") where the transport has none."""
        raise NotImplementedError

    def find(
        self,
        channel: str,
        notification_id: str,
        oldest: datetime,
        thread: tuple[str, str] | None = None,
    ) -> tuple[str, str] | None:
        """(channel id, ts) of the post tagged ``notification_id`` since ``oldest``, or None
        (always None for a transport that keeps no history to search)."""
        return None


class ConsoleSender(Sender):
    """Writes each message's plain text to ``write`` (print, click.echo, a Dagster log)."""

    description = "console (Slack is not configured: set SLACK_BOT_TOKEN or SLACK_WEBHOOK_URL)"

    def __init__(self, write: Callable[[str], None] = print) -> None:
        self.write = write

    def send(
        self,
        message: SlackMessage,
        thread: tuple[str, str] | None,
        notification_id: str | None = None,
    ) -> tuple[str, str]:
        # The message's further lines indented under its first, as one block in a log.
        self.write(f"[alert -> {message.channel}] {message.plain}".replace("\n", "\n    "))
        return "", ""


class SlackWebSender(Sender):
    """chat.postMessage through slack-sdk's WebClient; resolved messages reply in the thread."""

    finds_posts = True

    def __init__(self, token: str, base_url: str | None = None, timeout: int = 10) -> None:
        base = (base_url or DEFAULT_SLACK_API_BASE_URL).rstrip("/") + "/"
        # Retries are ours (they must survive restarts): the client itself does not retry.
        self.client = WebClient(token=token, base_url=base, timeout=timeout, retry_handlers=[])
        self.description = f"Slack Web API at {base}"
        self._channel_ids: dict[str, str] = {}  # "#alerts" -> its id, learnt from answers

    def send(
        self,
        message: SlackMessage,
        thread: tuple[str, str] | None,
        notification_id: str | None = None,
    ) -> tuple[str, str]:
        """Post ``message`` (in ``thread``, broadcast, when given), tagged ``notification_id``.

        Raises TransientError (429, 5xx, timeouts: whether it was posted is then unknown),
        DeliveryError (the token), ChannelError, MessageRejected (this layout or text).
        """
        channel = thread[0] if thread else message.channel
        metadata = (
            {"event_type": EVENT_TYPE, "event_payload": {"notification_id": notification_id}}
            if notification_id
            else None
        )
        try:
            response = self.client.chat_postMessage(
                channel=channel,
                text=message.text,
                blocks=message.blocks or None,
                thread_ts=thread[1] if thread else None,
                reply_broadcast=bool(thread),
                unfurl_links=False,
                metadata=metadata,
            )
        except SlackApiError as exc:
            raise _classify(exc) from None
        except SlackRequestError as exc:
            raise TransientError(f"Slack request failed: {exc}") from None
        except CONNECTION_ERRORS as exc:
            raise TransientError(f"cannot reach Slack: {_describe_connection(exc)}") from None
        channel_id = str(response.get("channel", ""))
        if channel_id and not thread:
            self._channel_ids[message.channel] = channel_id
        return channel_id, str(response.get("ts", ""))

    def find(
        self,
        channel: str,
        notification_id: str,
        oldest: datetime,
        thread: tuple[str, str] | None = None,
    ) -> tuple[str, str] | None:
        """(channel id, ts) of the message tagged ``notification_id`` posted since ``oldest``.

        ``channel`` is a channel id or a name (resolved through answers seen before, else
        ``conversations.list``); with ``thread`` (channel id, ts) the thread's replies are
        searched (``conversations.replies``), else the channel's history
        (``conversations.history`` with ``include_all_metadata``), newest first, at most
        HISTORY_PAGES pages of HISTORY_PAGE messages. Raises TransientError (Slack cannot answer
        now) or LookupUnavailable (a missing scope, a channel that cannot be read).
        """
        since = f"{(oldest - HISTORY_MARGIN).timestamp():.6f}"
        try:
            if thread is not None:
                channel_id = thread[0]
                pages = self._pages(
                    self.client.conversations_replies,
                    "messages",
                    channel=channel_id,
                    ts=thread[1],
                    oldest=since,
                    include_all_metadata=True,
                )
            else:
                channel_id = self._resolve(channel)
                pages = self._pages(
                    self.client.conversations_history,
                    "messages",
                    channel=channel_id,
                    oldest=since,
                    inclusive=True,
                    include_all_metadata=True,
                )
            for item in pages:
                metadata = item.get("metadata") or {}
                payload = metadata.get("event_payload") or {}
                if (
                    metadata.get("event_type") == EVENT_TYPE
                    and payload.get("notification_id") == notification_id
                ):
                    return channel_id, str(item.get("ts", ""))
        except SlackApiError as exc:
            problem = _classify(exc)
            if isinstance(problem, TransientError):
                raise problem from None
            raise LookupUnavailable(
                f"cannot search {channel} for an earlier post ({problem}): add the "
                "channels:history / groups:history scopes to the Slack app"
            ) from None
        except (SlackRequestError, *CONNECTION_ERRORS) as exc:
            raise TransientError(f"cannot reach Slack: {_describe_connection(exc)}") from None
        return None

    def _resolve(self, channel: str) -> str:
        """The id of ``channel`` (a #name or an id): from earlier answers, else conversations.list;
        a name Slack does not list is taken for an id."""
        if channel in self._channel_ids:
            return self._channel_ids[channel]
        name = channel.lstrip("#")
        for item in self._pages(
            self.client.conversations_list,
            "channels",
            types="public_channel,private_channel",
            exclude_archived=True,
        ):
            if item.get("name") == name or item.get("id") == channel:
                self._channel_ids[channel] = str(item["id"])
                return self._channel_ids[channel]
        return channel

    def _pages(self, method: Callable[..., Any], key: str, **params: Any) -> Iterator[dict]:
        cursor = None
        for _ in range(HISTORY_PAGES):
            response = method(limit=HISTORY_PAGE, cursor=cursor, **params)
            yield from response.get(key) or []
            cursor = (response.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return

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


class SlackWebhookSender(Sender):
    """An incoming webhook: one fixed channel, no threads, no history (no exactly-once)."""

    description = "Slack incoming webhook"

    def __init__(self, url: str, timeout: int = 10) -> None:
        self.client = WebhookClient(url, timeout=timeout, retry_handlers=[])

    def send(
        self,
        message: SlackMessage,
        thread: tuple[str, str] | None,
        notification_id: str | None = None,
    ) -> tuple[str, str]:
        try:
            response = self.client.send(text=message.text, blocks=message.blocks or None)
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
            if body in MESSAGE_ERRORS:
                raise MessageRejected(f"Slack refused the message ({body})")
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
            "(chat:write, files:write, channels:history, groups:history, channels:read, "
            "groups:read)"
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
