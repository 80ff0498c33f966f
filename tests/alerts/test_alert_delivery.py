"""Slack delivery that loses nothing: a real local HTTP server stands in for Slack."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest

from analytics.alerts.catalog import unit_of
from analytics.alerts.delivery import deliver
from analytics.alerts.evaluate import evaluate_rules
from analytics.alerts.messages import render, rule_message
from analytics.alerts.metrics import MetricSource
from analytics.alerts.model import AlertKey, Notification, NotificationKind, Severity
from analytics.alerts.slack import (
    ConsoleSender,
    SlackWebhookSender,
    SlackWebSender,
    sender_from_environment,
)
from tests.support.alert_support import (
    T0,
    alert_settings_at,
    analytics_settings_at,
    pack,
    publish_minutes,
    steady_traffic,
    store_at,
)
from tests.support.fake_slack import FakeSlack, Scripted, block_problems

TOKEN = "xoxb-test-secret-token"


@pytest.fixture
def slack():
    server = FakeSlack().start()
    yield server
    server.stop()


class Clock:
    """A controlled clock: delivery reads it, sleeping advances it."""

    def __init__(self, start):
        self.now = start
        self.slept = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += timedelta(seconds=seconds)

    def advance(self, **kwargs):
        self.now += timedelta(**kwargs)


RULES = pack(
    """
rules:
  - name: http_error_rate
    metric: http_error_rate
    window: 5m
    thresholds: {high: {value: 0.05}, critical: {value: 0.10}}
  - name: route_errors
    metric: http_error_rate
    group_by: route
    window: 5m
    thresholds: {high: {value: 0.05}, critical: {value: 0.10}}
