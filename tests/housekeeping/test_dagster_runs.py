"""Dagster run-history retention on real instances (SQLite and PostgreSQL storage).

Dagster stamps a run's creation time itself, so the tests make runs "old" by purging with a
``now`` far in the future.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import psycopg
import pytest
import yaml

from housekeeping.dagster_runs import (
    PURGED_RUN_METADATA,
    RunPurgeResult,
    purge_dagster_runs,
)

# Every finished status that may be deleted is SUCCESS, FAILURE or CANCELED; QUEUED is left out
# because a queued run needs a remote job origin, which only Dagster's private API builds.
UNFINISHED_STATUSES = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.MANAGED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
    dg.DagsterRunStatus.SUSPENDED,
]


@dg.asset
def chatty() -> None:
    print("hello from a run that leaves compute logs")


@dg.asset
def broken() -> None:
    print("about to fail")
    raise RuntimeError("boom")


HOURS = dg.HourlyPartitionsDefinition(start_date="2026-11-01-00:00")


@dg.asset(partitions_def=HOURS)
def hourly_rollup(context) -> dg.MaterializeResult:
    return dg.MaterializeResult(
        metadata={"rows": len(context.partition_keys), "run": context.run_id}
    )


def write_dagster_yaml(home: Path, config: dict) -> dg.DagsterInstance:
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump({"telemetry": {"enabled": False}} | config))
    return dg.DagsterInstance.from_config(str(home))


@pytest.fixture
def sqlite_instance(tmp_path) -> Iterator[dg.DagsterInstance]:
    instance = write_dagster_yaml(tmp_path / "dagster_home", {})
    yield instance
    instance.dispose()


@pytest.fixture
def postgres_instance(tmp_path, postgres_server) -> Iterator[dg.DagsterInstance]:
    """Dagster storage in a fresh PostgreSQL database of its own, dropped afterwards."""
    database = f"hk_dagster_{uuid.uuid4().hex[:10]}"
    admin_url = postgres_server.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    storage = {
        "postgres_db": {
            "hostname": "127.0.0.1",
            "port": 5432,
            "username": "postgres",
            "db_name": database,
            # psycopg2, not psycopg 3: SQLAlchemy 2.1 maps bare postgresql:// to psycopg 3,
            # on which dagster-postgres' NOTIFY fails.
            "scheme": "postgresql+psycopg2",
        }
    }
    instance = write_dagster_yaml(tmp_path / "dagster_pg_home", {"storage": {"postgres": storage}})
    try:
        yield instance
    finally:
        instance.dispose()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{database}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def instance(request) -> dg.DagsterInstance:
    """Runs a test once on SQLite storage and once on PostgreSQL storage."""
    return request.getfixturevalue(f"{request.param}_instance")


def succeeded_runs(instance: dg.DagsterInstance, count: int) -> list[str]:
    return [dg.materialize([chatty], instance=instance).run_id for _ in range(count)]


def failed_runs(instance: dg.DagsterInstance, count: int) -> list[str]:
    return [
        dg.materialize([broken], instance=instance, raise_on_error=False).run_id
        for _ in range(count)
    ]


def canceled_run(instance: dg.DagsterInstance) -> str:
    run = instance.add_run(dg.DagsterRun(job_name="never_launched"))
    instance.report_run_canceled(run)
    return run.run_id


def run_ids(instance: dg.DagsterInstance) -> set[str]:
    return {record.dagster_run.run_id for record in instance.get_run_records()}


def compute_log_dir(instance: dg.DagsterInstance, run_id: str) -> Path:
    # Where the default LocalComputeLogManager keeps a run's captured stdout/stderr.
    return Path(instance.root_directory) / "storage" / run_id


def purge(instance: dg.DagsterInstance, *, days_later: float, **options) -> RunPurgeResult:
    arguments = {
        "now": datetime.now(UTC) + timedelta(days=days_later),
        "retention": timedelta(days=30),
        "failed_retention": timedelta(days=90),
    } | options
    return purge_dagster_runs(instance, **arguments)


def test_old_successful_runs_go_with_their_event_logs_and_compute_logs(instance):
    succeeded = succeeded_runs(instance, 3)
    failed = failed_runs(instance, 1)
    assert all(compute_log_dir(instance, run_id).is_dir() for run_id in succeeded)
    assert all(instance.all_logs(run_id) for run_id in succeeded)

    result = purge(instance, days_later=40)

    assert (result.runs_deleted, result.failed_runs_deleted, result.would_delete) == (3, 0, 3)
    assert result.compute_log_dirs_deleted == 3
    assert run_ids(instance) == set(failed)
    for run_id in succeeded:
        assert instance.get_run_by_id(run_id) is None
        assert instance.all_logs(run_id) == []
        assert not compute_log_dir(instance, run_id).exists()
    assert instance.all_logs(failed[0]) and compute_log_dir(instance, failed[0]).is_dir()
    remaining = instance.get_run_record_by_id(failed[0])
    assert result.oldest_remaining_run_created_at == remaining.create_timestamp
    assert not result.stopped_early


def test_recent_runs_are_kept(instance):
    succeeded_runs(instance, 2)
    before = run_ids(instance)

    result = purge(instance, days_later=29)

    assert result.runs_deleted == 0 and run_ids(instance) == before


def test_failed_and_canceled_runs_are_kept_until_failed_retention_then_go(instance):
    succeeded_runs(instance, 1)
    failed_and_canceled = [*failed_runs(instance, 2), canceled_run(instance)]

    first = purge(instance, days_later=40)
    assert (first.runs_deleted, first.failed_runs_deleted) == (1, 0)
    assert run_ids(instance) == set(failed_and_canceled)

    second = purge(instance, days_later=100)
    assert (second.runs_deleted, second.failed_runs_deleted) == (3, 3)
    assert run_ids(instance) == set()
    for run_id in failed_and_canceled:
        assert instance.all_logs(run_id) == []
        assert not compute_log_dir(instance, run_id).exists()
    assert second.oldest_remaining_run_created_at is None


def test_unfinished_runs_are_never_deleted_whatever_their_age(instance):
    unfinished = {
        instance.add_run(dg.DagsterRun(job_name="in_flight", status=status)).run_id
        for status in UNFINISHED_STATUSES
    }
    succeeded = succeeded_runs(instance, 1)

    result = purge(instance, days_later=10_000)

    assert result.runs_deleted == 1
    assert run_ids(instance) == unfinished
    assert instance.get_run_by_id(succeeded[0]) is None


def test_kept_run_ids_are_never_deleted(instance):
    kept, deleted = succeeded_runs(instance, 2)
    failed = failed_runs(instance, 1)

    result = purge(instance, days_later=400, keep_run_ids={kept, *failed}, batch_size=1)

    assert run_ids(instance) == {kept, *failed}
    assert (result.runs_deleted, result.would_delete) == (1, 1)
    assert compute_log_dir(instance, kept).is_dir()
    assert instance.get_run_by_id(deleted) is None


def test_a_dry_run_deletes_nothing_and_counts_what_would_go(instance):
    succeeded = succeeded_runs(instance, 3)
    failed = failed_runs(instance, 1)
    before = run_ids(instance)

    result = purge(instance, days_later=100, dry_run=True, batch_size=2)

    assert run_ids(instance) == before
    assert (result.would_delete, result.runs_deleted, result.failed_runs_deleted) == (4, 0, 0)
    assert result.compute_log_dirs_deleted == 0
    for run_id in [*succeeded, *failed]:
        assert instance.all_logs(run_id) and compute_log_dir(instance, run_id).is_dir()


def test_a_stop_request_ends_the_purge_after_the_first_batch_leaving_whole_runs(instance):
    succeeded = succeeded_runs(instance, 5)
    # Turns True once the first batch of two is gone, as a terminate request would mid-purge.
    first_batch_gone = lambda: len(run_ids(instance)) <= 3  # noqa: E731

    result = purge(instance, days_later=40, batch_size=2, should_stop=first_batch_gone)

    assert result.stopped_early
    assert (result.runs_deleted, result.would_delete) == (2, 2)
    assert run_ids(instance) == set(succeeded[2:])
    for run_id in succeeded[2:]:
        assert instance.all_logs(run_id) and compute_log_dir(instance, run_id).is_dir()


def test_a_stop_requested_before_the_start_deletes_nothing(sqlite_instance):
    succeeded_runs(sqlite_instance, 2)

    result = purge(sqlite_instance, days_later=40, should_stop=lambda: True)

    assert result.stopped_early and result.runs_deleted == 0
    assert len(run_ids(sqlite_instance)) == 2


def test_now_in_another_time_zone_means_the_same_instant(sqlite_instance):
    succeeded_runs(sqlite_instance, 1)
    # Ten hours behind UTC: read as UTC wall-clock time, the cutoff would fall before the run.
    honolulu = timezone(timedelta(hours=-10))
    now = (datetime.now(UTC) + timedelta(hours=1)).astimezone(honolulu)

    result = purge_dagster_runs(
        sqlite_instance,
        now=now,
        retention=timedelta(minutes=30),
        failed_retention=timedelta(minutes=30),
    )

    assert result.runs_deleted == 1 and run_ids(sqlite_instance) == set()


def test_a_run_id_that_is_not_a_plain_name_never_steers_log_deletion(sqlite_instance):
    home = Path(sqlite_instance.root_directory)
    sqlite_instance.add_run(
        dg.DagsterRun(job_name="odd", run_id="..", status=dg.DagsterRunStatus.SUCCESS)
    )

    result = purge(sqlite_instance, days_later=40)

    assert result.runs_deleted == 1 and result.compute_log_dirs_deleted == 0
    assert (home / "dagster.yaml").is_file() and (home / "history").is_dir()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"now": datetime(2030, 1, 1)}, "now must be timezone-aware"),
        ({"retention": timedelta(0)}, "retention must be greater than 0"),
        ({"failed_retention": timedelta(days=-1)}, "failed_retention must be greater than 0"),
        ({"failed_retention": timedelta(days=7)}, "failed_retention .* at least as long"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
    ],
)
def test_bad_arguments_are_refused_by_name_before_anything_is_deleted(
    sqlite_instance, options, message
):
    succeeded_runs(sqlite_instance, 1)

    with pytest.raises(ValueError, match=message):
        purge(sqlite_instance, days_later=400, **options)

    assert len(run_ids(sqlite_instance)) == 1


def hourly_runs(instance: dg.DagsterInstance, *partitions: str | tuple[str, str]) -> list[str]:
    """One run per argument: a partition key, or a (first, last) range in one run."""
    run_ids = []
    for partition in partitions:
        if isinstance(partition, tuple):
            tags = {
                "dagster/asset_partition_range_start": partition[0],
                "dagster/asset_partition_range_end": partition[1],
            }
            result = dg.materialize([hourly_rollup], instance=instance, tags=tags)
        else:
            result = dg.materialize([hourly_rollup], instance=instance, partition_key=partition)
        assert result.success
        run_ids.append(result.run_id)
    return run_ids


def latest_run_of(instance: dg.DagsterInstance, partition: str) -> str:
    """The run named in the metadata of the partition's latest materialization."""
    [record] = instance.fetch_materializations(
        dg.AssetRecordsFilter(hourly_rollup.key, asset_partitions=[partition]), limit=1
    ).records
    return record.asset_materialization.metadata["run"].value


