"""One evaluation: metrics from the published rollups, states and outbox written together."""

from __future__ import annotations

from datetime import timedelta

from analytics.alerts.backtest import backtest
from analytics.alerts.delivery import deliver
from analytics.alerts.evaluate import advance_rule, evaluate_rules
from analytics.alerts.metrics import MetricSource
from analytics.alerts.model import AlertKey, AlertState, NotificationKind, Severity
from analytics.alerts.rules import load_rules
from analytics.alerts.slack import SlackWebSender
from tests.support.alert_support import (
    T0,
    Minute,
    alert_settings_at,
    analytics_settings_at,
    pack,
    publish_minutes,
    steady_traffic,
    store_at,
)
from tests.support.fake_slack import FakeSlack

PER_ROUTE_TEXT = """
rules:
  - name: route_errors
    metric: http_error_rate
    group_by: route
    comparator: ">"
    window: 5m
    thresholds:
      high: {value: 0.05}
  - name: p95
    metric: http_latency_p95_ms
    comparator: ">"
    window: 10m
    thresholds:
      warning: {value: 500}
"""
PER_ROUTE = pack(PER_ROUTE_TEXT)
MINUTE = timedelta(minutes=1)


def evaluate(settings, store, rules, now):
    with MetricSource(settings.database_path, rollup_root=settings.root_path) as metrics:
        return evaluate_rules(
            rules, metrics, store, now, {severity: "#alerts" for severity in Severity}
        )


def test_an_error_burst_on_one_route_fires_for_that_route_only(tmp_path):
    settings = analytics_settings_at(tmp_path)
    burst_start = T0 + 30 * MINUTE
    minutes = steady_traffic(T0, 60, route="/api/orders")
    minutes += [
        Minute(T0 + offset * MINUTE, route="/api/users", errors=20 if offset >= 30 else 0)
        for offset in range(60)
    ]
    publish_minutes(settings, minutes)
    store = store_at(tmp_path)

    quiet = evaluate(settings, store, PER_ROUTE, burst_start)
    burst = evaluate(settings, store, PER_ROUTE, burst_start + 3 * MINUTE)

    assert quiet.notifications == []
    assert [(n.key, n.kind, n.severity) for n in burst.notifications] == [
        (AlertKey("route_errors", "/api/users"), NotificationKind.FIRING, Severity.HIGH)
    ]
    # 20 errors of 100 in each of the 3 burst minutes out of the 5-minute window: 60 / 500
    assert burst.notifications[0].value == 60 / 500
    assert [row.notification.key for row in store.pending()] == [
        AlertKey("route_errors", "/api/users")
    ]


def test_p95_over_a_window_merges_the_minute_sketches_instead_of_averaging(tmp_path):
    # Nine quiet minutes at 50 ms and one busy minute of 900 slow requests at 800 ms: the window's
    # p95 is 800 ms (900 of 1800 requests are slow); averaging per-minute p95s gives ~125 ms.
    settings = analytics_settings_at(tmp_path)
    minutes = steady_traffic(T0, 9, requests=100, latency_ms=50.0)
    minutes.append(Minute(T0 + 9 * MINUTE, requests=900, latency_ms=800.0))
    publish_minutes(settings, minutes)
    store = store_at(tmp_path)

    report = evaluate(settings, store, PER_ROUTE, T0 + 10 * MINUTE)

    (fired,) = [n for n in report.notifications if n.key.rule == "p95"]
    assert abs(fired.value - 800.0) / 800.0 <= 0.01


def test_states_survive_a_restart_so_a_firing_alert_is_not_sent_again(tmp_path):
    settings = analytics_settings_at(tmp_path)
    minutes = [Minute(T0 + offset * MINUTE, errors=30) for offset in range(30)]
    publish_minutes(settings, minutes)
    first = evaluate(settings, store_at(tmp_path), PER_ROUTE, T0 + 10 * MINUTE)
    again = evaluate(settings, store_at(tmp_path), PER_ROUTE, T0 + 11 * MINUTE)  # a new process

    assert len(first.notifications) == 1
    assert again.notifications == []
    assert again.active[AlertKey("route_errors", "/api/orders")].state is AlertState.FIRING


