"""`hk rules`, `hk alerts` and `hk status`, run through click against real files."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import yaml
from click.testing import CliRunner

from analytics.alerts.rules import load_rules
from housekeeping.cli import main
from housekeeping.history import PolicyRun, RunHistory, RunStatus
from tests.support.alert_support import Minute, analytics_settings_at, publish_minutes

RULES = """
rules:
  - name: http_error_rate
    metric: http_error_rate
    window: 5m
    thresholds:
      warning: {value: 0.02, for: 2m}
      critical: {value: 0.10, for: 2m}
"""


def setup(tmp_path, rules=RULES, policies=None):
    rule_file = tmp_path / "rules.yaml"
    rule_file.write_text(rules)
    config = {
        "state_database_url": f"sqlite:///{tmp_path / 'state.db'}",
        "analytics": {
            "root": str(tmp_path / "analytics"),
            "database": str(tmp_path / "analytics" / "rollups.duckdb"),
        },
        "alerts": {
            "database_url": f"sqlite:///{tmp_path / 'alerts.db'}",
            "rules_file": str(rule_file),
        },
    }
    if policies:
        config["policies"] = policies
    path = tmp_path / "hk.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def hk(*args, env=None):
    result = CliRunner().invoke(main, list(args), env=env or {}, catch_exceptions=False)
    return result.exit_code, result.output


def test_rules_check_lists_the_rules_or_names_the_problem(tmp_path):
    config = setup(tmp_path)
    code, output = hk("rules", "check", "--config", config)
    assert code == 0 and "OK: 1 rules" in output and "warning > 0.02 for 2m" in output

    bad = tmp_path / "bad.yaml"
    bad.write_text(RULES.replace("http_error_rate\n    window", "http_eror_rate\n    window"))
    code, output = hk("rules", "check", str(bad))
    assert (
        code == 1
        and "rules[0] (http_error_rate): metric: unknown metric 'http_eror_rate'" in output
    )

    code, output = hk("rules", "check")  # the shipped default pack
    assert code == 0 and f"{len(load_rules().rules)} rules in the default rule pack" in output


def test_silence_list_and_unsilence(tmp_path):
    config = setup(tmp_path)
    code, output = hk(
        "alerts",
        "silence",
        "http_error_rate",
        "--for",
        "2h",
        "--reason",
        "deploy",
        "--config",
        config,
    )
    assert code == 0 and output.startswith("silence #1: http_error_rate until")
    code, output = hk("alerts", "list", "--config", config)
    assert "Silences: 1" in output and "#1 http_error_rate" in output and "deploy" in output
    code, output = hk("alerts", "unsilence", "1", "--config", config)
    assert code == 0
    code, output = hk("alerts", "unsilence", "1", "--config", config)
    assert code == 1 and "no silence #1" in output


def test_bad_silences_are_refused_and_store_nothing(tmp_path):
    config = setup(tmp_path)
    cases = [
        (["nope", "--for", "2h", "--reason", "x"], "unknown rule 'nope'"),
        (["http_error_rate", "--for", "soon", "--reason", "x"], "--for"),
        (["http_error_rate", "--for", "-1h", "--reason", "x"], "--for"),
        (["http_error_rate", "--for", "2h", "--reason", "  "], "give a reason"),
    ]
    for arguments, message in cases:
        code, output = hk("alerts", "silence", *arguments, "--config", config)
        assert code == 2 and message in output, arguments
    assert "Silences: 0" in hk("alerts", "list", "--config", config)[1]


def test_evaluate_without_slack_prints_to_the_console_and_says_so(tmp_path):
    config = setup(tmp_path, rules=RULES.replace("for: 2m", "for: 0s"))
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    publish_minutes(
        analytics_settings_at(tmp_path),
        [Minute(now - timedelta(minutes=offset), errors=30) for offset in range(1, 11)],
    )
    code, output = hk("alerts", "evaluate", "--config", config)
    assert code == 0
    assert "Slack is not configured" in output
    assert "[alert -> #alerts] FIRING [critical]: http_error_rate is 30.0% (> 10.0%)\n" in output
    assert "1 new notifications" in output and "1 sent" in output


def test_status_json_has_the_cleanup_metrics_shape(tmp_path):
    config = setup(
        tmp_path,
        policies={
            "revoked_tokens": {
                "kind": "expired",
                "table": "revoked_tokens",
                "cutoff_column": "expires_at",
                "schedule": "0 3 * * *",
            },
            "request_logs": {
                "kind": "age",
                "table": "request_logs",
                "cutoff_column": "ts",
                "retention": "30d",
            },
        },
    )
    history = RunHistory(f"sqlite:///{tmp_path / 'state.db'}")
    start = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)
    for day, status in enumerate([RunStatus.SUCCESS, RunStatus.FAILED]):
        history.record(
            PolicyRun(
                policy="revoked_tokens",
                table_name="revoked_tokens",
                status=status,
                started_at=start + timedelta(days=day),
                finished_at=start + timedelta(days=day, seconds=1),
                deleted=100 if status is RunStatus.SUCCESS else 0,
                duration_ms=250.0,
                error="connection refused" if status is RunStatus.FAILED else None,
            )
        )
    history.record(
        PolicyRun(
            policy="dagster_run_history",
            table_name="dagster runs",
            status=RunStatus.SUCCESS,
            started_at=start,
            finished_at=start + timedelta(seconds=1),
            deleted=7,
            duration_ms=10.0,
        )
    )
    history.dispose()

    code, output = hk("status", "--json", "--config", config)

    assert code == 0
    item = json.loads(output)["policies"]["revoked_tokens"]
    assert item["status"] == "degraded"
    assert item["metrics"] == {
        "lastRun": "2026-11-21T03:00:01.000Z",
        "lastSuccess": "2026-11-20T03:00:01.000Z",
        "lastFailure": "2026-11-21T03:00:01.000Z",
        "totalRuns": 2,
        "successfulRuns": 1,
        "failedRuns": 1,
        "totalTokensDeleted": 100,
        "averageCleanupMs": 250,
        "lastErrorMessage": "connection refused",
        "lastRunSkippedLocked": 0,
    }
    assert item["nextScheduledRun"].endswith("T03:00:00.000Z")
    # A log policy counts rows; a policy only the history knows (the run-history purge) is listed
    # as the daily summary lists it.
    policies = json.loads(output)["policies"]
    assert set(policies) == {"revoked_tokens", "request_logs", "dagster_run_history"}
    assert list(policies)[-1] == "dagster_run_history"
    assert "totalRowsDeleted" in policies["request_logs"]["metrics"]
    assert "totalTokensDeleted" not in policies["request_logs"]["metrics"]
    assert policies["dagster_run_history"]["metrics"]["totalRowsDeleted"] == 7
    code, text = hk("status", "--config", config)
    assert "revoked_tokens" in text and "degraded" in text and "connection refused" in text
    assert "dagster_run_history" in text and "deleted 7" in text


def publish_error_hour(tmp_path):
    """The last hour of minutes, 30 % errors from its minute 20 to 30; its start."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start = now - timedelta(minutes=60)
    publish_minutes(
        analytics_settings_at(tmp_path),
        [
            Minute(start + timedelta(minutes=offset), errors=30 if 20 <= offset < 30 else 0)
            for offset in range(60)
        ],
    )
    return start


