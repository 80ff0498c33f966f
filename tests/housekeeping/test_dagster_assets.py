"""The Dagster shell: real runs (dg.materialize / execute_in_process) on a real instance."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import dagster as dg
import pytest
import yaml

from housekeeping.config import load_config
from housekeeping.database import AppDatabase
from housekeeping.definitions import build_definitions
from housekeeping.defs.assets import DAGSTER_RUNS_ASSET, policy_asset_key
from housekeeping.history import RunHistory, RunStatus
from tests.support.app_tables import count, create_revoked_tokens


def write_config(tmp_path, **overrides) -> str:
    config = {
        "state_database_url": f"sqlite:///{tmp_path / 'state.db'}",
        "archive": {"root": str(tmp_path / "archive")},
        "safety": {"max_delete_fraction": 0.95},
        "batch": {"initial_size": 100, "min_size": 10, "max_size": 500},
        "policies": {
            "revoked_tokens": {
                "kind": "expired",
                "table": "revoked_tokens",
                "cutoff_column": "expires_at",
                "archive": True,
                "schedule": "0 3 * * *",
            }
        },
        "dagster_runs": {"retention": "30d", "failed_retention": "90d"},
    }
    config.update(overrides)
    path = tmp_path / "hk.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.fixture
def app(tmp_path, monkeypatch, sqlite_url):
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    db = AppDatabase(sqlite_url)
    yield db
    db.dispose()


def definitions(config_file: str) -> dg.Definitions:
    return build_definitions(load_config(config_file), config_file)


def metadata_of(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> dict:
    [materialization] = result.asset_materializations_for_node(key.to_python_identifier())
    return {name: value.value for name, value in materialization.metadata.items()}


def test_the_definitions_load_with_every_policy_schedule_job_and_check(tmp_path, app):
    defs = definitions(write_config(tmp_path))

    assert defs.resolve_assets_def(policy_asset_key("revoked_tokens"))
    assert defs.resolve_job_def("housekeeping_job")
    assert defs.resolve_job_def("housekeeping_dry_run_job")
    assert defs.resolve_schedule_def("revoked_tokens_schedule").cron_schedule == "0 3 * * *"
    checks = {key.name for key in defs.resolve_asset_graph().asset_check_keys}
    assert {"health", "deletes_progress", "duration"} <= checks
    # Dagster never runs two cleanups of one table at once: a pool per table, limit 1.
    assert defs.resolve_assets_def(policy_asset_key("revoked_tokens")).op.pool == (
        "hk_table_revoked_tokens"
    )


def test_the_housekeeping_job_deletes_and_reports_metadata_and_health(tmp_path, app, instance):
    create_revoked_tokens(app, rows=2000, expired_fraction=0.6)
    total = count(app, "revoked_tokens")
    defs = definitions(write_config(tmp_path))

    result = defs.resolve_job_def("housekeeping_job").execute_in_process(instance=instance)

    assert result.success
    metadata = metadata_of(result, policy_asset_key("revoked_tokens"))
    assert metadata["deleted"] == total - count(app, "revoked_tokens") > 0
    assert metadata["expected_deleted"] == metadata["deleted"]
    assert metadata["active_revoked"] == count(app, "revoked_tokens")
    assert metadata["remaining_expired"] == 0
    assert metadata["archived_rows"] == metadata["deleted"]
    assert metadata["batches"] > 1
    # Timings are rounded to what a person reads (3 significant digits, or one decimal).
    floats = [value for value in metadata.values() if isinstance(value, float)]
    assert floats and all(len(repr(value).split(".")[1]) <= 4 for value in floats)
    checks = {
        evaluation.check_name: evaluation
        for evaluation in result.get_asset_check_evaluations()
        if evaluation.asset_key == policy_asset_key("revoked_tokens")
    }
    assert checks["health"].passed
    history = RunHistory(load_config(tmp_path / "hk.yaml").state_database_url)
    [run] = history.recent("revoked_tokens")
    assert run.status is RunStatus.SUCCESS and run.dagster_run_id == result.run_id
    history.dispose()


def test_a_dry_run_from_run_config_deletes_nothing_and_is_an_observation(tmp_path, app, instance):
    create_revoked_tokens(app, rows=500, expired_fraction=0.6)
    defs = definitions(write_config(tmp_path))

    result = defs.resolve_job_def("housekeeping_dry_run_job").execute_in_process(instance=instance)

    assert result.success
    assert count(app, "revoked_tokens") == 500
    assert not result.asset_materializations_for_node("housekeeping__revoked_tokens")
    [observation] = [
        event.asset_observation_data.asset_observation
        for event in result.all_events
        if event.event_type_value == "ASSET_OBSERVATION"
    ]
    assert observation.metadata["dry_run"].value is True
    assert observation.metadata["expected_deleted"].value > 0


def test_three_failed_runs_in_a_row_turn_the_health_check_critical(tmp_path, app, instance):
    # No revoked_tokens table: every run fails with a config error naming the table.
    defs = definitions(write_config(tmp_path, dagster_runs={"enabled": False}))
    job = defs.resolve_job_def("revoked_tokens_job")
    health_job = defs.resolve_job_def("housekeeping_health_job")

    outcomes = []
    for _ in range(3):
        result = job.execute_in_process(instance=instance, raise_on_error=False)
        assert not result.success
        checks = health_job.execute_in_process(instance=instance).get_asset_check_evaluations()
        [health] = [check for check in checks if check.check_name == "health"]
        outcomes.append((health.passed, health.severity, health.metadata["status"].value))

    assert outcomes == [
        (False, dg.AssetCheckSeverity.WARN, "degraded"),
        (False, dg.AssetCheckSeverity.WARN, "degraded"),
        (False, dg.AssetCheckSeverity.ERROR, "critical"),
    ]
    failure = [event for event in result.all_events if event.is_step_failure][0]
    assert "revoked_tokens" in failure.event_specific_data.error.message
    # The product's explanation is the failure itself, not a traceback through our code.
    assert "revoked_tokens" in failure.event_specific_data.user_failure_data.description
    assert failure.event_specific_data.error.cause is None
    assert failure.event_specific_data.error.context is None


def test_a_failed_dagster_run_purge_is_recorded_and_degrades_its_health_check(
    tmp_path, app, instance, monkeypatch
):
    defs = definitions(write_config(tmp_path))

    def storage_unreachable(*args, **kwargs):
        raise ConnectionError("run storage unreachable")

    # The purge lists old runs through the instance; its storage fails exactly there.
    monkeypatch.setattr(type(instance), "get_run_records", storage_unreachable)
    result = defs.resolve_job_def("dagster_run_history_job").execute_in_process(
        instance=instance, raise_on_error=False
    )
    monkeypatch.undo()
    checks = defs.resolve_job_def("housekeeping_health_job").execute_in_process(instance=instance)

    assert not result.success
    history = RunHistory(load_config(tmp_path / "hk.yaml").state_database_url)
    [run] = history.recent("dagster_run_history")
    history.dispose()
    assert run.status is RunStatus.FAILED and run.dagster_run_id == result.run_id
    assert "run storage unreachable" in run.error
    [health] = [
        check
        for check in checks.get_asset_check_evaluations()
        if check.asset_key == DAGSTER_RUNS_ASSET and check.check_name == "health"
    ]
    assert not health.passed
    assert health.metadata["status"].value == "degraded"


TERMINATED_RUN = textwrap.dedent(
    """
    import json, sys
    import dagster as dg
    from housekeeping.config import load_config
    from housekeeping.definitions import build_definitions

    config_file, home = sys.argv[1], sys.argv[2]
    import os
    os.makedirs(home, exist_ok=True)
    defs = build_definitions(load_config(config_file), config_file)
    with dg.instance_for_test(temp_dir=home) as instance:
        result = defs.resolve_job_def("revoked_tokens_job").execute_in_process(
            instance=instance, raise_on_error=False
        )
        materializations = [
            {k: v.value for k, v in event.event_specific_data.materialization.metadata.items()}
            for event in result.all_events
            if event.event_type_value == "ASSET_MATERIALIZATION"
        ]
        print(json.dumps({"success": result.success, "materializations": materializations}))
    """
)


def test_terminating_a_run_stops_after_the_batch_in_flight_and_the_next_run_carries_on(
    tmp_path, app, instance
):
    create_revoked_tokens(app, rows=20000, expired_fraction=0.7)
    total = count(app, "revoked_tokens")
    config_file = write_config(tmp_path, batch={"initial_size": 20, "min_size": 10, "max_size": 20})
    child = subprocess.Popen(
        [sys.executable, "-c", TERMINATED_RUN, config_file, str(tmp_path / "child_home")],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ,
    )
    # Terminate (Dagster sends SIGINT to the step) once the cleanup has deleted something.
    deadline = time.monotonic() + 60
    while count(app, "revoked_tokens") == total and time.monotonic() < deadline:
        assert child.poll() is None, "the run ended before it was terminated"
        time.sleep(0.02)
    child.send_signal(signal.SIGINT)
    output, _ = child.communicate(timeout=60)
    report = json.loads(output.strip().splitlines()[-1])

    assert not report["success"]
    [partial] = report["materializations"]
    assert partial["stopped_early"] is True
    assert partial["deleted"] == total - count(app, "revoked_tokens") > 0
    assert partial["remaining_expired"] > 0

    defs = definitions(config_file)
    result = defs.resolve_job_def("revoked_tokens_job").execute_in_process(instance=instance)
    final = metadata_of(result, policy_asset_key("revoked_tokens"))
    assert final["remaining_expired"] == 0
    assert partial["deleted"] + final["deleted"] == partial["expected_deleted"]
    history = RunHistory(load_config(config_file).state_database_url)
    assert [run.status for run in history.recent("revoked_tokens")] == [
        RunStatus.SUCCESS,
        RunStatus.STOPPED,
    ]
    history.dispose()
