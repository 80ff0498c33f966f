"""Benchmark of the minute request rollups on PostgreSQL (`make bench-rollup`).

Seeds ``request_logs`` with 5,000,000 rows over 24 h (the project's generator) in a schema of its
own, then measures in the same run, on the same client machine, ``--runs`` times interleaved
(medians reported):

- baseline: ``COPY (SELECT ts, route, status_code, duration_ms FROM request_logs) TO STDOUT
  (FORMAT BINARY)`` read to the end with psycopg (one stream, one backend);
- the full backfill of the minute rollups over ``--workers`` connections (one COPY per UTC hour,
  each worker grouping what it reads in DuckDB, every hour file written), in a child process
  whose peak memory (VmHWM of /proc/self/status) is reported; with ``--compare-workers`` also
  over one connection;
- pandas ``read_sql`` of the same columns plus a groupby per minute x route, on
  all rows by default (``--pandas-rows N`` measures a slice and scales it linearly, saying so);
- one hourly partition (the busiest hour) and one freshness refresh of a busy current hour.

``--profile`` adds where the backfill's time goes, stage by stage in one child: the server's
COPY alone (to /dev/null on the server, one backend and the hour pieces over the workers), COPY
plus decoding to Arrow, DuckDB grouping and counting the latency sketches per worker, merging the
pieces' groups (summing sketches only where two pieces share a minute), finishing the rollup
table, writing the files.

Prints times and ratios; it asserts nothing (these machines are shared and noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analytics.extract import (  # noqa: E402
    DEFAULT_EXTRACT_WORKERS,
    TimeRange,
    check_source,
    copy_pieces,
    read_pieces,
)
from analytics.freshness import FreshnessCursor, refresh_recent  # noqa: E402
from analytics.publish import RollupStore  # noqa: E402
from analytics.rollups.engine import HOUR, duckdb_session, floor_hour  # noqa: E402
from analytics.rollups.requests import (  # noqa: E402
    ALIASES,
    group_minutes_in_pieces,
    merge_minute_groups,
    publish_minutes,
    refresh_requests,
    request_logs_source,
    sketch_minutes,
)
from analytics.settings import parse_analytics_settings  # noqa: E402
from housekeeping.database import AppDatabase, make_engine  # noqa: E402
from housekeeping.demo.seed import seed_database  # noqa: E402

BASE_URL = os.environ.get("HK_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
SCHEMA = "bench_rollup"
NOW = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)
BACKFILL_START, BACKFILL_END = NOW - timedelta(days=1, hours=1), NOW + HOUR
BASELINE_QUERY = "SELECT ts, route, status_code, duration_ms FROM request_logs"


def schema_url() -> str:
    return f"{BASE_URL}?options=-csearch_path%3D{SCHEMA}"


def ensure_data(rows: int) -> None:
    with psycopg.connect(BASE_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{SCHEMA}"')
        present = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL", (f'"{SCHEMA}".request_logs',)
        ).fetchone()[0]
        if present:
            count = conn.execute(f'SELECT count(*) FROM "{SCHEMA}".request_logs').fetchone()[0]
            if count == rows:
                print(f"reusing {rows:,} request_logs rows in schema {SCHEMA}")
                return
    print(f"seeding {rows:,} request_logs rows over 24 h into schema {SCHEMA} ...", flush=True)
    started = time.perf_counter()
    seed_database(schema_url(), tokens=0, requests=rows, days=1, now=NOW, reset=True)
    with psycopg.connect(schema_url(), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE request_logs")
    print(f"  seeded in {time.perf_counter() - started:.1f} s")


def time_copy() -> float:
    started = time.perf_counter()
    with (
        psycopg.connect(schema_url()) as conn,
        conn.cursor() as cursor,
        cursor.copy(f"COPY ({BASELINE_QUERY}) TO STDOUT (FORMAT BINARY)") as copy,
    ):
        for _block in copy:
            pass
    return time.perf_counter() - started


def time_pandas(rows: int) -> tuple[float, int]:
    import pandas as pd
    import sqlalchemy as sa

    engine = make_engine(sa.engine.make_url(schema_url()))
    started = time.perf_counter()
    frame = pd.read_sql(sa.text(f"{BASELINE_QUERY} ORDER BY id LIMIT {rows}"), engine)
    frame["minute"] = frame["ts"].dt.floor("min")
    grouped = frame.groupby(["minute", "route"]).agg(
        requests=("status_code", "size"),
        errors=("status_code", lambda codes: (codes >= 500).sum()),
        latency_max_ms=("duration_ms", "max"),
        latency_sum_ms=("duration_ms", "sum"),
    )
    seconds = time.perf_counter() - started
    engine.dispose()
    return seconds, len(grouped)


def settings_for(root: Path, workers: int):
    return parse_analytics_settings(
        {
            "root": str(root / "rollups"),
            "database": str(root / "rollups.duckdb"),
            "extract_workers": workers,
        }
    )


def peak_memory_mb() -> float:
    """This process's peak resident memory (VmHWM of /proc/self/status), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child_backfill(root: Path, workers: int) -> None:
    """Runs in a child process, so its peak memory is the backfill's alone."""
    settings = settings_for(root, workers)
    store = RollupStore(settings.root_path, settings.database_path)
    db = AppDatabase(schema_url())
    started = time.perf_counter()
    result = refresh_requests(db, store, settings, BACKFILL_START, BACKFILL_END)
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "seconds": seconds,
                "rows_read": result.rows_read,
                "rows_written": result.rows_written,
                "partitions": len(result.partitions),
                "peak_mb": peak_memory_mb(),
            }
        )
    )


