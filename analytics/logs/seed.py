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

import pandas as pd
import pyarrow as pa

from analytics.logs.generate import JobRun, Request, error_line, job_lines, request_lines
from analytics.logs.manifest import LogSourceError
from housekeeping.database import AppDatabase
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
    rows = [
        row
        for table in ("request_logs", "error_logs")
        for batch in tables.get(table, [])
        for row in batch.to_pylist()
    ]
    jobs = [row for batch in tables.get("jobs", []) for row in batch.to_pylist()]
    return _write_logs(directory, rows, jobs, from_us(plan.now_us))


def export_log_files(directory: Path, db: AppDatabase, now: datetime) -> LogSeedSummary:
    """Write the demo database's request logs, error logs and jobs under ``directory`` as
    ``write_log_files`` does (``hk demo --log-files``), so the log files hold exactly the rows
    its tables hold at ``now`` (aware).

    The first export writes everything, rotated daily; a later one (``directory`` holds an
    ``exported_until`` marker) appends to each shape's current files only the lines of moments
    after the marker, up to ``now``, so every line is written once. Reads the reference schema.
    """
    marker = directory / "exported_until"
    after = datetime.fromisoformat(marker.read_text().strip()) if marker.exists() else None
    now = now.astimezone(UTC)
    frames = {}
    with db.connect() as connection:
        for table, columns in _EXPORTED.items():
            text = f"SELECT {', '.join(columns)} FROM {table}"
            frame = pd.DataFrame(connection.exec_driver_sql(text).fetchall(), columns=list(columns))
            for column in columns:
                if column == "ts" or column.endswith("_at"):
                    stamps = pd.to_datetime(frame[column], utc=True, format="mixed")
                    frame[column] = stamps.astype(object).where(stamps.notna(), None)
            frames[table] = frame.astype(object).where(frame.notna(), None)
    rows = [
        row
        for table in ("request_logs", "error_logs")
        for row in frames[table].to_dict("records")
        if row["ts"] is not None and (after is None or row["ts"] > after) and row["ts"] <= now
    ]
    jobs = frames["jobs"].to_dict("records")
    summary = _write_logs(directory, rows, jobs, now, after=after, until=now)
    marker.write_text(now.isoformat() + "\n")
    return summary


# What export_log_files reads of the reference schema (the columns generate() writes).
_EXPORTED = {
    "request_logs": ("ts", "method", "route", "status_code", "duration_ms", "ip", "user_id"),
    "error_logs": ("ts", "route", "error_name", "message"),
    "jobs": (
        "id",
        "queue",
        "name",
        "status",
        "created_at",
        "started_at",
        "finished_at",
        "attempts",
    ),
}


def _write_logs(
    directory: Path,
    rows: list[dict],
    jobs: list[dict],
    now: datetime,
    *,
    after: datetime | None = None,
    until: datetime | None = None,
) -> LogSeedSummary:
    """Request rows (``status_code`` set) and error rows (``error_name`` set), and job rows, as
    lines of every shape under ``directory``: rotated by day before the last line's, or, with
    ``after``, only the lines of moments in ``(after, until]`` appended to the current files."""
    events = sorted(
        ((_aware(row["ts"]), "error" if "error_name" in row else "request", row) for row in rows),
        key=lambda item: (item[0], item[1]),
    )
    last = max((moment for moment, _, _ in events), default=now)
    files = 0
    for shape in SHAPES:
        folder = directory / shape
        folder.mkdir(parents=True, exist_ok=True)
        by_day: dict[int, list[str]] = {}
        for moment, kind, row in events:
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
        files += _write_rotated(folder, "access.log", by_day, appending=after is not None)
    runs = [_job_run(number, row) for number, row in enumerate(jobs)]
    for shape in JOB_SHAPES:
        lines = sorted(
            (moment, line)
            for run in runs
            for moment, line in job_lines(shape, run)
            if (after is None or moment > after) and (until is None or moment <= until)
        )
        by_day = {}
        for moment, line in lines:
            # a job line after the last request is today's
            by_day.setdefault(max(_day_number(moment, last), 0), []).append(line)
        files += _write_rotated(directory / shape, "jobs.log", by_day, appending=after is not None)
    errors = sum(1 for _, kind, _ in events if kind == "error")
    return LogSeedSummary(
        requests=len(events) - errors,
        errors=errors,
        files=files,
        start=min((moment for moment, _, _ in events), default=last),
        now=last,
        jobs=len(runs),
    )


def _write_rotated(
    folder: Path, stem: str, by_day: dict[int, list[str]], *, appending: bool = False
) -> int:
    """Each day's lines as logrotate leaves them: ``stem`` today, ``stem.1`` yesterday, older
    days ``stem.<n>.gz``; ``appending``: every line appended to ``stem`` (the file still being
    written). Returns the files written."""
    if appending:
        lines = [line for _, day in sorted(by_day.items(), reverse=True) for line in day]
        if lines:
            with open(folder / stem, "a") as handle:
                handle.write("\n".join(lines) + "\n")
        return 1 if lines else 0
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
