"""Benchmark of the log-file request source (`make bench-logs`; `--full` adds 5,000,000 lines).

Writes pino request lines (about 230 bytes each) over 24 h into ten files the way rotation
leaves them: five rotated and gzipped (``access.log.5.gz`` .. ``access.log.9.gz``, half the
lines), four rotated plain files and the live ``access.log``. Then, three times interleaved on
the same files (so a burst of load on the shared machine hits every measure alike):

- baseline: DuckDB's own ``SELECT count(*) FROM read_json([...])`` over the ten files;
- the full backfill (analytics/logs/: every line staged exactly once, then every minute rollup
  of the 24 h written, a fresh state directory each run), in a child process whose peak memory
  (RSS) is reported;
- a fair plain Python loop: ``json.loads`` of every line (gzip module for the .gz), the same
  grouping and output as the product: per minute x route x method the requests, status classes,
  latency min/max/sum and sketch buckets (analytics/sketch.py), written to one Parquet file;
- an incremental tick: 100,000 new lines (half an hour of traffic) appended to the live file,
  then the refresh the freshness sensor runs (ingest the new bytes, recompute the minutes since
  its previous watermark); the live file is cut back to its size afterwards.

Prints one Markdown table: the median of the three runs of each measure, wall and CPU seconds
(user + system, every thread; fairer on a shared machine, where wall time includes waiting for
other processes), and each ratio as the median of the three runs' ratios. Default: 1,000,000
lines (about 230 MB of JSON); ``--full``: also 5,000,000 (about 1.2 GB). Asserts nothing.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow
import pyarrow.parquet

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analytics.datasets import REQUESTS_MINUTE  # noqa: E402
from analytics.publish import RollupStore  # noqa: E402
from analytics.rollups.engine import HOUR, floor_hour  # noqa: E402
from analytics.rollups.requests import refresh_requests  # noqa: E402
from analytics.settings import parse_analytics_settings  # noqa: E402
from analytics.sketch import LN_GAMMA, MIN_TRACKED_MS, ZERO_BUCKET  # noqa: E402

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


def python_loop(paths: list[Path], output: Path) -> tuple[float, float, int]:
    """The json.loads baseline: what the backfill computes, in plain Python (wall s, CPU s,
    requests)."""
    started, cpu = time.perf_counter(), cpu_seconds()
    groups: dict[tuple, list] = {}
    count = 0
    for path in paths:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt") as handle:
            for text in handle:
                record = json.loads(text)
                res = record.get("res")
                if not isinstance(res, dict) or res.get("statusCode") is None:
                    continue  # not a request line
                req = record["req"]
                url = req["url"]
                # (the product also masks ids in a path; these URLs hold none)
                route = url.split("?")[0] if any(c in url for c in "0123456789@?#") else url
                key = (record["time"] // 60000, route, req["method"].upper())
                group = groups.get(key)
                if group is None:
                    group = groups[key] = [0, 0, 0, 0, 0, 0, 0, math.inf, -math.inf, 0, {}]
                status, duration = int(res["statusCode"]), float(record["responseTime"])
                group[0] += 1
                group[status // 100 - 1 if 200 <= status <= 599 else 6] += 1
                group[5] += status == 429
                group[7] = min(group[7], duration)
                group[8] = max(group[8], duration)
                group[9] += round(duration * 1000)
                bucket = (
                    ZERO_BUCKET
                    if duration <= 0
                    else math.ceil(math.log(max(duration, MIN_TRACKED_MS)) / LN_GAMMA)
                )
                group[10][bucket] = group[10].get(bucket, 0) + 1
                count += 1
    rows = [
        (
            datetime.fromtimestamp(key[0] * 60, UTC),
            key[1],
            key[2],
            *group[:9],
            group[9] / 1000,
            sorted(group[10].items()),
        )
        for key, group in groups.items()
    ]
    table = pyarrow.table(
        list(zip(*rows, strict=True)),
        names=[column.name for column in REQUESTS_MINUTE.columns],
    )
    pyarrow.parquet.write_table(table, output, compression="zstd")
    return time.perf_counter() - started, cpu_seconds() - cpu, count


def count_star(paths: list[Path]) -> tuple[float, float, int]:
    """DuckDB's own count(*) over read_json of the files (wall s, CPU s, lines)."""
    files = "[" + ", ".join(f"'{path}'" for path in paths) + "]"
    started, cpu = time.perf_counter(), cpu_seconds()
    with duckdb.connect() as connection:
        counted = connection.execute(
            f"SELECT count(*) FROM read_json({files}, format = 'newline_delimited')"
        ).fetchone()[0]
    return time.perf_counter() - started, cpu_seconds() - cpu, counted


