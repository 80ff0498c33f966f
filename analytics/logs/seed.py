"""The demo's generated traffic as log files (``hk seed --log-files DIR``).

The same requests and error logs ``hk seed`` puts in ``request_logs`` and ``error_logs`` (one
``Plan``, same seed, same incidents), written as JSON lines in three shapes, one folder each:
``DIR/pino``, ``DIR/winston`` and ``DIR/reference``. Each folder is rotated daily the way
logrotate leaves it: ``access.log`` holds the current UTC day, ``access.log.1`` the day before,
older days ``access.log.<n>.gz``. Point ``analytics.sources.request_logs`` at one of them
(``kind: json_lines``, ``path: DIR/pino/access.log*``, ``format: pino``).
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from analytics.logs.generate import Request, error_line, request_lines
from analytics.logs.manifest import LogSourceError
from housekeeping.demo.clock import from_us
from housekeeping.demo.plan import Plan
from housekeeping.demo.traffic import generate

SHAPES = ("pino", "winston", "reference")


@dataclass(frozen=True)
class LogSeedSummary:
    """What was written: requests and error lines per shape, files per shape, the time span."""

    requests: int
    errors: int
    files: int
    start: datetime
    now: datetime


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
    ``access.log*`` files of a shape. Returns counts per shape (each shape holds the same).
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise LogSourceError(f"--log-files: {directory} is a file, not a directory")
    for shape in SHAPES:
        if any((directory / shape).glob("access.log*")):
            raise LogSourceError(
                f"--log-files: {directory / shape} already holds access.log files; "
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
        if table in ("request_logs", "error_logs"):
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
        for number, lines in sorted(by_day.items()):
            text = ("\n".join(lines) + "\n").encode()
            if number == 0:
                (folder / "access.log").write_bytes(text)
            elif number == 1:
                (folder / "access.log.1").write_bytes(text)
            else:
                with gzip.open(folder / f"access.log.{number}.gz", "wb", compresslevel=5) as gz:
                    gz.write(text)
            files += 1
    errors = sum(1 for _, kind, _ in rows if kind == "error")
    return LogSeedSummary(
        requests=len(rows) - errors,
        errors=errors,
        files=files,
        start=min((moment for moment, _, _ in rows), default=last),
        now=last,
    )
