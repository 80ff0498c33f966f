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


def run_demo(workdir: Path) -> subprocess.CompletedProcess:
    # The shipped hk.yaml's relative paths (var/...) land in workdir, as they do in a checkout.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("HK_", "SLACK_", "DATABASE_URL"))
    }
    env |= {"DAGSTER_HOME": str(workdir / "dagster_home"), "HK_CONFIG": str(ROOT / "hk.yaml")}
    return subprocess.run(
        [HK, "demo", "--tokens", "2000", "--requests", "20000", "--days", "40"],
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