def test_backtest_lists_what_the_rules_would_have_sent(tmp_path):
    config = setup(tmp_path)
    start = publish_error_hour(tmp_path)
    code, output = hk("rules", "backtest", "--since", "1h", "--json", "--config", config)
    assert code == 0
    result = json.loads(output)
    kinds = [(item["kind"], item["severity"]) for item in result["notifications"]]
    assert kinds == [("firing", "warning"), ("escalated", "critical"), ("resolved", "critical")]
    times = [datetime.fromisoformat(item["at"]) - start for item in result["notifications"]]
    # errors from minute 20 on: the 5-minute window is at 6 % by 21 and 12 % by 22; each
    # severity then holds for its 2 minutes; the window is clean again by 35.
    assert times[:2] == [timedelta(minutes=23), timedelta(minutes=24)]
    assert times[2] == timedelta(minutes=35)

    code, output = hk("rules", "backtest", "--since", "1h", "--rule", "nope", "--config", config)
    assert code == 1 and "unknown rule nope" in output


def test_backtest_until_ends_the_replay_and_rules_replays_another_file(tmp_path):
    config = setup(tmp_path)
    start = publish_error_hour(tmp_path)
    until = (start + timedelta(minutes=30)).replace(tzinfo=None).isoformat(timespec="minutes")
    code, output = hk(
        "rules", "backtest", "--since", "30m", "--until", until, "--json", "--config", config
    )
    assert code == 0, output
    kinds = [item["kind"] for item in json.loads(output)["notifications"]]
    assert kinds == ["firing", "escalated"]  # the resolution comes after --until

    lenient = tmp_path / "lenient.yaml"
    lenient.write_text(RULES.replace("0.02", "0.5").replace("0.10", "0.9"))
    code, output = hk(
        "rules", "backtest", "--since", "1h", "--rules", str(lenient), "--json", "--config", config
    )
    assert code == 0, output
    assert json.loads(output)["notifications"] == []

    code, output = hk("rules", "backtest", "--until", "yesterday", "--config", config)
    assert code == 2 and "--until" in output