"""
)


def note(
    rule="route_errors",
    group="/api/orders",
    kind=NotificationKind.FIRING,
    at=T0,
    channel="#alerts",
    value=0.2,
    severity=Severity.CRITICAL,
):
    """A notification as state.py makes it (its title and text from messages.rule_message)."""
    spec = next((item for item in RULES.rules if item.name == rule), RULES.rules[1])
    key = AlertKey(rule, group)
    if kind in (NotificationKind.RUN_FAILURE, NotificationKind.SYSTEM):
        title, text = f"{kind.value} {rule}", f"{rule} {group}"
    else:
        title, text = rule_message(
            spec.model_copy(update={"name": rule}), key, kind, severity, value
        )
    labels = {"metric": spec.metric, **({"route": group} if group else {})}
    return Notification(
        key=key,
        kind=kind,
        severity=severity,
        channel=channel,
        title=title,
        text=text,
        evaluated_at=at,
        value=value,
        threshold=spec.threshold_value(severity),
        comparator=spec.comparator.value,
        window=spec.window,
        labels=labels,
        unit=unit_of(spec.metric),
    )


def group_of(call):
    """The route a posted message is about (its first line names it)."""
    return re.search(r" on route (\S+) ", call.body["text"]).group(1)


def first_lines(call, count=2):
    return call.body["text"].split("\n")[:count]


def drain(tmp_path, slack, store, clock):
    """One drain of ``store`` through the Web API to the fake Slack, on ``clock``."""
    return deliver(
        store,
        SlackWebSender(TOKEN, slack.base_url),
        alert_settings_at(tmp_path),
        clock,
        clock.sleep,
    )


def enqueue(store, *notifications, now=T0):
    with store.transaction() as conn:
        store.enqueue(conn, notifications, now=now)


def test_a_notification_is_posted_as_block_kit_with_a_fallback_and_marked_sent(
    tmp_path, slack, monkeypatch
):
    monkeypatch.setenv("DAGSTER_WEBSERVER_URL", "http://dagster.example:3000")
    store, clock = store_at(tmp_path), Clock(T0)
    enqueue(store, note())

    report = drain(tmp_path, slack, store, clock)

    assert report.sent == 1 and report.waiting == 0 and report.error is None
    (call,) = slack.posted()
    assert call.method == "chat.postMessage" and call.body["channel"] == "#alerts"
    assert call.headers["authorization"] == f"Bearer {TOKEN}"
    blocks = call.body["blocks"]
    assert blocks[0] == {
        "type": "header",
        "text": {
            "type": "plain_text",
            "text": ":red_circle: FIRING [critical]: route_errors on route /api/orders is 20.0% "
            "(> 10.0%)",
            "emoji": True,
        },
    }
    assert blocks[1]["text"]["text"] == (
        "Since 12:00 UTC · Look at: <http://dagster.example:3000/assets/analytics/"
        "requests_minute|asset analytics/requests_minute>"
    )
    assert blocks[-1]["elements"][0]["url"] == (
        "http://dagster.example:3000/assets/analytics/requests_minute"
    )
    assert call.body["text"].split("\n") == [
        "FIRING [critical]: route_errors on route /api/orders is 20.0% (&gt; 10.0%)",
        "Since 12:00 UTC · Look at: <http://dagster.example:3000/assets/analytics/"
        "requests_minute|asset analytics/requests_minute>",
        "route_errors on route /api/orders: http_error_rate is 20.0% (&gt; 10.0%, window 5m)",
    ]
    assert call.body["metadata"] == {
        "event_type": "hk_alert_notification",
        "event_payload": {"notification_id": store.rows()[0].notification_id},
    }
    (row,) = store.rows()
    assert row.status == "sent" and row.slack_ts


def test_slack_down_for_ten_minutes_then_everything_arrives_once_in_order(tmp_path, slack):
    store, clock = store_at(tmp_path), Clock(T0)
    settings = alert_settings_at(tmp_path)
    sender = SlackWebSender(TOKEN, slack.base_url)
    slack.down = True
    for minute in range(10):  # one sensor tick a minute, each adding a transition
        enqueue(store, note(group=f"/r{minute}", at=clock.now), now=clock.now)
        deliver(store, sender, settings, clock, clock.sleep)
        clock.advance(minutes=1)
    assert slack.posted() == [] and len(store.pending()) == 10

    slack.down = False
    for _ in range(10):  # ticks go on until the backoff has passed and the outbox drains
        deliver(store, sender, settings, clock, clock.sleep)
        clock.advance(minutes=1)

    groups = [group_of(call) for call in slack.posted()]
    assert groups == [f"/r{minute}" for minute in range(10)]  # each once, in order
    assert store.pending() == []
    assert clock.slept == [1.0] * 9  # paced at one message a second per channel


def test_a_429_waits_for_retry_after_before_trying_again(tmp_path, slack):
    store, clock = store_at(tmp_path), Clock(T0)
    settings = alert_settings_at(tmp_path)
    sender = SlackWebSender(TOKEN, slack.base_url)
    enqueue(store, note(group="/a"), note(group="/b", kind=NotificationKind.RESOLVED))
    slack.fail_next(Scripted(status=429, error="ratelimited", retry_after=30))

    first = deliver(store, sender, settings, clock, clock.sleep)
    clock.advance(seconds=29)
    early = deliver(store, sender, settings, clock, clock.sleep)
    calls_before_retry_after = len(slack.calls)
    clock.advance(seconds=2)
    late = deliver(store, sender, settings, clock, clock.sleep)

    assert first.sent == 0 and "rate limit" in first.error and "30 s" in first.error
    assert early.sent == 0 and calls_before_retry_after == 1  # not tried before Retry-After
    assert late.sent == 2
    # the first attempt may have been posted: it was looked up before posting again
    assert [call.method for call in slack.calls].count("conversations.history") == 1
    assert [group_of(call) for call in slack.posted()] == ["/a", "/b"]


def test_server_errors_back_off_and_are_retried(tmp_path, slack):
    store, clock = store_at(tmp_path), Clock(T0)
    settings = alert_settings_at(tmp_path)
    enqueue(store, note())
    slack.fail_next(Scripted(status=500), Scripted(status=502))
    sender = SlackWebSender(TOKEN, slack.base_url)

    reports = []
    for _ in range(5):
        reports.append(deliver(store, sender, settings, clock, clock.sleep))
        clock.advance(seconds=30)

    assert [report.sent for report in reports].count(1) == 1
    assert len(slack.posted()) == 1 and len(slack.channel_messages("#alerts")) == 1
    (row,) = store.rows()
    assert row.status == "sent" and row.attempts == 3


def test_invalid_auth_is_a_clear_error_keeps_the_messages_and_does_not_hammer_slack(
    tmp_path, slack
):
    store, clock = store_at(tmp_path), Clock(T0)
    settings = alert_settings_at(tmp_path)
    enqueue(store, note(group="/a"), note(group="/b", kind=NotificationKind.RESOLVED))
    slack.fail_next(*[Scripted(status=200, error="invalid_auth")] * 20)
    sender = SlackWebSender(TOKEN, slack.base_url)

    reports = []
    for _ in range(10):  # ten ticks, one a minute
        reports.append(deliver(store, sender, settings, clock, clock.sleep))
        clock.advance(minutes=1)

    assert "invalid_auth" in reports[0].error and "SLACK_BOT_TOKEN" in reports[0].error
    assert TOKEN not in reports[0].error
    assert len(slack.calls) <= 3  # backs off (5 min) instead of retrying every tick
    assert len(store.pending()) == 2  # nothing lost: sent once the token is fixed
    slack.script.clear()
    clock.advance(minutes=10)
    assert deliver(store, sender, settings, clock, clock.sleep).sent == 2


def test_an_unknown_channel_fails_its_messages_and_others_still_go_out(tmp_path, slack):
    store, clock = store_at(tmp_path), Clock(T0)
    enqueue(store, note(group="/a", channel="#gone"), note(group="/b", channel="#alerts"))
    slack.fail_next(Scripted(status=200, error="channel_not_found"))

    report = drain(tmp_path, slack, store, clock)

    assert report.sent == 1 and report.failed == 1
    assert "#gone" in report.channel_errors[0] and "channel_not_found" in report.channel_errors[0]
    assert [row.status for row in store.rows()] == ["failed", "sent"]


def test_a_resolved_message_replies_in_the_thread_of_its_firing_message(tmp_path, slack):
    store, clock = store_at(tmp_path), Clock(T0)
    sender = SlackWebSender(TOKEN, slack.base_url)
    settings = alert_settings_at(tmp_path)
    enqueue(store, note(group="/api"))
    deliver(store, sender, settings, clock, clock.sleep)
    enqueue(store, note(group="/api", kind=NotificationKind.RESOLVED, at=T0 + timedelta(minutes=9)))
    deliver(store, sender, settings, clock, clock.sleep)

    firing, resolved = slack.posted()
    assert "thread_ts" not in firing.body
    assert resolved.body["thread_ts"] == store.rows()[0].slack_ts
    assert resolved.body["channel"] == store.rows()[0].slack_channel


def test_a_burst_of_one_rules_firings_in_one_tick_is_one_message(tmp_path, slack):
    store, clock = store_at(tmp_path), Clock(T0)
    enqueue(store, *[note(rule="route_errors", group=f"/r{index}") for index in range(20)])

    report = drain(tmp_path, slack, store, clock)

    assert report.sent == 20 and report.messages == 1
    (call,) = slack.posted()
    assert "20 groups" in call.body["text"] and "and 5 more" in str(call.body["blocks"])


def test_a_webhook_url_works_instead_of_a_bot_token(tmp_path, slack, monkeypatch):
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    monkeypatch.setenv("SLACK_WEBHOOK_URL", slack.webhook_url)
    store, clock = store_at(tmp_path), Clock(T0)
    enqueue(store, note())
    sender = sender_from_environment()
    assert isinstance(sender, SlackWebhookSender)

    assert deliver(store, sender, alert_settings_at(tmp_path), clock, clock.sleep).sent == 1
    (call,) = slack.posted()
    assert call.method == "webhook" and call.body["text"]


def test_without_slack_notifications_print_to_the_console(tmp_path, monkeypatch):
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    monkeypatch.delenv("SLACK_WEBHOOK_URL", raising=False)
    lines = []
    sender = sender_from_environment(lines.append)
    assert isinstance(sender, ConsoleSender) and "not configured" in sender.description
    store, clock = store_at(tmp_path), Clock(T0)
    enqueue(store, note(group="/users/<int:id>"))

    assert deliver(store, sender, alert_settings_at(tmp_path), clock, clock.sleep).sent == 1
    assert lines == [
        "[alert -> #alerts] FIRING [critical]: route_errors on route /users/<int:id> is 20.0% "
        "(> 10.0%)\n    Since 12:00 UTC · Look at: asset analytics/requests_minute in Dagster\n"
        "    route_errors on route /users/<int:id>: http_error_rate is 20.0% (> 10.0%, window 5m)"
    ]


def test_a_hanging_slack_times_out_and_the_message_waits_for_the_next_tick(tmp_path, slack):
    store, clock = store_at(tmp_path), Clock(T0)
    enqueue(store, note())
    slack.fail_next(Scripted(hang_seconds=3))
    sender = SlackWebSender(TOKEN, slack.base_url, timeout=1)

    report = deliver(store, sender, alert_settings_at(tmp_path), clock, clock.sleep)

    assert report.sent == 0 and "cannot reach Slack" in report.error
    assert len(store.pending()) == 1


# --- exactly one message per notification (issue 12, item 1) --------------------------------
def test_a_post_slack_accepts_but_answers_after_the_timeout_is_one_message_and_threads(
    tmp_path, slack
):
    store, clock = store_at(tmp_path), Clock(T0)
    settings = alert_settings_at(tmp_path)
    sender = SlackWebSender(TOKEN, slack.base_url, timeout=1)
    enqueue(store, note())
    slack.fail_next(Scripted(accept_then_delay=2))  # posted, then answered after the timeout

    lost = deliver(store, sender, settings, clock, clock.sleep)
    clock.advance(minutes=1)
    retried = deliver(store, sender, settings, clock, clock.sleep)
    enqueue(store, note(kind=NotificationKind.RESOLVED, value=0.01, at=clock.now), now=clock.now)
    resolved = deliver(store, sender, settings, clock, clock.sleep)

    assert lost.sent == 0 and "timed out" in lost.error
    assert retried.sent == 1 and retried.found == 1
    firing, reply = slack.channel_messages("#alerts")  # exactly two messages reached Slack
    assert firing.thread_ts is None and firing.text.startswith("FIRING [critical]: route_errors")
    assert reply.thread_ts == firing.ts and reply.text.startswith("RESOLVED: route_errors")
    first_row, second_row = store.rows()
    assert (first_row.status, first_row.slack_ts, first_row.attempts) == ("sent", firing.ts, 2)
    assert "found in Slack's history" in first_row.last_error
    assert resolved.sent == 1 and second_row.slack_ts == reply.ts
    methods = [call.method for call in slack.calls]
    assert methods == [
        "chat.postMessage",  # accepted, answer lost
        "conversations.list",  # "#alerts" -> its id, to read its history
        "conversations.history",  # found: not posted again
        "chat.postMessage",  # the RESOLVED, in the thread
    ]


def test_a_post_slack_recorded_then_answered_with_a_5xx_is_one_message(tmp_path, slack):
    """A proxy's 502 after Slack recorded the post: the retry finds it, posts nothing more."""
    store, clock = store_at(tmp_path), Clock(T0)
    settings = alert_settings_at(tmp_path)
    sender = SlackWebSender(TOKEN, slack.base_url)
    enqueue(store, note())
    slack.fail_next(Scripted(accept_then_status=502))

    lost = deliver(store, sender, settings, clock, clock.sleep)
    clock.advance(minutes=1)
    retried = deliver(store, sender, settings, clock, clock.sleep)

    assert lost.sent == 0 and "Slack answered HTTP 502" in lost.error
    assert retried.sent == 1 and retried.found == 1
    (firing,) = slack.channel_messages("#alerts")
    assert store.rows()[0].slack_ts == firing.ts