def backfill(work: Path, logs: Path) -> dict:
    """The full backfill in a child process: seconds, cpu, rows, peak (bytes)."""
    shutil.rmtree(work / "analytics", ignore_errors=True)
    child = subprocess.run(
        [sys.executable, __file__, "--child-backfill", str(work), str(logs)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(child.stdout.strip().splitlines()[-1])


def tick(work: Path, logs: Path, lines: int) -> tuple[float, float, int]:
    """100,000 lines appended to the live file, then the sensor's refresh (wall s, CPU s,
    requests recomputed); the live file is cut back to its size and mtime afterwards."""
    settings = settings_for(work, logs)
    store = RollupStore(settings.root_path, settings.database_path)
    live = logs / "access.log"
    before = live.stat()
    start_ms = int((NOW - timedelta(minutes=30)).timestamp() * 1000)
    with open(live, "a") as handle:
        handle.write("".join(line(lines + i, start_ms + i * 18) for i in range(TICK_LINES)))
    # What the freshness sensor refreshes: from its previous watermark (when these lines
    # started arriving, 30 minutes ago) minus late_commit_overlap, to the end of the hour.
    since = NOW - timedelta(minutes=30) - settings.late_commit_overlap
    started, cpu = time.perf_counter(), cpu_seconds()
    result = refresh_requests(None, store, settings, since, floor_hour(NOW) + HOUR)
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    os.truncate(live, before.st_size)
    os.utime(live, (before.st_atime, before.st_mtime))
    return seconds, cpu, result.rows_read


def measure(lines: int, runs: int) -> dict[str, str]:
    """One column of the table: the medians of ``runs`` interleaved runs over ``lines``."""
    work = Path(tempfile.mkdtemp(prefix="bench_logs_"))
    try:
        logs = work / "logs"
        started = time.perf_counter()
        paths = write_files(logs, lines)
        size = sum(path.stat().st_size for path in paths)
        raw = sum(path.stat().st_size for path in paths if not path.name.endswith(".gz")) * 2
        print(
            f"wrote {lines:,} lines in {FILES} files ({size / 1e6:,.0f} MB on disk, about "
            f"{raw / 1e6:,.0f} MB of JSON, half gzipped) in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
        got: dict[str, list[float]] = {}

        def keep(**values: float) -> None:
            for name, value in values.items():
                got.setdefault(name, []).append(value)

        for run in range(runs):
            base, base_cpu, counted = count_star(paths)
            filled = backfill(work, logs)
            loop, loop_cpu, looped = python_loop(paths, work / "loop.parquet")
            tick_s, tick_cpu, ticked = tick(work, logs, lines)
            if not counted == looped == filled["rows"] == lines:
                raise SystemExit(f"counts differ: {counted=} {looped=} rows={filled['rows']}")
            keep(
                base=base,
                base_cpu=base_cpu,
                fill=filled["seconds"],
                fill_cpu=filled["cpu"],
                ratio=filled["seconds"] / base,
                ratio_cpu=filled["cpu"] / base_cpu,
                loop=loop,
                loop_cpu=loop_cpu,
                faster=loop / filled["seconds"],
                faster_cpu=loop_cpu / filled["cpu"],
                tick=tick_s,
                tick_cpu=tick_cpu,
                peak=filled["peak"] / 2**30,
            )
            print(
                f"  run {run + 1}: count(*) {base:.2f} s (CPU {base_cpu:.2f}), backfill "
                f"{filled['seconds']:.2f} s (CPU {filled['cpu']:.2f}, peak "
                f"{filled['peak'] / 2**30:.2f} GB), json.loads {loop:.2f} s (CPU {loop_cpu:.2f}), "
                f"tick {tick_s:.2f} s (CPU {tick_cpu:.2f}; {ticked:,} requests)",
                flush=True,
            )
        m = {name: statistics.median(values) for name, values in got.items()}
        return {
            "count": f"{m['base']:.2f} s, CPU {m['base_cpu']:.2f} s",
            "backfill": f"{m['fill']:.2f} s = {m['ratio']:.2f}x, CPU {m['fill_cpu']:.2f} s = "
            f"{m['ratio_cpu']:.2f}x",
            "loop": f"{m['loop']:.2f} s, CPU {m['loop_cpu']:.2f} s: backfill {m['faster']:.1f}x "
            f"faster, CPU {m['faster_cpu']:.1f}x",
            "tick": f"{m['tick']:.2f} s, CPU {m['tick_cpu']:.2f} s",
            "peak": f"{m['peak']:.2f} GB",
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


ROWS = (
    ("count", "DuckDB `count(*)` over `read_json` (baseline)", "-"),
    ("backfill", "full backfill (staged once, every minute published) vs count(*)", "<= 1.5x"),
    ("loop", "Python `json.loads` loop, same grouping and output", ">= 10x faster"),
    ("tick", f"incremental tick, {TICK_LINES:,} new lines", "<= 1 s"),
    ("peak", "backfill peak memory (RSS)", "<= 1.5 GB"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="also 5,000,000 lines (1.2 GB)")
    parser.add_argument("--lines", type=int, default=None, help="only this many lines")
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs (median)")
    parser.add_argument("--child-backfill", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_backfill:
        child_backfill(Path(args.child_backfill[0]), Path(args.child_backfill[1]))
        return
    sizes = [args.lines] if args.lines else [1_000_000] + ([5_000_000] if args.full else [])
    columns = {size: measure(size, args.runs) for size in sizes}
    print(f"\nmedians of {args.runs} interleaved runs, load average {os.getloadavg()[0]:.1f}\n")
    print("| measure | " + " | ".join(f"{size:,} lines" for size in sizes) + " | target |")
    print("| --- | " + " | ".join("---" for _ in sizes) + " | --- |")
    for key, label, target in ROWS:
        print(f"| {label} | " + " | ".join(columns[s][key] for s in sizes) + f" | {target} |")


if __name__ == "__main__":
    main()
