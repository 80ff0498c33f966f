"""Benchmark of a job source's refresh with 30 days of staged job lines, with and without
compaction (analytics/logs/jobs.py ``compact_job_chunks``).

Writes ``--jobs-per-day`` jobs a day (pino lines: queued, started, completed or failed; 5 % left
waiting or active) for 30 days, staged one tick a day (30 chunks, the live file rotated and
gzipped every 4 days), into two state directories: one never compacted
(``compact_after_chunks: null``), one compacted with the default (24 chunks: after 30 ticks, one
compacted state and 6 chunks) and once more at the end (one state, no chunk). Then, three times
interleaved, the refresh of the last hour of each (a tick reading nothing new, then the job rows
and the published hour) and prints wall seconds (median), the staged files and their bytes.
Asserts nothing.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analytics.logs.generate import JobRun, job_lines  # noqa: E402
from analytics.logs.ingest import ingest_log_files, source_directory  # noqa: E402
from analytics.logs.jobs import JOB_LINES, compact_job_chunks  # noqa: E402
from analytics.publish import RollupStore  # noqa: E402
from analytics.rollups.jobs import refresh_jobs  # noqa: E402
from analytics.settings import parse_analytics_settings  # noqa: E402

DAYS = 30
NOW = datetime(2026, 11, 20, 0, 30, tzinfo=UTC)
START = NOW.replace(minute=0) - timedelta(days=DAYS)


def day_lines(day: int, per_day: int) -> list[bytes]:
    """The lines of the jobs created on ``day``, in time order (a job's lines may fall on the
    next day: they are written with that day's, as a log would have them)."""
    lines = []
    base = START + timedelta(days=day)
    for index in range(per_day):
        created = base + timedelta(seconds=index * 86400 / per_day)
        started = created + timedelta(seconds=5 + index % 60)
        finished = started + timedelta(seconds=1 + index % 30)
        status = "failed" if index % 10 == 0 else "completed"
        if index % 20 == 1:
            started, finished, status = None, None, "waiting"
        elif index % 20 == 2:
            finished, status = None, "active"
        run = JobRun(
            f"{day}-{index}",
            f"q{index % 3}",
            f"n{index % 5}",
            status,
            created,
            started,
            finished,
            1 + index % 3,
        )
        lines += [(m, text) for m, text in job_lines("pino", run)]
    return [(text + "\n").encode() for _, text in sorted(lines)]


def rotate(logs: Path) -> None:
    for path in sorted(logs.glob("jobs.log.*.gz"), key=lambda p: -int(p.name.split(".")[2])):
        path.rename(logs / f"jobs.log.{int(path.name.split('.')[2]) + 1}.gz")
    with open(logs / "jobs.log", "rb") as plain, gzip.open(logs / "jobs.log.1.gz", "wb") as gz:
        shutil.copyfileobj(plain, gz)
    (logs / "jobs.log").unlink()


def settings_for(root: Path, logs: Path, compact_after: int | None):
    return parse_analytics_settings(
        {
            "root": str(root),
            "database": str(root / "rollups.duckdb"),
            "sources": {
                "jobs": {
                    "kind": "json_lines",
                    "path": str(logs / "jobs.log*"),
                    "format": "pino",
                    "settle": "0s",
                    "compact_after_chunks": compact_after,
                }
            },
        }
    )


def staged(root: Path) -> tuple[int, int]:
    files = list((root / ".logs" / "jobs" / "staged").glob("*.parquet"))
    return len(files), sum(f.stat().st_size for f in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs-per-day", type=int, default=20_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-log-jobs-"))
    try:
        logs = work / "logs"
        logs.mkdir()
        variants = {
            "no compaction": settings_for(work / "plain", logs, None),
            "compacted at 24 chunks": settings_for(work / "default", logs, 24),
            "just compacted": settings_for(work / "all", logs, 24),
        }
        lines = 0
        for day in range(DAYS):
            text = day_lines(day, args.jobs_per_day)
            lines += len(text)
            with open(logs / "jobs.log", "ab") as handle:
                handle.write(b"".join(text))
            tick_at = datetime.now(UTC)
            for settings in variants.values():
                directory = source_directory(settings.root_path, "jobs")
                ingest_log_files(directory, settings.sources.jobs, tick_at, JOB_LINES)
                compact_job_chunks(directory, settings.sources.jobs.compact_after_chunks)
            if day % 4 == 3:
                rotate(logs)
        compact_job_chunks(source_directory(variants["just compacted"].root_path, "jobs"), 2)
        hour = NOW.replace(minute=0)
        seconds: dict[str, list[float]] = {name: [] for name in variants}
        rows: dict[str, int] = {}
        for _ in range(3):
            for name, settings in variants.items():
                store = RollupStore(settings.root_path, settings.database_path)
                started = time.perf_counter()
                result = refresh_jobs(None, store, settings, hour, hour + timedelta(hours=1), NOW)
                seconds[name].append(time.perf_counter() - started)
                rows[name] = result.rows_read
        print(f"{DAYS} days, {args.jobs_per_day} jobs a day, {lines} staged job lines")
        print(
            "| state | refresh of the last hour, s (median of 3) | jobs read | staged files "
            "| staged MB |"
        )
        print("|---|---|---|---|---|")
        for name, settings in variants.items():
            count, size = staged(settings.root_path)
            print(
                f"| {name} | {statistics.median(seconds[name]):.3f} | {rows[name]} | {count} "
                f"| {size / 1e6:.1f} |"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