def test_a_resolved_reply_answered_after_the_timeout_is_one_reply(tmp_path, slack):
    store, clock = store_at(tmp_path), Clock(T0)
    settings = alert_settings_at(tmp_path)
    sender = SlackWebSender(TOKEN, slack.base_url, timeout=1)
    enqueue(store, note())
    deliver(store, sender, settings, clock, clock.sleep)
    enqueue(store, note(kind=NotificationKind.RESOLVED, value=0.01, at=clock.now), now=clock.now)
    slack.fail_next(Scripted(accept_then_delay=2))

    deliver(store, sender, settings, clock, clock.sleep)
    clock.advance(minutes=1)
    deliver(store, sender, settings, clock, clock.sleep)

    firing, reply = slack.channel_messages("#alerts")
    assert reply.thread_ts == firing.ts
    assert [call.method for call in slack.calls][-1] == "conversations.replies"
    assert [row.status for row in store.rows()] == ["sent", "sent"]


def test_a_crash_between_the_post_and_marking_it_sent_does_not_post_twice(tmp_path, slack):
    store, clock = store_at(tmp_path), Clock(T0)
    settings = alert_settings_at(tmp_path)
    sender = SlackWebSender(TOKEN, slack.base_url)
    enqueue(store, note())
    (row,) = store.pending()
    # What a drain does up to the post, then the process dies: the row is never marked sent.
    store.mark_attempt([row.id])
    sender.send(render([row.notification]), None, row.notification_id)

    restarted = deliver(store, SlackWebSender(TOKEN, slack.base_url), settings, clock, clock.sleep)

    assert restarted.sent == 1 and restarted.found == 1
    assert len(slack.channel_messages("#alerts")) == 1


