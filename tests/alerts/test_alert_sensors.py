"""The Dagster shell of alerting: real sensor ticks, a real failed run, the summary job."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
import yaml

from analytics.alerts.catalog import BUILTIN_METRICS
from analytics.alerts.defs.checks import SOURCE_DATASETS, build_alert_checks, check_key
from analytics.alerts.defs.definitions import build_alerts_defs
from analytics.alerts.defs.jobs import daily_summary_job
from analytics.alerts.defs.resources import AlertsResource
from analytics.alerts.defs.sensors import (
    alert_run_failure_sensor,
    alert_watchdog_sensor,
    build_alert_sensor,
)
from analytics.alerts.rules import RulesError
from analytics.alerts.service import EVALUATION_HEARTBEAT
from analytics.alerts.settings import alerts_settings
from analytics.alerts.store import AlertStore
from analytics.datasets import all_datasets
from housekeeping.config import load_config
from tests.support.alert_support import Minute, analytics_settings_at, publish_minutes
from tests.support.fake_slack import FakeSlack

TOKEN = "xoxb-sensor-secret"


@pytest.fixture
def slack(monkeypatch):
    server = FakeSlack().start()
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("SLACK_API_BASE_URL", server.base_url)
    monkeypatch.delenv("SLACK_WEBHOOK_URL", raising=False)
    yield server
    server.stop()


def write_config(tmp_path, **alerts):
    config = {
        "state_database_url": f"sqlite:///{tmp_path / 'state.db'}",
        "analytics": {
            "root": str(tmp_path / "analytics"),
            "database": str(tmp_path / "analytics" / "rollups.duckdb"),
        },
        "alerts": {"database_url": f"sqlite:///{tmp_path / 'alerts.db'}", **alerts},
    }
    path = tmp_path / "hk.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def error_burst_now(tmp_path):
    """The last 20 minutes of traffic, 30 % errors: http_error_rate fires critical."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    minutes = [Minute(now - timedelta(minutes=offset), errors=30) for offset in range(1, 21)]
    publish_minutes(analytics_settings_at(tmp_path), minutes)


IMMEDIATE_RULES = """
rules:
  - name: http_error_rate
    metric: http_error_rate
    window: 5m
    thresholds: {critical: {value: 0.10}}
"""


def burst_with_immediate_rules(tmp_path):
    """An error burst now, a config whose rule file fires at once: (config path, settings)."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(IMMEDIATE_RULES)
    path = write_config(tmp_path, rules_file=str(rules))
    error_burst_now(tmp_path)
    return path, alerts_settings(load_config(path))


def test_the_alert_sensor_sends_one_message_per_transition_across_ticks(tmp_path, slack):
    path, settings = burst_with_immediate_rules(tmp_path)
    sensor = build_alert_sensor(settings)
    resources = {"alerts": AlertsResource(config_file=str(path))}

    with dg.instance_for_test() as instance:
        first = sensor(dg.build_sensor_context(instance=instance, resources=resources))
        second = sensor(dg.build_sensor_context(instance=instance, resources=resources))

    texts = [call.body["text"] for call in slack.posted()]
    assert len(texts) == 1 and "http_error_rate" in texts[0] and "30.0%" in texts[0]
    assert "1 sent" in first.skip_reason.skip_message
    assert "0 new notifications" in second.skip_reason.skip_message
    assert TOKEN not in first.skip_reason.skip_message


def check_results(instance, key):
    """The check's stored evaluations, oldest first, as (passed, severity, metadata)."""
    records = instance.event_log_storage.get_asset_check_execution_history(key, limit=10)
    return [
        (
            record.event.dagster_event.event_specific_data.passed,
            record.event.dagster_event.event_specific_data.severity,
            {
                k: v.value
                for k, v in record.event.dagster_event.event_specific_data.metadata.items()
            },
        )
        for record in reversed(records)
    ]


def test_every_metric_has_the_dataset_its_asset_check_sits_on():
    """A metric source with no dataset (and no SQL naming one) would break the definitions."""
    for spec in BUILTIN_METRICS.values():
        assert spec.source in SOURCE_DATASETS or any(
            dataset.name in " ".join(spec.sql.values()) for dataset in all_datasets()
        ), spec.name