def server_copy_seconds(texts: list[str], workers: int) -> float:
    """The server's side alone: every query COPYed to /dev/null on the server, ``workers``
    backends at once (no rows cross the network nor get decoded)."""
    pending = list(texts)
    lock = threading.Lock()

    def run() -> None:
        with psycopg.connect(schema_url(), autocommit=True) as conn:
            while True:
                with lock:
                    if not pending:
                        return
                    text = pending.pop(0)
                conn.execute(f"COPY ({text}) TO '/dev/null' (FORMAT binary)")

    started = time.perf_counter()
    threads = [threading.Thread(target=run) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def child_profile(root: Path, workers: int) -> None:
    """Where the backfill's time goes, stage by stage (one child, so caches are warm alike)."""
    settings = settings_for(root, workers)
    store = RollupStore(settings.root_path, settings.database_path)
    db = AppDatabase(schema_url())
    source = check_source(db, request_logs_source(settings))
    where = [TimeRange("ts", BACKFILL_START, BACKFILL_END)]
    texts = copy_pieces(source, ALIASES, where)
    stages: dict[str, float] = {}
    stages["server COPY, 1 backend (to /dev/null)"] = server_copy_seconds(
        copy_pieces(source, ALIASES, []), 1
    )
    stages[f"server COPY, {len(texts)} hour pieces on {workers} backends"] = server_copy_seconds(
        texts, workers
    )
    started = time.perf_counter()
    read_pieces(db, source, texts, workers, lambda _worker, reader: reader.read_all())
    stages[f"COPY + decode to Arrow, {workers} workers"] = time.perf_counter() - started
    started = time.perf_counter()
    groups = group_minutes_in_pieces(db, source, where, workers, store.root / ".tmp")
    stages[f"COPY + decode + group + sketches per worker, {workers} workers"] = (
        time.perf_counter() - started
    )
    with duckdb_session(store.root / ".tmp") as connection:
        started = time.perf_counter()
        merge_minute_groups(connection, groups)
        stages["merge the pieces' groups"] = time.perf_counter() - started
        started = time.perf_counter()
        sketch_minutes(connection)
        stages["rollup table from the merged groups"] = time.perf_counter() - started
        started = time.perf_counter()
        publish_minutes(connection, store, BACKFILL_START, BACKFILL_END)
        stages["write hour files (keep-published check, Parquet, rename)"] = (
            time.perf_counter() - started
        )
    print(json.dumps(stages))


def run_child(flag: str, root: Path, workers: int) -> dict:
    child = subprocess.run(
        [sys.executable, __file__, flag, str(root), "--workers", str(workers)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(child.stdout.strip().splitlines()[-1])


def busiest_hour() -> tuple[datetime, int]:
    with psycopg.connect(schema_url()) as conn:
        hour, count = conn.execute(
            "SELECT date_trunc('hour', ts AT TIME ZONE 'UTC'), count(*) FROM request_logs "
            "GROUP BY 1 ORDER BY 2 DESC LIMIT 1"
        ).fetchone()
    return hour.replace(tzinfo=UTC), count


def partition_and_refresh(root: Path, workers: int) -> None:
    settings = settings_for(root, workers)
    store = RollupStore(settings.root_path, settings.database_path)
    db = AppDatabase(schema_url())
    hour, hour_rows = busiest_hour()
    started = time.perf_counter()
    refresh_requests(db, store, settings, hour, hour + HOUR)
    hour_seconds = time.perf_counter() - started
    print(f"one hourly partition ({hour:%H:00}, {hour_rows:,} rows): {hour_seconds:6.2f} s")
    # The sensor at the end of that hour, as if it were the current one: the first
    # refresh reads the hour so far, the steady-state one the last minute plus the overlap.
    now = hour + timedelta(minutes=59, seconds=30)
    started = time.perf_counter()
    first = refresh_recent(db, store, settings, FreshnessCursor(), now)
    first_seconds = time.perf_counter() - started
    started = time.perf_counter()
    steady = refresh_recent(
        db, store, settings, FreshnessCursor(now - timedelta(minutes=1), floor_hour(now)), now
    )
    steady_seconds = time.perf_counter() - started
    print(
        f"freshness refresh, busy current hour: {first_seconds:6.2f} s first tick "
        f"({first.result.rows_read:,} rows), {steady_seconds:6.2f} s per minute after "
        f"({steady.result.rows_read:,} rows)"
    )
    db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs; medians reported")
    parser.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_EXTRACT_WORKERS,
        help="analytics.extract_workers of the backfill",
    )
    parser.add_argument(
        "--compare-workers", action="store_true", help="also run the backfill with 1 worker"
    )
    parser.add_argument("--profile", action="store_true", help="where the backfill's time goes")
    parser.add_argument(
        "--pandas-rows", type=int, default=0, help="measure pandas on a slice and scale (0: all)"
    )
    parser.add_argument("--child-backfill", help=argparse.SUPPRESS)
    parser.add_argument("--child-profile", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.runs < 1 or not 1 <= args.workers <= 32:
        parser.error("--runs must be at least 1 and --workers between 1 and 32")
    if args.child_backfill:
        child_backfill(Path(args.child_backfill), args.workers)
        return
    if args.child_profile:
        child_profile(Path(args.child_profile), args.workers)
        return

    ensure_data(args.rows)
    worker_counts = sorted({1, args.workers}) if args.compare_workers else [args.workers]
    pandas_rows = args.pandas_rows or args.rows
    scale = args.rows / pandas_rows
    copies: list[float] = []
    backfills: dict[int, list[dict]] = {workers: [] for workers in worker_counts}
    pandas: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench_rollup_") as directory:
        root = Path(directory)
        for run in range(1, args.runs + 1):
            copies.append(time_copy())
            line = f"run {run}/{args.runs}: COPY {copies[-1]:6.2f} s"
            for workers in worker_counts:
                # A fresh root each time: every run writes all its hour files from nothing.
                backfill = run_child("--child-backfill", root / f"run{run}-w{workers}", workers)
                backfills[workers].append(backfill)
                line += f", backfill {workers}w {backfill['seconds']:6.2f} s"
            pandas.append(time_pandas(pandas_rows)[0] * scale)
            print(line + f", pandas {pandas[-1]:6.2f} s", flush=True)
        last = backfills[args.workers][-1]
        print(
            f"backfill: {last['rows_read']:,} rows -> {last['rows_written']:,} minute rows, "
            f"{last['partitions']} hour files"
            + (f"; pandas on {pandas_rows:,} rows scaled x{scale:g}" if scale != 1 else "")
        )
        partition_and_refresh(root / "single", args.workers)
        profile = (
            run_child("--child-profile", root / "profile", args.workers) if args.profile else {}
        )

    copy_median = statistics.median(copies)
    pandas_median = statistics.median(pandas)
    print()
    print(
        f"medians of {args.runs} interleaved runs; load average "
        + " ".join(f"{value:.1f}" for value in os.getloadavg())
        + f" on {os.cpu_count()} cores (client and server on the same machine)"
    )
    print(f"{'':28} {'workers':>7} {'seconds':>8} {'vs 1 COPY':>10} {'pandas/x':>9} {'peak MB':>8}")
    print(f"{'COPY binary, psycopg':28} {1:7d} {copy_median:8.2f} {1:9.2f}x {'':>9} {'':>8}")
    print(f"{'pandas read_sql + groupby':28} {1:7d} {pandas_median:8.2f} {'':>10} {'':>9} {'':>8}")
    for workers in worker_counts:
        seconds = statistics.median(run["seconds"] for run in backfills[workers])
        peak = max(run["peak_mb"] for run in backfills[workers])
        print(
            f"{'full backfill':28} {workers:7d} {seconds:8.2f} {seconds / copy_median:9.2f}x "
            f"{pandas_median / seconds:8.1f}x {peak:8.0f}"
        )
    print("targets: backfill <= 1.0x one COPY, pandas >= 10x the backfill, peak <= 1536 MB")
    if profile:
        print()
        print(f"profile of one backfill ({args.workers} workers), stage by stage:")
        for stage, seconds in profile.items():
            print(f"  {stage:62} {seconds:6.2f} s")


if __name__ == "__main__":
    main()
