"""Backtest speed: the shipped rule pack replayed minute by minute over `make bench-rules` data.

    make bench-backtest   # or: .venv/bin/python bench/bench_backtest.py [--days 1] [--full]

The target (issue 13): `hk rules backtest --since 30d` over the default pack on 100 routes x 30
days of minute rollups within 30 s (`--full`; the default is 1 day). The baseline, measured in
the same run on the same files, is one sensor evaluation of the same pack (evaluate_rules,
states written) times the number of steps: what a replay costs if every step is a full
evaluation. The reference replay (``backtest(..., exact=True)``, every rule at every step, what
`hk rules backtest` ran before) is timed over the last ``--exact-hours`` of the same span, its
notifications compared with the fast replay's over that span, and its time per step scaled to
the whole span. This is a report, not a test: it exits 0 on FAIL too.
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
    parser.add_argument(
        "--exact-hours", type=int, default=1, help="Hours replayed by the reference (default 1)."
    )
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

        short_since = end - timedelta(hours=args.exact_hours)
        short = (pack, store.database, history, short_since, end, timedelta(minutes=1), channels)
        started = time.perf_counter()
        reference = backtest(*short, store.root, exact=True)
        exact_per_step = (time.perf_counter() - started) / reference.evaluations
        same = backtest(*short, store.root).notifications == reference.notifications
        exact = exact_per_step * steps
        print(
            f"default pack: {len(pack.rules)} rules; {steps:,} steps of 1 minute; "
            f"{len(result.notifications):,} notifications; errors: {result.errors or 'none'}"
        )
        print("")
        print(f"{'contender':<52}{'seconds':>10}{'ratio':>9}")
        print("-" * 71)
        print(f"{'baseline: one evaluation x steps':<52}{baseline:>10.1f}{1:>8.2f}x")
        print(f"{'  (one evaluation, median of ' + str(args.repeat) + ')':<52}{one:>10.3f}")
        label = f"reference replay (exact=True), {args.exact_hours} h x {steps / reference.evaluations:.0f}"
        print(f"{label:<52}{exact:>10.1f}{exact / baseline:>8.2f}x")
        print(f"{'hk rules backtest (backtest())':<52}{replay:>10.1f}{replay / baseline:>8.4f}x")
        print("")
        print(
            f"fast replay vs reference: {exact / replay:,.0f}x faster; same notifications over "
            f"the last {args.exact_hours} h: {'yes' if same else 'NO'} "
            f"({len(reference.notifications)} notifications)"
        )
        # The target is for 30 days; a shorter replay must meet it too (its fixed costs, reading
        # the minutes once, do not shrink with the span).
        target = TARGET_SECONDS_FOR_30_DAYS
        verdict = "PASS" if replay <= target and same else "FAIL"
        print("")
        print(
            f"SUMMARY: {verdict}: {days} days replayed in {replay:.1f} s "
            f"({replay / baseline:.4f}x one evaluation x steps, {exact / replay:,.0f}x faster than "
            f"the reference replay; target {target:.0f} s for 30 days)"
        )


if __name__ == "__main__":
    main()