def test_purging_runs_keeps_every_materialized_partition_materialized(instance):
    first, second, third = hourly_runs(
        instance,
        ("2026-11-01-00:00", "2026-11-01-02:00"),  # a 3-hour range in one run
        "2026-11-01-01:00",  # one hour re-materialized later
        "2026-11-01-03:00",
    )
    partitions = HOURS.get_partition_keys_in_range(
        dg.PartitionKeyRange("2026-11-01-00:00", "2026-11-01-04:00")
    )
    materialized = instance.get_materialized_partitions(hourly_rollup.key)
    before = instance.get_status_by_partition(hourly_rollup.key, partitions, HOURS)

    result = purge(instance, days_later=40)

    assert run_ids(instance) == set()
    assert result.runs_deleted == 3
    # The latest materialization of each partition: two of the first run's three, one each of
    # the others (hour 1's first materialization was superseded by the second run).
    assert result.materializations_reported == 4
    assert instance.get_materialized_partitions(hourly_rollup.key) == materialized
    assert materialized == {
        "2026-11-01-00:00",
        "2026-11-01-01:00",
        "2026-11-01-02:00",
        "2026-11-01-03:00",
    }
    assert instance.get_status_by_partition(hourly_rollup.key, partitions, HOURS) == before
    # Each partition keeps the figures of its latest materialization, naming the purged run.
    assert latest_run_of(instance, "2026-11-01-01:00") == second
    assert latest_run_of(instance, "2026-11-01-02:00") == first
    [record] = instance.fetch_materializations(
        dg.AssetRecordsFilter(hourly_rollup.key, asset_partitions=["2026-11-01-03:00"]), limit=1
    ).records
    assert record.asset_materialization.metadata[PURGED_RUN_METADATA].value == third
    assert record.run_id == ""  # runless: no run left to purge, none to keep


