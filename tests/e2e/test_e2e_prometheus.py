"""End to end: a real Prometheus (Debian's `prometheus` package) scrapes `hk metrics serve`.

`hk metrics serve` runs as an operator would start it (its own process, a config file, a
recorded cleanup run); Prometheus, on 127.0.0.1 with a 1 s scrape interval, scrapes it, and its
HTTP API answers a query for one of the series with the value the run history holds. Both
processes run in their own process groups and are stopped whatever happens.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from housekeeping.config import load_config
from housekeeping.history import PolicyRun, RunHistory, RunStatus
from tests.support.e2e_support import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
PROMETHEUS = shutil.which("prometheus")
HK = Path(sys.executable).parent / "hk"


def start(command: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as output:
        return subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_prometheus_scrapes_hk_metrics_serve_and_answers_a_query(tmp_path):
    if PROMETHEUS is None:
        message = "prometheus not found: apt-get install prometheus (Debian's package)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    config = tmp_path / "hk.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "state_database_url": f"sqlite:///{tmp_path / 'state.db'}",
                "analytics": {"root": str(tmp_path / "analytics")},
                "alerts": {"database_url": f"sqlite:///{tmp_path / 'alerts.db'}"},
                "policies": {
                    "revoked_tokens": {
                        "kind": "expired",
                        "table": "revoked_tokens",
                        "cutoff_column": "expires_at",
                    }
                },
            }
        )
    )
    history = RunHistory.from_config(load_config(str(config)))
    finished = datetime.now(UTC) - timedelta(minutes=5)
    history.record(
        PolicyRun(
            policy="revoked_tokens",
            table_name="revoked_tokens",
            status=RunStatus.SUCCESS,
            started_at=finished - timedelta(seconds=3),
            finished_at=finished,
            deleted=1234,
            duration_ms=3000.0,
        )
    )
    history.dispose()

    exporter_port, prometheus_port = free_port(), free_port()
    scrape = tmp_path / "prometheus.yml"
    scrape.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "housekeeping",
                        "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}],
                    }
                ],
            }
        )
    )
    checked = subprocess.run(
        [shutil.which("promtool") or "promtool", "check", "config", str(scrape)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr

    exporter = start(
        [str(HK), "metrics", "serve", "--port", str(exporter_port), "--config", str(config)],
        tmp_path / "exporter.log",
    )
    prometheus = start(
        [
            PROMETHEUS,
            f"--config.file={scrape}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
        ],
        tmp_path / "prometheus.log",
    )
    query = urllib.parse.urlencode({"query": 'hk_cleanup_rows_deleted{policy="revoked_tokens"}'})
    url = f"http://127.0.0.1:{prometheus_port}/api/v1/query?{query}"
    answer = None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert exporter.poll() is None, (tmp_path / "exporter.log").read_text()
            assert prometheus.poll() is None, (tmp_path / "prometheus.log").read_text()
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    answer = json.loads(response.read())
            except OSError:
                answer = None  # not listening yet
            if answer and answer["data"]["result"]:
                break
            time.sleep(1)
    finally:
        stop(prometheus)
        stop(exporter)
    assert answer is not None and answer["status"] == "success", answer
    [series] = answer["data"]["result"]
    assert series["metric"]["job"] == "housekeeping"
    assert float(series["value"][1]) == 1234
