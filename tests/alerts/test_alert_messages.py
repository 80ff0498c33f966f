"""What alert messages say (issue 12, items 7b-10): the first two lines of each kind, the cause
of a failure, where to look, what a resolved value is now, and what `hk alerts deliver` /
`evaluate` report, against the fake Slack."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from analytics.alerts.catalog import unit_of
from analytics.alerts.delivery import deliver
from analytics.alerts.messages import dagster_target, redact_secrets, rule_message
from analytics.alerts.model import AlertKey, Notification, NotificationKind, Severity
from analytics.alerts.slack import SlackWebSender
from analytics.alerts.state import advance
from analytics.alerts.store import AlertStore
from housekeeping.history import PolicyRun, RunHistory, RunStatus
from tests.alerts.test_alert_cli import hk, setup
from tests.alerts.test_alert_delivery import TOKEN, Clock, drain, enqueue, note
from tests.support.alert_support import (
    T0,
    Minute,
    alert_settings_at,
    analytics_settings_at,
    pack,
    publish_minutes,
    store_at,
)
from tests.support.fake_slack import FakeSlack, Scripted

MINUTE = timedelta(minutes=1)
WEB = "http://dagster.example:3000"


@pytest.fixture
def slack():
    server = FakeSlack().start()
    yield server
    server.stop()


def lines(message, count=2):
    return message.text.split("\n")[:count]


# --- item 10: the first two lines of every kind ---------------------------------------------
def test_every_kind_opens_with_what_broke_how_bad_since_when_and_where_to_look(
    tmp_path, slack, monkeypatch
):
    monkeypatch.setenv("DAGSTER_WEBSERVER_URL", WEB)
    store, clock = store_at(tmp_path), Clock(T0)
    settings = alert_settings_at(tmp_path)
    sender = SlackWebSender(TOKEN, slack.base_url)
    steps = [
        note(value=0.12),
        note(kind=NotificationKind.RENOTIFY, value=0.15, at=T0 + 120 * MINUTE),
        note(kind=NotificationKind.RESOLVED, value=0.004, at=T0 + 150 * MINUTE),
    ]
    for step in steps:
        clock.now = step.evaluated_at
        enqueue(store, step, now=clock.now)
        deliver(store, sender, settings, clock, clock.sleep)

    firing, still, resolved = slack.channel_messages("#alerts")
    look = f"Look at: <{WEB}/assets/analytics/requests_minute|asset analytics/requests_minute>"
    assert lines(firing) == [
        "FIRING [critical]: route_errors on route /api/orders is 12.0% (&gt; 10.0%)",
        f"Since 12:00 UTC · {look}",
    ]
    assert lines(still) == [
        "STILL FIRING [critical]: route_errors on route /api/orders is 15.0% (&gt; 10.0%)",
        f"Firing since 12:00 UTC (2h) · {look}",
    ]
    assert lines(resolved) == [
        "RESOLVED: route_errors on route /api/orders is now 0.4% (fired at critical &gt; 10.0%)",
        f"Fired 12:00 UTC, resolved 14:30 UTC after 150m · {look}",
    ]
    # the top of the blocks says the same: the header, then the first section
    assert [block["type"] for block in firing.blocks[:2]] == ["header", "section"]
    assert firing.blocks[0]["text"]["text"] == (
        ":red_circle: FIRING [critical]: route_errors on route /api/orders is 12.0% (> 10.0%)"
    )
    assert firing.blocks[1]["text"]["text"] == lines(firing)[1]
    assert still.thread_ts is None and resolved.thread_ts == still.ts  # the latest message


def test_how_long_an_alert_fired_is_rounded_to_what_a_person_reads(tmp_path, slack):
    # The sensor evaluates at whatever second its tick runs: the differences are not whole.
    store, clock = store_at(tmp_path), Clock(T0 + timedelta(seconds=7.3))
    steps = [
        note(value=0.12, at=clock.now),
        note(kind=NotificationKind.RESOLVED, value=0.004, at=clock.now + timedelta(seconds=41.8)),
        note(value=0.12, at=clock.now + 5 * MINUTE),
        note(kind=NotificationKind.RENOTIFY, value=0.15, at=clock.now + timedelta(seconds=3792.5)),
    ]
    settings = alert_settings_at(tmp_path)
    sender = SlackWebSender(TOKEN, slack.base_url)
    for step in steps:
        clock.now = step.evaluated_at
        enqueue(store, step, now=clock.now)
        deliver(store, sender, settings, clock, clock.sleep)

    _, resolved, _, still = slack.channel_messages("#alerts")
    assert lines(resolved)[1].startswith("Fired 12:00 UTC, resolved 12:00 UTC after 42s ·")
    assert lines(still)[1].startswith("Firing since 12:05 UTC (58m) ·")


def test_a_rule_without_data_says_so_in_its_first_line(tmp_path, slack):
    store, clock = store_at(tmp_path), Clock(T0)
    enqueue(store, note(group="", rule="http_error_rate", value=None))

    drain(tmp_path, slack, store, clock)

    (message,) = slack.channel_messages("#alerts")
    assert lines(message) == [
        "FIRING [critical]: http_error_rate: no data for 5m",
        "Since 12:00 UTC · Look at: asset analytics/requests_minute in Dagster",
    ]


# --- item 8: the cause, and where to look ---------------------------------------------------
def test_a_sql_rule_title_names_its_group_as_a_group():
    rule = pack(
        """