def test_recovery_resolves_and_the_alert_returns_to_ok(tmp_path):
    settings = analytics_settings_at(tmp_path)
    minutes = [
        Minute(T0 + offset * MINUTE, errors=30 if offset < 10 else 0) for offset in range(30)
    ]
    publish_minutes(settings, minutes)
    store = store_at(tmp_path)
    evaluate(settings, store, PER_ROUTE, T0 + 10 * MINUTE)

    resolved = evaluate(settings, store, PER_ROUTE, T0 + 20 * MINUTE)
    later = evaluate(settings, store, PER_ROUTE, T0 + 21 * MINUTE)

    assert [n.kind for n in resolved.notifications] == [NotificationKind.RESOLVED]
    assert later.notifications == [] and later.active == {}


def test_a_silenced_alert_changes_state_but_sends_nothing(tmp_path):
    settings = analytics_settings_at(tmp_path)
    publish_minutes(settings, [Minute(T0 + offset * MINUTE, errors=30) for offset in range(30)])
    store = store_at(tmp_path)
    store.add_silence("route_errors", "/api/orders", T0, T0 + timedelta(hours=2), "deploy", "ops")

    report = evaluate(settings, store, PER_ROUTE, T0 + 10 * MINUTE)

    assert report.notifications == []
    assert [n.key.rule for n in report.silenced] == ["route_errors"]
    assert report.active[AlertKey("route_errors", "/api/orders")].state is AlertState.FIRING
    assert store.pending() == []


def test_a_broken_sql_rule_is_reported_and_the_other_rules_still_run(tmp_path):
    settings = analytics_settings_at(tmp_path)
    publish_minutes(settings, [Minute(T0 + offset * MINUTE, errors=30) for offset in range(30)])
    rules = pack(
        """
rules:
  - name: broken
    sql: SELECT route, no_such_column FROM requests_minute
    thresholds: {warning: {value: 1}}
  - name: errors
    metric: http_error_rate
    thresholds: {high: {value: 0.05}}
"""
    )
    report = evaluate(settings, store_at(tmp_path), rules, T0 + 10 * MINUTE)

    assert "no_such_column" in report.errors["broken"]
    assert [n.key.rule for n in report.notifications] == ["errors"]


def test_a_sql_rule_reads_the_published_rollups_with_the_window_bound(tmp_path):
    settings = analytics_settings_at(tmp_path)
    publish_minutes(settings, steady_traffic(T0, 30, requests=10))
    rules = pack(
        """
rules:
  - name: few_requests
    sql: >
      SELECT route, sum(requests) FROM requests_minute
      WHERE minute >= $window_start AND minute < $window_end GROUP BY route
    comparator: "<"
    window: 10m
    thresholds: {warning: {value: 200}}
"""
    )
    report = evaluate(settings, store_at(tmp_path), rules, T0 + 20 * MINUTE)

    (fired,) = report.notifications
    assert fired.key == AlertKey("few_requests", "/api/orders") and fired.value == 100


def test_without_published_rollups_metrics_have_no_data_and_nothing_fires(tmp_path):
    settings = analytics_settings_at(tmp_path)  # nothing published
    report = evaluate(settings, store_at(tmp_path), PER_ROUTE, T0)
    assert report.notifications == [] and report.errors == {}


