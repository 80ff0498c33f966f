"""The alert lifecycle, pure: ok -> pending -> firing -> resolved -> ok, escalation, renotify."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

from analytics.alerts.model import AlertKey, AlertState, NotificationKind, Severity
from analytics.alerts.rules import NoData
from analytics.alerts.state import advance
from tests.support.alert_support import T0, pack

ERROR_RATE = pack(
    """
rules:
  - name: http_error_rate
    metric: http_error_rate
    comparator: ">"
    window: 5m
    renotify: 1h
    thresholds:
      warning: {value: 0.02, for: 10m}
      high: {value: 0.05, for: 5m}
      critical: {value: 0.10, for: 5m}
    channels: {critical: "#oncall"}
"""
).rules[0]
KEY = AlertKey("http_error_rate", "")
MINUTE = timedelta(minutes=1)


def run(rule, values, start=T0, channels=None):
    """Feed one value per minute; return the records and the notifications of every step."""
    record, steps = None, []
    for offset, value in enumerate(values):
        record, notes = advance(rule, record, KEY, value, start + offset * MINUTE, channels)
        steps.append((record, notes))
    return steps


def kinds(steps):
    return [
        (index, note.kind, note.severity)
        for index, (_, notes) in enumerate(steps)
        for note in notes
    ]


def test_a_breach_is_pending_until_it_has_lasted_for_its_duration_then_fires_once():
    steps = run(ERROR_RATE, [0.03] * 12)
    assert [record.state for record, _ in steps[:10]] == [AlertState.PENDING] * 10
    assert steps[10][0].state is AlertState.FIRING
    assert kinds(steps) == [(10, NotificationKind.FIRING, Severity.WARNING)]


def test_a_short_blip_never_fires():
    steps = run(ERROR_RATE, [0.03] * 4 + [0.0] + [0.03] * 4)
    assert kinds(steps) == []
    assert steps[4][0].state is AlertState.OK


def test_a_worse_value_escalates_a_firing_alert_once():
    steps = run(ERROR_RATE, [0.03] * 11 + [0.2] * 8, channels={Severity.WARNING: "#alerts"})
    assert kinds(steps) == [
        (10, NotificationKind.FIRING, Severity.WARNING),
        (16, NotificationKind.ESCALATED, Severity.CRITICAL),
    ]
    escalation = steps[16][1][0]
    assert escalation.channel == "#oncall"  # the rule's own channel for critical
    assert steps[10][1][0].channel == "#alerts"  # the settings' channel otherwise


def test_the_highest_severity_whose_duration_has_passed_fires_first():
    steps = run(ERROR_RATE, [0.2] * 7)
    assert kinds(steps) == [(5, NotificationKind.FIRING, Severity.CRITICAL)]


def test_a_firing_alert_renotifies_at_its_interval_and_not_in_between():
    steps = run(ERROR_RATE, [0.2] * 140)
    renotified = [index for index, kind, _ in kinds(steps) if kind is NotificationKind.RENOTIFY]
    assert renotified == [65, 125]


def test_resolving_needs_the_value_past_the_recovery_threshold():
    rule = ERROR_RATE.model_copy(update={"recovery": 0.01})
    steps = run(rule, [0.2] * 6 + [0.015] * 5 + [0.005, 0.005])
    assert kinds(steps) == [
        (5, NotificationKind.FIRING, Severity.CRITICAL),
        (11, NotificationKind.RESOLVED, Severity.CRITICAL),
    ]
    assert steps[10][0].state is AlertState.FIRING  # between recovery and threshold: still firing
    assert steps[11][0].state is AlertState.RESOLVED
    assert steps[12][0].state is AlertState.OK


def test_no_data_follows_the_rule_policy():
    ok = run(ERROR_RATE.model_copy(update={"no_data": NoData.OK}), [0.2] * 6 + [None])
    assert kinds(ok)[-1][1] is NotificationKind.RESOLVED

    keep = run(ERROR_RATE.model_copy(update={"no_data": NoData.KEEP}), [0.2] * 6 + [None] * 3)
    assert keep[-1][0].state is AlertState.FIRING
    assert [kind for _, kind, _ in kinds(keep)] == [NotificationKind.FIRING]

    alert_rule = ERROR_RATE.model_copy(
        update={"no_data": NoData.ALERT, "no_data_severity": Severity.HIGH}
    )
    alerting = run(alert_rule, [None] * 7)
    assert kinds(alerting) == [(5, NotificationKind.FIRING, Severity.HIGH)]
    assert "no data" in alerting[5][1][0].text


def test_notifications_carry_value_threshold_window_and_labels():
    steps = run(ERROR_RATE, [0.2] * 6)
    note = steps[5][1][0]
    assert note.value == 0.2 and note.threshold == 0.10 and note.comparator == ">"
    assert note.window == timedelta(minutes=5)
    assert note.evaluated_at == T0 + 5 * MINUTE
    assert "20.0%" in note.text and "10.0%" in note.text


def test_the_state_machine_loads_no_database_driver_no_dagster_and_no_deleter():
    code = "import sys, analytics.alerts.state; print(*sorted(sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    heavy = ("sqlalchemy", "duckdb", "adbc", "dagster")
    housekeeping = {"housekeeping.deletion", "housekeeping.policies", "housekeeping.history"}
    assert [name for name in loaded if name.startswith(heavy) or name in housekeeping] == []


def test_missing_data_never_resolves_a_firing_alert_by_default():
    """Issue 12, item 3: keep is the default; the alert stays firing and says since when."""
    assert ERROR_RATE.no_data is NoData.KEEP
    # critical from minute 5, no data from minute 10 for 2 hours, then a clean value
    steps = run(ERROR_RATE, [0.2] * 10 + [None] * 120 + [0.0])

    assert kinds(steps) == [
        (5, NotificationKind.FIRING, Severity.CRITICAL),
        (65, NotificationKind.RENOTIFY, Severity.CRITICAL),
        (125, NotificationKind.RENOTIFY, Severity.CRITICAL),
        (130, NotificationKind.RESOLVED, Severity.CRITICAL),
    ]
    assert all(record.state is AlertState.FIRING for record, _ in steps[10:130])
    assert steps[129][0].no_data_since == T0 + 10 * MINUTE
    renotify = steps[65][1][0]
    assert renotify.value is None
    assert renotify.labels["no_data_since"] == (T0 + 10 * MINUTE).strftime("%Y-%m-%d %H:%M UTC")
    assert steps[130][0].no_data_since is None  # observed again
    assert "no_data_since" not in steps[130][1][0].labels


def test_no_data_leaves_an_ok_or_pending_alert_as_it_is():
    quiet = run(ERROR_RATE, [None] * 30)
    assert kinds(quiet) == [] and quiet[-1][0].state is AlertState.OK

    pending = run(ERROR_RATE, [0.03] * 3 + [None] * 3)
    assert kinds(pending) == [] and pending[-1][0].state is AlertState.PENDING


def test_minutes_without_data_do_not_count_toward_for():
    """`for` is how long the breach was observed: one breaching minute, an hour without data,
    one breaching minute fired at once (10m of warning 'held' through the gap). The gap is not
    counted: pending until 10 observed minutes, as without the gap."""
    steps = run(ERROR_RATE, [0.03] + [None] * 59 + [0.03] * 10)
    assert kinds(steps) == [(69, NotificationKind.FIRING, Severity.WARNING)]
    assert [record.state for record, _ in steps[60:69]] == [AlertState.PENDING] * 9

    # the same for an escalation of a firing alert: critical needs 5 observed minutes
    escalating = run(ERROR_RATE, [0.03] * 11 + [0.2] + [None] * 30 + [0.2] * 5)
    assert kinds(escalating) == [
        (10, NotificationKind.FIRING, Severity.WARNING),
        (46, NotificationKind.ESCALATED, Severity.CRITICAL),
    ]
