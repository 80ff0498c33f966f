"""End to end: a live dagster-webserver and dagster-daemon on PostgreSQL storage.

Launched through the GraphQL client as an operator's UI would: the housekeeping job and a rollup
partition run through the daemon's run queue; their runs and materialisations land in the
PostgreSQL storage and the data changes; the default-running alert sensor ticks; a headless
Chromium renders the asset graph. Everything is shut down, whatever happens.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import time
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from dagster import DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient

from analytics.defs.partitions import hour_partition_key
from housekeeping.config import load_config
from housekeeping.defs.assets import policy_asset_key
from tests.support.e2e_support import ROOT, Deployment

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.slow]
LOCATION = "housekeeping"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def deployment(postgres_server, tmp_path_factory):
    live = Deployment(postgres_server, tmp_path_factory.mktemp("e2e"))
    try:
        live.prepare()
        live.start_webserver()
        live.start_daemon()
        yield live
    finally:
        leftovers = live.stop()
        assert leftovers == [], f"process groups still alive after shutdown: {leftovers}"


@pytest.fixture(scope="module")
def client(deployment):
    return DagsterGraphQLClient("127.0.0.1", port_number=deployment.port, timeout=60)


def wait_for_run(client, deployment, run_id, timeout=300):
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        status = client.get_run_status(run_id)
        if status in (
            DagsterRunStatus.SUCCESS,
            DagsterRunStatus.FAILURE,
            DagsterRunStatus.CANCELED,
        ):
            return status
        time.sleep(2)
    raise AssertionError(
        f"run {run_id} still {status} after {timeout} s\n--- daemon ---\n{deployment.log('daemon')}"
    )


def app_count(deployment, table):
    with sqlite3.connect(deployment.workdir / "var" / "app.db") as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_the_housekeeping_job_runs_through_the_daemon_and_is_stored_in_postgres(deployment, client):
    tokens_before = app_count(deployment, "revoked_tokens")
    policies = load_config(ROOT / "hk.yaml").policies
    run_config = {
        "ops": {
            policy_asset_key(name).to_python_identifier(): {"config": {"allow_large_delete": True}}
            for name in policies
        }
    }

    run_id = client.submit_job_execution(
        "housekeeping_job", repository_location_name=LOCATION, run_config=run_config
    )
    status = wait_for_run(client, deployment, run_id)

    assert status == DagsterRunStatus.SUCCESS, deployment.log("daemon")
    assert deployment.storage("SELECT status FROM runs WHERE run_id = %s", run_id) == [("SUCCESS",)]
    materialized = {
        row[0]
        for row in deployment.storage(
            "SELECT asset_key FROM event_logs WHERE run_id = %s "
            "AND dagster_event_type = 'ASSET_MATERIALIZATION'",
            run_id,
        )
    }
    assert '["housekeeping", "revoked_tokens"]' in materialized
    assert '["housekeeping", "request_logs"]' in materialized
    assert app_count(deployment, "revoked_tokens") < tokens_before
    archive = deployment.workdir / "var" / "archive" / "revoked_tokens"
    assert list(archive.rglob("*.parquet")), "the deleted tokens were archived"


def test_a_rollup_partition_runs_and_publishes_its_hour(deployment, client):
    hour = (datetime.now(UTC) - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    key = hour_partition_key(hour)

    run_id = client.submit_job_execution(
        "analytics_requests_job",
        repository_location_name=LOCATION,
        tags={"dagster/partition": key},
    )
    status = wait_for_run(client, deployment, run_id)

    assert status == DagsterRunStatus.SUCCESS, deployment.log("daemon")
    stored = deployment.storage(
        "SELECT partition FROM event_logs WHERE run_id = %s "
        "AND dagster_event_type = 'ASSET_MATERIALIZATION'",
        run_id,
    )
    assert stored == [(key,)]
    published = deployment.workdir / "var" / "analytics" / "requests_minute"
    assert (published / f"{hour:%Y-%m-%dT%H}.parquet").exists()


LAUNCHPAD_DEFAULTS = """
query Defaults($selector: PipelineSelector!) {
  runConfigSchemaOrError(selector: $selector) {
    __typename
    ... on RunConfigSchema { rootDefaultYaml }
  }
}
"""


def launchpad_defaults(deployment, job_name: str) -> dict:
    """The run config the UI's Launchpad pre-fills for a job, as the UI asks for it."""
    body = json.dumps(
        {
            "query": LAUNCHPAD_DEFAULTS,
            "variables": {
                "selector": {
                    "repositoryLocationName": LOCATION,
                    "repositoryName": "__repository__",
                    "pipelineName": job_name,
                }
            },
        }
    ).encode()
    request = urllib.request.Request(
        f"{deployment.base_url}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        result = json.load(answer)["data"]["runConfigSchemaOrError"]
    assert result["__typename"] == "RunConfigSchema", result
    return yaml.safe_load(result["rootDefaultYaml"])


def test_a_manual_launch_offers_dry_run_and_allow_large_delete_defaulting_to_off(deployment):
    tokens = policy_asset_key("revoked_tokens").to_python_identifier()

    everything = launchpad_defaults(deployment, "housekeeping_job")
    one_policy = launchpad_defaults(deployment, "revoked_tokens_job")
    dry_run = launchpad_defaults(deployment, "housekeeping_dry_run_job")

    expected = {"dry_run": False, "allow_large_delete": False}
    assert everything["ops"][tokens]["config"] == expected
    assert one_policy["ops"] == {tokens: {"config": expected}}
    assert dry_run["ops"][tokens]["config"]["dry_run"] is True


def test_the_default_running_alert_sensor_ticks_and_evaluates(deployment):
    alerts_db = deployment.workdir / "var" / "hk_alerts.db"
    deadline = time.monotonic() + 240
    beat = None
    while time.monotonic() < deadline and beat is None:
        if alerts_db.exists():
            with sqlite3.connect(alerts_db) as conn:
                try:
                    beat = conn.execute(
                        "SELECT at, detail FROM hk_alert_heartbeats WHERE name = 'alert_evaluation'"
                    ).fetchone()
                except sqlite3.OperationalError:
                    beat = None
        if beat is None:
            time.sleep(3)
    assert beat is not None, f"no alert evaluation\n--- daemon ---\n{deployment.log('daemon')}"
    assert "rules" in beat[1]
    ticks = deployment.storage(
        "SELECT count(*) FROM job_ticks t JOIN jobs j ON j.job_origin_id = t.job_origin_id "
        "WHERE j.job_body LIKE %s",
        '%"alert_rules_sensor"%',
    )
    assert ticks[0][0] >= 1


@pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="needs Debian's chromium (apt-get install chromium); .ci/run installs it in CI",
)
def test_a_headless_browser_sees_the_projects_assets(deployment):
    assert CHROMIUM is not None, "chromium is not installed (.ci/run installs it)"
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    screenshot = artifacts / "asset-graph.png"
    # The housekeeping group's lineage: its asset nodes are drawn expanded (the global lineage
    # page collapses every group into one box).
    group_url = f"{deployment.base_url}/locations/{LOCATION}/asset-groups/housekeeping/lineage"
    common = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1600,1800",
        "--virtual-time-budget=20000",
    ]

    def dump_dom(url: str) -> str:
        return subprocess.run(
            [*common, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True
        ).stdout

    group_page = dump_dom(group_url)
    global_page = dump_dom(f"{deployment.base_url}/asset-groups")
    subprocess.run(
        [*common, f"--screenshot={screenshot}", group_url],
        capture_output=True,
        timeout=120,
        check=True,
    )

    for asset in ("request_logs", "error_logs", "dagster_run_history"):
        assert asset in group_page, f"{asset} not on the housekeeping lineage page"
    assert "housekeeping" in global_page and "analytics" in global_page
    # dagster.yaml sets nux.enabled: false, so no sign-up dialog covers the graph.
    assert "Join the Dagster community" not in group_page + global_page
    assert screenshot.exists() and screenshot.stat().st_size > 10_000