rules:
  - name: slow_tables
    sql: >
      SELECT route, max(requests) FROM requests_minute
      WHERE minute >= $window_start AND minute < $window_end GROUP BY route
    thresholds: {warning: {value: 100}}
"""
    ).rules[0]
    title, text = rule_message(
        rule, AlertKey("slow_tables", "orders"), NotificationKind.FIRING, Severity.WARNING, 250.0
    )
    assert title == "FIRING [warning]: slow_tables on group orders is 250 (> 100)"
    assert text == "slow_tables on group orders: sql is 250 (> 100, window 5m)"


def test_a_group_from_data_never_breaks_the_first_two_lines(tmp_path, slack):
    """A SQL rule's group is whatever its first column holds, e.g. a multi-line error text with
    ``&`` and ``<>``: line 1 stays one line (whitespace collapsed), a cut does not drop what
    follows a raw ``&``, and the labels call it ``group`` (not ``none``)."""
    rule = pack(
        """
rules:
  - name: errors_by_text
    sql: SELECT 'x', 1
    thresholds: {high: {value: 5}}
"""
    ).rules[0]
    group = 'KeyError: a & b <c>\n  File "app.py", line 3, in handler\n' + "x" * 40
    _, (fired,) = advance(rule, None, AlertKey(rule.name, group), 9.0, T0, {})
    store, clock = store_at(tmp_path), Clock(T0)
    enqueue(store, replace(fired, channel="#alerts"))

    drain(tmp_path, slack, store, clock)

    (message,) = slack.channel_messages("#alerts")
    assert lines(message) == [
        "FIRING [high]: errors_by_text on group KeyError: a &amp; b &lt;c&gt; "
        'File "app.py", line 3, in handler xxxxx… is 9 (&gt; 5)',
        "Since 12:00 UTC · Look at: sensor alert_rules_sensor in Dagster",
    ]
    assert message.blocks[0]["text"]["text"] == (
        ":large_orange_circle: FIRING [high]: errors_by_text on group KeyError: a & b <c> "
        'File "app.py", line 3, in handler xxxxx… is 9 (> 5)'
    )
    (context,) = [block for block in message.blocks if block["type"] == "context"]
    assert "· group=KeyError: a &amp; b &lt;c&gt;" in context["elements"][0]["text"]
    assert "none=" not in context["elements"][0]["text"]


def test_a_maximal_rule_name_keeps_value_and_threshold_in_the_header(tmp_path, slack):
    """A 63-character rule name (the longest allowed) and a 60-character route: the header was
    cut at 150 characters before the value and the threshold, so line 1 on a phone said what
    broke but not how bad. The route gives way instead."""
    name = "checkout_payment_provider_webhook_error_rate_per_route_over_5_m"
    rule = pack(
        f"""
rules:
  - name: {name}
    metric: http_error_rate
    group_by: route
    thresholds: {{high: {{value: 0.05}}}}