def test_a_sql_rule_reads_nothing_but_the_published_rollups(tmp_path):
    """SQL rules run in the sandbox hk query uses: a file outside the rollups is refused (that
    rule reports the refusal, naming the file); the other rules evaluate as usual."""
    secret = tmp_path / "secret.csv"
    secret.write_text("password\nhunter2\n")
    rules = pack(
        f"""
rules:
  - name: reads_a_secret
    sql: "SELECT count(*) FROM read_csv('{secret}')"
    window: 5m
    thresholds:
      warning: {{value: 0}}
  - name: requests_seen
    sql: "SELECT sum(requests) FROM requests_minute WHERE minute >= $window_start AND minute < $window_end"
    window: 5m
    thresholds:
      warning: {{value: 0}}
"""
    )
    settings = analytics_settings_at(tmp_path)
    publish_minutes(settings, steady_traffic(T0, 10, requests=100))

    report = evaluate(settings, store_at(tmp_path), rules, T0 + 10 * MINUTE)

    assert list(report.errors) == ["reads_a_secret"]
    assert "QueryRefused" in report.errors["reads_a_secret"]
    assert str(secret) in report.errors["reads_a_secret"]
    [fired] = report.notifications
    assert (fired.key.rule, fired.value) == ("requests_seen", 500)


LOW_TRAFFIC = """
rules:
  - name: low_traffic
    metric: http_request_rate
    comparator: "<"
    window: 1h
    thresholds:
      warning: {value: 1.0}
"""


def test_a_window_the_rollups_cover_in_part_is_evaluated_over_the_covered_part(tmp_path):
    """Issue 12, item 4: 5 minutes of 100 requests/min under a 1-hour window are 1.67/s."""
    settings = analytics_settings_at(tmp_path)
    publish_minutes(settings, steady_traffic(T0, 5))
    store = store_at(tmp_path)
    rules = pack(LOW_TRAFFIC)
    full = pack(LOW_TRAFFIC.replace("window: 1h", "window: 1h\n    require_full_window: true"))

    with MetricSource(settings.database_path, rollup_root=settings.root_path) as metrics:
        value = metrics.values(rules.rules[0], T0 + 5 * MINUTE)[""]
        assert round(value, 2) == 1.67  # 500 requests / 300 s, not / 3,600 s (0.139)
        # before the first published minute nothing is covered: no data
        assert metrics.values(rules.rules[0], T0) is None
        # require_full_window: no data until the rollups cover the whole hour
        assert metrics.values(full.rules[0], T0 + 5 * MINUTE) is None

    report = evaluate(settings, store, rules, T0 + 5 * MINUTE)
    assert report.notifications == [] and report.active == {}


def test_require_full_window_evaluates_once_the_whole_window_is_covered(tmp_path):
    settings = analytics_settings_at(tmp_path)
    publish_minutes(settings, steady_traffic(T0, 70, requests=30))
    rule = pack(
        LOW_TRAFFIC.replace("window: 1h", "window: 1h\n    require_full_window: true")
    ).rules[0]

    with MetricSource(settings.database_path, rollup_root=settings.root_path) as metrics:
        assert metrics.values(rule, T0 + 59 * MINUTE) is None
        assert metrics.values(rule, T0 + 60 * MINUTE) == {"": 0.5}  # 1,800 requests / 3,600 s


def test_a_route_under_min_requests_never_fires_but_its_clean_value_resolves(tmp_path):
    settings = analytics_settings_at(tmp_path)
    minutes = steady_traffic(T0, 40, route="/api/orders")
    # /api/admin: 3 requests a minute, 1 of them 5xx (33 %), always under 50 per 5 minutes
    minutes += steady_traffic(T0, 40, route="/api/admin", requests=3, errors=1)
    # /api/pay: 20 a minute with 5 errors until minute 20, then 3 clean requests a minute
    minutes += [
        Minute(T0 + offset * MINUTE, route="/api/pay", requests=20 if offset < 20 else 3,
               errors=5 if offset < 20 else 0)
        for offset in range(40)
    ]  # fmt: skip
    publish_minutes(settings, minutes)
    store = store_at(tmp_path)
    rules = pack(
        """
rules:
  - name: route_errors
    metric: http_error_rate
    group_by: route
    comparator: ">"
    window: 5m
    min_requests: 50
    thresholds:
      high: {value: 0.05}
"""
    )
    sent = []
    for offset in range(5, 40):
        sent += [
            (offset, item.key.group, item.kind)
            for item in evaluate(settings, store, rules, T0 + offset * MINUTE).notifications
        ]

    assert sent == [
        (5, "/api/pay", NotificationKind.FIRING),
        # the window holds 15 clean requests at 25m: few, but observed past the threshold
        (25, "/api/pay", NotificationKind.RESOLVED),
    ]


