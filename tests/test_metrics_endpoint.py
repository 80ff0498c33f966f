"""`hk metrics` and `hk metrics serve`: the product's state in the Prometheus text format,
parsed back with prometheus-client's own parser and checked by `promtool check metrics`."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from analytics.alerts.evaluate import evaluate_rules
from analytics.alerts.metrics import MetricSource
from analytics.alerts.model import Severity
from analytics.alerts.prometheus import render_metrics, serve_metrics
from analytics.alerts.service import AlertRuntime
from analytics.publish import RollupStore
from analytics.rollups.pg_health import publish_snapshot
from analytics.views import publish_rollup_views
from housekeeping.cli import main
from housekeeping.config import ConfigError, load_config
from housekeeping.database import AppDatabase
from housekeeping.history import PolicyRun, RunHistory, RunStatus

RULES = """
rules:
  - name: app_down
    metric: app_database_up
    comparator: "<"
    window: 1m
    thresholds:
      critical: {value: 1}
  - name: slow_cleanup
    metric: cleanup_consecutive_failures
    group_by: policy
    comparator: ">="
    window: 1d
    thresholds:
      high: {value: 1}
"""
T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture
def config_file(tmp_path, sqlite_url):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    config = {
        "state_database_url": f"sqlite:///{tmp_path / 'state.db'}",
        "analytics": {
            "root": str(tmp_path / "analytics"),
            "database": str(tmp_path / "analytics" / "rollups.duckdb"),
        },
        "alerts": {"database_url": f"sqlite:///{tmp_path / 'alerts.db'}", "rules_file": str(rules)},
        "policies": {
            "revoked_tokens": {
                "kind": "expired",
                "table": "revoked_tokens",
                "cutoff_column": "expires_at",
            },
            "request_logs": {
                "kind": "age",
                "table": "request_logs",
                "cutoff_column": "ts",
                "retention": "30d",
            },
        },
    }
    path = tmp_path / "hk.yaml"
    path.write_text(yaml.safe_dump(config))
    loaded = load_config(str(path))
    history = RunHistory.from_config(loaded)
    for minutes, status, deleted in ((0, RunStatus.SUCCESS, 40), (60, RunStatus.FAILED, 0)):
        history.record(
            PolicyRun(
                policy="revoked_tokens",
                table_name="revoked_tokens",
                status=status,
                started_at=T0 + timedelta(minutes=minutes),
                finished_at=T0 + timedelta(minutes=minutes, seconds=2),
                deleted=deleted,
                duration_ms=2000.0,
                error="boom" if status is RunStatus.FAILED else None,
            )
        )
    history.dispose()
    # The application database (a SQLite file) and one published health snapshot of it.
    db = AppDatabase(sqlite_url)
    with db.engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE filler (x text)"))
    runtime = AlertRuntime.load(str(path))
    store = RollupStore(runtime.analytics.root_path, runtime.analytics.database_path)
    publish_rollup_views(store, "UTC")
    snapshot, _ = publish_snapshot(db, store, loaded)
    db.dispose()
    # One evaluation: the failed cleanup fires slow_cleanup for its policy.
    with MetricSource(
        runtime.analytics.database_path,
        RunHistory.from_config(loaded),
        rollup_root=runtime.analytics.root_path,
    ) as metrics:
        evaluate_rules(
            runtime.rules, metrics, runtime.store, T0 + timedelta(hours=2), {Severity.HIGH: "#a"}
        )
    runtime.close()
    return str(path), snapshot


def test_metrics_hold_the_cleanup_health_freshness_alerts_and_database_gauges(config_file):
    path, snapshot = config_file
    values = samples(render_metrics(path))

    policy = (("policy", "revoked_tokens"),)
    assert values[("hk_cleanup_runs", policy)] == 2
    assert values[("hk_cleanup_failed_runs", policy)] == 1
    assert values[("hk_cleanup_rows_deleted", policy)] == 40
    assert values[("hk_cleanup_average_duration_seconds", policy)] == 2.0
    assert (
        values[("hk_cleanup_last_success_timestamp_seconds", policy)]
        == (T0 + timedelta(seconds=2)).timestamp()
    )
    assert values[("hk_cleanup_health", policy)] == 1  # degraded after one failure
    assert values[("hk_cleanup_consecutive_failures", policy)] == 1
    # A policy without runs: healthy, no last success.
    assert values[("hk_cleanup_runs", (("policy", "request_logs"),))] == 0
    assert (
        "hk_cleanup_last_success_timestamp_seconds",
        (("policy", "request_logs"),),
    ) not in values

    fired = (("group", "revoked_tokens"), ("rule", "slow_cleanup"))
    assert values[("hk_alert_state", fired)] == 2  # firing
    assert values[("hk_alert_severity", fired)] == 2  # high
    assert values[("hk_alert_state", (("group", ""), ("rule", "app_down")))] == 0

    assert values[("hk_pg_database_size_bytes", ())] == snapshot.database_bytes
    assert values[("hk_pg_snapshot_timestamp_seconds", ())] == pytest.approx(
        snapshot.taken_at.timestamp(), abs=1e-3
    )
    freshness = values[("hk_rollup_newest_data_timestamp_seconds", (("dataset", "pg_health"),))]
    assert freshness == pytest.approx(snapshot.taken_at.timestamp(), abs=1e-3)
    for source in ("history", "rollups", "alerts"):
        assert values[("hk_metrics_source_up", (("source", source),))] == 1


def test_promtool_accepts_the_exposition(config_file, tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        message = "promtool not found: apt-get install prometheus (it ships promtool)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    path, _ = config_file
    checked = subprocess.run(
        [promtool, "check", "metrics"],
        input=render_metrics(path),
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_source_that_cannot_be_read_is_left_out_and_says_so(config_file, tmp_path):
    path, _ = config_file
    (tmp_path / "alerts.db").write_text("not a database")
    values = samples(render_metrics(path))
    assert values[("hk_metrics_source_up", (("source", "alerts"),))] == 0
    assert not any(name == "hk_alert_state" for name, _ in values)
    assert values[("hk_cleanup_runs", (("policy", "revoked_tokens"),))] == 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_endpoint_serves_what_hk_metrics_prints(config_file):
    path, _ = config_file
    port = free_port()
    server = serve_metrics("127.0.0.1", port, path)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            served = response.read().decode()
            assert response.headers["Content-Type"].startswith("text/plain")
    finally:
        server.shutdown()
    assert samples(served) == samples(render_metrics(path))


def test_hk_metrics_prints_the_text_format_and_serve_names_a_busy_port(config_file):
    path, _ = config_file
    result = CliRunner().invoke(main, ["metrics", "--config", path])
    assert result.exit_code == 0
    assert samples(result.output)[("hk_cleanup_runs", (("policy", "revoked_tokens"),))] == 2

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(
            main, ["metrics", "serve", "--port", str(port), "--config", path]
        )
    assert result.exit_code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_mistake_in_the_analytics_or_alerts_section_is_a_config_error_not_a_source_down(
    config_file, tmp_path
):
    path, _ = config_file
    for section, key in (("analytics", "databse"), ("alerts", "rules_fle")):
        data = yaml.safe_load(Path(path).read_text())
        data[section][key] = "x"
        broken = tmp_path / f"broken_{section}.yaml"
        broken.write_text(yaml.safe_dump(data))
        for arguments in (["metrics"], ["metrics", "serve", "--port", str(free_port())]):
            result = CliRunner().invoke(main, [*arguments, "--config", str(broken)])
            assert result.exit_code == 1, result.output
            assert key in result.output and "hk_metrics_source_up" not in result.output
            assert len(result.output.strip().splitlines()) == 1


def test_serve_on_an_ipv6_address_prints_a_url_that_works(config_file):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    path, _ = config_file
    with socket.socket(socket.AF_INET6) as sock:
        sock.bind(("::1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "housekeeping.cli", "metrics", "serve", "--host", "::1"]
        + ["--port", str(port), "--config", path],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = server.stderr.readline().strip()
        assert line == f"serving http://[::1]:{port}/metrics"
        with urllib.request.urlopen(line.split(" ", 1)[1], timeout=10) as response:
            assert samples(response.read().decode())
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_config_broken_while_serving_is_a_sample_not_an_error_page(config_file, tmp_path):
    path, _ = config_file
    port = free_port()
    server = serve_metrics("127.0.0.1", port, path)
    try:
        Path(path).write_text("policies: [\n")  # edited into invalid YAML while serving
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            assert response.status == 200
            served = samples(response.read().decode())
    finally:
        server.shutdown()
    assert served == {("hk_metrics_source_up", (("source", "config"),)): 0}
    with pytest.raises(ConfigError, match="not valid YAML"):
        render_metrics(path)  # hk metrics itself: the config's one-line error
