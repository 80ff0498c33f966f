"""Bad dagster.yaml values or missing variables get an error naming the variable.

Dagster itself names a missing variable and a non-numeric port (tested here through the very
commands an operator runs); an unreachable host, port or database it reports only as "too many
retries for DB connection". `hk instance check` names every one of them, before Dagster starts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from housekeeping.cli import main
from tests.support.e2e_support import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
STORAGE_VARIABLES = (
    "DAGSTER_PG_HOST",
    "DAGSTER_PG_PORT",
    "DAGSTER_PG_DB",
    "DAGSTER_PG_USER",
    "DAGSTER_PG_PASSWORD",
)


@pytest.fixture
def home(tmp_path) -> Path:
    directory = tmp_path / "dagster_home"
    directory.mkdir()
    shutil.copy(ROOT / "dagster.yaml", directory / "dagster.yaml")
    return directory


@pytest.fixture
def storage_env(monkeypatch, postgres_server) -> dict[str, str]:
    """The shipped dagster.yaml's variables, pointing at the test server."""
    values = {
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": "5432",
        "DAGSTER_PG_DB": postgres_server.rsplit("/", 1)[1],
        "DAGSTER_PG_USER": "postgres",
        # trust auth ignores it; the check must still never print it
        "DAGSTER_PG_PASSWORD": "s3cret-not-for-logs",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def check(home: Path, *args: str):
    return CliRunner().invoke(main, ["instance", "check", "--home", str(home), *args])


def test_every_missing_storage_variable_is_named_with_its_key(home, monkeypatch):
    for name in STORAGE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DAGSTER_PG_PORT", "5432")

    result = check(home)

    assert result.exit_code == 1
    assert "DAGSTER_PG_HOST (for storage.postgres.postgres_db.hostname)" in result.output
    assert "DAGSTER_PG_DB (for storage.postgres.postgres_db.db_name)" in result.output
    assert "DAGSTER_PG_PORT" not in result.output


def test_dagster_home_unset_is_named(monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)

    result = CliRunner().invoke(main, ["instance", "check"])

    assert result.exit_code == 1
    assert "DAGSTER_HOME is not set" in result.output


@pytest.mark.postgres
def test_a_port_that_is_not_a_number_is_named(home, storage_env, monkeypatch):
    monkeypatch.setenv("DAGSTER_PG_PORT", "54x2")

    result = check(home)

    assert result.exit_code == 1
    assert "storage.postgres.postgres_db.port (from DAGSTER_PG_PORT) is '54x2'" in result.output


@pytest.mark.postgres
def test_a_port_nothing_listens_on_is_named_without_the_password(home, storage_env, monkeypatch):
    port = free_port()
    monkeypatch.setenv("DAGSTER_PG_PORT", str(port))

    result = check(home, "--connect-timeout", "3")

    assert result.exit_code == 1
    assert f"127.0.0.1:{port}/" in result.output
    assert "DAGSTER_PG_PORT" in result.output
    assert "Connection refused" in result.output
    assert storage_env["DAGSTER_PG_PASSWORD"] not in result.output


@pytest.mark.postgres
def test_a_database_that_does_not_exist_is_named(home, storage_env, monkeypatch):
    monkeypatch.setenv("DAGSTER_PG_DB", "no_such_dagster_db")

    result = check(home)

    assert result.exit_code == 1
    assert "no_such_dagster_db" in result.output
    assert "DAGSTER_PG_DB" in result.output


@pytest.mark.postgres
def test_a_bare_postgresql_scheme_is_refused_with_the_reason(home, storage_env):
    config = yaml.safe_load((home / "dagster.yaml").read_text())
    config["storage"]["postgres"]["postgres_db"]["scheme"] = "postgresql"
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))

    result = check(home)

    assert result.exit_code == 1
    assert "storage.postgres.postgres_db.scheme is 'postgresql'" in result.output
    assert "postgresql+psycopg2" in result.output


@pytest.mark.postgres
def test_a_postgres_url_needs_the_psycopg2_scheme(home, storage_env, postgres_server, monkeypatch):
    config = yaml.safe_load((home / "dagster.yaml").read_text())
    config["storage"]["postgres"] = {"postgres_url": {"env": "DAGSTER_PG_URL"}}
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))

    monkeypatch.setenv("DAGSTER_PG_URL", postgres_server)  # a bare postgresql:// URL
    refused = check(home)
    monkeypatch.setenv(
        "DAGSTER_PG_URL", postgres_server.replace("postgresql://", "postgresql+psycopg2://")
    )
    accepted = check(home)

    assert refused.exit_code == 1
    assert "storage.postgres.postgres_url (from DAGSTER_PG_URL)" in refused.output
    assert accepted.exit_code == 0, accepted.output


@pytest.mark.postgres
def test_the_shipped_config_passes_and_hides_the_password(home, storage_env):
    result = check(home)

    assert result.exit_code == 0, result.output
    assert "storage: PostgreSQL postgresql+psycopg2://postgres:***@127.0.0.1:5432/" in result.output
    assert "run monitoring on" in result.output
    assert storage_env["DAGSTER_PG_PASSWORD"] not in result.output


def test_the_demo_config_passes_on_sqlite(tmp_path):
    demo_home = tmp_path / "demo_home"
    demo_home.mkdir()
    shutil.copy(ROOT / "deploy" / "dagster.demo.yaml", demo_home / "dagster.yaml")

    result = check(demo_home)

    assert result.exit_code == 0, result.output
    assert f"storage: SQLite under {demo_home}" in result.output


def dagster_env(home: Path, **values: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in STORAGE_VARIABLES}
    return {**env, "DAGSTER_HOME": str(home), "HK_CONFIG": str(ROOT / "hk.yaml"), **values}


@pytest.mark.slow
def test_dagster_daemon_itself_names_a_missing_storage_variable(home):
    env = dagster_env(
        home,
        DAGSTER_PG_PORT="5432",
        DAGSTER_PG_DB="test",
        DAGSTER_PG_USER="postgres",
        DAGSTER_PG_PASSWORD="",
    )

    result = subprocess.run(
        [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode != 0
    assert 'environment variable "DAGSTER_PG_HOST" which is not set' in result.stderr


@pytest.mark.slow
def test_dagster_itself_names_a_port_that_is_not_a_number(home):
    env = dagster_env(
        home,
        DAGSTER_PG_HOST="127.0.0.1",
        DAGSTER_PG_PORT="54x2",
        DAGSTER_PG_DB="test",
        DAGSTER_PG_USER="postgres",
        DAGSTER_PG_PASSWORD="",
    )

    result = subprocess.run(
        [str(BIN / "dagster"), "instance", "info"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode != 0
    assert 'env variable "DAGSTER_PG_PORT" cannot be coerced into an int' in result.stderr