def test_a_sql_rule_gets_only_the_window_parameters_it_names(tmp_path):
    settings = analytics_settings_at(tmp_path)
    publish_minutes(settings, steady_traffic(T0, 10))
    rules = pack(
        """
rules:
  - name: no_parameters
    sql: "SELECT route, count(*) FROM requests_minute WHERE route <> ';' GROUP BY route"
    thresholds:
      warning: {value: 1000}
  - name: one_parameter
    sql: SELECT sum(requests) FROM requests_minute WHERE minute < $window_end
    thresholds:
      warning: {value: 100000}
"""
    )
    with MetricSource(settings.database_path, rollup_root=settings.root_path) as metrics:
        assert metrics.values(rules.rules[0], T0 + 10 * MINUTE) == {"/api/orders": 10.0}
        assert metrics.values(rules.rules[1], T0 + 5 * MINUTE) == {"": 500.0}


def test_unsilencing_a_firing_alert_sends_its_current_state(tmp_path):
    """Issue 12, item 6: silence, let it fire and escalate, unsilence: one FIRING at critical."""
    settings = analytics_settings_at(tmp_path)
    minutes = steady_traffic(T0, 60)
    minutes = [
        Minute(item.minute, errors=3 if 10 <= offset < 20 else 20 if offset >= 20 else 0)
        for offset, item in enumerate(minutes)
    ]
    publish_minutes(settings, minutes)
    store = store_at(tmp_path)
    rules = pack(
        """
rules:
  - name: errors
    metric: http_error_rate
    window: 1m
    thresholds:
      warning: {value: 0.02}
      critical: {value: 0.10}
"""
    )
    silence = store.add_silence("errors", None, T0, T0 + timedelta(hours=1), "deploy", "me")
    kinds = []
    for offset in range(5, 40):
        now = T0 + offset * MINUTE
        if offset == 30:
            store.remove_silence(silence)
        report = evaluate(settings, store, rules, now)
        kinds += [(offset, item.kind, item.severity) for item in report.notifications]
        kinds += [(offset, "held", item.kind) for item in report.silenced]

    assert kinds == [
        (11, "held", NotificationKind.FIRING),  # warning while silenced
        (21, "held", NotificationKind.ESCALATED),  # critical while silenced
        (30, NotificationKind.FIRING, Severity.CRITICAL),  # unsilenced: the current state
    ]


CRITICAL_ERRORS = pack(
    """
rules:
  - name: errors
    metric: http_error_rate
    window: 1m
    thresholds:
      critical: {value: 0.10}
"""
)


def silenced_until_minute_20(tmp_path, errors):
    """Replay minutes 5-39 of 100 requests a minute with ``errors(minute)`` 5xx, under a silence
    of every group of CRITICAL_ERRORS that expires at minute 20: (sent, held) per minute."""
    settings = analytics_settings_at(tmp_path)
    publish_minutes(
        settings, [Minute(T0 + offset * MINUTE, errors=errors(offset)) for offset in range(40)]
    )
    store = store_at(tmp_path)
    store.add_silence("errors", None, T0, T0 + 20 * MINUTE, "deploy", "me")
    sent, held = [], []
    for offset in range(5, 40):
        report = evaluate(settings, store, CRITICAL_ERRORS, T0 + offset * MINUTE)
        sent += [(offset, item.kind, item.value) for item in report.notifications]
        held += [(offset, item.kind) for item in report.silenced]
    return sent, held


