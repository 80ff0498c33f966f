"""Benchmark of the log-file request source (`make bench-logs`; `--full` for 5,000,000 lines).

Writes pino request lines (about 200 bytes each) over 24 h into ten files the way rotation
leaves them: five rotated and gzipped (``access.log.5.gz`` .. ``access.log.9.gz``, half the
lines), four rotated plain files and the live ``access.log``. Then measures, in the same run on
the same files:

- baseline: DuckDB's own ``SELECT count(*) FROM read_json([...])`` over the ten files;
- the full backfill (analytics/logs/: every line staged exactly once, then every minute rollup
  of the 24 h written), in a child process whose peak memory (RSS) is reported;
- a plain Python loop: ``json.loads`` of every line (gzip module for the .gz) and the five
  fields read, nothing else;
- an incremental tick: 100,000 new lines (half an hour of traffic) appended to the live file,
  then the refresh the freshness sensor runs (ingest the new bytes, recompute the minutes since
  its previous watermark).

Default: 1,000,000 lines (about 230 MB of JSON), runnable in a minute or two; ``--full``:
5,000,000 (about 1 GB). Prints wall and CPU times and ratios (CPU: fairer on a shared machine,
where wall time includes waiting for other processes); it asserts nothing.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analytics.publish import RollupStore  # noqa: E402
from analytics.rollups.engine import HOUR, floor_hour  # noqa: E402
from analytics.rollups.requests import refresh_requests  # noqa: E402
from analytics.settings import parse_analytics_settings  # noqa: E402

NOW = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)
FILES = 10
ROUTES = ("/api/chat/messages", "/api/users/:id", "/api/orders", "/health", "/api/search")
TICK_LINES = 100_000


def line(index: int, millis: int) -> str:
    status = 500 if index % 97 == 0 else (404 if index % 31 == 0 else 200)
    return (
        f'{{"level":30,"time":{millis},"pid":4242,"hostname":"web-1.internal",'
        f'"req":{{"id":{index},"method":"{("GET", "POST")[index % 2]}",'
        f'"url":"{ROUTES[index % len(ROUTES)]}","remoteAddress":"10.0.{index % 250}.7"}},'
        f'"res":{{"statusCode":{status}}},"responseTime":{(index * 7919) % 100000 / 100:.2f},'
        f'"msg":"request completed"}}\n'
    )


def write_files(directory: Path, lines: int) -> list[Path]:
    """Ten files of lines/10 lines each, oldest first; the oldest five gzipped."""
    directory.mkdir(parents=True, exist_ok=True)
    start_ms = int((NOW - timedelta(hours=24)).timestamp() * 1000)
    step = 24 * 3600 * 1000 / lines
    per_file = lines // FILES
    paths = []
    for number in range(FILES):
        # access.log.9 is the oldest, access.log the live file
        name = "access.log" if number == FILES - 1 else f"access.log.{FILES - 1 - number}"
        gz = number < FILES // 2
        path = directory / (name + (".gz" if gz else ""))
        with gzip.open(path, "wt", compresslevel=1) if gz else open(path, "w") as handle:
            block = []
            for index in range(number * per_file, (number + 1) * per_file):
                block.append(line(index, start_ms + int(index * step)))
                if len(block) == 50_000:
                    handle.write("".join(block))
                    block = []
            handle.write("".join(block))
        old = time.time() - 3600 * (FILES - number)
        os.utime(path, (old, old))
        paths.append(path)
    return paths


def settings_for(work: Path, logs: Path):
    return parse_analytics_settings(
        {
            "root": str(work / "analytics"),
            "database": str(work / "analytics" / "rollups.duckdb"),
            "sources": {
                "request_logs": {
                    "kind": "json_lines",
                    "path": str(logs / "access.log*"),
                    "format": "pino",
                    "settle": "0s",
                }
            },
        }
    )


def cpu_seconds() -> float:
    """User + system CPU time of this process so far: on a shared machine a fairer measure than
    wall time, which includes waiting for the other processes' turn."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child_backfill(work: Path, logs: Path) -> None:
    settings = settings_for(work, logs)
    store = RollupStore(settings.root_path, settings.database_path)
    started, cpu = time.perf_counter(), cpu_seconds()
    result = refresh_requests(None, store, settings, NOW - 25 * HOUR, NOW + HOUR)
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": seconds, "cpu": cpu, "rows": result.rows_read, "peak": peak}))


