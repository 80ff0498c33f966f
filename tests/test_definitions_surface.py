"""What an operator sees in the UI: every definition validates and explains itself."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from housekeeping.config import load_config
from housekeeping.dagster_runs import LAUNCHED_BY_TAG
from housekeeping.definitions import build_definitions

ROOT = Path(__file__).resolve().parent.parent


def test_dagster_definitions_validate_passes_on_the_shipped_workspace(tmp_path):
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "definitions",
            "validate",
            "-w",
            "workspace.yaml",
        ],
        cwd=ROOT,
        env={
            "DAGSTER_HOME": str(tmp_path),
            "PATH": "/usr/bin:/bin",
            "HK_CONFIG": str(ROOT / "hk.yaml"),
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All code locations passed validation" in result.stdout + result.stderr


def test_every_asset_job_schedule_and_sensor_explains_itself():
    defs = build_definitions(load_config(ROOT / "hk.yaml"), str(ROOT / "hk.yaml"))
    repository = defs.get_repository_def()
    graph = repository.asset_graph
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.group_name in ("housekeeping", "analytics"), key
        assert node.description, f"{key} has no description"
        assert node.owners, f"{key} has no owner"
        assert node.kinds, f"{key} has no kinds"
    for job in repository.get_all_jobs():
        if job.name.startswith("__"):
            continue  # Dagster's implicit asset job
        assert job.description, f"job {job.name} has no description"
    for schedule in repository.schedule_defs:
        assert schedule.description, f"schedule {schedule.name} has no description"
        assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    for sensor in repository.sensor_defs:
        assert sensor.description, f"sensor {sensor.name} has no description"
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_runs_say_what_launched_them(instance):
    """Manual launches carry the jobs' own tag; schedules and sensors override it on their runs."""
    defs = build_definitions(load_config(ROOT / "hk.yaml"), str(ROOT / "hk.yaml"))
    repository = defs.get_repository_def()
    for job in repository.get_all_jobs():
        if not job.name.startswith("__"):
            assert job.tags.get(LAUNCHED_BY_TAG) == "manual", job.name
    # The conftest instance: its directory outlives the test, as Dagster's load context expects.
    for schedule in repository.schedule_defs:
        context = dg.build_schedule_context(
            instance=instance,
            scheduled_execution_time=datetime(2026, 11, 20, 0, 5, tzinfo=UTC),
            repository_def=repository,
        )
        for request in schedule.evaluate_tick(context).run_requests or []:
            assert request.tags.get(LAUNCHED_BY_TAG) == "schedule", schedule.name
    assert repository.get_schedule_def("daily_summary_schedule").tags[LAUNCHED_BY_TAG] == "schedule"


def test_the_readme_lists_every_schedule_and_sensor_with_its_default_status():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("Every schedule and sensor, and its default status") :]
    defs = build_definitions(load_config(ROOT / "hk.yaml"), str(ROOT / "hk.yaml"))
    repository = defs.get_repository_def()
    names = [item.name for item in (*repository.schedule_defs, *repository.sensor_defs)]
    missing = [name for name in names if f"`{name}`" not in table]
    assert missing == [], f"README's schedule and sensor table misses {missing}"