def test_the_alert_sensor_reports_each_rules_state_as_its_datasets_asset_check(tmp_path, slack):
    path, settings = burst_with_immediate_rules(tmp_path)
    sensor = build_alert_sensor(settings)
    resources = {"alerts": AlertsResource(config_file=str(path))}
    rule = settings.load_rules(load_config(path).health).rules[0]
    key = check_key(rule)

    with dg.instance_for_test() as instance:
        cursor = None
        results = []
        for step in ("burst", "unchanged", "recovered"):
            if step == "recovered":
                now = datetime.now(UTC).replace(second=0, microsecond=0)
                healthy = [Minute(now - timedelta(minutes=m)) for m in range(0, 21)]
                publish_minutes(analytics_settings_at(tmp_path), healthy)
            context = dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor)
            result = sensor(context)
            for event in result.asset_events:
                instance.report_runless_asset_event(event)
            cursor = result.cursor
            results.append(result)
        stored = check_results(instance, key)

    assert key.asset_key == dg.AssetKey(["analytics", "requests_minute"])
    assert key.name == "alert_http_error_rate"
    assert [len(result.asset_events) for result in results] == [1, 0, 1]
    assert "FIRING: http_error_rate critical" in results[0].skip_reason.skip_message
    assert "FIRING" not in results[2].skip_reason.skip_message
    (fired_passed, fired_severity, fired), (resolved_passed, _, resolved) = stored
    assert not fired_passed and fired_severity is dg.AssetCheckSeverity.ERROR
    assert fired["state"] == "firing" and fired["severity"] == "critical"
    assert fired["value"] == "30.0%" and fired["threshold"] == "> 10.0%"
    assert fired["since"].endswith("UTC")
    assert resolved_passed and resolved["state"] == "resolved"


def test_an_alert_check_run_from_the_ui_reports_the_stored_state(tmp_path, slack):
    path, settings = burst_with_immediate_rules(tmp_path)
    pack = settings.load_rules(load_config(path).health)
    resources = {"alerts": AlertsResource(config_file=str(path))}
    key = check_key(pack.rules[0])

    @dg.asset(key=key.asset_key)
    def requests_minute() -> None:
        return None

    with dg.instance_for_test() as instance:
        build_alert_sensor(settings)(
            dg.build_sensor_context(instance=instance, resources=resources)
        )
        result = dg.materialize(
            [requests_minute, *build_alert_checks(pack)],
            instance=instance,
            resources=resources,
            selection=dg.AssetSelection.checks(key),
        )

    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.metadata["state"].value == "firing"


@dg.op
def explode():
    raise RuntimeError(
        "cannot archive to postgresql://archiver:s3cret-pw@db:5432/archive: the disk is full\n"
        "second line of the error"
    )


@dg.job
def fragile_job():
    explode()


def test_a_failed_run_alerts_once_even_if_the_sensor_sees_it_twice(tmp_path, slack, monkeypatch):
    monkeypatch.setenv("DAGSTER_WEBSERVER_URL", "http://dagster.example:3000")
    path = write_config(tmp_path)
    resources = {"alerts": AlertsResource(config_file=str(path))}
    with dg.instance_for_test() as instance:
        result = fragile_job.execute_in_process(instance=instance, raise_on_error=False)
        assert not result.success
        run = instance.get_run_by_id(result.run_id)
        failure = next(
            event.dagster_event
            for event in instance.all_logs(result.run_id)
            if event.dagster_event and event.dagster_event.event_type_value == "PIPELINE_FAILURE"
        )
        for _ in range(2):
            context = dg.build_run_status_sensor_context(
                sensor_name="alert_run_failure_sensor",
                dagster_event=failure,
                dagster_instance=instance,
                dagster_run=run,
                resources=resources,
            ).for_run_failure()
            alert_run_failure_sensor(context)

    (call,) = slack.posted()
    (row,) = AlertStore(f"sqlite:///{tmp_path / 'alerts.db'}").rows()
    run_time = row.notification.evaluated_at
    assert call.body["text"].split("\n")[:2] == [
        "FAILED: Dagster run of fragile_job at step explode: RuntimeError: cannot archive to "
        "postgresql://archiver:***@db:5432/archive: the disk is full",
        f"Failed at {run_time:%H:%M} UTC · Look at: "
        f"<http://dagster.example:3000/runs/{result.run_id}|run {result.run_id[:8]}>",
    ]
    assert "s3cret" not in json.dumps(call.body) and "second line" not in json.dumps(call.body)
    assert call.body["blocks"][-1]["elements"][0]["url"] == (
        f"http://dagster.example:3000/runs/{result.run_id}"
    )


def test_a_stopped_evaluation_is_itself_an_alert(tmp_path, slack):
    path = write_config(tmp_path)
    store = AlertStore(f"sqlite:///{tmp_path / 'alerts.db'}")
    store.beat(EVALUATION_HEARTBEAT, datetime.now(UTC) - timedelta(hours=1))
    resources = {"alerts": AlertsResource(config_file=str(path))}

    with dg.instance_for_test() as instance:
        for _ in range(2):
            alert_watchdog_sensor(dg.build_sensor_context(instance=instance, resources=resources))

    (call,) = slack.posted()
    assert "not being evaluated" in call.body["text"] or "not completed" in call.body["text"]


