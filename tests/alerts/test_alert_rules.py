"""Rule files are validated at load time; the default pack holds every default threshold."""

from __future__ import annotations

import re

import pytest

from analytics.alerts.model import Severity
from analytics.alerts.rules import NoData, RulesError, load_rules

GOOD = """
rules:
  - name: http_error_rate
    metric: http_error_rate
    comparator: ">"
    window: 5m
    thresholds:
      warning: {value: 0.02, for: 10m}
      critical: {value: 0.10}
"""


def write(tmp_path, text):
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return path


def test_a_valid_rule_file_loads_with_its_durations_and_thresholds(tmp_path):
    rule = load_rules(write(tmp_path, GOOD)).rules[0]
    assert rule.severities == [Severity.WARNING, Severity.CRITICAL]
    assert rule.for_duration(Severity.WARNING).total_seconds() == 600
    assert rule.for_duration(Severity.CRITICAL).total_seconds() == 0
    assert rule.window.total_seconds() == 300


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("metric: http_error_rate", "metric: http_eror_rate"), "unknown metric 'http_eror_rate'"),
        (('comparator: ">"', 'comparator: "=>"'), "comparator"),
        (("window: 5m", "window: 0s"), "window: must be greater than 0"),
        (("window: 5m", "window: soon"), "window"),
        (("{value: 0.02, for: 10m}", "{value: 0.02, for: -1m}"), "thresholds.warning.for"),
        (("{value: 0.10}", "{value: 0.01}"), "critical (0.01) must be above warning (0.02)"),
        (("warning:", "severe:"), "thresholds.severe"),
        (("window: 5m", "window: 5m\n    group_by: queue"), "cannot be grouped by 'queue'"),
        (("window: 5m", "window: 5m\n    recovery: 0.05"), "recovery: 0.05 would itself breach"),
        (("window: 5m", "window: 5m\n    treshold: 1"), "treshold: unknown key"),
        (("window: 5m", "window: 5m\n    sql: SELECT 1"), "set exactly one of metric"),
        (
            ("window: 5m", "window: 5m\n    channels: {critical: 'bad channel!'}"),
            "channels.critical",
        ),
        (("name: http_error_rate", "name: Http-Error"), "name"),
        (("window: 5m", "window: 5m\n    min_requests: 0"), "min_requests"),
        (("window: 5m", "window: 5m\n    no_data: keep_state"), "no_data"),
        (("window: 5m", "window: 5m\n    require_full_window: maybe"), "require_full_window"),
    ],
)
def test_a_bad_rule_is_refused_with_a_message_naming_the_file_rule_and_key(
    tmp_path, change, message
):
    path = write(tmp_path, GOOD.replace(*change))
    with pytest.raises(RulesError) as error:
        load_rules(path)
    text = str(error.value)
    assert str(path) in text and "rules[0]" in text
    assert message in text


@pytest.mark.parametrize(
    "sql, message",
    [
        ("DELETE FROM requests_minute", "DELETE refused"),
        ("COPY (SELECT 1) TO '/tmp/x.csv'", "COPY refused"),
        ("ATTACH '/tmp/other.duckdb'", "ATTACH refused"),
        ("INSTALL httpfs", "INSTALL refused"),
        ("SET enable_external_access = true", "SET refused"),
        ("SELECT 1; SELECT 2", "must be one query, got 2 statements"),
        ("SELEC 1", "not valid SQL"),
        # only the window is bound: any other parameter failed every evaluation with a KeyError
        (
            "SELECT sum(requests) FROM requests_minute WHERE minute < $now",
            "sql: parameter $now is never bound (a SQL rule gets $window_start and $window_end)",
        ),
        ("SELECT count(*) FROM requests_minute WHERE requests > ?", "parameter ? is never bound"),
    ],
)
def test_a_sql_rule_must_be_one_reading_query_as_duckdb_parses_it(tmp_path, sql, message):
    text = GOOD.replace("metric: http_error_rate", f'sql: "{sql}"')
    with pytest.raises(RulesError, match=re.escape(message)):
        load_rules(write(tmp_path, text))


