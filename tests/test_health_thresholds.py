"""One source per fact: the config's health: section is the only place the cleanup health
thresholds live. Changing one there moves the asset checks, `hk status`, the daily summary and
the alert rules together (issue: one layout, one source per fact)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import yaml
from click.testing import CliRunner

from analytics.alerts.backtest import backtest
from analytics.alerts.model import Severity
from analytics.alerts.rules import RulesError, load_rules, parse_rules
from analytics.alerts.summary import build_summary
from housekeeping.cli import main
from housekeeping.config import HealthConfig, load_config
from housekeeping.definitions import build_definitions
from housekeeping.history import PolicyRun, RunHistory, RunStatus

START = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)


def write_config(tmp_path, health: dict) -> str:
    config = {
        "state_database_url": f"sqlite:///{tmp_path / 'state.db'}",
        "archive": {"root": str(tmp_path / "archive")},
        "analytics": {
            "root": str(tmp_path / "analytics"),
            "database": str(tmp_path / "analytics" / "rollups.duckdb"),
        },
        "alerts": {"database_url": f"sqlite:///{tmp_path / 'alerts.db'}"},
        "policies": {
            "revoked_tokens": {
                "kind": "expired",
                "table": "revoked_tokens",
                "cutoff_column": "expires_at",
            }
        },
        "dagster_runs": {"enabled": False},
        "health": health,
    }
    path = tmp_path / "hk.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def record_runs(config_file: str, statuses: list[RunStatus], duration_ms: float = 200.0) -> None:
    history = RunHistory.from_config(load_config(config_file))
    for index, status in enumerate(statuses):
        history.record(
            PolicyRun(
                policy="revoked_tokens",
                table_name="revoked_tokens",
                status=status,
                started_at=START + timedelta(hours=index),
                finished_at=START + timedelta(hours=index, seconds=1),
                deleted=0,
                duration_ms=duration_ms,
                error="boom" if status is RunStatus.FAILED else None,
            )
        )
    history.dispose()


def asset_check_results(config_file: str) -> dict[str, bool]:
    defs = build_definitions(load_config(config_file), config_file)
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("housekeeping_health_job").execute_in_process(
            instance=instance
        )
    return {item.check_name: item.passed for item in result.get_asset_check_evaluations()}


def hk_status(config_file: str) -> str:
    result = CliRunner().invoke(
        main, ["status", "--json", "--config", config_file], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.output)["policies"]["revoked_tokens"]["status"]


def summary_status(config_file: str, tmp_path) -> str:
    history = RunHistory.from_config(load_config(config_file))
    summary = build_summary(tmp_path / "none.duckdb", history, None, START + timedelta(hours=6))
    history.dispose()
    return summary.policies[0].status


def alert_severities(config_file: str, tmp_path) -> dict[str, str]:
    config = load_config(config_file)
    history = RunHistory.from_config(config)
    result = backtest(
        load_rules(None, config.health).select(
            ["cleanup_failing", "cleanup_deletes_nothing", "cleanup_slow"]
        ),
        tmp_path / "none.duckdb",  # the cleanup rules read the run history only
        history,
        START + timedelta(hours=2, minutes=1),
        START + timedelta(hours=2, minutes=3),
        timedelta(minutes=1),
    )
    history.dispose()
    return {item.key.rule: item.severity.value for item in result.notifications}


@pytest.mark.parametrize(
    ("health", "critical"),
    [({}, False), ({"critical_after_failures": 2}, True)],
    ids=["default-3", "changed-to-2"],
)
def test_critical_after_failures_moves_checks_status_summary_and_rules_together(
    tmp_path, monkeypatch, sqlite_url, health, critical
):
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    config_file = write_config(tmp_path, health)
    record_runs(config_file, [RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.FAILED])
    expected = "critical" if critical else "degraded"

    assert asset_check_results(config_file)["health"] is False
    assert hk_status(config_file) == expected
    assert summary_status(config_file, tmp_path) == expected
    assert alert_severities(config_file, tmp_path)["cleanup_failing"] == (
        "critical" if critical else "warning"
    )


def test_zero_delete_and_slow_thresholds_move_checks_and_rules_together(
    tmp_path, monkeypatch, sqlite_url
):
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    relaxed = write_config(tmp_path, {"zero_deleted_runs_warning": 4, "slow_average": "300ms"})
    record_runs(relaxed, [RunStatus.SUCCESS] * 3, duration_ms=250.0)

    checks = asset_check_results(relaxed)
    assert checks["deletes_progress"] is True and checks["duration"] is True
    assert alert_severities(relaxed, tmp_path) == {}

    strict = write_config(tmp_path, {"zero_deleted_runs_warning": 3, "slow_average": "200ms"})
    checks = asset_check_results(strict)
    assert checks["deletes_progress"] is False and checks["duration"] is False
    assert alert_severities(strict, tmp_path) == {
        "cleanup_deletes_nothing": "warning",
        "cleanup_slow": "warning",
    }


RULE = """
rules:
  - name: cleanup_slow
    metric: cleanup_average_duration_ms
    group_by: policy
    thresholds:
      warning: {{value: {value}}}
    recovery: {recovery}
