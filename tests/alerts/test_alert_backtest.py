"""The fast backtest against the reference replay (issue 13, item 3): the same notifications.

``backtest(..., exact=True)`` evaluates every rule at every step through MetricSource, as the
sensor does; the default computes the series at once and runs the state machine only where
something can change (analytics/alerts/backtest.py, series.py). Both run here on the same
published files: every shipped rule-pack test (tests/rule_tests/) and a generated month of minute
rollups with incidents.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from analytics.alerts import rule_tests
from analytics.alerts.backtest import backtest
from analytics.alerts.model import NotificationKind, Severity
from analytics.alerts.rule_tests import (
    RequestMinute,
    load_rule_test,
    publish_request_minutes,
    run_rule_test,
)
from analytics.alerts.rules import default_rules_path, load_rules, parse_rules
from analytics.publish import RollupStore
from housekeeping.history import RunHistory

RULE_TESTS = Path(__file__).resolve().parents[1] / "rule_tests"
CASES = sorted(RULE_TESTS.glob("*.yaml"))


def _describe(result):
    return [
        (item.evaluated_at.isoformat(), item.key.rule, item.key.group, item.kind.value, item.value)
        for item in result.notifications
    ]


@pytest.mark.parametrize("case_file", CASES, ids=[case.stem for case in CASES])
def test_fast_backtest_sends_what_the_reference_replay_sends_on_each_rule_test(
    case_file, tmp_path, monkeypatch
):
    replays = []

    def both(*args, **kwargs):
        fast = backtest(*args, **kwargs)
        replays.append((fast, backtest(*args, **kwargs, exact=True)))
        return fast

    monkeypatch.setattr(rule_tests, "backtest", both)
    result = run_rule_test(load_rules(), load_rule_test(case_file), tmp_path)

    ((fast, reference),) = replays
    assert reference.notifications, "a case that sends nothing compares nothing"
    assert _describe(fast) == _describe(reference)
    assert fast.notifications == reference.notifications  # texts, labels, values, channels
    assert fast.errors == reference.errors == {}
    assert fast.evaluations == reference.evaluations
    assert result.passed, result.diff()


# --- A generated month of minute rollups with incidents ------------------------------------

START = datetime(2026, 10, 1, tzinfo=UTC)
ROUTES = ("/api/orders", "/api/users", "/api/payments", "/api/admin")
# Extra rules beside the shipped pack: each path of the state machine the pack does not take.
EXTRA_RULES = [
    {
        "name": "route_requests_stop",  # a count by route: a remembered route without rows is 0
        "metric": "http_requests",
        "group_by": "route",
        "comparator": "<",
        "window": "10m",
        "for": "5m",
        "thresholds": {"warning": {"value": 1}},
        "renotify": "1h",
    },
    {
        "name": "payments_errors_sql",  # a SQL rule, batched over the steps
        "sql": "SELECT route, sum(status_5xx) FROM requests_minute "
        "WHERE minute >= $window_start AND minute < $window_end GROUP BY route",
        "comparator": ">",
        "window": "10m",
        "thresholds": {"warning": {"value": 30}, "critical": {"value": 150, "for": "5m"}},
        "renotify": "3h",
    },
    {
        "name": "latency_full_window",  # no data until the whole hour is covered
        "metric": "http_latency_p95_ms",
        "group_by": "route",
        "comparator": ">",
        "window": "1h",
        "require_full_window": True,
        "recovery": 300,
        "thresholds": {"warning": {"value": 400}, "high": {"value": 900, "for": "20m"}},
        "renotify": "6h",
    },
    {
        "name": "error_rate_no_data_ok",
        "metric": "http_error_rate",
        "comparator": ">=",
        "window": "15m",
        "no_data": "ok",
        "min_requests": 200,
        "thresholds": {"high": {"value": 0.04}},
    },
    {
        "name": "traffic_no_data_alert",
        "metric": "http_request_rate",
        "comparator": "<",
        "window": "5m",
        "no_data": "alert",
        "no_data_severity": "high",
        "thresholds": {"warning": {"value": 2.0}},
        "renotify": "2h",
    },
]


def _month_minutes(first: datetime, last: datetime) -> list[RequestMinute]:
    """Minutes of the four routes from ``first`` to ``last`` with the month's incidents."""
    rows = []
    minute = first
    while minute < last:
        offset = int((minute - START).total_seconds() // 60)
        day, in_day = divmod(offset, 1440)
        for number, route in enumerate(ROUTES):
            requests = 60 + 40 * number + (offset * 7 + number * 13) % 25
            errors = (offset + number) % 3 == 0
            latency = 40.0 + ((offset * 31 + number * 17) % 97) * 3.0
            if day == 3 and 600 <= in_day < 700 and route == "/api/payments":
                errors = requests // 3  # an error burst on one route: fires, escalates
            if day == 9 and 120 <= in_day < 400:
                latency = 700.0 + 6.0 * (in_day % 50) + 100 * number  # slow everywhere
            if day == 17 and 60 <= in_day < 130:
                continue  # traffic stops: empty hours, stale rollups, no requests
            if day == 21 and 300 <= in_day < 360 and route == "/api/admin":
                continue  # one route stops
            if day == 25 and 1000 <= in_day < 1200:
                errors = int(requests * (0.03 + 0.01 * (in_day % 7)))  # wobbling around 5 %
            rows.append(
                RequestMinute(
                    minute, route=route, requests=requests, errors=int(errors), latency_ms=latency
                )
            )
        minute += timedelta(minutes=1)
    return rows


@pytest.fixture(scope="module")
def month(tmp_path_factory):
    """A month of minute rollups (4 routes) published as the rollup job writes them, the
    pipeline off for 5 hours on day 12 (no partitions: no data), with incidents on days 3, 9,
    17, 21 and 25."""
    root = tmp_path_factory.mktemp("month")
    store = RollupStore(root / "analytics", root / "analytics" / "rollups.duckdb")
    gap = START + timedelta(days=12, hours=4)
    publish_request_minutes(store, _month_minutes(START, gap), every_hour=True)
    publish_request_minutes(
        store, _month_minutes(gap + timedelta(hours=5), START + timedelta(days=30)), True
    )
    # The shipped request rules (the ones this data moves; each rule costs the reference replay
    # a query per step) and the extra rules.
    data = yaml.safe_load(default_rules_path().read_text())
    shipped = [
        rule
        for rule in data["rules"]
        if str(rule.get("metric", "")).startswith(("http_", "rollup_lag"))
    ]
    pack = parse_rules({"rules": shipped + EXTRA_RULES}, "month")
    history = RunHistory(f"sqlite:///{root / 'state.db'}")
    yield store, pack, history
    history.dispose()


def _compare(month, since, until, step):
    store, pack, history = month
    arguments = (pack, store.database, history, since, until, step, CHANNELS, store.root)
    fast = backtest(*arguments)
    reference = backtest(*arguments, exact=True)
    assert _describe(fast) == _describe(reference)
    assert fast.notifications == reference.notifications
    assert fast.errors == reference.errors == {}
    return fast


CHANNELS = {severity: f"#{severity.value}" for severity in Severity}


@pytest.mark.slow
def test_fast_backtest_matches_the_reference_over_a_generated_month(month):
    # Every 6 hours over the month (the reference replay takes a second or so per step).
    fast = _compare(
        month, START + timedelta(minutes=1), START + timedelta(days=30), timedelta(hours=6)
    )

    kinds = {(item.key.rule, item.kind) for item in fast.notifications}
    assert len({rule for rule, _ in kinds}) >= 5
    assert {kind for _, kind in kinds} >= {NotificationKind.FIRING, NotificationKind.RESOLVED}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("since", "minutes"),
    [
        (timedelta(days=3, hours=10, minutes=4), 50),  # the error burst: fires, escalates
        (timedelta(days=12, hours=8, minutes=50), 40),  # the pipeline back: partial windows
        (timedelta(days=17, hours=1, minutes=5), 80),  # traffic stops: no data, stale
    ],
    ids=["error-burst", "pipeline-back", "traffic-stops"],
)
def test_fast_backtest_matches_the_reference_minute_by_minute(month, since, minutes):
    begin = START + since
    fast = _compare(month, begin, begin + timedelta(minutes=minutes), timedelta(minutes=1))
    assert fast.notifications
    if since.days == 3:  # the burst on /api/payments escalates its SQL rule to critical
        assert NotificationKind.ESCALATED in {item.kind for item in fast.notifications}
