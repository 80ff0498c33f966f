"""`hk config check` fails, naming the key, on everything the runs would fail on: every section
parses (durations need a unit, time zones must exist), policy tables are tables, every analytics
source's table and columns exist; and a duration without a unit is refused wherever one is read."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from analytics.alerts.rules import RulesError, parse_rules
from housekeeping.cli import main
from housekeeping.config import ConfigError, parse_config
from housekeeping.demo.seed import seed_database

REPO = Path(__file__).resolve().parents[2]
NO_UNIT = "has no unit: write it with one of ms, s, m, h, d or w"


@pytest.fixture
def seeded(app_url):
    """The reference schema with a little generated data: every default source exists."""
    seed_database(app_url, tokens=50, requests=200, days=1, progress=False)
    return app_url


def shipped_config(tmp_path, **changes) -> dict:
    """The shipped hk.yaml with its files under tmp_path, and ``changes`` merged per section."""
    data = yaml.safe_load((REPO / "hk.yaml").read_text())
    data["archive"] = {"root": str(tmp_path / "archive")}
    data["state_database_url"] = f"sqlite:///{tmp_path / 'state.db'}"
    data["analytics"].update(root=str(tmp_path / "analytics"))
    data["analytics"]["database"] = str(tmp_path / "analytics" / "rollups.duckdb")
    data["alerts"]["database_url"] = f"sqlite:///{tmp_path / 'alerts.db'}"
    for section, values in changes.items():
        merge(data.setdefault(section, {}), values)
    return data


def merge(target: dict, values: dict) -> None:
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = value


def check(tmp_path, url, data, *args):
    path = tmp_path / "hk.yaml"
    path.write_text(yaml.safe_dump(data))
    return CliRunner().invoke(
        main, ["config", "check", "--config", str(path), "--database-url", url, *args]
    )


def test_the_shipped_config_passes_every_section_on_the_reference_schema(seeded, tmp_path):
    result = check(tmp_path, seeded, shipped_config(tmp_path))

    assert result.exit_code == 0, result.output
    assert "ok    analytics.sources.request_logs: request_logs" in result.output
    assert "ok    alerts: " in result.output
    assert "config OK (policies, analytics, alerts)" in result.output


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"alerts": {"summary": {"timezone": "Mars/Olympus"}}},
            "alerts.summary.timezone: unknown time zone 'Mars/Olympus'",
        ),
        (
            {"analytics": {"sources": {"request_logs": {"duration_ms": "latency"}}}},
            "analytics.sources.request_logs.duration_ms: column 'latency' does not exist in "
            "table 'request_logs'",
        ),
        (
            {"analytics": {"sources": {"jobs": {"table": "Jobs"}}}},
            "analytics.sources.jobs.table: table 'Jobs' does not exist",
        ),
        (
            {"analytics": {"sources": {"api_usage": {"ts": "service_name"}}}},
            "analytics.sources.api_usage.ts: column api_usage.service_name has type",
        ),
        (
            {"alerts": {"rules_file": "no_such_rules.yaml"}},
            "rule file no_such_rules.yaml not found",
        ),
        ({"analytics": {"timezone": "Europe/Atlantis"}}, "analytics.timezone: unknown time zone"),
    ],
    ids=[
        "summary-timezone",
        "source-column",
        "source-table-case",
        "source-column-type",
        "rules-file",
        "analytics-timezone",
    ],
)
def test_config_check_fails_naming_the_key_on_what_a_run_would_fail_on(
    seeded, tmp_path, changes, message
):
    result = check(tmp_path, seeded, shipped_config(tmp_path, **changes))

    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output


def test_a_view_as_a_policy_table_fails_the_check(seeded, tmp_path):
    import sqlalchemy as sa

    from housekeeping.database import AppDatabase

    db = AppDatabase(seeded)
    with db.engine.begin() as conn:
        conn.execute(sa.text("CREATE VIEW recent_requests AS SELECT * FROM request_logs"))
    db.dispose()
    changes = {"policies": {"request_logs": {"table": "recent_requests"}}}

    result = check(tmp_path, seeded, shipped_config(tmp_path, **changes))

    assert result.exit_code == 1
    assert "error policies.request_logs.table: 'recent_requests' is a view" in result.output


# Every section's durations: a bare number is an error naming the key and the units.
BARE_DURATIONS = [
    ({"policies": {"request_logs": {"retention": 30}}}, "policies.request_logs.retention"),
    ({"policies": {"revoked_tokens": {"grace": 60}}}, "policies.revoked_tokens.grace"),
    (
        {"policies": {"jobs": {"statuses": {"completed": {"retention": 24}}}}},
        "policies.jobs.statuses.completed.retention",
    ),
    ({"safety": {"lock_timeout": 2}}, "safety.lock_timeout"),
    ({"batch": {"target_duration": "120"}}, "batch.target_duration"),
    ({"dagster_runs": {"retention": 30}}, "dagster_runs.retention"),
    ({"health": {"slow_average": 1}}, "health.slow_average"),
    ({"analytics": {"late_row_grace": 300}}, "analytics.late_row_grace"),
    ({"alerts": {"evaluation_interval": 60}}, "alerts.evaluation_interval"),
]


@pytest.mark.parametrize(("changes", "key"), BARE_DURATIONS, ids=[key for _, key in BARE_DURATIONS])
def test_a_duration_without_a_unit_fails_the_check_naming_the_key_and_the_units(
    sqlite_url, tmp_path, changes, key
):
    result = check(tmp_path, sqlite_url, shipped_config(tmp_path, **changes))

    assert result.exit_code == 1
    assert f"{key}: " in result.output and NO_UNIT in result.output
    assert "Traceback" not in result.output


def test_retention_30_is_not_30_seconds_anymore():
    with pytest.raises(ConfigError, match=rf"policies\.logs\.retention: 30 {NO_UNIT}"):
        parse_config(
            {
                "policies": {
                    "logs": {"kind": "age", "table": "t", "cutoff_column": "ts", "retention": 30}
                }
            }
        )


@pytest.mark.parametrize("key", ["for", "window", "renotify"])
def test_a_rule_duration_without_a_unit_is_an_error_naming_the_rule_key(key):
    rule = {
        "name": "slow",
        "metric": "http_p95_latency",
        "thresholds": {"warning": {"value": 500}},
        key: 10,
    }

    with pytest.raises(RulesError, match=rf"rules\[0\] \(slow\): {key}: 10 {NO_UNIT}"):
        parse_rules({"rules": [rule]}, "rules.yaml")


def test_a_rule_file_with_a_bare_duration_fails_hk_config_check(sqlite_url, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        yaml.safe_dump(
            {
                "rules": [
                    {
                        "name": "slow",
                        "metric": "http_p95_latency",
                        "thresholds": {"warning": {"value": 500, "for": 5}},
                    }
                ]
            }
        )
    )
    data = shipped_config(tmp_path, alerts={"rules_file": str(rules)})

    result = check(tmp_path, sqlite_url, data, "--section", "alerts")

    assert result.exit_code == 1
    assert f"rules[0] (slow): thresholds.warning.for: 5 {NO_UNIT}" in result.output


@pytest.mark.parametrize(
    ("arguments", "option"),
    [
        (["rules", "backtest", "--since", "30"], "--since"),
        (["rules", "backtest", "--step", "1"], "--step"),
        (["alerts", "silence", "slow", "--for", "2", "--reason", "deploy"], "--for"),
    ],
)
def test_an_hk_option_duration_without_a_unit_is_refused_naming_the_option(
    tmp_path, arguments, option
):
    path = tmp_path / "hk.yaml"
    path.write_text(yaml.safe_dump(shipped_config(tmp_path)))

    result = CliRunner().invoke(main, [*arguments, "--config", str(path)])

    assert result.exit_code == 2
    assert f"Invalid value for {option}: " in result.output
    assert NO_UNIT in result.output


def test_page_ranges_on_sqlite_fails_the_check_naming_the_key(sqlite_url, tmp_path):
    seed_database(sqlite_url, tokens=50, requests=200, days=1, progress=False)
    changes = {"policies": {"request_logs": {"strategy": "page_ranges"}}}

    result = check(
        tmp_path, sqlite_url, shipped_config(tmp_path, **changes), "--section", "policies"
    )

    assert result.exit_code == 1
    assert "policies.request_logs.strategy: page_ranges walks PostgreSQL's table pages" in (
        result.output
    )


def test_a_config_path_that_is_a_directory_or_not_utf8_is_named_in_one_line(tmp_path):
    garbled = tmp_path / "garbled.yaml"
    garbled.write_bytes(b'owner: "\xff\xfe"\n')
    for path, message in [
        (tmp_path, f"config file {tmp_path} (HK_CONFIG) is a directory, not a file"),
        (garbled, f"config file {garbled} (HK_CONFIG) is not UTF-8 text (byte 8"),
    ]:
        result = CliRunner().invoke(main, ["status"], env={"HK_CONFIG": str(path)})

        assert result.exit_code == 1
        assert result.output.startswith(f"Error: {message}")
        assert "unexpected error" not in result.output


def test_an_unreachable_state_database_fails_the_check_and_the_demo_seeds_nothing(
    tmp_path, monkeypatch
):
    unreachable = "postgresql://postgres@127.0.0.1:1/x"
    data = shipped_config(tmp_path)
    data["state_database_url"] = unreachable
    app = tmp_path / "app.db"

    result = check(tmp_path, f"sqlite:///{app}", data, "--section", "alerts")

    assert result.exit_code == 1
    assert "error state_database_url: cannot connect to postgresql" in result.output
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "deploy" / "dagster.demo.yaml").read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("HK_CONFIG", str(tmp_path / "hk.yaml"))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{app}")

    demo = CliRunner().invoke(main, ["demo"])

    assert demo.exit_code == 1
    assert "state_database_url: cannot connect to postgresql" in demo.output
    assert not app.exists()
