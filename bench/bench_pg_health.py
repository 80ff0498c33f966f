"""Cost of the database health snapshot that analytics_pg_health_sensor takes every minute.

    make bench-pg-health    # or: .venv/bin/python bench/bench_pg_health.py [--snapshots 60]
                            #     [--connections 20] [--tables 5] [--database-url URL]

Against the PostgreSQL server of the tests (HK_TEST_POSTGRES_URL, default the local one) in a
fresh schema with ``--tables`` housekept tables and ``--connections`` extra idle sessions, it
takes ``--snapshots`` snapshots and reports, per snapshot:

- the snapshot's catalog round trip (``take_snapshot``): wall time, and the CPU time of this
  process and of the PostgreSQL backend that answered (from /proc: server and client share the
  machine here);
- the whole sensor step (``publish_snapshot``: the snapshot plus the hour files rewritten);
- the baseline, measured in the same run: a ``SELECT 1`` round trip on the same pool.

Share of one core at a 1-minute interval = (client + backend CPU of the whole step) / 60 s;
target < 1 %. This is a report, not a test: it exits 0 on FAIL too.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import psycopg
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analytics.pg_health import take_snapshot  # noqa: E402
from analytics.publish import RollupStore  # noqa: E402
from analytics.rollups.pg_health import housekept_tables, publish_snapshot  # noqa: E402
from analytics.views import publish_rollup_views  # noqa: E402
from housekeeping.config import parse_config  # noqa: E402
from housekeeping.database import AppDatabase  # noqa: E402

TARGET_SHARE = 0.01
INTERVAL_SECONDS = 60.0
TICKS = os.sysconf("SC_CLK_TCK")


def backend_cpu_seconds(pid: int) -> float:
    """User + system CPU of a local PostgreSQL backend (fields 14 and 15 of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def measure(step, db: AppDatabase, count: int) -> tuple[float, float, float]:
    """Median wall seconds, and mean client and backend CPU seconds, of ``step`` per call."""
    with db.engine.connect() as conn:
        backend = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
    walls = []
    cpu_before, backend_before = time.process_time(), backend_cpu_seconds(backend)
    for _ in range(count):
        started = time.perf_counter()
        step()
        walls.append(time.perf_counter() - started)
    client = (time.process_time() - cpu_before) / count
    server = (backend_cpu_seconds(backend) - backend_before) / count
    return statistics.median(walls), client, server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--snapshots", type=int, default=60)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--tables", type=int, default=5)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("HK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    args = parser.parse_args()
    schema = f"hk_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.database_url, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    url = f"{args.database_url}?options={quote(f'-csearch_path={schema}')}"
    idle = [psycopg.connect(url, autocommit=True) for _ in range(args.connections)]
    # Steps run one at a time: the pool keeps one connection, the backend whose CPU is read.
    db = AppDatabase(url)
    try:
        policies = {}
        with db.engine.begin() as conn:
            for number in range(args.tables):
                conn.execute(
                    sa.text(
                        f"CREATE TABLE logs_{number} (id bigserial PRIMARY KEY, ts timestamptz)"
                    )
                )
                conn.execute(
                    sa.text(
                        f"INSERT INTO logs_{number} (ts) "
                        "SELECT now() - make_interval(mins => g) FROM generate_series(1, 5000) g"
                    )
                )
                policies[f"logs_{number}"] = {
                    "kind": "age",
                    "table": f"logs_{number}",
                    "cutoff_column": "ts",
                    "retention": "1d",
                }
        config = parse_config({"policies": policies})
        tables = housekept_tables(config)
        with tempfile.TemporaryDirectory() as folder:
            store = RollupStore(Path(folder), Path(folder) / "rollups.duckdb")
            publish_rollup_views(store, "UTC")

            def baseline():
                with db.engine.connect() as conn:
                    conn.execute(sa.text("SELECT 1")).scalar_one()

            measure(baseline, db, 5)  # warm the pool and the caches
            base = measure(baseline, db, args.snapshots)
            snap = measure(lambda: take_snapshot(db, tables), db, args.snapshots)
            step = measure(lambda: publish_snapshot(db, store, config), db, args.snapshots)
    finally:
        db.dispose()
        for connection in idle:
            connection.close()
        with psycopg.connect(args.database_url, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')

    print(
        f"{args.snapshots} snapshots, {args.tables} housekept tables, "
        f"{args.connections} extra idle connections"
    )
    print(f"{'':<34}{'wall (median)':>15}{'client CPU':>12}{'backend CPU':>13}{'x baseline':>12}")
    for name, (wall, client, server) in (
        ("baseline: SELECT 1 round trip", base),
        ("take_snapshot (catalog queries)", snap),
        ("publish_snapshot (sensor step)", step),
    ):
        print(
            f"{name:<34}{wall * 1000:>12.2f} ms{client * 1000:>9.2f} ms{server * 1000:>10.2f} ms"
            f"{wall / base[0]:>11.1f}x"
        )
    share = (step[1] + step[2]) / INTERVAL_SECONDS
    verdict = "PASS" if share < TARGET_SHARE else "FAIL"
    print(
        f"share of one core at a {INTERVAL_SECONDS:.0f} s interval: {share:.3%} "
        f"(client + backend CPU of the sensor step; target < {TARGET_SHARE:.0%}): {verdict}"
    )


if __name__ == "__main__":
    main()
