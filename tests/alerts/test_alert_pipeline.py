"""Generated data to Slack, every real part in the path.

The `hk seed` generator writes an application database with injected incidents; the rollups are
computed from it; the default rule pack is evaluated minute by minute with a controlled clock
through the very function the sensor runs (states and outbox in the alert store); delivery posts
to a real local HTTP server standing in for Slack through slack-sdk. What arrives is exactly the
incident's alert and its resolution, threaded, and no message carries an IP, a user id, a token
hash, a user agent or the bot token. The daily summary of that day counts what the raw rows
say and names no one either.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from analytics.alerts.service import AlertRuntime, evaluate_and_deliver
from analytics.alerts.slack import sender_from_environment
from analytics.alerts.summary import build_summary
from analytics.publish import RollupStore
from analytics.rollups.engine import floor_hour
from analytics.rollups.requests import refresh_requests
from analytics.settings import analytics_settings
from analytics.views import publish_rollup_views
from housekeeping.config import load_config
from housekeeping.database import AppDatabase
from housekeeping.demo.incidents import IncidentKind
from housekeeping.demo.seed import seed_database
from tests.support.fake_slack import FakeSlack

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
TOKEN = "xoxb-pipeline-secret-token"
# Job rules are left out: on generated data their reference thresholds fire routinely (see
# docs/alerts.md, Backtesting); the request, cleanup and system rules must be silent but for
# the incident.
RULES_UNDER_TEST = [
    "http_error_rate",
    "http_latency_p95",
    "http_traffic_high",
    "http_no_requests",
    "http_rate_limited",
    "rollups_stale",
    "app_database_unreachable",
    "cleanup_failing",
    "cleanup_failed_runs",
    "cleanup_deletes_nothing",
    "cleanup_slow",
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    app_url = f"sqlite:///{root / 'app.db'}"
    seeded = seed_database(app_url, tokens=500, requests=150_000, days=1, now=NOW)
    config_file = root / "hk.yaml"
    config_file.write_text(
        yaml.safe_dump(
            {
                "state_database_url": f"sqlite:///{root / 'state.db'}",
                "analytics": {
                    "root": str(root / "analytics"),
                    "database": str(root / "analytics" / "rollups.duckdb"),
                },
                "alerts": {"database_url": f"sqlite:///{root / 'alerts.db'}"},
            }
        )
    )
    settings = analytics_settings(load_config(config_file))
    store = RollupStore(settings.root_path, settings.database_path)
    publish_rollup_views(store, "UTC")
    db = AppDatabase(app_url)
    refresh_requests(db, store, settings, floor_hour(seeded.start), floor_hour(NOW) + MINUTE * 60)
    db.dispose()
    return seeded, app_url, root, config_file


@pytest.fixture
def slack(monkeypatch, world):
    _, app_url, _, _ = world
    server = FakeSlack().start()
    monkeypatch.setenv("DATABASE_URL", app_url)
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("SLACK_API_BASE_URL", server.base_url)
    monkeypatch.delenv("SLACK_WEBHOOK_URL", raising=False)
    yield server
    server.stop()


def private_values(app_url: str) -> set[str]:
    """Every IP, user id, token hash and user agent the application database holds."""
    path = app_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        queries = [
            "SELECT DISTINCT ip FROM request_logs",
            "SELECT DISTINCT user_agent FROM request_logs",
            "SELECT DISTINCT token_hash FROM revoked_tokens",
            "SELECT DISTINCT ip FROM audit_logs",
            "SELECT DISTINCT actor FROM audit_logs",
        ]
        values = {str(row[0]) for query in queries for row in conn.execute(query) if row[0]}
        # user ids are numbers; only those long enough not to be an ordinary count are checkable
        values |= {
            str(row[0])
            for row in conn.execute("SELECT DISTINCT user_id FROM revoked_tokens")
            if row[0] is not None and len(str(row[0])) >= 6
        }
    return values


def at(call) -> datetime:
    """The evaluation time a message states (its context line: `YYYY-MM-DD HH:MM UTC · ...`)."""
    context = call.body["blocks"][-1]["elements"][0]["text"]
    return datetime.strptime(context[:16], "%Y-%m-%d %H:%M").replace(tzinfo=UTC)


def test_an_error_burst_reaches_slack_as_a_firing_an_escalation_and_a_threaded_resolution(
    world, slack
):
    seeded, app_url, _, config_file = world
    incident = seeded.incident(IncidentKind.ERROR_BURST)
    runtime = AlertRuntime.load(str(config_file))
    runtime.rules = runtime.rules.select(RULES_UNDER_TEST)
    sender = sender_from_environment()
    first = incident.start.replace(second=0, microsecond=0) - 20 * MINUTE
    try:
        moment = first
        while moment <= incident.end + 40 * MINUTE:
            evaluate_and_deliver(runtime, sender, now=moment)
            moment += MINUTE
    finally:
        runtime.close()

    posted = slack.posted()
    # the header's first words: what and how bad (the value follows " is ")
    headers = [call.body["blocks"][0]["text"]["text"].split(" is ")[0] for call in posted]
    # The 5-minute window ramps up through the high threshold a minute before the critical one.
    assert headers == [
        ":large_orange_circle: FIRING [high]: http_error_rate",
        ":red_circle: ESCALATED [critical]: http_error_rate",
        ":white_check_mark: RESOLVED: http_error_rate",
    ], [call.body["text"] for call in posted]
    firing, escalated, resolved = posted
    assert incident.start <= at(firing) <= incident.start + 15 * MINUTE
    assert at(escalated) <= at(firing) + 5 * MINUTE
    assert incident.end <= at(resolved) <= incident.end + 15 * MINUTE
    assert resolved.body.get("thread_ts"), "the resolution replies in the firing message's thread"

    private = private_values(app_url) | {TOKEN}
    assert len(private) > 100  # the check below has something to find
    leaked = [value for call in posted for value in private if value in json.dumps(call.body)]
    assert leaked == []


def test_the_daily_summary_of_the_incident_day_counts_right_and_names_no_one(world):
    seeded, app_url, _, config_file = world
    settings = analytics_settings(load_config(config_file))
    incident = seeded.incident(IncidentKind.ERROR_BURST)
    assert incident.route is not None
    start, end = (NOW - timedelta(hours=24)).strftime("%F %T"), NOW.strftime("%F %T")
    with sqlite3.connect(app_url.removeprefix("sqlite:///")) as conn:
        requests, errors = conn.execute(
            "SELECT count(*), sum(status_code >= 500) FROM request_logs WHERE ts >= ? AND ts < ?",
            (start, end),
        ).fetchone()
        route_errors = conn.execute(
            "SELECT count(*) FROM request_logs WHERE ts >= ? AND ts < ? AND route = ? "
            "AND status_code >= 500",
            (start, end, incident.route),
        ).fetchone()[0]

    summary = build_summary(settings.database_path, None, None, NOW)

    assert summary.requests == requests
    assert summary.error_rate == pytest.approx(errors / requests)
    top_route, top_errors, _ = summary.top_failing_routes[0]
    assert (top_route, top_errors) == (incident.route, route_errors)
    text = summary.notification("#alerts").text
    assert [value for value in private_values(app_url) if value in text] == []