def test_without_the_history_scope_a_lost_answer_is_posted_again_and_the_outbox_says_why(
    tmp_path, slack
):
    store, clock = store_at(tmp_path), Clock(T0)
    settings = alert_settings_at(tmp_path)
    sender = SlackWebSender(TOKEN, slack.base_url, timeout=1)
    enqueue(store, note())
    slack.fail_next(Scripted(accept_then_delay=2), Scripted(error="missing_scope"))

    deliver(store, sender, settings, clock, clock.sleep)
    clock.advance(minutes=1)
    report = deliver(store, sender, settings, clock, clock.sleep)

    # The documented duplicate window: no history to search, so it is posted again.
    assert len(slack.channel_messages("#alerts")) == 2
    assert report.sent == 1 and "channels:history" in report.notes[0]
    assert "posted again without a look-up" in store.rows()[0].last_error


# --- within Slack's limits, escaped, never dropped (issue 12, item 2) -----------------------
ERROR_TEXT = (
    'psycopg.errors.UniqueViolation: duplicate key value violates unique constraint "users_pkey" '
    "DETAIL: Key (id)=(<int:id>) already exists & the batch was rolled back; "
)
LONG_ERROR = (ERROR_TEXT * 20)[:2339]


def sql_rule_notifications(tmp_path):
    """A real evaluation of a SQL rule whose group is a 2,339-character error text."""
    analytics = analytics_settings_at(tmp_path)
    publish_minutes(analytics, steady_traffic(T0, 10, errors=5))
    rules = pack(
        f"""
rules:
  - name: errors_by_message
    sql: >
      SELECT '{LONG_ERROR}' AS error, sum(status_5xx) FROM requests_minute
      WHERE minute >= $window_start AND minute < $window_end
    window: 5m
    thresholds: {{high: {{value: 10}}}}
"""
    )
    store = store_at(tmp_path)
    with MetricSource(analytics.database_path, rollup_root=analytics.root_path) as metrics:
        report = evaluate_rules(
            rules, metrics, store, T0 + timedelta(minutes=10), dict.fromkeys(Severity, "#alerts")
        )
    return store, report


