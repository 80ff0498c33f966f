"""`hk demo`, what `make demo` runs: the first thing a new user sees must work, twice."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HK = str(Path(sys.executable).parent / "hk")

pytestmark = pytest.mark.slow


def run_demo(workdir: Path, *options: str) -> subprocess.CompletedProcess:
    # The shipped hk.yaml's relative paths (var/...) land in workdir, as they do in a checkout.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("HK_", "SLACK_", "DATABASE_URL"))
    }
    env |= {"DAGSTER_HOME": str(workdir / "dagster_home"), "HK_CONFIG": str(ROOT / "hk.yaml")}
    return subprocess.run(
        [HK, "demo", "--tokens", "2000", "--requests", "20000", "--days", "40", *options],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_demo_seeds_cleans_rolls_up_and_evaluates_the_rules_and_can_run_again(tmp_path):
    (tmp_path / "dagster_home").mkdir()
    shutil.copy(ROOT / "deploy" / "dagster.demo.yaml", tmp_path / "dagster_home" / "dagster.yaml")

    first = run_demo(tmp_path)
    second = run_demo(tmp_path)

    assert first.returncode == 0, first.stdout + first.stderr
    out = first.stdout
    assert "seeded revoked_tokens 2,000, request_logs 20,000" in out
    assert ": SUCCESS" in out
    for policy in ("revoked_tokens", "request_logs", "error_logs", "audit_logs", "jobs"):
        assert f"  {policy:<22} deleted " in out, policy
    assert "remaining expired 0" in out and "FAILED" not in out
    assert "last 24 h: " in out and "requests, error rate" in out
    assert "Alert rules (one evaluation" in out and "sending through: console" in out
    # The last 24 h hold an injected error burst; the replay shows its whole lifecycle.
    assert "never-cleaned database sets allow_large_delete" in out
    assert "incident in the last 24 h: error-burst" in out
    lifecycle = out.split("The incident's lifecycle")[1].split("Alert rules")[0]
    assert "FIRING" in lifecycle and "http_error_rate" in lifecycle
    assert lifecycle.index("FIRING") < lifecycle.index("RESOLVED")
    assert (tmp_path / "var" / "analytics" / "rollups.duckdb").exists()
    assert list((tmp_path / "var" / "archive" / "revoked_tokens").rglob("*.parquet"))

    assert second.returncode == 0, second.stdout + second.stderr
    assert "Seeding" not in second.stdout, "the second run reuses the demo database"
    assert ": SUCCESS" in second.stdout
    assert "never-cleaned" not in second.stdout and "cleaned before" in second.stdout
    # The same incident, not a second one: it is still in the last 24 h.
    assert second.stdout.count("incident in the last 24 h: error-burst") == 1
    assert out.split("incident in the last 24 h: ")[1].split("\n")[0] in second.stdout


def test_the_demo_on_log_files_rolls_up_the_same_requests_as_on_its_tables(tmp_path):
    from datetime import UTC, datetime, timedelta

    import duckdb

    from analytics.rollups.requests import refresh_requests
    from housekeeping.database import AppDatabase
    from tests.support.analytics_data import make_settings, make_store, publish, query

    (tmp_path / "dagster_home").mkdir()
    shutil.copy(ROOT / "deploy" / "dagster.demo.yaml", tmp_path / "dagster_home" / "dagster.yaml")
    (tmp_path / "logs").mkdir()

    done = run_demo(tmp_path, "--log-files", str(tmp_path / "logs"))

    assert done.returncode == 0, done.stdout + done.stderr
    assert "rollups below read pino/access.log* and pino/jobs.log*" in done.stdout
    assert "last 24 h: " in done.stdout and "FAILED" not in done.stdout
    assert sorted(p.name for p in (tmp_path / "logs" / "pino").glob("access.log*"))[0] == (
        "access.log"
    )
    # the demo's rollups: staged from the files, published where the shipped config says
    published = duckdb.connect(str(tmp_path / "var" / "analytics" / "rollups.duckdb"), True)
    columns = "minute, route, method, requests, status_2xx, status_4xx, status_5xx"
    from_logs = published.execute(f"SELECT {columns} FROM requests_minute ORDER BY ALL").df()
    published.close()
    assert (tmp_path / "var" / "analytics" / ".logs" / "request_logs" / "manifest.json").exists()
    assert len(from_logs) > 100
    # the same hours rolled up from the demo's request_logs table
    first = from_logs.minute.min().to_pydatetime().replace(minute=0, tzinfo=UTC)
    last = from_logs.minute.max().to_pydatetime().replace(minute=0, tzinfo=UTC)
    settings = make_settings(tmp_path / "from_table")
    store = make_store(settings)
    db = AppDatabase(f"sqlite:///{tmp_path / 'var' / 'demo.db'}")
    refresh_requests(db, store, settings, first, last + timedelta(hours=1))
    db.dispose()
    publish(store, settings)
    from_table = query(settings, f"SELECT {columns} FROM requests_minute ORDER BY ALL")
    assert from_logs.equals(from_table)
    assert datetime.now(UTC) - last < timedelta(hours=2)


def test_the_demo_refuses_a_log_files_path_that_is_not_a_writable_directory(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from housekeeping.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HK_CONFIG", str(ROOT / "hk.yaml"))
    (tmp_path / "a-file").write_text("x")
    runner = CliRunner()
    cases = {
        "a-file": "--log-files: a-file is not a directory",
        "missing": "--log-files: missing does not exist; create it first",
    }
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if not os.access(locked, os.W_OK):  # not as root, who writes anywhere
        cases["locked"] = "--log-files: cannot write to locked (permission denied)"
    for path, message in cases.items():
        result = runner.invoke(main, ["demo", "--log-files", path])
        assert result.exit_code == 1, result.output
        assert result.output.strip().splitlines() == [f"Error: {message}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "locked"]