def test_an_unpartitioned_asset_keeps_its_latest_materialization(instance):
    old, newest = succeeded_runs(instance, 2)

    result = purge(instance, days_later=40)

    assert result.materializations_reported == 1
    event = instance.get_latest_materialization_event(chatty.key)
    assert event is not None and event.run_id == ""
    assert event.asset_materialization.metadata[PURGED_RUN_METADATA].value == newest


def test_a_later_purge_reports_nothing_twice(instance):
    hourly_runs(instance, "2026-11-01-00:00")
    assert purge(instance, days_later=40).materializations_reported == 1
    hourly_runs(instance, "2026-11-01-00:00")  # re-materialized, then purged in turn

    again = purge(instance, days_later=80)

    assert again.materializations_reported == 1
    assert instance.get_materialized_partitions(hourly_rollup.key) == {"2026-11-01-00:00"}
    # One runless event per purge: the first run's, then the second's; nothing reported twice.
    events = instance.fetch_materializations(hourly_rollup.key, limit=10).records
    assert [record.run_id for record in events] == ["", ""]


def test_a_dry_run_reports_nothing(instance):
    hourly_runs(instance, "2026-11-01-00:00")

    result = purge(instance, days_later=40, dry_run=True)

    assert result.materializations_reported == 0 and result.would_delete == 1
    assert len(instance.fetch_materializations(hourly_rollup.key, limit=10).records) == 1