def test_a_sql_rule_grouped_by_a_2339_character_error_text_is_delivered_within_limits(
    tmp_path, slack
):
    store, evaluation = sql_rule_notifications(tmp_path)
    (notification,) = evaluation.notifications
    assert len(notification.key.group) == 2339
    settings = alert_settings_at(tmp_path, default_channel="#alerts")
    clock = Clock(T0 + timedelta(minutes=10))

    report = deliver(store, SlackWebSender(TOKEN, slack.base_url), settings, clock, clock.sleep)

    assert report.sent == 1 and report.plain_text == 0
    (message,) = slack.channel_messages("#alerts")
    assert block_problems(message.blocks) == []
    header = message.blocks[0]["text"]["text"]
    assert header == (
        ":large_orange_circle: FIRING [high]: errors_by_message on group "
        "psycopg.errors.UniqueViolation: duplicate key value violate… is 25 (> 10)"
    )
    (group,) = [
        field["text"]
        for block in message.blocks
        for field in block.get("fields", [])
        if field["text"].startswith("*Group*")
    ]
    assert len(group) == 2000 and group.endswith("…")
    assert "(id)=(&lt;int:id&gt;) already exists &amp; the batch" in group
    assert store.rows()[0].status == "sent"


def test_a_route_with_angle_brackets_is_escaped_for_mrkdwn_and_kept_in_plain_text(tmp_path, slack):
    store, clock = store_at(tmp_path), Clock(T0)
    enqueue(store, note(group="/users/<int:id>&x"))

    drain(tmp_path, slack, store, clock)

    (message,) = slack.channel_messages("#alerts")
    assert message.text.split("\n")[0] == (
        "FIRING [critical]: route_errors on route /users/&lt;int:id&gt;&amp;x is 20.0% (&gt; 10.0%)"
    )
    assert message.blocks[0]["text"]["text"] == (  # plain_text: shown as is
        ":red_circle: FIRING [critical]: route_errors on route /users/<int:id>&x is 20.0% (> 10.0%)"
    )
    assert "<int:id>" not in json.dumps(message.blocks[1:])