SQL_RULES = """
rules:
  - name: policy_failures
    sql: SELECT policy, consecutive_failures FROM housekeeping_summary
    group_by: policy
    thresholds:
      warning: {value: 1}
  - name: semicolon_in_a_literal
    sql: "SELECT route, count(*) FROM requests_minute WHERE route <> ';' GROUP BY route"
    thresholds:
      warning: {value: 1000}
"""


def test_rules_check_runs_every_sql_rule_as_the_evaluation_does(tmp_path):
    """Issue 12, item 5: OK means it will evaluate; what would fail is refused, named."""
    config = setup(tmp_path, rules=SQL_RULES)
    code, output = hk("rules", "check", "--config", config)  # nothing published yet
    assert code == 0, output
    assert "OK: 2 rules" in output

    publish_minutes(
        analytics_settings_at(tmp_path), [Minute(datetime(2026, 11, 20, 12, 0, tzinfo=UTC))]
    )
    code, output = hk("rules", "check", "--config", config)  # against the published views
    assert code == 0 and "OK: 2 rules" in output

    broken = (
        SQL_RULES
        + """
  - name: unknown_column
    sql: SELECT route, sum(errors) FROM requests_minute GROUP BY route
    thresholds:
      warning: {value: 1}
  - name: text_value
    sql: SELECT policy, status FROM housekeeping_summary
    thresholds:
      warning: {value: 1}
  - name: unknown_view
    sql: SELECT 1 FROM housekeping_summary
    thresholds:
      warning: {value: 1}
"""
    )
    config = setup(tmp_path, rules=broken)
    code, output = hk("rules", "check", "--config", config)
    assert code == 1
    lines = output.strip().splitlines()
    assert len(lines) == 4, output
    assert (
        'rule unknown_column: sql: Binder Error: Referenced column "errors" not found' in lines[0]
    )
    assert "rule text_value: sql: value column 'status' is VARCHAR, not a number" in lines[1]
    assert "rule unknown_view: sql: Catalog Error: Table with name housekeping_summary" in lines[2]
    assert (
        lines[3]
        == f"Error: 3 SQL rules of {tmp_path / 'rules.yaml'} would fail at every evaluation"
    )


GROUPED = (
    RULES
    + """
  - name: route_errors
    metric: http_error_rate
    group_by: route
    window: 5m
    thresholds:
      high: {value: 0.05}
"""
)


