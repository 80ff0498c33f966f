"""Detection latency with a controlled clock: a condition starting at T is sent by T + for + 3 min.

The rollups trail the application by up to 2 minutes (the freshness sensor's bound), the alert
sensor ticks every minute at an unaligned second, and delivery happens in the same tick.
"""

from __future__ import annotations

from datetime import timedelta

from analytics.alerts.delivery import deliver
from analytics.alerts.evaluate import evaluate_rules
from analytics.alerts.metrics import MetricSource
from analytics.alerts.model import Severity
from analytics.alerts.rules import load_rules
from analytics.alerts.slack import ConsoleSender
from tests.support.alert_support import (
    T0,
    Minute,
    alert_settings_at,
    analytics_settings_at,
    publish_minutes,
    store_at,
)

ROLLUP_LAG = timedelta(minutes=2)
SENSOR_INTERVAL = timedelta(minutes=1)


def first_sent(tmp_path, rules, traffic, start):
    """Tick every minute at an unaligned second, publishing what the freshness sensor would
    have by then; the first tick that sends something and the lines it sent."""
    analytics = analytics_settings_at(tmp_path)
    settings = alert_settings_at(tmp_path)
    store = store_at(tmp_path)
    lines: list[str] = []
    now = start + timedelta(seconds=37)  # ticks at an unaligned second
    while now < T0 + timedelta(minutes=60):
        # What the freshness sensor has published by now: minutes that started ROLLUP_LAG ago.
        publish_minutes(analytics, [m for m in traffic if m.minute + ROLLUP_LAG <= now])
        with MetricSource(analytics.database_path, rollup_root=analytics.root_path) as metrics:
            evaluate_rules(rules, metrics, store, now, settings.channel_for())
        report = deliver(store, ConsoleSender(lines.append), settings, now=lambda at=now: at)
        if report.sent:
            return now, lines
        now += SENSOR_INTERVAL
    return None, lines


def test_an_error_burst_is_sent_within_for_plus_three_minutes(tmp_path):
    rules = load_rules().select(["http_error_rate"])
    rule = rules.rules[0]
    high_for = rule.for_duration(Severity.HIGH)
    burst_start = T0 + timedelta(minutes=30)  # T: the first minute of 30 % errors
    traffic = [
        Minute(
            T0 + timedelta(minutes=offset),
            errors=30 if T0 + timedelta(minutes=offset) >= burst_start else 0,
        )
        for offset in range(60)
    ]
    sent_at, lines = first_sent(tmp_path, rules, traffic, T0 + timedelta(minutes=20))

    assert sent_at is not None, "the burst was never notified"
    assert "http_error_rate" in lines[0]
    assert sent_at <= burst_start + high_for + timedelta(minutes=3)
    # and not before the rule's `for` could have elapsed (no premature alert)
    assert sent_at >= burst_start + high_for


def test_a_failing_route_is_named_within_for_plus_three_minutes(tmp_path):
    """Issue 12, item 7a: 25 % 5xx on a route carrying 16 % of the traffic, live."""
    rules = load_rules().select(["http_error_rate", "http_route_error_rate"])
    route_for = rules.rules[1].for_duration(Severity.HIGH)
    burst_start = T0 + timedelta(minutes=30)
    traffic = [Minute(T0 + timedelta(minutes=offset), route="/api/users", requests=84)
               for offset in range(60)]  # fmt: skip
    traffic += [
        Minute(
            T0 + timedelta(minutes=offset),
            route="/api/payments",
            requests=16,
            errors=4 if T0 + timedelta(minutes=offset) >= burst_start else 0,
        )
        for offset in range(60)
    ]

    sent_at, lines = first_sent(tmp_path, rules, traffic, T0 + timedelta(minutes=20))

    assert sent_at is not None, "the failing route was never notified"
    assert "http_route_error_rate" in lines[0] and "/api/payments" in lines[0]
    assert burst_start + route_for <= sent_at <= burst_start + route_for + timedelta(minutes=3)
