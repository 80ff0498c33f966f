"""Request log lines as each preset writes them: for the demo (``hk seed --log-files``), the
benchmark and the tests.

``request_lines(preset, request)`` gives the lines one HTTP request leaves in a log of that
shape (the reference shape writes a request line and a response line; the others one line),
each a JSON text without its newline, with the personal fields real logs carry (client IP, user
id, e-mail), which the log source must never stage. ``other_line(preset, moment)`` is a line that
is not a request (a start-up message).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

PRESET_NAMES = ("pino", "winston", "bunyan", "reference")


@dataclass(frozen=True)
class Request:
    """One HTTP request: when it finished (aware), method, URL, status, duration (ms), who."""

    ts: datetime
    method: str
    url: str
    status: int
    duration_ms: float
    ip: str = "203.0.113.7"
    user_id: str = "user-48213"
    email: str = "jane.doe@example.com"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def request_lines(preset: str, request: Request) -> list[str]:
    """The lines ``request`` leaves in a log of ``preset``'s shape (ValueError for another)."""
    r = request
    if preset == "pino":
        millis = int(r.ts.timestamp() * 1000 // 1)  # truncated, as the ISO shapes are
        line = {
            "level": 30 if r.status < 500 else 50,
            "time": millis,
            "pid": 4242,
            "hostname": "web-1",
            "req": {
                "id": millis,
                "method": r.method,
                "url": r.url,
                "remoteAddress": r.ip,
                "headers": {"x-user-email": r.email},
            },
            "res": {"statusCode": r.status},
            "responseTime": r.duration_ms,
            "userId": r.user_id,
            "msg": "request completed",
        }
        return [json.dumps(line, separators=(",", ":"))]
    if preset == "winston":
        line = {
            "level": "info" if r.status < 500 else "error",
            "message": f"HTTP {r.method} {r.url}",
            "timestamp": _iso(r.ts),
            "meta": {
                "req": {"method": r.method, "url": r.url, "ip": r.ip},
                "res": {"statusCode": r.status},
                "responseTime": r.duration_ms,
                "user": {"id": r.user_id, "email": r.email},
            },
        }
        return [json.dumps(line)]
    if preset == "bunyan":
        line = {
            "name": "api",
            "hostname": "web-1",
            "pid": 4242,
            "level": 30,
            "req": {"method": r.method, "url": r.url, "remoteAddress": r.ip},
            "res": {"statusCode": r.status},
            "latency": r.duration_ms,
            "userId": r.user_id,
            "msg": "handled: " + str(r.status),
            "time": _iso(r.ts),
            "v": 0,
        }
        return [json.dumps(line)]
    if preset == "reference":
        request_id = f"{abs(hash((r.ts, r.url))) % 10**12:012d}"
        common = {"requestId": request_id, "method": r.method, "url": r.url}
        opened = {
            "type": "request",
            **common,
            "timestamp": _iso(r.ts),
            "ip": r.ip,
            "userId": r.user_id,
            "userAgent": "Mozilla/5.0",
        }
        answered = {
            "type": "response",
            **common,
            "timestamp": _iso(r.ts),
            "statusCode": r.status,
            "duration": f"{r.duration_ms:.3f}ms",
            "userId": r.user_id,
            "ip": r.ip,
        }
        return [json.dumps(opened), json.dumps(answered)]
    raise ValueError(f"unknown log preset {preset!r}; known: {', '.join(PRESET_NAMES)}")


def other_line(preset: str, moment: datetime) -> str:
    """A line of ``preset``'s shape that is not a request (a start-up message)."""
    if preset == "pino":
        return json.dumps({"level": 30, "time": round(moment.timestamp() * 1000), "msg": "ready"})
    if preset == "winston":
        return json.dumps({"level": "info", "message": "ready", "timestamp": _iso(moment)})
    if preset == "bunyan":
        return json.dumps({"name": "api", "level": 30, "msg": "ready", "time": _iso(moment)})
    return json.dumps({"type": "startup", "timestamp": _iso(moment), "message": "ready"})


def error_line(preset: str, moment: datetime, url: str, name: str, message: str) -> str:
    """An error-level line of ``preset``'s shape: the error's name, message and stack, the
    request's URL and the personal fields real error logs carry."""
    stack = f"{name}: {message}\n    at handler (/app/src/routes.js:42:13)"
    if preset == "pino":
        return json.dumps(
            {
                "level": 50,
                "time": round(moment.timestamp() * 1000),
                "req": {"method": "POST", "url": url, "remoteAddress": "203.0.113.7"},
                "err": {"type": name, "message": message, "stack": stack},
                "msg": message,
            }
        )
    if preset == "winston":
        return json.dumps(
            {
                "level": "error",
                "message": message,
                "timestamp": _iso(moment),
                "meta": {"req": {"method": "POST", "url": url}},
                "error": {"name": name, "message": message, "stack": stack},
            }
        )
    if preset == "bunyan":
        return json.dumps(
            {
                "name": "api",
                "level": 50,
                "time": _iso(moment),
                "req": {"method": "POST", "url": url},
                "err": {"name": name, "message": message, "stack": stack},
                "msg": message,
            }
        )
    return json.dumps(
        {
            "type": "error",
            "requestId": "550e8400",
            "timestamp": _iso(moment),
            "method": "POST",
            "url": url,
            "ip": "203.0.113.7",
            "userId": "user-48213",
            "error": {"name": name, "message": message, "stack": stack},
            "body": {"email": "jane.doe@example.com"},
        }
    )


JOB_PRESET_NAMES = ("pino", "winston")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class JobRun:
    """One background job as a jobs table row holds it: id, queue, name, status (waiting,
    delayed, active, completed, failed), created/started/finished (aware or None), attempts."""

    job_id: str
    queue: str
    name: str
    status: str
    created: datetime
    started: datetime | None = None
    finished: datetime | None = None
    attempts: int = 1


def job_line(
    preset: str,
    job: JobRun,
    moment: datetime,
    state: str,
    duration_ms: float | None = None,
) -> str:
    """The line a job leaves in a log of ``preset``'s shape when it reaches ``state``
    (queued, started, completed, failed) at ``moment``; ValueError for another preset."""
    millis = (moment - _EPOCH) // timedelta(milliseconds=1)
    if preset == "pino":
        line = {
            "level": 50 if state == "failed" else 30,
            "time": millis,
            "pid": 4242,
            "hostname": "worker-1",
            "queue": job.queue,
            "jobId": job.job_id,
            "jobName": job.name,
            "phase": state,
            "attempt": job.attempts,
            "data": {"userId": "user-48213", "email": "jane.doe@example.com"},
            "msg": f"job {job.name} {state}",
        }
        if duration_ms is not None:
            line["totalDuration"] = f"{duration_ms / 1000:.3f}s"
        return json.dumps(line, separators=(",", ":"))
    if preset == "winston":
        line = {
            "level": "error" if state == "failed" else "info",
            "message": f"Job {job.name} {state}",
            "timestamp": _iso(moment),
            "category": "jobs",
            "jobId": job.job_id,
            "jobName": job.name,
            "queue": job.queue,
            "status": state,
            "attempt": job.attempts,
        }
        if duration_ms is not None:
            line["duration"] = duration_ms
        return json.dumps(line)
    raise ValueError(f"unknown job log preset {preset!r}; known: {', '.join(JOB_PRESET_NAMES)}")


def job_lines(preset: str, job: JobRun) -> list[tuple[datetime, str]]:
    """The (moment, line) pairs ``job`` leaves in a log of ``preset``'s shape: queued when
    created, started, and completed or failed (with its duration) when it finished."""
    lines = [(job.created, job_line(preset, job, job.created, "queued"))]
    if job.started is not None:
        lines.append((job.started, job_line(preset, job, job.started, "started")))
    if job.finished is not None and job.status in ("completed", "failed"):
        duration = (
            (job.finished - job.started) / timedelta(milliseconds=1)
            if job.started is not None
            else None
        )
        lines.append((job.finished, job_line(preset, job, job.finished, job.status, duration)))
    return lines
