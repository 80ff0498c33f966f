"""Alert rule evaluation speed: 50 rules x 100 groups over 30 days of minute rollups.

    make bench-rules      # or: .venv/bin/python bench/bench_rules.py [--days 30 --routes 100]

The target (issue 4): one sensor evaluation (every rule, every group, states and outbox written)
in <= 1 s. The baseline, measured in the same run on the same files, is one plain DuckDB
aggregation over the newest hour of the published minute rollups (the least any evaluation reads).
This is a report, not a test: it exits 0 on FAIL too.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analytics.alerts.evaluate import evaluate_rules  # noqa: E402
from analytics.alerts.metrics import MetricSource  # noqa: E402
from analytics.alerts.model import Severity  # noqa: E402
from analytics.alerts.rules import RulePack, parse_rules  # noqa: E402
from analytics.alerts.store import AlertStore  # noqa: E402
from analytics.datasets import REQUESTS_MINUTE  # noqa: E402
from analytics.publish import RollupStore, hour_key  # noqa: E402
from analytics.sketch import bucket_sql  # noqa: E402
from analytics.views import publish_rollup_views  # noqa: E402

TARGET_SECONDS = 1.0
METRICS = [
    ("http_error_rate", ">", [0.02, 0.05, 0.10]),
    ("http_latency_p95_ms", ">", [500, 1000, 2000]),
    ("http_request_rate", ">", [50, 100, 200]),
    ("http_rate_limited_rate", ">", [0.1, 0.2, 0.3]),
    ("http_requests", "<", [100, 50, 1]),
]
WINDOWS = ["1m", "5m", "10m", "15m", "30m", "1h", "2h", "3h", "6h", "12h"]


def build_rollups(root: Path, days: int, routes: int, end: datetime) -> RollupStore:
    store = RollupStore(root, root / "rollups.duckdb")
    publish_rollup_views(store, "UTC")
    start = end - timedelta(days=days)
    hours = int((end - start).total_seconds() // 3600)
    with duckdb.connect() as connection:
        for index in range(hours):
            hour = start + timedelta(hours=index)
            naive = hour.replace(tzinfo=None)
            # Per minute and route: a few hundred requests, ~1 % errors, a heavy-tailed latency.
            select = f"""
                WITH base AS (
                    SELECT TIMESTAMP '{naive:%Y-%m-%d %H:%M:%S}' + INTERVAL (m) MINUTE AS minute,
                        '/api/route' || r AS route, 'GET' AS method,
                        CAST(200 + (hash(m, r) % 200) AS BIGINT) AS requests,
                        hash(m, r, 'x') % 1000 AS salt
                    FROM range(60) t(m), range({routes}) u(r)
                )
                SELECT minute, route, method, requests,
                    requests - requests // 100 - requests // 200 AS status_2xx,
                    CAST(0 AS BIGINT) AS status_3xx,
                    requests // 200 AS status_4xx,
                    requests // 100 AS status_5xx,
                    requests // 200 AS status_429,
                    CAST(0 AS BIGINT) AS status_other,
                    5.0 AS latency_min_ms, 900.0 + salt AS latency_max_ms,
                    requests * 60.0 AS latency_sum_ms,
                    [{{'bucket': {bucket_sql("40.0")}, 'count': CAST(requests * 9 // 10 AS INTEGER)}},
                     {{'bucket': {bucket_sql("120.0 + salt")}, 'count':
                       CAST(requests - requests * 9 // 10 AS INTEGER)}}] AS latency_sketch
                FROM base
            """
            store.replace_partition(
                connection,
                REQUESTS_MINUTE.name,
                hour_key(hour),
                f"SELECT {REQUESTS_MINUTE.select_list()} FROM ({select})",
            )
    return store


def rule_pack(count: int) -> RulePack:
    rules = []
    for index in range(count):
        metric, comparator, values = METRICS[index % len(METRICS)]
        window = WINDOWS[(index // len(METRICS)) % len(WINDOWS)]
        thresholds = dict(zip(["warning", "high", "critical"], values, strict=True))
        rules.append(
            {
                "name": f"rule_{index:02d}",
                "metric": metric,
                "group_by": "route",
                "comparator": comparator,
                "window": window,
                "thresholds": {name: {"value": value} for name, value in thresholds.items()},
            }
        )
    return parse_rules({"rules": rules}, "bench")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--routes", type=int, default=100)
    parser.add_argument("--rules", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    with tempfile.TemporaryDirectory(prefix="hk-bench-rules-") as directory:
        root = Path(directory)
        started = time.perf_counter()
        store = build_rollups(root, args.days, args.routes, end)
        rows = args.days * 24 * 60 * args.routes
        print(
            f"rollups: {rows:,} minute rows ({args.routes} routes x {args.days} days), "
            f"{args.days * 24} hourly Parquet files, built in {time.perf_counter() - started:.1f} s"
        )
        pack = rule_pack(args.rules)
        alert_store = AlertStore(f"sqlite:///{root / 'alerts.db'}")
        channels = {severity: "#alerts" for severity in Severity}

        baseline, evaluations = [], []
        report = None
        for repeat in range(args.repeat):
            now = end + timedelta(minutes=repeat)
            started = time.perf_counter()
            with duckdb.connect(str(store.database), read_only=True) as connection:
                connection.execute(
                    "SELECT route, sum(requests), sum(status_5xx) FROM requests_minute "
                    "WHERE minute >= $s AND minute < $e GROUP BY route",
                    {
                        "s": (now - timedelta(hours=1)).replace(tzinfo=None),
                        "e": now.replace(tzinfo=None),
                    },
                ).fetchall()
            baseline.append(time.perf_counter() - started)
            started = time.perf_counter()
            with MetricSource(store.database, rollup_root=store.root) as metrics:
                report = evaluate_rules(pack, metrics, alert_store, now, channels)
            evaluations.append(time.perf_counter() - started)
        assert report is not None
        base = statistics.median(baseline)
        evaluation = statistics.median(evaluations)
        print(
            f"one evaluation: {report.rules} rules, {report.groups:,} (rule, group) pairs, "
            f"{len(report.active):,} not ok, errors: {report.errors or 'none'}"
        )
        print("")
        print(f"{'contender':<44}{'median s':>10}{'runs s':>34}{'ratio':>9}")
        print("-" * 97)
        runs = " ".join(f"{value:.3f}" for value in baseline)
        print(
            f"{'baseline: one aggregation over the last hour':<44}{base:>10.3f}{runs:>34}{1:>8.2f}x"
        )
        runs = " ".join(f"{value:.3f}" for value in evaluations)
        print(
            f"{'evaluate_rules (50 rules x 100 groups)':<44}{evaluation:>10.3f}{runs:>34}"
            f"{evaluation / base:>8.2f}x"
        )
        verdict = "PASS" if evaluation <= TARGET_SECONDS else "FAIL"
        print("")
        print(
            f"SUMMARY: {verdict}: one evaluation {evaluation:.3f} s = "
            f"{evaluation / TARGET_SECONDS:.2f}x the {TARGET_SECONDS:.0f} s target "
            f"({evaluation / base:.1f}x one plain aggregation)"
        )


if __name__ == "__main__":
    main()
