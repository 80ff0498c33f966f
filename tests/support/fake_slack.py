"""A real HTTP server standing in for Slack's Web API and incoming webhooks.

slack-sdk talks to it through ``SLACK_API_BASE_URL`` (``server.base_url``). It records every
request and answers like Slack, or as a test scripts it: ``server.fail_next(...)`` queues answers
(429 with Retry-After, 500, an error code such as invalid_auth, a hang, or a post that is
accepted and then answered too late, ``Scripted(accept_then_delay=...)``, or with a 5xx,
``Scripted(accept_then_status=...)``).

Like Slack it keeps the messages posted per channel (``C_<name>`` ids), with their message
metadata, and serves them through ``conversations.history`` / ``conversations.replies`` (the
metadata only with ``include_all_metadata``; a channel name instead of an id is
``channel_not_found``) and ``conversations.list``. It refuses Block Kit over Slack's limits
(``invalid_blocks``) and a top-level text over 40,000 characters (``msg_too_long``);
``refuse_blocks`` makes it refuse every message that has blocks, as Slack does with a layout it
dislikes for reasons of its own; ``removed_from`` answers ``not_in_channel`` for its channels.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs


@dataclass
class Call:
    method: str  # e.g. "chat.postMessage", or "webhook"
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class Scripted:
    status: int = 200
    error: str | None = None
    retry_after: int | None = None
    hang_seconds: float = 0.0
    # chat.postMessage: the message is posted (kept, visible in the history), and the answer
    # comes this many seconds later (after the client's timeout, in the tests that use it).
    accept_then_delay: float = 0.0
    # chat.postMessage: the message is posted (kept, visible in the history), then answered
    # with this HTTP status (a 5xx from a proxy or Slack's edge after the post was recorded).
    accept_then_status: int = 0


# Slack's Block Kit limits (https://docs.slack.dev/reference/block-kit/blocks).
MAX_BLOCKS = 50
MAX_HEADER_TEXT = 150
MAX_SECTION_TEXT = 3000
MAX_FIELDS = 10
MAX_FIELD_TEXT = 2000
MAX_CONTEXT_ELEMENTS = 10
MAX_BUTTON_TEXT = 75
MAX_URL = 3000
MAX_MESSAGE_TEXT = 40000


def block_problems(blocks: list[dict[str, Any]]) -> list[str]:
    """What Slack would refuse in ``blocks`` (empty: acceptable), as Slack checks its limits."""
    problems = []
    if len(blocks) > MAX_BLOCKS:
        problems.append(f"{len(blocks)} blocks (max {MAX_BLOCKS})")
    for index, block in enumerate(blocks):
        kind = block.get("type")
        text = (block.get("text") or {}).get("text", "")
        if kind == "header" and len(text) > MAX_HEADER_TEXT:
            problems.append(f"block {index}: header text {len(text)} chars")
        if kind == "section":
            if len(text) > MAX_SECTION_TEXT:
                problems.append(f"block {index}: section text {len(text)} chars")
            fields = block.get("fields") or []
            if len(fields) > MAX_FIELDS:
                problems.append(f"block {index}: {len(fields)} fields")
            for field_ in fields:
                if len(field_.get("text", "")) > MAX_FIELD_TEXT:
                    problems.append(f"block {index}: a field of {len(field_['text'])} chars")
            if not text and not fields:
                problems.append(f"block {index}: empty section")
        if kind == "context" and len(block.get("elements") or []) > MAX_CONTEXT_ELEMENTS:
            problems.append(f"block {index}: {len(block['elements'])} context elements")
        if kind == "actions":
            for element in block.get("elements") or []:
                if len((element.get("text") or {}).get("text", "")) > MAX_BUTTON_TEXT:
                    problems.append(f"block {index}: button text too long")
                if len(element.get("url", "")) > MAX_URL:
                    problems.append(f"block {index}: button url too long")
    return problems


@dataclass
class Message:
    """A message as Slack keeps it in a channel."""

    channel: str  # the channel id, C_<name>
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    metadata: dict[str, Any] | None
    thread_ts: str | None


@dataclass
class FakeSlack:
    calls: list[Call] = field(default_factory=list)
    script: list[Scripted] = field(default_factory=list)
    down: bool = False  # every request answers 503 while set
    refuse_blocks: bool = False  # every message with blocks answers invalid_blocks while set
    # Channels (ids or #names) the app was removed from: a post there answers not_in_channel.
    removed_from: set[str] = field(default_factory=set)
    messages: list[Message] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ts: int = 1000

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/api/"

    @property
    def webhook_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/webhook/T000/B000/secret"

    def fail_next(self, *answers: Scripted) -> None:
        with self._lock:
            self.script.extend(answers)

    def posted(self) -> list[Call]:
        """Accepted chat.postMessage calls (and webhook posts), in order."""
        return [
            call
            for call in self.calls
            if call.body.get("_accepted") and call.method in ("chat.postMessage", "webhook")
        ]

    def channel_messages(self, channel: str) -> list[Message]:
        """The messages kept in ``channel`` (an id or a #name), oldest first, replies included."""
        channel_id = _channel_id(channel)
        return [message for message in self.messages if message.channel == channel_id]

    def _post(self, body: dict[str, Any]) -> tuple[dict[str, Any], Message | None]:
        """Check and keep a chat.postMessage; the answer's payload (and the message if kept)."""
        blocks = body.get("blocks") or []
        if isinstance(blocks, str):
            blocks = json.loads(blocks)
        text = body.get("text") or ""
        if len(text) > MAX_MESSAGE_TEXT:
            return {"ok": False, "error": "msg_too_long"}, None
        if blocks and (self.refuse_blocks or block_problems(blocks)):
            return {"ok": False, "error": "invalid_blocks"}, None
        if _channel_id(body.get("channel", "")) in {_channel_id(c) for c in self.removed_from}:
            return {"ok": False, "error": "not_in_channel"}, None
        metadata = body.get("metadata")
        if isinstance(metadata, str):
            metadata = json.loads(metadata)
        with self._lock:
            # Slack's ts: the post's wall-clock time in microseconds, unique per channel
            self._ts = max(self._ts + 1, int(time.time() * 1_000_000))
            ts = f"{self._ts // 1_000_000}.{self._ts % 1_000_000:06d}"
            message = Message(
                _channel_id(body.get("channel", "")),
                ts,
                text,
                blocks,
                metadata,
                body.get("thread_ts") or None,
            )
            self.messages.append(message)
        return {"ok": True, "channel": message.channel, "ts": ts}, message

    def _read(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        """conversations.history / .replies / .list, paged by ``limit`` and ``cursor``."""
        if method == "conversations.list":
            with self._lock:
                ids = sorted({message.channel for message in self.messages})
            items: list[dict[str, Any]] = [{"id": id_, "name": id_[2:]} for id_ in ids]
            key = "channels"
        else:
            channel = body.get("channel", "")
            if not channel.startswith("C_"):
                return {"ok": False, "error": "channel_not_found"}
            oldest = float(body.get("oldest") or 0)
            with_metadata = str(body.get("include_all_metadata", "")).lower() in ("1", "true")
            with self._lock:
                kept = [message for message in self.messages if message.channel == channel]
            if method == "conversations.history":  # newest first, top-level messages
                kept = [message for message in reversed(kept) if message.thread_ts is None]
            else:  # the thread's parent, then its replies, oldest first
                parent = body.get("ts", "")
                kept = [m for m in kept if m.ts == parent or m.thread_ts == parent]
            items = []
            for message in kept:
                if float(message.ts) < oldest:
                    continue
                item: dict[str, Any] = {"type": "message", "ts": message.ts, "text": message.text}
                if message.thread_ts:
                    item["thread_ts"] = message.thread_ts
                if with_metadata and message.metadata:
                    item["metadata"] = message.metadata
                items.append(item)
            key = "messages"
        start = int(body.get("cursor") or 0)
        limit = int(body.get("limit") or 100)
        page = items[start : start + limit]
        more = start + limit < len(items)
        return {
            "ok": True,
            key: page,
            "has_more": more,
            "response_metadata": {"next_cursor": str(start + limit) if more else ""},
        }

    def start(self) -> FakeSlack:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length) if length else b""
                if self.path.startswith("/upload/"):
                    call = Call(
                        "upload", {"bytes": len(data), "png": data[:8] == b"\x89PNG\r\n\x1a\n"}, {}
                    )
                    call.body["_accepted"] = True
                    with fake._lock:
                        fake.calls.append(call)
                    self._answer(200, None, webhook=True)
                    return
                raw = data.decode()
                content_type = self.headers.get("Content-Type", "")
                if "json" in content_type:
                    body = json.loads(raw or "{}")
                else:
                    body = {key: values[0] for key, values in parse_qs(raw).items()}
                method = (
                    "webhook" if self.path.startswith("/webhook/") else self.path.rsplit("/", 1)[-1]
                )
                call = Call(
                    method, body, {key.lower(): value for key, value in self.headers.items()}
                )
                with fake._lock:
                    fake.calls.append(call)
                    scripted = fake.script.pop(0) if fake.script else None
                    down = fake.down
                if down:
                    self._answer(503, {"ok": False, "error": "service_unavailable"})
                    return
                if scripted is not None and (
                    scripted.accept_then_delay or scripted.accept_then_status
                ):
                    call.body["_accepted"] = True
                    payload, _ = fake._post(body)
                    time.sleep(scripted.accept_then_delay)
                    if scripted.accept_then_status:
                        status = scripted.accept_then_status
                        self._answer(status, {"ok": False, "error": f"http_{status}"})
                        return
                    self._answer(200, payload)
                    return
                if scripted is not None:
                    if scripted.hang_seconds:
                        time.sleep(scripted.hang_seconds)
                    headers = {}
                    if scripted.retry_after is not None:
                        headers["Retry-After"] = str(scripted.retry_after)
                    payload = {"ok": scripted.error is None and scripted.status == 200}
                    if scripted.error:
                        payload["error"] = scripted.error
                    self._answer(scripted.status, payload, headers, webhook=method == "webhook")
                    return
                call.body["_accepted"] = True
                if method == "files.getUploadURLExternal":
                    port = fake._server.server_address[1]
                    self._answer(
                        200,
                        {
                            "ok": True,
                            "upload_url": f"http://127.0.0.1:{port}/upload/F1",
                            "file_id": "F1",
                        },
                    )
                    return
                if method == "files.completeUploadExternal":
                    self._answer(200, {"ok": True, "files": [{"id": "F1"}]})
                    return
                if method == "webhook":
                    self._answer(200, None, webhook=True)
                    return
                if method.startswith("conversations."):
                    self._answer(200, fake._read(method, body))
                    return
                payload, message = fake._post(body)
                if message is None:
                    call.body["_accepted"] = False
                    call.body["_error"] = payload["error"]
                self._answer(200, payload)

            def _answer(
                self,
                status: int,
                payload: dict[str, Any] | None,
                headers: dict[str, str] | None = None,
                webhook: bool = False,
            ) -> None:
                if webhook:
                    data = (
                        b"ok"
                        if status == 200
                        else str((payload or {}).get("error", "error")).encode()
                    )
                    content_type = "text/plain"
                else:
                    data = json.dumps(payload).encode()
                    content_type = "application/json"
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that gave up on a hanging answer: nothing to report

        self._server = Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def _channel_id(channel: str) -> str:
    """Slack's id of a channel given by name (``#alerts``) or id (``C_alerts``)."""
    return channel if channel.startswith("C_") else f"C_{channel.lstrip('#')}"