"""
    ).rules[0]
    route = "/api/v2/checkout/payments/providers/<provider_id>/webhooks/retry"
    _, (fired,) = advance(rule, None, AlertKey(name, route), 0.231, T0, {Severity.HIGH: "#alerts"})
    store, clock = store_at(tmp_path), Clock(T0)
    enqueue(store, fired)

    drain(tmp_path, slack, store, clock)

    (message,) = slack.channel_messages("#alerts")
    assert message.blocks[0]["text"]["text"] == (
        f":large_orange_circle: FIRING [high]: {name} on route /api/v2/checkout/paym… "
        "is 23.1% (> 5.0%)"
    )


def _notification(metric=None, group="", run_id=None, rule="r", labels=None):
    return Notification(
        key=AlertKey(rule, group),
        kind=NotificationKind.FIRING,
        severity=Severity.HIGH,
        channel="#alerts",
        title="t",
        text="t",
        evaluated_at=T0,
        labels={**({"metric": metric} if metric else {}), **(labels or {})},
        run_id=run_id,
        unit=unit_of(metric),
    )


def test_open_in_dagster_opens_the_asset_run_or_sensor_the_alert_is_about():
    cases = [
        (_notification("http_error_rate"), "/assets/analytics/requests_minute"),
        (_notification("rollup_lag_minutes"), "/assets/analytics/requests_minute"),
        (_notification("jobs_failed", "default"), "/assets/analytics/jobs_hourly"),
        (
            _notification("cleanup_consecutive_failures", "tokens", labels={"policy": "tokens"}),
            "/assets/housekeeping/tokens",
        ),
        (_notification(run_id="0123456789abcdef"), "/runs/0123456789abcdef"),
        (_notification(), "/locations/housekeeping/sensors/alert_rules_sensor"),  # a SQL rule
        (_notification("app_database_up"), "/locations/housekeeping/sensors/alert_rules_sensor"),
    ]
    assert [dagster_target(item)[1] for item, _ in cases] == [path for _, path in cases]


def test_error_texts_lose_their_secrets():
    text = (
        "OperationalError: connection to postgresql://app:hunter2@db:5432/app failed; "
        "password=hunter2 token: xoxb-1-abc hooks.slack.com/services/T0/B0/xyz"
    )
    assert redact_secrets(text) == (
        "OperationalError: connection to postgresql://app:***@db:5432/app failed; "
        "password=*** token: *** hooks.slack.com/services/***"
    )


CLEANUP_RULES = """
rules:
  - name: cleanup_failing
    metric: cleanup_consecutive_failures
    group_by: policy
    comparator: ">="
    window: 1d
    thresholds:
      warning: {value: 1}
"""
POLICIES = {
    "revoked_tokens": {
        "kind": "expired",
        "table": "revoked_tokens",
        "cutoff_column": "expires_at",
        "schedule": "0 3 * * *",
    }
}


def slack_env(slack, **extra):
    return {
        "SLACK_BOT_TOKEN": TOKEN,
        "SLACK_API_BASE_URL": slack.base_url,
        "SLACK_WEBHOOK_URL": "",
        **extra,
    }


def test_cleanup_failing_carries_the_policys_last_error(tmp_path, slack):
    config = setup(tmp_path, rules=CLEANUP_RULES, policies=POLICIES)
    history = RunHistory(f"sqlite:///{tmp_path / 'state.db'}")
    finished = datetime.now(UTC) - timedelta(hours=1)
    history.record(
        PolicyRun(
            policy="revoked_tokens",
            table_name="revoked_tokens",
            status=RunStatus.FAILED,
            started_at=finished - timedelta(seconds=1),
            finished_at=finished,
            error="OperationalError: connection to postgresql://app:hunter2@db/app refused\n"
            "  File 'cleanup.py', line 3",
        )
    )
    history.dispose()

    code, output = hk("alerts", "evaluate", "--config", config, env=slack_env(slack))

    assert code == 0, output
    (message,) = slack.channel_messages("#alerts")
    (row,) = AlertStore(f"sqlite:///{tmp_path / 'alerts.db'}").rows()
    assert message.text.split("\n")[:3] == [
        "FIRING [warning]: cleanup_failing on policy revoked_tokens is 1 (&gt;= 1)",
        f"Since {row.notification.evaluated_at:%H:%M} UTC · "
        "Look at: asset housekeeping/revoked_tokens in Dagster",
        "Last error of revoked_tokens: OperationalError: connection to "
        "postgresql://app:***@db/app refused",
    ]


def test_a_resolved_job_alert_says_what_the_value_is_now():
    rule = pack(
        """
