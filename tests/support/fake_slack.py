"""A real HTTP server standing in for Slack's Web API and incoming webhooks.

slack-sdk talks to it through ``SLACK_API_BASE_URL`` (``server.base_url``). It records every
request and answers like Slack, or as a test scripts it: ``server.fail_next(...)`` queues answers
(429 with Retry-After, 500, an error code such as invalid_auth, or a hang).
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


@dataclass
class FakeSlack:
    calls: list[Call] = field(default_factory=list)
    script: list[Scripted] = field(default_factory=list)
    down: bool = False  # every request answers 503 while set
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
                with fake._lock:
                    fake._ts += 1
                    ts = f"{fake._ts}.000100"
                channel = body.get("channel", "")
                self._answer(200, {"ok": True, "channel": f"C_{channel.lstrip('#')}", "ts": ts})

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