def test_an_alert_that_fired_and_resolved_under_a_silence_sends_nothing_after_it(tmp_path):
    sent, held = silenced_until_minute_20(tmp_path, lambda minute: 20 if 10 <= minute < 15 else 0)
    assert held == [(11, NotificationKind.FIRING), (16, NotificationKind.RESOLVED)]
    assert sent == []  # nothing to announce once the silence expired: it is over


def test_a_silence_that_expires_while_the_alert_fires_sends_the_firing(tmp_path):
    sent, held = silenced_until_minute_20(tmp_path, lambda minute: 20 if minute >= 10 else 0)
    assert held == [(11, NotificationKind.FIRING)]
    assert sent == [(20, NotificationKind.FIRING, 0.2)]


def test_days_without_rollups_do_not_renotify_a_critical_every_hour(tmp_path):
    """Issue 12, item 7: the backtest over days the pipeline did not run (no partitions), and
    over days before the rollups started, pages nobody hourly; the stale rollups are one alert."""
    settings = analytics_settings_at(tmp_path)
    gap_start, gap_end = T0 + timedelta(hours=2), T0 + timedelta(days=3)
    publish_minutes(
        settings,
        steady_traffic(T0, 120) + steady_traffic(gap_end, 120),  # 2 h, 3 days nothing, 2 h
    )
    result = backtest(
        load_rules(),
        settings.database_path,
        None,
        T0 - timedelta(days=2),  # two days before the first published minute
        gap_end + timedelta(hours=2),
        timedelta(minutes=15),
        rollup_root=settings.root_path,
    )
    sent = [(item.evaluated_at, item.key.rule, item.kind) for item in result.notifications]
    assert result.errors == {}
    assert all(item.severity is not Severity.CRITICAL for item in result.notifications), sent
    stale = [(at, kind) for at, rule, kind in sent if rule == "rollups_stale"]
    assert [kind for _, kind in stale] == (
        [NotificationKind.FIRING] + [NotificationKind.RENOTIFY] * 17 + [NotificationKind.RESOLVED]
    )
    assert gap_start < stale[0][0] <= gap_start + timedelta(minutes=15)  # lag > 10 min
    assert [rule for _, rule, _ in sent if rule != "rollups_stale"] == []


