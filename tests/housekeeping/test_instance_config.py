"""The shipped Dagster instance configs load and work: the demo's and production's."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import dagster as dg
import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]


@dg.asset
def probe() -> int:
    return 1


def test_the_demo_instance_config_loads_and_records_runs(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(ROOT / "deploy" / "dagster.demo.yaml", home / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        result = dg.materialize([probe], instance=instance)
        assert result.success
        assert instance.get_run_record_by_id(result.run_id) is not None
    finally:
        instance.dispose()


@pytest.mark.postgres
def test_the_production_instance_config_stores_runs_in_postgres(
    tmp_path, postgres_server, monkeypatch
):
    database = f"hk_dagster_{uuid.uuid4().hex[:10]}"
    admin = postgres_server.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    for name, value in {
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": "5432",
        "DAGSTER_PG_DB": database,
        "DAGSTER_PG_USER": "postgres",
        "DAGSTER_PG_PASSWORD": "",
    }.items():
        monkeypatch.setenv(name, value)
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    try:
        instance = dg.DagsterInstance.from_config(str(home))
        try:
            result = dg.materialize([probe], instance=instance)
            assert result.success
        finally:
            instance.dispose()
        with psycopg.connect(postgres_server.rsplit("/", 1)[0] + f"/{database}") as conn:
            stored = conn.execute("SELECT count(*) FROM runs WHERE run_id = %s", (result.run_id,))
            assert stored.fetchone()[0] == 1
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{database}" WITH (FORCE)')


def test_a_missing_storage_variable_is_named(tmp_path, monkeypatch):
    for name in (
        "DAGSTER_PG_HOST",
        "DAGSTER_PG_PORT",
        "DAGSTER_PG_DB",
        "DAGSTER_PG_USER",
        "DAGSTER_PG_PASSWORD",
    ):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    with pytest.raises(Exception, match="DAGSTER_PG_HOST"):
        dg.DagsterInstance.from_config(str(home))
