"""End to end: the live demo (`make dev`) shows an incident from first error to resolved.

A dagster-webserver and dagster-daemon on PostgreSQL storage, with `hk demo traffic` writing the
application database every few seconds. `hk demo incident error-burst` injects 5xx into the
live traffic; the daemon's freshness sensor publishes them, alert_rules_sensor fires, and the
operator sees it where they look: the alert check on analytics/requests_minute turns failed in
the UI (GraphQL, and a headless Chromium screenshot of the lineage), Slack (the fake Slack
server) receives FIRING then RESOLVED, and the check passes again. Only what a live webserver
and daemon can show; the rules are shortened (window 2m, no `for`) to keep it to minutes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request

import pytest
import yaml

from tests.support.e2e_support import BIN, ROOT, Deployment
from tests.support.fake_slack import FakeSlack

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.slow]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TOKEN = "xoxb-live-demo"
QUICK_RULES = """
rules:
  - name: http_error_rate
    description: Share of 5xx responses over 2 minutes (shortened for the test).
    metric: http_error_rate
    comparator: ">"
    window: 2m
    thresholds:
      critical: {value: 0.10}
    renotify: 2h
"""
CHECKS = """
query Checks($path: [String!]!) {
  assetNodeOrError(assetKey: {path: $path}) {
    ... on AssetNode {
      assetChecksOrError {
        ... on AssetChecks {
          checks {
            name
            executionForLatestMaterialization {
              status
              evaluation { metadataEntries { label ... on TextMetadataEntry { text } } }
            }
          }
        }
      }
    }
  }
}
"""


class LiveDemo(Deployment):
    slack_url: str = ""

    def env(self) -> dict[str, str]:
        return {
            **super().env(),
            "SLACK_BOT_TOKEN": TOKEN,
            "SLACK_API_BASE_URL": self.slack_url,
        }


@pytest.fixture(scope="module")
def slack():
    server = FakeSlack().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def demo(postgres_server, tmp_path_factory, slack):
    workdir = tmp_path_factory.mktemp("live")
    rules = workdir / "rules.yaml"
    rules.write_text(QUICK_RULES)
    config = yaml.safe_load((ROOT / "hk.yaml").read_text())
    config["alerts"] |= {"rules_file": str(rules), "evaluation_interval": "15s"}
    config["analytics"]["refresh_interval"] = "30s"
    config_file = workdir / "hk.yaml"
    config_file.write_text(yaml.safe_dump(config))
    live = LiveDemo(postgres_server, workdir, hk_config=config_file)
    live.slack_url = slack.base_url
    try:
        live.prepare()
        live.start("traffic", [str(BIN / "hk"), "demo", "traffic", "--interval", "3s"])
        live.start_webserver()
        live.start_daemon()
        yield live
    finally:
        leftovers = live.stop()
        assert leftovers == [], f"process groups still alive after shutdown: {leftovers}"


def check_state(demo) -> tuple[str | None, dict]:
    """The UI's status of alert_http_error_rate on analytics/requests_minute, and its metadata."""
    body = json.dumps(
        {"query": CHECKS, "variables": {"path": ["analytics", "requests_minute"]}}
    ).encode()
    request = urllib.request.Request(
        f"{demo.base_url}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        node = json.load(answer)["data"]["assetNodeOrError"]
    checks = {check["name"]: check for check in node["assetChecksOrError"]["checks"]}
    execution = checks["alert_http_error_rate"]["executionForLatestMaterialization"]
    if execution is None:
        return None, {}
    entries = execution["evaluation"]["metadataEntries"] if execution["evaluation"] else []
    return execution["status"], {entry["label"]: entry.get("text") for entry in entries}


def wait_for(what: str, condition, demo, timeout: float = 420):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(5)
    raise AssertionError(
        f"{what}: not within {timeout:.0f} s\n--- daemon ---\n{demo.log('daemon')[-4000:]}"
        f"\n--- traffic ---\n{demo.log('traffic')[-2000:]}"
    )


def slack_texts(slack) -> list[str]:
    return [call.body.get("text", "") for call in slack.posted()]


def screenshot(demo, name: str) -> str:
    """The analytics group's lineage in headless Chromium; the rendered DOM."""
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    url = f"{demo.base_url}/locations/housekeeping/asset-groups/analytics/lineage"
    common = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1600,1400",
        "--virtual-time-budget=20000",
    ]
    subprocess.run(
        [*common, f"--screenshot={artifacts / name}", url],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert (artifacts / name).stat().st_size > 10_000
    checks_page = f"{demo.base_url}/assets/analytics/requests_minute?view=checks"
    return subprocess.run(
        [*common, "--dump-dom", checks_page],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout


@pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="needs Debian's chromium (apt-get install chromium); .ci/run installs it in CI",
)
def test_an_injected_error_burst_fires_in_the_ui_and_slack_then_resolves(demo, slack):
    assert CHROMIUM is not None, "chromium is not installed (.ci/run installs it)"
    # Ordinary live traffic: the sensor reports the check, and it passes; Slack hears nothing.
    wait_for(
        "the alert check reported as passed", lambda: check_state(demo)[0] == "SUCCEEDED", demo
    )
    assert not any("http_error_rate" in text for text in slack_texts(slack))

    injected = subprocess.run(
        [str(BIN / "hk"), "demo", "incident", "error-burst", "--for", "2m"],
        env=demo.env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert injected.returncode == 0, injected.stdout + injected.stderr

    wait_for("the alert check failed", lambda: check_state(demo)[0] == "FAILED", demo)
    _, metadata = check_state(demo)
    assert metadata["state"] == "firing" and metadata["severity"] == "critical"
    assert metadata["threshold"] == "> 10.0%" and metadata["since"].endswith("UTC")
    firing = wait_for(
        "Slack received FIRING",
        lambda: [t for t in slack_texts(slack) if "http_error_rate" in t],
        demo,
        timeout=120,
    )
    page = screenshot(demo, "live-demo-alert-firing.png")
    assert "alert_http_error_rate" in page
    ticks = demo.storage(
        "SELECT t.tick_body FROM job_ticks t JOIN jobs j ON j.job_origin_id = t.job_origin_id "
        "WHERE j.job_body LIKE %s ORDER BY t.id DESC LIMIT 20",
        '%"alert_rules_sensor"%',
    )
    assert any("FIRING: http_error_rate critical" in body for (body,) in ticks)

    wait_for("the alert check passed again", lambda: check_state(demo)[0] == "SUCCEEDED", demo)
    texts = slack_texts(slack)
    about = [text for text in texts if "http_error_rate" in text]
    assert len(about) >= 2 and about[0] == firing[0]
    assert "resolved" in about[-1].lower()
    screenshot(demo, "live-demo-alert-resolved.png")