def test_an_alert_database_of_the_previous_version_gets_the_new_state_columns(tmp_path):
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'alerts.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # hk_alert_states as the first release created it
        conn.execute(
            sa.text(
                "CREATE TABLE hk_alert_states (rule VARCHAR(200) NOT NULL, group_key VARCHAR(500)"
                " NOT NULL, state VARCHAR(20) NOT NULL, severity VARCHAR(20), pending_since "
                "DATETIME, firing_since DATETIME, last_value FLOAT, last_notified_at DATETIME, "
                "updated_at DATETIME, breach_since TEXT NOT NULL, PRIMARY KEY (rule, group_key))"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO hk_alert_states VALUES ('errors', '', 'firing', 'critical', NULL, "
                "'2026-11-20 12:00:00', 0.2, '2026-11-20 12:00:00', '2026-11-20 12:00:00', '{}')"
            )
        )
    engine.dispose()

    store = store_at(tmp_path)
    with store.transaction() as conn:
        record = store.load_states(conn)[AlertKey("errors", "")]
        assert record.state is AlertState.FIRING and record.unannounced is None
        record.no_data_since = T0
        record.unannounced = NotificationKind.FIRING
        store.save_states(conn, [record], ["errors"])
    with store.transaction() as conn:
        again = store.load_states(conn)[AlertKey("errors", "")]
    assert again.no_data_since == T0 and again.unannounced is NotificationKind.FIRING


def test_a_sql_rule_value_that_is_not_a_number_is_no_data_and_never_resolves(tmp_path):
    """0/0 is NaN in DuckDB: a firing SQL rule whose routes go quiet read "RESOLVED ... is now
    nan". NaN is no value (like NULL): the firing alert stays firing (no_data: keep)."""
    settings = analytics_settings_at(tmp_path)
    minutes = [
        Minute(T0 + offset * MINUTE, requests=0 if offset >= 10 else 100, errors=30 * (offset < 10))
        for offset in range(30)
    ]
    publish_minutes(settings, minutes)
    store = store_at(tmp_path)
    rules = pack(
        """
rules:
  - name: sql_errors
    sql: >
      SELECT route, sum(status_5xx) / sum(requests) FROM requests_minute
      WHERE minute >= $window_start AND minute < $window_end GROUP BY route
    window: 5m
    thresholds: {high: {value: 0.05}}
"""
    )
    fired = evaluate(settings, store, rules, T0 + 5 * MINUTE)
    quiet = [evaluate(settings, store, rules, T0 + offset * MINUTE) for offset in range(16, 25)]

    assert [n.kind for n in fired.notifications] == [NotificationKind.FIRING]
    assert [n for report in quiet for n in report.notifications] == []
    record = quiet[-1].active[AlertKey("sql_errors", "/api/orders")]
    assert record.state is AlertState.FIRING and record.no_data_since == T0 + 16 * MINUTE


def test_a_sql_rule_returning_one_group_twice_is_an_error_not_a_hidden_value(tmp_path):
    """Two rows for one group kept the last one: a breach in the first row went unseen."""
    settings = analytics_settings_at(tmp_path)
    publish_minutes(settings, steady_traffic(T0, 10))
    rules = pack(
        """
rules:
  - name: twice
    sql: SELECT DISTINCT route, 0.5 FROM requests_minute UNION ALL SELECT '/api/orders', 0.0
    thresholds: {high: {value: 0.1}}
"""
    )
    report = evaluate(settings, store_at(tmp_path), rules, T0 + 10 * MINUTE)

    assert report.notifications == []
    assert report.errors == {
        "twice": "QueryError: returns group '/api/orders' in 2 rows: give one row per group"
    }


def test_no_data_alert_fires_when_the_window_has_no_rows_not_only_when_nothing_is_published(
    tmp_path,
):
    """``no_data: alert`` on an ungrouped rule: traffic stops (the rollups are published, the
    window has no rows). The metric answered no group at all, which was taken for "nothing to
    say" instead of no data: the alert never fired."""
    settings = analytics_settings_at(tmp_path)
    publish_minutes(settings, steady_traffic(T0, 10))
    rules = pack(
        """
rules:
  - name: error_rate
    metric: http_error_rate
    window: 5m
    no_data: alert
    thresholds: {warning: {value: 0.5}}
  - name: sql_requests
    sql: >
      SELECT sum(requests) FROM requests_minute
      WHERE minute >= $window_start AND minute < $window_end
    comparator: "<"
    no_data: alert
    thresholds: {warning: {value: 10}}
"""
    )
    store = store_at(tmp_path)
    flowing = evaluate(settings, store, rules, T0 + 5 * MINUTE)
    stopped = evaluate(settings, store, rules, T0 + 30 * MINUTE)

    assert flowing.notifications == []
    assert [(n.key, n.kind, n.severity, n.value) for n in stopped.notifications] == [
        (AlertKey("error_rate", ""), NotificationKind.FIRING, Severity.CRITICAL, None),
        (AlertKey("sql_requests", ""), NotificationKind.FIRING, Severity.CRITICAL, None),
    ]


def test_removing_a_firing_rule_closes_its_alert_in_its_thread(tmp_path):
    """A firing rule removed (or renamed) in the rule file stayed 'firing' in hk alerts list
    forever and its Slack thread never heard an all-clear."""
    settings = analytics_settings_at(tmp_path)
    publish_minutes(settings, [Minute(T0 + offset * MINUTE, errors=30) for offset in range(30)])
    store = store_at(tmp_path)
    slack = FakeSlack().start()
    try:
        sender = SlackWebSender("xoxb-test", slack.base_url)
        fired = evaluate(settings, store, PER_ROUTE, T0 + 10 * MINUTE)
        deliver(store, sender, alert_settings_at(tmp_path), lambda: T0 + 10 * MINUTE)
        without = pack("rules:\n  - name: p95" + PER_ROUTE_TEXT.split("  - name: p95")[1])
        removed = evaluate(settings, store, without, T0 + 11 * MINUTE)
        deliver(store, sender, alert_settings_at(tmp_path), lambda: T0 + 11 * MINUTE)
        later = evaluate(settings, store, without, T0 + 12 * MINUTE)
        firing, reply = slack.channel_messages("#alerts")
    finally:
        slack.stop()

    assert [(n.key, n.kind) for n in fired.notifications] == [
        (AlertKey("route_errors", "/api/orders"), NotificationKind.FIRING)
    ]
    assert [(n.key, n.kind, n.severity) for n in removed.notifications] == [
        (AlertKey("route_errors", "/api/orders"), NotificationKind.RESOLVED, Severity.HIGH)
    ]
    assert reply.thread_ts == firing.ts and reply.text.split("\n")[0] == (
        "RESOLVED: route_errors on /api/orders is no longer watched "
        "(its rule was removed from the rule file)"
    )
    assert later.notifications == [] and later.active == {}
    with store.transaction() as conn:
        assert store.load_states(conn) == {}


def test_a_grouped_rules_no_data_alert_resolves_when_its_groups_answer_again():
    """``no_data: alert`` on a per-route rule: nothing published fires its "no data at all"
    alert; once routes answer, that alert stayed firing forever (it has no value to recover
    with) while every route was evaluated as ok."""
    rule = pack(
        """
rules:
  - name: route_errors
    metric: http_error_rate
    group_by: route
    window: 5m
    no_data: alert
    thresholds: {warning: {value: 0.5}}
"""
    ).rules[0]
    channels = {severity: "#alerts" for severity in Severity}
    previous, sent = {}, []
    for offset, values in enumerate([None, None, {"/api/orders": 0.1}, {"/api/orders": 0.1}]):
        records, produced = advance_rule(rule, values, previous, T0 + offset * MINUTE, channels)
        previous = {record.key: record for record in records}
        sent += [(offset, n.key.group, n.kind, n.title) for n in produced]

    assert sent == [
        (0, "", NotificationKind.FIRING, "FIRING [critical]: route_errors: no data for 5m"),
        (
            2,
            "",
            NotificationKind.RESOLVED,
            "RESOLVED: route_errors has data again (values for 1 route(s); it fired at critical "
            "for no data)",
        ),
    ]
    assert {key: record.state for key, record in previous.items()} == {
        AlertKey("route_errors", ""): AlertState.OK,
        AlertKey("route_errors", "/api/orders"): AlertState.OK,
    }


def test_an_alert_the_channel_heard_fire_gets_its_all_clear_even_under_a_silence(tmp_path):
    """FIRING sent, then a silence ("we're on it"), then it resolves under the silence: the
    RESOLVED was held and never sent, so the channel's thread read firing forever."""
    settings = analytics_settings_at(tmp_path)
    minutes = [
        Minute(T0 + offset * MINUTE, errors=30 if offset < 10 else 0) for offset in range(40)
    ]
    publish_minutes(settings, minutes)
    store = store_at(tmp_path)
    fired = evaluate(settings, store, PER_ROUTE, T0 + 10 * MINUTE)
    store.add_silence("route_errors", None, T0, T0 + timedelta(hours=2), "on it", "ops")
    resolved = evaluate(settings, store, PER_ROUTE, T0 + 20 * MINUTE)
    after = [evaluate(settings, store, PER_ROUTE, T0 + offset * MINUTE) for offset in (21, 22)]

    assert [n.kind for n in fired.notifications] == [NotificationKind.FIRING]
    assert [(n.key, n.kind) for n in resolved.notifications] == [
        (AlertKey("route_errors", "/api/orders"), NotificationKind.RESOLVED)
    ]
    assert [n for report in after for n in report.notifications] == []