def test_rule_names_are_unique(tmp_path):
    body = GOOD.split("rules:\n", 1)[1]
    with pytest.raises(RulesError, match="'http_error_rate' is used twice"):
        load_rules(write(tmp_path, "rules:\n" + body + body))


def test_a_missing_or_broken_file_is_named(tmp_path):
    with pytest.raises(RulesError, match="not found"):
        load_rules(tmp_path / "nope.yaml")
    with pytest.raises(RulesError, match="not valid YAML"):
        load_rules(write(tmp_path, "rules: [\n"))
    with pytest.raises(RulesError, match="expected a mapping with a 'rules:' list"):
        load_rules(write(tmp_path, "- just a list\n"))


def _threshold(pack, name, severity):
    rule = next(rule for rule in pack.rules if rule.name == name)
    return rule.comparator.value, rule.threshold_value(severity), rule.for_duration(severity)


def test_the_default_pack_holds_the_product_default_thresholds():
    pack = load_rules()
    minutes = lambda n: n * 60  # noqa: E731
    checks = {
        ("http_error_rate", Severity.WARNING): (">", 0.02, minutes(10)),
        ("http_error_rate", Severity.HIGH): (">", 0.05, minutes(5)),
        ("http_error_rate", Severity.CRITICAL): (">", 0.10, minutes(5)),
        ("http_latency_p95", Severity.WARNING): (">", 500, minutes(10)),
        ("http_latency_p95", Severity.HIGH): (">", 2000, minutes(5)),
        ("http_traffic_high", Severity.WARNING): (">", 200, minutes(10)),
        ("http_rate_limited", Severity.HIGH): (">", 0.20, minutes(10)),
        ("http_no_requests", Severity.CRITICAL): ("<", 1, 0),
        ("job_failure_rate", Severity.WARNING): (">", 0.05, 0),
        ("job_failure_rate", Severity.CRITICAL): (">", 0.10, 0),
        ("job_backlog", Severity.WARNING): (">", 10, 0),
        ("job_backlog", Severity.CRITICAL): (">", 50, 0),
        ("jobs_failed", Severity.WARNING): (">", 0, 0),
        ("jobs_failed", Severity.CRITICAL): (">", 5, 0),
        ("job_failing_repeatedly", Severity.HIGH): (">=", 3, 0),
        ("job_errors_per_hour", Severity.HIGH): (">", 10, 0),
        ("cleanup_failing", Severity.WARNING): (">=", 1, 0),
        ("cleanup_failing", Severity.CRITICAL): (">=", 3, 0),
        ("cleanup_failed_runs", Severity.HIGH): (">=", 2, 0),
        ("cleanup_deletes_nothing", Severity.WARNING): (">=", 3, 0),
        ("cleanup_slow", Severity.WARNING): (">", 1000, 0),
        ("app_database_unreachable", Severity.CRITICAL): ("<", 1, minutes(1)),
        ("api_budget", Severity.HIGH): (">", 0.80, 0),
        ("api_budget", Severity.CRITICAL): (">", 1.00, 0),
    }
    for (name, severity), (comparator, value, duration) in checks.items():
        assert _threshold(pack, name, severity) == (
            comparator,
            value,
            __import__("datetime").timedelta(seconds=duration),
        ), name
    window = next(rule for rule in pack.rules if rule.name == "http_no_requests").window
    assert window.total_seconds() == minutes(15)


def test_a_request_guard_belongs_to_request_metrics_only(tmp_path):
    text = GOOD.replace("metric: http_error_rate", "metric: jobs_failed").replace(
        "window: 5m", "window: 1h\n    min_requests: 50"
    )
    with pytest.raises(RulesError, match="min_requests: only request metrics"):
        load_rules(write(tmp_path, text))


def test_no_data_keeps_the_state_and_partial_windows_are_evaluated_by_default(tmp_path):
    """Issue 12, items 3 and 4: the documented defaults, for every rule of the shipped pack."""
    rule = load_rules(write(tmp_path, GOOD)).rules[0]
    assert rule.no_data is NoData.KEEP
    assert rule.require_full_window is False and rule.min_requests is None
    assert all(rule.no_data is NoData.KEEP for rule in load_rules().rules)
