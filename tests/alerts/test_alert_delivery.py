"""Slack delivery that loses nothing: a real local HTTP server stands in for Slack."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from analytics.alerts.catalog import unit_of
from analytics.alerts.delivery import deliver
from analytics.alerts.messages import rule_message
from analytics.alerts.model import AlertKey, Notification, NotificationKind, Severity
from analytics.alerts.slack import (
    ConsoleSender,
    SlackWebhookSender,
    SlackWebSender,
    sender_from_environment,
)
from tests.support.alert_support import T0, alert_settings_at, pack, store_at
from tests.support.fake_slack import FakeSlack, Scripted

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
    spec = next(item for item in RULES.rules if item.name == rule)
    key = AlertKey(rule, group)
    title, text = rule_message(spec, key, kind, severity, value)
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


def enqueue(store, *notifications, now=T0):
    with store.transaction() as conn:
        store.enqueue(conn, notifications, now=now)


def test_a_notification_is_posted_as_block_kit_with_a_fallback_and_marked_sent(
    tmp_path, slack, monkeypatch
):
    monkeypatch.setenv("DAGSTER_WEBSERVER_URL", "http://dagster.example:3000")
    store, clock = store_at(tmp_path), Clock(T0)
    enqueue(store, note())

    report = deliver(
        store,
        SlackWebSender(TOKEN, slack.base_url),
        alert_settings_at(tmp_path),
        clock,
        clock.sleep,
    )

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

    report = deliver(
        store,
        SlackWebSender(TOKEN, slack.base_url),
        alert_settings_at(tmp_path),
        clock,
        clock.sleep,
    )

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

    report = deliver(
        store,
        SlackWebSender(TOKEN, slack.base_url),
        alert_settings_at(tmp_path),
        clock,
        clock.sleep,
    )

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
        "(> 10.0%)\nSince 12:00 UTC · Look at: asset analytics/requests_minute in Dagster\n"
        "route_errors on route /users/<int:id>: http_error_rate is 20.0% (> 10.0%, window 5m)"
    ]


def test_a_hanging_slack_times_out_and_the_message_waits_for_the_next_tick(tmp_path, slack):
    store, clock = store_at(tmp_path), Clock(T0)
    enqueue(store, note())
    slack.fail_next(Scripted(hang_seconds=3))
    sender = SlackWebSender(TOKEN, slack.base_url, timeout=1)

    report = deliver(store, sender, alert_settings_at(tmp_path), clock, clock.sleep)

    assert report.sent == 0 and "cannot reach Slack" in report.error
    assert len(store.pending()) == 1