"""


@pytest.mark.parametrize(
    ("value", "recovery", "where"),
    [
        ("health.slow_averag", "500", r"thresholds\.warning\.value: 'health\.slow_averag'"),
        ('"health."', "500", r"thresholds\.warning\.value: 'health\.'"),
        ("health.slow_average.x", "500", r"thresholds\.warning\.value"),
        ("health.average_over_runs", "500", r"thresholds\.warning\.value: 'health\.average_over"),
        ("2000", "health.nope", r"recovery: 'health\.nope'"),
    ],
)
def test_a_rule_naming_no_health_threshold_is_refused_with_rule_and_key(value, recovery, where):
    data = yaml.safe_load(RULE.format(value=value, recovery=recovery))
    with pytest.raises(RulesError, match=r"my_rules\.yaml: rules\[0\] \(cleanup_slow\): " + where):
        parse_rules(data, "my_rules.yaml", HealthConfig())


def test_recovery_may_name_a_health_threshold_too():
    data = yaml.safe_load(RULE.format(value="3000", recovery="health.slow_average"))
    rule = parse_rules(data, "my_rules.yaml", HealthConfig(slow_average="2s")).rules[0]
    assert rule.recovery == 2000.0 and rule.thresholds[Severity.WARNING].value == 3000.0


def test_health_section_rejects_bad_values(tmp_path):
    from housekeeping.config import ConfigError

    with pytest.raises(ConfigError, match="health.critical_after_failures"):
        load_config(write_config(tmp_path, {"critical_after_failures": 0}))
    with pytest.raises(ConfigError, match="health.slow_averag"):
        load_config(write_config(tmp_path, {"slow_averag": "1s"}))


def test_a_files_policy_has_no_duration_check_and_no_cleanup_slow_alert(
    tmp_path, monkeypatch, sqlite_url
):
    """Gzipping a day of logs takes seconds by nature: a files policy has no `duration` check,
    and the `cleanup_slow` rule, which says the same, leaves it out too (a table policy as slow
    still warns)."""
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    (tmp_path / "logs").mkdir()
    config_file = write_config(tmp_path, {"slow_average": "1s"})
    data = yaml.safe_load(Path(config_file).read_text())
    data["policies"]["app_logs"] = {
        "kind": "files",
        "directory": str(tmp_path / "logs"),
        "glob": "*.log*",
        "retention": "30d",
        "archive": False,
    }
    Path(config_file).write_text(yaml.safe_dump(data))
    record_runs(config_file, [RunStatus.SUCCESS] * 3, duration_ms=5000.0)
    history = RunHistory.from_config(load_config(config_file))
    for index in range(3):
        history.record(
            PolicyRun(
                policy="app_logs",
                table_name=f"{tmp_path / 'logs'}/*.log*",
                status=RunStatus.SUCCESS,
                started_at=START + timedelta(hours=index),
                finished_at=START + timedelta(hours=index, seconds=5),
                deleted=1,
                duration_ms=5000.0,
            )
        )
    files_health = history.health("app_logs")
    history.dispose()

    assert (files_health.average_duration_ms, files_health.slow_warning) == (5000.0, False)
    config = load_config(config_file)
    history = RunHistory.from_config(config)
    result = backtest(
        load_rules(None, config.health).select(["cleanup_slow"]),
        tmp_path / "none.duckdb",
        history,
        START + timedelta(hours=2, minutes=1),
        START + timedelta(hours=2, minutes=3),
        timedelta(minutes=1),
    )
    history.dispose()
    assert {item.key.group for item in result.notifications} == {"revoked_tokens"}
