"""Backtest speed: the shipped rule pack replayed minute by minute over `make bench-rules` data.

    make bench-backtest   # or: .venv/bin/python bench/bench_backtest.py [--days 1] [--full]

The target (issue 13): `hk rules backtest --since 30d` over the default pack on 100 routes x 30
days of minute rollups within 30 s (`--full`; the default, 1 day, runs in a few minutes today). The
baseline, measured in the same run on the same files, is one sensor evaluation of the same pack
(evaluate_rules, states written) times the number of steps: what a replay costs if every step
is a full evaluation. This is a report, not a test: it exits 0 on FAIL too.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_rules import build_rollups  # noqa: E402

from analytics.alerts.backtest import backtest  # noqa: E402
from analytics.alerts.evaluate import evaluate_rules  # noqa: E402
from analytics.alerts.metrics import MetricSource  # noqa: E402
from analytics.alerts.model import Severity  # noqa: E402
from analytics.alerts.rules import load_rules  # noqa: E402
from analytics.alerts.store import AlertStore  # noqa: E402
from housekeeping.history import RunHistory  # noqa: E402

TARGET_SECONDS_FOR_30_DAYS = 30.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=1, help="Days replayed (default 1).")
    parser.add_argument("--full", action="store_true", help="The full size: 30 days.")
    parser.add_argument("--routes", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3, help="Single evaluations timed.")
    args = parser.parse_args()
    days = 30 if args.full else args.days

    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    with tempfile.TemporaryDirectory(prefix="hk-bench-backtest-") as directory:
        root = Path(directory)
        started = time.perf_counter()
        store = build_rollups(root, days, args.routes, end)
        print(
            f"rollups: {days * 24 * 60 * args.routes:,} minute rows ({args.routes} routes x "
            f"{days} days), built in {time.perf_counter() - started:.1f} s"
        )
        pack = load_rules()
        history = RunHistory(f"sqlite:///{root / 'state.db'}")
        alert_store = AlertStore(f"sqlite:///{root / 'alerts.db'}")
        channels = {severity: "#alerts" for severity in Severity}

        evaluations = []
        for repeat in range(args.repeat):
            now = end - timedelta(minutes=repeat)
            started = time.perf_counter()
            with MetricSource(store.database, history, rollup_root=store.root) as metrics:
                evaluate_rules(pack, metrics, alert_store, now, channels)
            evaluations.append(time.perf_counter() - started)
        one = statistics.median(evaluations)

        since = end - timedelta(days=days)
        started = time.perf_counter()
        result = backtest(
            pack, store.database, history, since, end, timedelta(minutes=1), channels, store.root
        )
        replay = time.perf_counter() - started
        steps = result.evaluations
        baseline = one * steps
        print(
            f"default pack: {len(pack.rules)} rules; {steps:,} steps of 1 minute; "
            f"{len(result.notifications):,} notifications; errors: {result.errors or 'none'}"
        )
        print("")
        print(f"{'contender':<52}{'seconds':>10}{'ratio':>9}")
        print("-" * 71)
        print(f"{'baseline: one evaluation x steps':<52}{baseline:>10.1f}{1:>8.2f}x")
        print(f"{'  (one evaluation, median of ' + str(args.repeat) + ')':<52}{one:>10.3f}")
        print(f"{'hk rules backtest (backtest())':<52}{replay:>10.1f}{replay / baseline:>8.2f}x")
        target = TARGET_SECONDS_FOR_30_DAYS * days / 30
        verdict = "PASS" if replay <= target else "FAIL"
        print("")
        print(
            f"SUMMARY: {verdict}: {days} days replayed in {replay:.1f} s "
            f"({replay / baseline:.2f}x one evaluation x steps; target {target:.0f} s, "
            f"{TARGET_SECONDS_FOR_30_DAYS:.0f} s for 30 days)"
        )


if __name__ == "__main__":
    main()