rules:
  - name: jobs_failed
    metric: jobs_failed
    group_by: queue
    comparator: ">"
    window: 1h
    thresholds: {warning: {value: 0}}
"""
    ).rules[0]
    key = AlertKey("jobs_failed", "mailers")
    title, text = rule_message(rule, key, NotificationKind.RESOLVED, Severity.WARNING, None)
    assert title == (
        "RESOLVED: jobs_failed on queue mailers is now 0 (nothing counted in the last 1h) "
        "(fired at warning > 0)"
    )
    assert "no data" not in text


# --- item 7b: deliver tries now; exit statuses say what failed ------------------------------
def test_deliver_tries_now_while_respect_backoff_waits_for_the_retry(tmp_path, slack):
    config = setup(tmp_path)
    store = AlertStore(f"sqlite:///{tmp_path / 'alerts.db'}")
    enqueue(store, note(), now=datetime.now(UTC))
    slack.down = True
    code, output = hk("alerts", "deliver", "--config", config, env=slack_env(slack))
    assert code == 4 and "delivery stopped: Slack answered HTTP 503" in output
    slack.down = False  # Slack is back; the row waits out its backoff

    code, output = hk(
        "alerts", "deliver", "--respect-backoff", "--config", config, env=slack_env(slack)
    )
    assert code == 4 and "waiting until" in output and slack.channel_messages("#alerts") == []

    code, output = hk("alerts", "deliver", "--config", config, env=slack_env(slack))
    assert code == 0 and "1 sent in 1 messages, 0 waiting" in output
    assert len(slack.channel_messages("#alerts")) == 1


BROKEN = """
  - name: broken
    sql: SELECT route, no_such_column FROM requests_minute
    thresholds: {warning: {value: 1}}
"""
FIRING = """
  - name: http_error_rate
    metric: http_error_rate
    window: 5m
    thresholds: {critical: {value: 0.10}}
"""


@pytest.mark.parametrize(
    ("rules", "slack_down", "status", "says"),
    [
        ("rules:" + BROKEN, False, 3, "evaluation: rule broken could not be evaluated"),
        ("rules:" + FIRING, True, 4, "delivery stopped: Slack answered HTTP 503"),
        ("rules:" + BROKEN + FIRING, True, 5, "delivery stopped: Slack answered HTTP 503"),
    ],
    ids=["evaluation", "delivery", "both"],
)
def test_evaluate_exit_status_says_whether_the_evaluation_or_the_delivery_failed(
    tmp_path, slack, rules, slack_down, status, says
):
    config = setup(tmp_path, rules=rules)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    publish_minutes(
        analytics_settings_at(tmp_path),
        [Minute(now - offset * MINUTE, errors=30) for offset in range(1, 11)],
    )
    slack.down = slack_down

    code, output = hk("alerts", "evaluate", "--config", config, env=slack_env(slack))

    assert code == status and says in output, output
    assert ("evaluation: rule broken" in output) == (status in (3, 5))


@pytest.mark.parametrize(
    ("answer", "status", "says"),
    [
        # the messages of that channel are failed for good: not "everything was sent"
        (Scripted(error="channel_not_found"), 4, "failed: Slack cannot post to #alerts"),
        (Scripted(status=429, error="ratelimited", retry_after=30), 4, "Slack rate limit (429)"),
        (Scripted(error="invalid_auth"), 4, "Slack rejected the bot token (invalid_auth)"),
    ],
    ids=["channel_refused", "rate_limited", "token_refused"],
)
def test_deliver_exits_4_whenever_a_message_was_not_delivered(
    tmp_path, slack, answer, status, says
):
    config = setup(tmp_path)
    store = AlertStore(f"sqlite:///{tmp_path / 'alerts.db'}")
    enqueue(store, note(), now=datetime.now(UTC))
    slack.fail_next(answer)

    code, output = hk("alerts", "deliver", "--config", config, env=slack_env(slack))

    assert code == status and says in output, output
    assert slack.channel_messages("#alerts") == []
