"""The demo's generated traffic as log files (``hk seed --log-files DIR``).

The same requests and error logs ``hk seed`` puts in ``request_logs`` and ``error_logs`` (one
``Plan``, same seed, same incidents), written as JSON lines in three shapes, one folder each:
``DIR/pino``, ``DIR/winston`` and ``DIR/reference``. Each folder is rotated daily the way
logrotate leaves it: ``access.log`` holds the current UTC day, ``access.log.1`` the day before,
older days ``access.log.<n>.gz``. Point ``analytics.sources.request_logs`` at one of them
(``kind: json_lines``, ``path: DIR/pino/access.log*``, ``format: pino``).

The plan's jobs (the ``jobs`` table ``hk seed`` fills) go to ``DIR/pino/jobs.log`` and
``DIR/winston/jobs.log`` as lifecycle lines (queued, started, completed or failed), rotated the
same way; ``analytics.sources.jobs`` reads them (``path: DIR/pino/jobs.log*``,
``format: pino``).
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from analytics.logs.generate import JobRun, Request, error_line, job_lines, request_lines
from analytics.logs.manifest import LogSourceError
from housekeeping.demo.clock import from_us
from housekeeping.demo.plan import Plan
from housekeeping.demo.traffic import generate

SHAPES = ("pino", "winston", "reference")
JOB_SHAPES = ("pino", "winston")


@dataclass(frozen=True)
class LogSeedSummary:
    """What was written: requests, error lines and jobs per shape, files in all, the time span."""

    requests: int
    errors: int
    files: int
    start: datetime
    now: datetime
    jobs: int = 0


def _day_number(moment: datetime, now: datetime) -> int:
    return (now.date() - moment.astimezone(UTC).date()).days


def write_log_files(
    directory: Path,
    *,
    requests: int,
    days: int,
    seed: int = 42,
    tokens: int = 0,
    now: datetime | None = None,
) -> LogSeedSummary:
    """Write the plan's requests and errors of ``[now - days, now]`` under ``directory``.

    Refuses (``LogSourceError``, nothing written) a ``directory`` that is a file or already holds
    ``access.log*`` or ``jobs.log*`` files of a shape. Returns counts per shape (each shape
    holds the same).
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise LogSourceError(f"--log-files: {directory} is a file, not a directory")
    for shape in SHAPES:
        for stem in ("access.log", "jobs.log"):
            if any((directory / shape).glob(f"{stem}*")):
                raise LogSourceError(
                    f"--log-files: {directory / shape} already holds {stem} files; "
                    "choose an empty directory"
                )
    plan = Plan.build(
        tokens=tokens,
        requests=requests,
        days=days,
        seed=seed,
        now=(now or datetime.now(UTC)).astimezone(UTC),
    )
    tables: dict[str, list[pa.Table]] = {}

    def load(table: str, batches: Iterator[pa.Table], total: int) -> None:
        if table in ("request_logs", "error_logs", "jobs"):
            tables[table] = list(batches)

    generate(plan, load)
    rows: list[tuple[datetime, str, dict]] = []
    for batch in tables.get("request_logs", []):
        for row in batch.to_pylist():
            rows.append((row["ts"], "request", row))
    for batch in tables.get("error_logs", []):
        for row in batch.to_pylist():
            rows.append((row["ts"], "error", row))
    rows.sort(key=lambda item: (item[0], item[1]))
    last = max((moment for moment, _, _ in rows), default=from_us(plan.now_us))
    files = 0
    for shape in SHAPES:
        folder = directory / shape
        folder.mkdir(parents=True, exist_ok=True)
        by_day: dict[int, list[str]] = {}
        for moment, kind, row in rows:
            moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
            if kind == "request":
                lines = request_lines(
                    shape,
                    Request(
                        moment,
                        row["method"],
                        row["route"],
                        row["status_code"],
                        round(row["duration_ms"], 3),
                        row.get("ip") or "203.0.113.7",
                        str(row.get("user_id") or ""),
                    ),
                )
            else:
                lines = [
                    error_line(
                        shape, moment, row["route"] or "", row["error_name"], row["message"] or ""
                    )
                ]
            by_day.setdefault(_day_number(moment, last), []).extend(lines)
        files += _write_rotated(folder, "access.log", by_day)
    jobs = [
        _job_run(number, row)
        for number, row in enumerate(
            row for batch in tables.get("jobs", []) for row in batch.to_pylist()
        )
    ]
    for shape in JOB_SHAPES:
        lines = sorted(pair for run in jobs for pair in job_lines(shape, run))
        by_day = {}
        for moment, line in lines:
            # a job line after the last request is today's
            by_day.setdefault(max(_day_number(moment, last), 0), []).append(line)
        files += _write_rotated(directory / shape, "jobs.log", by_day)
    errors = sum(1 for _, kind, _ in rows if kind == "error")
    return LogSeedSummary(
        requests=len(rows) - errors,
        errors=errors,
        files=files,
        jobs=len(jobs),
        start=min((moment for moment, _, _ in rows), default=last),
        now=last,
    )


def _write_rotated(folder: Path, stem: str, by_day: dict[int, list[str]]) -> int:
    """Each day's lines as logrotate leaves them: ``stem`` today, ``stem.1`` yesterday, older
    days ``stem.<n>.gz``; returns the files written."""
    for number, lines in sorted(by_day.items()):
        text = ("\n".join(lines) + "\n").encode()
        if number == 0:
            (folder / stem).write_bytes(text)
        elif number == 1:
            (folder / f"{stem}.1").write_bytes(text)
        else:
            with gzip.open(folder / f"{stem}.{number}.gz", "wb", compresslevel=5) as gz:
                gz.write(text)
    return len(by_day)


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _job_run(number: int, row: dict) -> JobRun:
    """A generated jobs row as the job its log lines tell of (its id: the row's, or a number)."""
    return JobRun(
        str(row.get("id") or number + 1),
        row["queue"],
        row["name"],
        row["status"],
        _aware(row["created_at"]),
        _aware(row["started_at"]),
        _aware(row["finished_at"]),
        int(row["attempts"] or 0),
    )