def test_a_layout_slack_refuses_is_sent_as_plain_text_instead_of_being_dropped(tmp_path, slack):
    store, _ = sql_rule_notifications(tmp_path)
    settings = alert_settings_at(tmp_path, default_channel="#alerts")
    slack.refuse_blocks = True
    clock = Clock(T0 + timedelta(minutes=10))

    report = deliver(store, SlackWebSender(TOKEN, slack.base_url), settings, clock, clock.sleep)

    assert report.sent == 1 and report.plain_text == 1 and report.failed == 0
    refused, plain = [call for call in slack.calls if call.method == "chat.postMessage"]
    assert refused.body["_error"] == "invalid_blocks" and "blocks" not in plain.body
    (message,) = slack.channel_messages("#alerts")
    assert message.blocks == [] and message.text.split("\n")[:2] == [
        "FIRING [high]: errors_by_message on group psycopg.errors.UniqueViolation: duplicate "
        "key value violate… is 25 (&gt; 10)",
        "Since 12:10 UTC · Look at: sensor alert_rules_sensor in Dagster",
    ]
    (row,) = store.rows()
    assert row.status == "sent"
    assert row.last_error == "sent as plain text: Slack refused the message (invalid_blocks)"


def test_a_burst_of_sixty_long_routes_stays_within_every_block_limit(tmp_path, slack):
    store, clock = store_at(tmp_path), Clock(T0)
    routes = [f"/api/v1/<tenant>/{'segment/' * 40}{index}" for index in range(60)]
    enqueue(store, *[note(group=route) for route in routes])

    report = drain(tmp_path, slack, store, clock)

    assert report.sent == 60 and report.messages == 1
    (message,) = slack.channel_messages("#alerts")
    assert block_problems(message.blocks) == []
    assert message.text.split("\n")[0] == "FIRING [critical]: route_errors on 60 groups"
    assert "… and 45 more" in message.text and "&lt;tenant&gt;" in message.text


