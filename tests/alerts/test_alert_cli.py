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
    assert "[alert -> #alerts] http_error_rate: http_error_rate is 30.0%" in output
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
            }
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
    code, text = hk("status", "--config", config)
    assert "revoked_tokens" in text and "degraded" in text and "connection refused" in text


def test_backtest_lists_what_the_rules_would_have_sent(tmp_path):
    config = setup(tmp_path)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start = now - timedelta(minutes=60)
    publish_minutes(
        analytics_settings_at(tmp_path),
        [
            Minute(start + timedelta(minutes=offset), errors=30 if 20 <= offset < 30 else 0)
            for offset in range(60)
        ],
    )
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
