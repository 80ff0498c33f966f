"""`hk rollups backfill` runs through Dagster as the UI's backfill does; `hk rollups status` says
what is published up to when.

Real runs in a real Dagster instance (a DAGSTER_HOME of the test's own), real source databases
(SQLite and PostgreSQL), real Parquet files.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import duckdb
import pytest
import yaml
from click.testing import CliRunner

from analytics.datasets import API_USAGE_DAILY, REQUESTS_MINUTE
from analytics.defs.assets import asset_key
from analytics.defs.backfill import BACKFILL_TAG, RANGE_END_TAG, RANGE_START_TAG
from analytics.defs.partitions import HOUR_PARTITION_FORMAT
from housekeeping.cli import main
from housekeeping.database import AppDatabase
from housekeeping.demo.seed import seed_database
from tests.support.analytics_data import raw_requests


@pytest.fixture
def setup(app_url, tmp_path, monkeypatch):
    """A seeded application database, a config and an empty Dagster instance."""
    now = datetime.now(UTC)
    seed_database(app_url, tokens=10, requests=20_000, days=3, now=now)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump({"telemetry": {"enabled": False}}))
    config = tmp_path / "hk.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "timezone": "Europe/Berlin",
                "state_database_url": f"sqlite:///{tmp_path / 'state.db'}",
                "analytics": {
                    "root": str(tmp_path / "analytics"),
                    "database": str(tmp_path / "analytics" / "rollups.duckdb"),
                    "partitions_start": (now - timedelta(days=20)).date().isoformat(),
                },
            }
        )
    )
    monkeypatch.setenv("DATABASE_URL", app_url)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return AppDatabase(app_url), now, config, home


def hk(*args: str):
    return CliRunner().invoke(main, list(args))


def runs_of(home: Path, backfill_id: str) -> list[dg.DagsterRun]:
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        records = instance.get_run_records(
            filters=dg.RunsFilter(tags={BACKFILL_TAG: backfill_id}), ascending=True
        )
        return [record.dagster_run for record in records]
    finally:
        instance.dispose()


def materialized(home: Path, dataset) -> set[str]:
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        return instance.get_materialized_partitions(asset_key(dataset))
    finally:
        instance.dispose()


def backfill_id(output: str) -> str:
    return output.split("hk/backfill=")[1].split()[0]


def test_a_backfill_of_hourly_rollups_runs_24_hours_per_run_through_dagster(setup):
    db, now, config, home = setup
    result = hk("rollups", "backfill", "requests_minute", "--since", "30h", "--config", str(config))
    assert result.exit_code == 0, result.output

    # Every hour that overlaps the last 30 h and has ended (the current hour is no partition).
    current_hour = now.replace(minute=0, second=0, microsecond=0)
    first_hour = (now - timedelta(hours=30)).replace(minute=0, second=0, microsecond=0)
    hours = [first_hour + timedelta(hours=n) for n in range(30)]
    assert hours[-1] + timedelta(hours=1) == current_hour
    keys = [f"{hour:{HOUR_PARTITION_FORMAT}}" for hour in hours]

    runs = runs_of(home, backfill_id(result.output))
    assert [run.status for run in runs] == [dg.DagsterRunStatus.SUCCESS] * 2
    assert [(run.tags[RANGE_START_TAG], run.tags[RANGE_END_TAG]) for run in runs] == [
        (keys[0], keys[23]),
        (keys[24], keys[29]),
    ]
    assert all(run.job_name == "analytics_requests_job" for run in runs)
    # The progress bar counts partitions, run by run, on stderr.
    assert "requests_minute: 100%" in result.stderr and "30/30" in result.stderr
    assert materialized(home, REQUESTS_MINUTE) == set(keys)

    raw = raw_requests(db)
    start, end = first_hour.replace(tzinfo=None), current_hour.replace(tzinfo=None)
    expected = int(((raw.ts >= start) & (raw.ts < end)).sum())
    with duckdb.connect(str(config.parent / "analytics" / "rollups.duckdb"), read_only=True) as c:
        [(published,)] = c.execute("SELECT sum(requests) FROM requests_minute").fetchall()
    assert published == expected > 0


def test_a_backfill_of_daily_rollups_runs_one_day_per_run_in_the_analytics_time_zone(setup):
    _, now, config, home = setup
    # Days of the analytics time zone (the config's Europe/Berlin), whatever the machine's.
    first = now.astimezone(ZoneInfo("Europe/Berlin")).date() - timedelta(days=2)
    result = hk(
        "rollups",
        "backfill",
        "api_usage_daily",
        "--from",
        first.isoformat(),
        "--to",
        (first + timedelta(days=2)).isoformat(),
        "--config",
        str(config),
    )
    assert result.exit_code == 0, result.output
    runs = runs_of(home, backfill_id(result.output))
    # No backfill policy on the daily assets: Dagster's rule, one run per partition.
    assert [run.tags.get("dagster/partition") for run in runs] == [
        first.isoformat(),
        (first + timedelta(days=1)).isoformat(),
    ]
    assert materialized(home, API_USAGE_DAILY) == {
        first.isoformat(),
        (first + timedelta(days=1)).isoformat(),
    }


def test_rollups_status_says_what_is_published_up_to_when(setup):
    _, now, config, _ = setup
    before = hk("rollups", "status", "--config", str(config))
    assert before.exit_code == 0, before.output
    assert "requests_minute" in before.output and "not published" in before.output

    assert (
        hk(
            "rollups", "backfill", "requests_minute", "--since", "3h", "--config", str(config)
        ).exit_code
        == 0
    )
    # A gap: the hour before is re-published later, the one in the middle is deleted.
    folder = config.parent / "analytics" / "requests_minute"
    hour_files = sorted(path for path in folder.glob("*.parquet") if path.name != "_schema.parquet")
    hour_files[1].unlink()

    status = hk("rollups", "status", "--config", str(config))
    assert status.exit_code == 0, status.output
    [line] = [line for line in status.output.splitlines() if line.startswith("requests_minute ")]
    current_hour = now.replace(minute=0, second=0, microsecond=0)
    first = current_hour - timedelta(hours=3)
    assert line.split()[:6] == [
        "requests_minute",
        "hourly",
        "2",
        f"{first:%Y-%m-%dT%H}",
        f"{current_hour - timedelta(hours=1):%Y-%m-%dT%H}",
        "1",
    ]
    newest = datetime.strptime(" ".join(line.split()[6:8]), "%Y-%m-%d %H:%M:%S")
    assert current_hour.replace(tzinfo=None) - timedelta(hours=1) <= newest
    assert newest < current_hour.replace(tzinfo=None)


@pytest.mark.parametrize(
    "args, message",
    [
        (["no_such_dataset", "--since", "1d"], "no dataset 'no_such_dataset'"),
        (["housekeeping_summary", "--since", "1d"], "housekeeping_summary is not partitioned"),
        (["requests_minute"], "give --since, or --from"),
        (["requests_minute", "--since", "1d", "--from", "2026-11-01"], "give --since, or --from"),
        (["requests_minute", "--since", "1d", "--to", "2026-11-01"], "--to goes with --from"),
        (["requests_minute", "--since", "0s"], "must be positive"),
        (["requests_minute", "--from", "yesterday"], "not a date or a date and time"),
        (["requests_minute", "--from", "2026-11-02", "--to", "2026-11-01"], "is not before"),
        (["requests_minute", "--from", "1999-01-01", "--to", "1999-01-02"], "no hourly partition"),
    ],
)
def test_a_bad_backfill_is_one_line_and_runs_nothing(setup, args, message):
    _, _, config, home = setup
    result = hk("rollups", "backfill", *args, "--config", str(config))
    assert result.exit_code in (1, 2), result.output
    assert message in result.output
    assert "Traceback" not in result.output
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        assert instance.get_run_records() == []
    finally:
        instance.dispose()


def test_a_failed_run_stops_the_backfill_naming_it(setup, monkeypatch, tmp_path):
    _, _, config, home = setup
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    (tmp_path / "empty.db").touch()
    result = hk("rollups", "backfill", "requests_minute", "--since", "30h", "--config", str(config))
    assert result.exit_code == 1
    [line] = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert "requests_minute: run " in line and "failed" in line and "0 of 2 runs done" in line
    runs = dg.DagsterInstance.from_config(str(home)).get_run_records()
    assert [record.dagster_run.status for record in runs] == [dg.DagsterRunStatus.FAILURE]
