"""Dagster run-history retention on real instances (SQLite and PostgreSQL storage)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import psycopg
import pytest
import yaml

from housekeeping.dagster_runs import purge_dagster_runs


@dg.asset
def chatty() -> None:
    print("hello from a run that leaves compute logs")


@dg.asset
def broken() -> None:
    print("about to fail")
    raise RuntimeError("boom")


def sqlite_instance(home: Path) -> dg.DagsterInstance:
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump({"telemetry": {"enabled": False}}))
    return dg.DagsterInstance.from_config(str(home))


@pytest.fixture
def instance(tmp_path):
    test_instance = sqlite_instance(tmp_path / "dagster_home")
    yield test_instance
    test_instance.dispose()


@pytest.fixture
def postgres_instance(tmp_path, postgres_server):
    database = f"hk_dagster_{uuid.uuid4().hex[:10]}"
    admin = postgres_server.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    home = tmp_path / "dagster_pg_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        yaml.safe_dump(
            {
                "telemetry": {"enabled": False},
                "storage": {
                    "postgres": {
                        "postgres_db": {
                            "hostname": "127.0.0.1",
                            "port": 5432,
                            "username": "postgres",
                            "db_name": database,
                            # psycopg2, not psycopg 3: dagster-postgres' NOTIFY (dagster #33958)
                            "scheme": "postgresql+psycopg2",
                        }
                    }
                },
            }
        )
    )
    test_instance = dg.DagsterInstance.from_config(str(home))
    try:
        yield test_instance
    finally:
        test_instance.dispose()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{database}" WITH (FORCE)')


def make_runs(instance, successes: int, failures: int) -> tuple[list[str], list[str]]:
    ok = [dg.materialize([chatty], instance=instance).run_id for _ in range(successes)]
    failed = [
        dg.materialize([broken], instance=instance, raise_on_error=False).run_id
        for _ in range(failures)
    ]
    return ok, failed


def run_ids(instance) -> set[str]:
    return {record.dagster_run.run_id for record in instance.get_run_records()}


def compute_log_dir(instance, run_id: str) -> Path:
    return Path(instance.root_directory) / "storage" / run_id


def purge(instance, *, days_later: float, **options):
    return purge_dagster_runs(
        instance,
        now=datetime.now(UTC) + timedelta(days=days_later),
        retention=timedelta(days=30),
        failed_retention=timedelta(days=90),
        **options,
    )


def test_old_successful_runs_go_with_their_events_and_compute_logs(instance):
    ok, failed = make_runs(instance, successes=3, failures=2)
    assert all(compute_log_dir(instance, run_id).exists() for run_id in ok)

    result = purge(instance, days_later=40)

    assert result.runs_deleted == 3 and result.failed_runs_deleted == 0
    assert run_ids(instance) == set(failed)
    for run_id in ok:
        assert not instance.all_logs(run_id)
        assert not compute_log_dir(instance, run_id).exists()
    assert result.oldest_remaining_run_created_at is not None


def test_failed_runs_are_kept_longer_then_go_too(instance):
    _, failed = make_runs(instance, successes=1, failures=2)

    assert purge(instance, days_later=40).failed_runs_deleted == 0
    assert run_ids(instance) == set(failed)

    result = purge(instance, days_later=100)
    assert result.failed_runs_deleted == 2 and run_ids(instance) == set()
    assert result.oldest_remaining_run_created_at is None


def test_runs_in_progress_and_kept_runs_are_never_deleted(instance):
    ok, _ = make_runs(instance, successes=2, failures=0)
    in_progress = instance.create_run_for_job(
        dg.define_asset_job("in_progress", selection=[chatty]).resolve(
            asset_graph=dg.Definitions(assets=[chatty]).resolve_asset_graph()
        ),
        status=dg.DagsterRunStatus.STARTED,
    )

    result = purge(instance, days_later=400, keep_run_ids={ok[0]})

    assert run_ids(instance) == {ok[0], in_progress.run_id}
    assert result.runs_deleted == 1


def test_a_dry_run_deletes_nothing_and_counts_what_would_go(instance):
    make_runs(instance, successes=3, failures=1)
    before = run_ids(instance)

    result = purge(instance, days_later=100, dry_run=True, batch_size=2)

    assert run_ids(instance) == before
    assert result.would_delete == 4 and result.runs_deleted == 0


def test_stopping_ends_after_the_current_batch(instance):
    make_runs(instance, successes=5, failures=0)

    result = purge(instance, days_later=40, batch_size=2, should_stop=lambda: True)

    assert result.stopped_early and result.runs_deleted == 2
    assert len(run_ids(instance)) == 3


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retention": timedelta(0)}, "retention must be greater than 0"),
        ({"failed_retention": timedelta(days=-1)}, "failed_retention must be greater than 0"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
    ],
)
def test_bad_arguments_are_named(instance, options, message):
    make_runs(instance, successes=1, failures=0)
    arguments = {
        "now": datetime.now(UTC) + timedelta(days=400),
        "retention": timedelta(days=30),
        "failed_retention": timedelta(days=90),
    } | options
    with pytest.raises(ValueError, match=message):
        purge_dagster_runs(instance, **arguments)
    assert len(run_ids(instance)) == 1


@pytest.mark.postgres
def test_purging_works_on_postgres_storage(postgres_instance):
    ok, failed = make_runs(postgres_instance, successes=2, failures=1)

    result = purge(postgres_instance, days_later=40)

    assert result.runs_deleted == 2
    assert run_ids(postgres_instance) == set(failed)
    assert not postgres_instance.all_logs(ok[0])