# --- an escalation is resolved in every channel (issue 12, item 9) --------------------------
def test_an_escalated_alert_is_resolved_in_the_thread_of_each_channel_it_was_posted_to(
    tmp_path, slack
):
    store, clock = store_at(tmp_path), Clock(T0)
    settings = alert_settings_at(tmp_path)
    sender = SlackWebSender(TOKEN, slack.base_url)
    steps = [
        note(severity=Severity.HIGH, value=0.07, channel="#alerts"),
        note(
            kind=NotificationKind.ESCALATED,
            value=0.2,
            channel="#oncall",
            at=T0 + timedelta(minutes=5),
        ),
        note(
            kind=NotificationKind.RESOLVED,
            value=0.01,
            channel="#oncall",
            at=T0 + timedelta(minutes=30),
        ),
    ]
    for step in steps:
        clock.now = step.evaluated_at
        enqueue(store, step, now=clock.now)
        deliver(store, sender, settings, clock, clock.sleep)

    firing, resolved_alerts = slack.channel_messages("#alerts")
    escalated, resolved_oncall = slack.channel_messages("#oncall")
    assert [call.body["channel"] for call in slack.posted()] == [
        "#alerts",
        "#oncall",
        firing.channel,  # the resolution, in #alerts' thread first
        escalated.channel,
    ]
    assert firing.thread_ts is None and escalated.thread_ts is None
    assert resolved_alerts.thread_ts == firing.ts and resolved_oncall.thread_ts == escalated.ts
    expected = [
        "RESOLVED: route_errors on route /api/orders is now 1.0% (fired at critical &gt; 10.0%)",
        "Fired 12:00 UTC, resolved 12:30 UTC after 30m · "
        "Look at: asset analytics/requests_minute in Dagster",
    ]
    assert resolved_alerts.text.split("\n")[:2] == expected
    assert resolved_oncall.text.split("\n")[:2] == expected
    assert escalated.text.split("\n")[:2] == [
        "ESCALATED [critical]: route_errors on route /api/orders is 20.0% (&gt; 10.0%)",
        "Firing since 12:00 UTC (5m) · Look at: asset analytics/requests_minute in Dagster",
    ]
    assert [row.status for row in store.rows()] == ["sent", "sent", "sent"]


def test_a_thread_in_a_channel_the_app_left_does_not_fail_the_other_threads_or_channels(
    tmp_path, slack
):
    store, clock = store_at(tmp_path), Clock(T0)
    settings = alert_settings_at(tmp_path)
    sender = SlackWebSender(TOKEN, slack.base_url)
    posted = [
        note(severity=Severity.HIGH, value=0.07, channel="#alerts"),
        note(kind=NotificationKind.ESCALATED, channel="#oncall", at=T0 + timedelta(minutes=5)),
    ]
    for step in posted:
        clock.now = step.evaluated_at
        enqueue(store, step, now=clock.now)
        deliver(store, sender, settings, clock, clock.sleep)
    slack.removed_from = {"#oncall"}  # someone removed the app from #oncall meanwhile
    clock.now = T0 + timedelta(minutes=30)
    enqueue(
        store,
        note(kind=NotificationKind.RESOLVED, value=0.01, channel="#oncall", at=clock.now),
        note(rule="latency_p95", group="/api/users", at=clock.now, channel="#alerts"),
        now=clock.now,
    )
    report = deliver(store, sender, settings, clock, clock.sleep)

    firing, resolved, other = slack.channel_messages("#alerts")
    assert resolved.thread_ts == firing.ts and resolved.text.startswith("RESOLVED: route_errors")
    assert other.thread_ts is None and "/api/users" in other.text.split("\n")[0]
    assert len(slack.channel_messages("#oncall")) == 1  # the escalation only
    assert report.sent == 2 and report.failed == 0
    (error,) = report.channel_errors
    assert error.startswith("Slack cannot reply in the thread in C_oncall (not_in_channel)")
    rows = store.rows()
    assert [row.status for row in rows] == ["sent"] * 4
    assert "C_oncall (not_in_channel)" in rows[2].last_error


def test_every_thread_refused_fails_the_resolution_and_names_the_channel(tmp_path, slack):
    store, clock = store_at(tmp_path), Clock(T0)
    settings = alert_settings_at(tmp_path)
    sender = SlackWebSender(TOKEN, slack.base_url)
    for step in [
        note(severity=Severity.HIGH, value=0.07, channel="#alerts"),
        note(kind=NotificationKind.ESCALATED, channel="#oncall", at=T0 + timedelta(minutes=5)),
    ]:
        clock.now = step.evaluated_at
        enqueue(store, step, now=clock.now)
        deliver(store, sender, settings, clock, clock.sleep)
    slack.removed_from = {"#oncall", "#alerts"}
    clock.now = T0 + timedelta(minutes=30)
    enqueue(
        store, note(kind=NotificationKind.RESOLVED, channel="#oncall", at=clock.now), now=clock.now
    )
    report = deliver(store, sender, settings, clock, clock.sleep)
    assert report.sent == 0 and report.failed == 1
    assert [row.status for row in store.rows()] == ["sent", "sent", "failed"]
    assert "not_in_channel" in store.rows()[2].last_error
    assert len(slack.posted()) == 2  # nothing more was posted