def test_silences_that_would_silence_nothing_or_too_long_are_refused(tmp_path):
    """Issue 12, item 6: an unknown group, --group on an ungrouped rule, over max_silence."""
    config = setup(tmp_path, rules=GROUPED)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    publish_minutes(
        analytics_settings_at(tmp_path),
        [Minute(now - timedelta(minutes=offset), route="/api/orders") for offset in range(1, 4)],
    )
    cases = [
        (
            ["route_errors", "--group", "/api/ordrs"],
            "rule route_errors has no group '/api/ordrs' (its groups now: /api/orders)",
        ),
        (
            ["http_error_rate", "--group", "/api/orders"],
            "rule http_error_rate is not grouped (no group_by): silence it without --group",
        ),
        (["route_errors", "--for", "31d"], "31d is longer than alerts.max_silence (30d)"),
    ]
    for arguments, message in cases:
        if "--for" not in arguments:
            arguments = [*arguments, "--for", "2h"]
        code, output = hk("alerts", "silence", *arguments, "--reason", "x", "--config", config)
        assert code == 2 and message in " ".join(output.split()), (arguments, output)
    assert "Silences: 0" in hk("alerts", "list", "--config", config)[1]

    code, output = hk(
        "alerts", "silence", "route_errors", "--group", "/api/orders", "--for", "30d",
        "--reason", "known", "--config", config,
    )  # fmt: skip
    assert code == 0, output


def test_max_silence_is_a_config_key(tmp_path):
    config = setup(tmp_path)
    path = tmp_path / "hk.yaml"
    data = yaml.safe_load(path.read_text())
    data["alerts"]["max_silence"] = "4h"
    path.write_text(yaml.safe_dump(data))
    code, output = hk(
        "alerts", "silence", "http_error_rate", "--for", "5h", "--reason", "x", "--config", config
    )
    assert code == 2 and "5h is longer than alerts.max_silence (4h)" in output


def test_alerts_list_marks_silenced_alerts_and_unsilence_says_what_goes_out(tmp_path):
    config = setup(tmp_path, rules=RULES.replace("for: 2m", "for: 0s"))
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    publish_minutes(
        analytics_settings_at(tmp_path),
        [Minute(now - timedelta(minutes=offset), errors=30) for offset in range(1, 11)],
    )
    code, _ = hk(
        "alerts", "silence", "http_error_rate", "--for", "2h", "--reason", "deploy",
        "--config", config,
    )  # fmt: skip
    assert code == 0
    code, output = hk("alerts", "evaluate", "--config", config)
    assert code == 0 and "0 new notifications (1 silenced)" in output

    code, output = hk("alerts", "list", "--config", config)
    line = next(line for line in output.splitlines() if "http_error_rate  value" in line)
    assert line.split()[:3] == ["firing", "critical", "http_error_rate"]
    assert "SILENCED by #1 until" in line

    code, output = hk("alerts", "unsilence", "1", "--config", config)
    assert code == 0
    assert "firing while silenced, sent at the next evaluation: http_error_rate" in output
    code, output = hk("alerts", "evaluate", "--config", config)
    assert code == 0 and "1 new notifications (0 silenced)" in output
    assert "[alert -> #alerts] FIRING [critical]: http_error_rate is 30.0%" in output
    code, output = hk("alerts", "list", "--config", config)
    assert "SILENCED" not in output


def test_unsilence_names_only_the_alerts_that_silence_held_and_no_other_silence_holds(tmp_path):
    """Overlapping silences: ending one while another still covers the alert sends nothing,
    and unsilence must not announce that it will."""
    config = setup(tmp_path, rules=RULES.replace("for: 2m", "for: 0s"))
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    publish_minutes(
        analytics_settings_at(tmp_path),
        [Minute(now - timedelta(minutes=offset), errors=30) for offset in range(1, 11)],
    )
    for duration in ("2h", "1h"):
        code, _ = hk(
            "alerts", "silence", "http_error_rate", "--for", duration, "--reason", "deploy",
            "--config", config,
        )  # fmt: skip
        assert code == 0
    code, output = hk("alerts", "evaluate", "--config", config)
    assert code == 0 and "0 new notifications (1 silenced)" in output

    code, output = hk("alerts", "unsilence", "2", "--config", config)

    assert code == 0 and "sent at the next evaluation" not in output
    assert "still silenced by #1: http_error_rate" in output
    code, output = hk("alerts", "evaluate", "--config", config)
    assert code == 0 and "0 new notifications (0 silenced)" in output