def test_the_daily_summary_is_sent_once_with_a_chart(tmp_path, slack):
    path = write_config(tmp_path)
    error_burst_now(tmp_path)
    resources = {"alerts": AlertsResource(config_file=str(path))}

    first = daily_summary_job.execute_in_process(resources=resources)
    second = daily_summary_job.execute_in_process(resources=resources)

    (message,) = slack.posted()
    assert message.body["text"].startswith("Daily summary")
    assert "Requests: 2,000, error rate 30.00%" in message.body["text"]
    assert "/api/orders: 600 errors" in message.body["text"]
    uploads = [call for call in slack.calls if call.method == "upload"]
    assert uploads and uploads[0].body["png"]
    assert first.success and second.success


def test_a_bad_rule_file_fails_the_definitions_with_the_rules_message(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n  - name: x\n    metric: nope\n    thresholds: {warning: {value: 1}}\n"
    )
    path = write_config(tmp_path, rules_file=str(rules))
    with pytest.raises(RulesError, match="unknown metric 'nope'"):
        build_alerts_defs(load_config(path), str(path))


def test_a_grouped_rules_check_is_not_reported_again_when_only_its_values_wobble():
    """The check is re-reported when what fires changes, not at every tick's new value."""
    from analytics.alerts.defs.checks import verdicts
    from analytics.alerts.defs.sensors import check_events
    from analytics.alerts.model import AlertKey, AlertRecord, AlertState, Severity
    from analytics.alerts.rules import RulePack

    pack = RulePack.model_validate(
        yaml.safe_load(
            """
rules:
  - name: route_errors
    metric: http_error_rate
    group_by: route
    window: 5m
    thresholds: {high: {value: 0.1}}
"""
        )
    )
    since = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)

    def firing(*values):
        return [
            AlertRecord(
                AlertKey("route_errors", f"/api/{index}"),
                AlertState.FIRING,
                Severity.HIGH,
                firing_since=since,
                last_value=value,
            )
            for index, value in enumerate(values)
        ]

    with dg.instance_for_test() as instance:
        first, reported = check_events(instance, pack, verdicts(pack, firing(0.3, 0.2)), {})
        wobble, reported = check_events(
            instance, pack, verdicts(pack, firing(0.31, 0.19)), reported
        )
        more, _ = check_events(instance, pack, verdicts(pack, firing(0.3, 0.2, 0.4)), reported)

    assert [len(first), len(wobble), len(more)] == [1, 0, 1]
    # A rule removed from (or renamed in) the pack leaves the sensor's cursor with it.
    with dg.instance_for_test() as instance:
        _, kept = check_events(
            instance, pack, verdicts(pack, firing(0.3)), {"old_name": ["x", 1.0]}
        )
    assert set(kept) == {"route_errors"}
    assert (
        "/api/0 (firing, 31.0%)"
        in verdicts(pack, firing(0.31)).get("route_errors").metadata["groups_not_ok"]
    )


def test_a_sql_rules_check_sits_on_the_dataset_behind_the_view_it_reads():
    """A SQL rule over a view (jobs_daily, table_stats_latest) is a rule on that view's dataset;
    over several datasets, on the first its query names; over none, on requests_minute."""
    from analytics.alerts.rules import RulePack

    queries = {
        "daily_jobs": "SELECT queue, max(failed) FROM jobs_daily GROUP BY queue",
        "latest_tables": "SELECT policy, max(rows) FROM table_stats_latest GROUP BY policy",
        "hourly_requests": "SELECT max(requests) FROM requests_hourly_overall",
        "jobs_then_requests": (
            "SELECT (SELECT max(stuck) FROM jobs_hourly) + (SELECT 0 FROM requests_minute LIMIT 1)"
        ),
        "constant": "SELECT 1",
    }
    pack = RulePack.model_validate(
        {
            "rules": [
                {"name": name, "sql": sql, "thresholds": {"warning": {"value": 1}}}
                for name, sql in queries.items()
            ]
        }
    )
    assets = {rule.name: check_key(rule).asset_key.path[-1] for rule in pack.rules}
    assert assets == {
        "daily_jobs": "jobs_hourly",
        "latest_tables": "table_stats",
        "hourly_requests": "requests_minute",
        "jobs_then_requests": "jobs_hourly",
        "constant": "requests_minute",
    }
