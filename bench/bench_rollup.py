"""Benchmark of the minute request rollups on PostgreSQL (`make bench-rollup`).

Seeds ``request_logs`` with 5,000,000 rows over 24 h (the project's generator) in a schema of its
own, then measures in the same run, on the same client machine:

- baseline: ``COPY (SELECT ts, route, status_code, duration_ms FROM request_logs) TO STDOUT
  (FORMAT BINARY)`` read to the end with psycopg;
- the full backfill of the minute rollups (Arrow from ADBC streamed into DuckDB, every hour file
  written), in a child process whose peak memory is reported;
- pandas ``read_sql`` of the same columns plus a groupby per minute x route, on
  all rows by default (``--pandas-rows N`` measures a slice and scales it linearly, saying so);
- one hourly partition (the busiest hour) and one freshness refresh of a busy current hour.

Prints times and ratios; it asserts nothing (these machines are shared and noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analytics.extract import COPY_STREAMS  # noqa: E402
from analytics.freshness import FreshnessCursor, refresh_recent  # noqa: E402
from analytics.publish import RollupStore  # noqa: E402
from analytics.rollups.engine import HOUR, floor_hour  # noqa: E402
from analytics.rollups.requests import refresh_requests  # noqa: E402
from analytics.settings import parse_analytics_settings  # noqa: E402
from housekeeping.database import AppDatabase, make_engine  # noqa: E402
from housekeeping.demo.seed import seed_database  # noqa: E402

BASE_URL = os.environ.get("HK_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
SCHEMA = "bench_rollup"
NOW = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)


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
        cursor.copy(
            "COPY (SELECT ts, route, status_code, duration_ms FROM request_logs) "
            "TO STDOUT (FORMAT BINARY)"
        ) as copy,
    ):
        for _block in copy:
            pass
    return time.perf_counter() - started


def time_pandas(rows: int) -> tuple[float, int]:
    import pandas as pd
    import sqlalchemy as sa

    engine = make_engine(sa.engine.make_url(schema_url()))
    started = time.perf_counter()
    frame = pd.read_sql(
        sa.text(
            f"SELECT ts, route, status_code, duration_ms FROM request_logs ORDER BY id LIMIT {rows}"
        ),
        engine,
    )
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


def settings_for(root: Path):
    return parse_analytics_settings(
        {"root": str(root / "rollups"), "database": str(root / "rollups.duckdb")}
    )


def child_backfill(root: Path) -> None:
    """Runs in a child process, so its peak memory is the backfill's alone."""
    settings = settings_for(root)
    store = RollupStore(settings.root_path, settings.database_path)
    db = AppDatabase(schema_url())
    started = time.perf_counter()
    result = refresh_requests(db, store, settings, NOW - timedelta(days=1, hours=1), NOW + HOUR)
    seconds = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "seconds": seconds,
                "rows_read": result.rows_read,
                "rows_written": result.rows_written,
                "partitions": len(result.partitions),
                "peak_mb": peak_kb / 1024,
            }
        )
    )


def busiest_hour() -> tuple[datetime, int]:
    with psycopg.connect(schema_url()) as conn:
        hour, count = conn.execute(
            "SELECT date_trunc('hour', ts AT TIME ZONE 'UTC'), count(*) FROM request_logs "
            "GROUP BY 1 ORDER BY 2 DESC LIMIT 1"
        ).fetchone()
    return hour.replace(tzinfo=UTC), count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument(
        "--pandas-rows", type=int, default=0, help="measure pandas on a slice and scale (0: all)"
    )
    parser.add_argument("--child-backfill", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_backfill:
        child_backfill(Path(args.child_backfill))
        return

    ensure_data(args.rows)
    with tempfile.TemporaryDirectory(prefix="bench_rollup_") as directory:
        root = Path(directory)
        copy_runs = [time_copy() for _ in range(2)]
        copy_seconds = min(copy_runs)
        print(f"COPY binary of 4 columns, read to the end:  {copy_seconds:6.2f} s (best of 2)")

        child = subprocess.run(
            [sys.executable, __file__, "--child-backfill", str(root)],
            check=True,
            capture_output=True,
            text=True,
        )
        backfill = json.loads(child.stdout.strip().splitlines()[-1])
        print(
            f"full backfill of minute rollups:           {backfill['seconds']:6.2f} s "
            f"({backfill['rows_read']:,} rows -> {backfill['rows_written']:,} minute rows, "
            f"{backfill['partitions']} hour files), peak memory {backfill['peak_mb']:.0f} MB"
        )

        pandas_rows = args.pandas_rows or args.rows
        pandas_seconds, _groups = time_pandas(pandas_rows)
        scale = args.rows / pandas_rows
        pandas_full = pandas_seconds * scale
        print(
            f"pandas read_sql + groupby:                  {pandas_seconds:6.2f} s on "
            f"{pandas_rows:,} rows"
            + (f", scaled x{scale:g} -> {pandas_full:6.2f} s" if scale != 1 else "")
        )

        settings = settings_for(root)
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
            f"freshness refresh, busy current hour:      {first_seconds:6.2f} s first tick "
            f"({first.result.rows_read:,} rows), {steady_seconds:6.2f} s per minute after "
            f"({steady.result.rows_read:,} rows)"
        )
        db.dispose()

    print()
    print(
        f"ratios (targets in brackets; the backfill reads over {COPY_STREAMS} COPY streams, one "
        "UTC hour per COPY; load average "
        + " ".join(f"{value:.1f}" for value in os.getloadavg())
        + f" on {os.cpu_count()} cores):"
    )
    print(f"  backfill / COPY          {backfill['seconds'] / copy_seconds:5.2f}x  [<= 1.0x]")
    print(f"  pandas / backfill        {pandas_full / backfill['seconds']:5.1f}x  [>= 10x]")
    print(f"  hourly partition         {hour_seconds:5.2f} s  [<= 2 s]")
    print(f"  busy-hour refresh        {first_seconds:5.2f} s  [<= 2 s]")
    print(f"  backfill peak memory     {backfill['peak_mb']:5.0f} MB [<= 1536 MB]")
    print(f"  COPY streams             {COPY_STREAMS:5d}")


if __name__ == "__main__":
    main()