def python_loop(paths: list[Path]) -> tuple[float, float, int]:
    started, cpu = time.perf_counter(), cpu_seconds()
    count = 0
    for path in paths:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt") as handle:
            for text in handle:
                record = json.loads(text)
                _ = (
                    record["time"],
                    record["req"]["url"],
                    record["req"]["method"],
                    record["res"]["statusCode"],
                    record["responseTime"],
                )
                count += 1
    return time.perf_counter() - started, cpu_seconds() - cpu, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="5,000,000 lines (about 1 GB)")
    parser.add_argument("--lines", type=int, default=None, help="lines to write (overrides)")
    parser.add_argument("--child-backfill", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_backfill:
        child_backfill(Path(args.child_backfill[0]), Path(args.child_backfill[1]))
        return
    lines = args.lines or (5_000_000 if args.full else 1_000_000)
    work = Path(tempfile.mkdtemp(prefix="bench_logs_"))
    try:
        logs = work / "logs"
        started = time.perf_counter()
        paths = write_files(logs, lines)
        size = sum(path.stat().st_size for path in paths)
        raw = (
            sum(path.stat().st_size for path in paths if not path.name.endswith(".gz")) * 2
        )  # the gz half holds as many lines as the plain half
        print(
            f"wrote {lines:,} lines in {FILES} files ({size / 1e6:,.0f} MB on disk, about "
            f"{raw / 1e6:,.0f} MB of JSON, half gzipped) in {time.perf_counter() - started:.1f} s"
        )

        files = "[" + ", ".join(f"'{path}'" for path in paths) + "]"
        started, cpu = time.perf_counter(), cpu_seconds()
        with duckdb.connect() as connection:
            counted = connection.execute(
                f"SELECT count(*) FROM read_json({files}, format = 'newline_delimited')"
            ).fetchone()[0]
        baseline, baseline_cpu = time.perf_counter() - started, cpu_seconds() - cpu
        print(
            f"DuckDB count(*) FROM read_json: {counted:,} lines in {baseline:.2f} s "
            f"(CPU {baseline_cpu:.2f} s)"
        )

        child = subprocess.run(
            [sys.executable, __file__, "--child-backfill", str(work), str(logs)],
            capture_output=True,
            text=True,
            check=True,
        )
        backfill = json.loads(child.stdout.strip().splitlines()[-1])
        print(
            f"full backfill (stage every line once, publish every minute): {backfill['rows']:,} "
            f"requests in {backfill['seconds']:.2f} s = {backfill['seconds'] / baseline:.2f}x "
            f"DuckDB's count (CPU {backfill['cpu']:.2f} s = {backfill['cpu'] / baseline_cpu:.2f}x; "
            f"target <= 1.5x); peak memory {backfill['peak'] / 2**30:.2f} GB (target <= 1.5 GB)"
        )

        loop_seconds, loop_cpu, looped = python_loop(paths)
        print(
            f"Python json.loads loop: {looped:,} lines in {loop_seconds:.2f} s (CPU "
            f"{loop_cpu:.2f} s); the backfill is {loop_seconds / backfill['seconds']:.1f}x "
            f"faster (CPU {loop_cpu / backfill['cpu']:.1f}x; target >= 10x)"
        )

        settings = settings_for(work, logs)
        store = RollupStore(settings.root_path, settings.database_path)
        start_ms = int((NOW - timedelta(minutes=30)).timestamp() * 1000)
        with open(logs / "access.log", "a") as handle:
            handle.write("".join(line(lines + i, start_ms + i * 18) for i in range(TICK_LINES)))
        # What the freshness sensor refreshes: from its previous watermark (when these lines
        # started arriving, 30 minutes ago) minus late_commit_overlap, to the end of the hour.
        since = NOW - timedelta(minutes=30) - settings.late_commit_overlap
        started, cpu = time.perf_counter(), cpu_seconds()
        result = refresh_requests(None, store, settings, since, floor_hour(NOW) + HOUR)
        tick, tick_cpu = time.perf_counter() - started, cpu_seconds() - cpu
        print(
            f"incremental tick: {TICK_LINES:,} new lines staged, their minutes recomputed "
            f"({result.rows_read:,} requests) in {tick:.2f} s (CPU {tick_cpu:.2f} s; target <= 1 s)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
