"""The default rule pack on generated data with injected incidents (the `hk seed` generator).

Each incident, replayed through the backtest (the sensor's own code), raises exactly the
request alerts it should (and resolves them), and no request rule fires outside incidents. The
job incidents raise their job alerts. A cleanup failing 3 runs in a row escalates to critical.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from analytics.alerts.backtest import backtest
from analytics.alerts.rules import load_rules
from analytics.publish import RollupStore
from analytics.rollups.engine import floor_hour
from analytics.rollups.jobs import refresh_jobs
from analytics.rollups.requests import refresh_requests
from analytics.settings import parse_analytics_settings
from analytics.views import publish_rollup_views
from housekeeping.database import AppDatabase
from housekeeping.demo.incidents import IncidentKind
from housekeeping.demo.seed import seed_database
from housekeeping.history import PolicyRun, RunHistory, RunStatus

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenarios")
    url = f"sqlite:///{root / 'app.db'}"
    seeded = seed_database(url, tokens=1000, requests=300_000, days=2, now=NOW)
    settings = parse_analytics_settings(
        {"root": str(root / "analytics"), "database": str(root / "analytics" / "views.duckdb")}
    )
    store = RollupStore(settings.root_path, settings.database_path)
    publish_rollup_views(store, "UTC")
    db = AppDatabase(url)
    start, end = floor_hour(seeded.start), floor_hour(NOW) + timedelta(hours=1)
    refresh_requests(db, store, settings, start, end)
    refresh_jobs(db, store, settings, start, end, NOW)
    db.dispose()
    return seeded, settings


def replay(settings, since, until, history=None):
    result = backtest(
        load_rules(),
        settings.database_path,
        history,
        since,
        until,
        MINUTE,
        rollup_root=settings.root_path,
    )
    assert result.errors == {}
    return result.notifications


def requests_alerts(notifications):
    return [
        (item.key.rule + (f"[{item.key.group}]" if item.key.group else ""), item.kind.value,
         item.severity.value)
        for item in notifications
        if item.key.rule.startswith("http_")
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (
            IncidentKind.ERROR_BURST,
            [
                ("http_error_rate", "firing", "critical"),
                # the per-route rule names the route (issue 12, item 7a)
                ("http_route_error_rate[/api/v1/payments]", "firing", "high"),
                ("http_error_rate", "resolved", "critical"),
                ("http_route_error_rate[/api/v1/payments]", "resolved", "high"),
            ],
        ),
        (
            IncidentKind.SLOW_PERIOD,
            [
                ("http_latency_p95", "firing", "high"),
                # the whole application is slow: every route with 50+ requests in 5 minutes, and
                # every percentile the reference watches (p95 > 2 s, p50 > 500 ms, p99 > 5 s)
                ("http_route_latency_p95[/api/v1/users/:id]", "firing", "high"),
                ("http_route_latency_p95[/health]", "firing", "high"),
                ("http_latency_p50", "firing", "warning"),
                ("http_latency_p99", "firing", "warning"),
                ("http_route_latency_p95[/api/v1/orders]", "firing", "high"),
                ("http_latency_p50", "resolved", "warning"),
                ("http_latency_p99", "resolved", "warning"),
                ("http_latency_p95", "resolved", "high"),
                ("http_route_latency_p95[/api/v1/orders]", "resolved", "high"),
                ("http_route_latency_p95[/api/v1/users/:id]", "resolved", "high"),
                ("http_route_latency_p95[/health]", "resolved", "high"),
            ],
        ),
        (
            IncidentKind.TRAFFIC_GAP,
            [
                ("http_no_requests", "firing", "critical"),
                ("http_no_requests", "resolved", "critical"),
            ],
        ),
        (
            IncidentKind.RATE_LIMIT_BURST,
            [("http_rate_limited", "firing", "high"), ("http_rate_limited", "resolved", "high")],
        ),
    ],
)
def test_each_request_incident_raises_exactly_its_alert_and_resolves(world, kind, expected):
    seeded, settings = world
    incident = seeded.incident(kind)
    since = incident.start.replace(second=0, microsecond=0) - 20 * MINUTE
    notifications = replay(settings, since, incident.end + 40 * MINUTE)

    assert requests_alerts(notifications) == expected
    fired = next(item for item in notifications if item.key.rule == expected[0][0])
    # sent while the incident lasts: within its `for` plus a few minutes of its start
    assert incident.start <= fired.evaluated_at <= incident.start + 15 * MINUTE


def test_no_request_rule_fires_on_ordinary_traffic(world):
    seeded, settings = world
    quiet_until = min(incident.start for incident in seeded.incidents) - 30 * MINUTE
    notifications = replay(settings, quiet_until - timedelta(hours=6), quiet_until)
    assert requests_alerts(notifications) == []


def test_the_job_failure_streak_raises_the_queue_failure_alerts(world):
    seeded, settings = world
    incident = seeded.incident(IncidentKind.JOB_FAILURE_STREAK)
    notifications = replay(settings, incident.start + 30 * MINUTE, incident.end)
    fired = {(item.key.rule, item.key.group, item.severity.value) for item in notifications}
    assert ("job_failure_rate", "webhooks", "critical") in fired
    assert ("job_errors_per_hour", "", "high") in fired


def test_the_stuck_job_is_reported_once_it_has_run_for_two_hours(world):
    seeded, settings = world
    incident = seeded.incident(IncidentKind.STUCK_JOB)
    notifications = replay(settings, incident.start, NOW)
    stuck = [item for item in notifications if item.key.rule == "jobs_stuck"]
    assert [(item.key.group, item.kind.value) for item in stuck] == [("webhooks", "firing")]
    # active for more than 2 h, seen at the next hourly snapshot
    assert incident.start + timedelta(hours=2) <= stuck[0].evaluated_at
    assert stuck[0].evaluated_at <= incident.start + timedelta(hours=3, minutes=1)


def test_a_cleanup_failing_three_runs_in_a_row_escalates_to_critical(world, tmp_path):
    _, settings = world
    history = RunHistory(f"sqlite:///{tmp_path / 'state.db'}")
    for day in range(3):
        finished = NOW - timedelta(days=2) + timedelta(days=day)
        history.record(
            PolicyRun(
                policy="revoked_tokens",
                table_name="revoked_tokens",
                status=RunStatus.FAILED,
                started_at=finished - timedelta(seconds=2),
                finished_at=finished,
                error="could not obtain lock",
            )
        )
    notifications = backtest(
        load_rules().select(["cleanup_failing"]),
        settings.database_path,
        history,
        NOW - timedelta(days=2, hours=1),
        NOW,
        timedelta(hours=1),
    ).notifications
    assert [
        (item.kind.value, item.severity.value)
        for item in notifications
        if item.kind.value != "renotify"
    ] == [
        ("firing", "warning"),
        ("escalated", "critical"),
    ]
