"""An analyst's DuckDB session on the views file, however it was opened, stops nothing.

``duckdb.connect(path)`` without ``read_only`` (the DuckDB command line's default) locks the file
against every other process. Each test holds the published file in a real second process while
the pipeline runs: Dagster materializations that republish the views, a freshness sensor tick, a
rule evaluation through the sensor's own code, and ``hk query``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml
from click.testing import CliRunner

from analytics.alerts.rules import load_rules
from analytics.alerts.service import AlertRuntime, evaluate_and_deliver
from analytics.alerts.slack import ConsoleSender
from analytics.defs.assets import REQUESTS_MINUTE_ASSET, build_rollup_asset
from analytics.defs.definitions import build_analytics_defs
from analytics.defs.partitions import hour_partition_key
from analytics.defs.resources import RESOURCE_KEY, AnalyticsResource
from analytics.publish import META_TABLE, PublishError, RollupStore
from analytics.sandbox import open_rollups
from analytics.settings import analytics_settings
from housekeeping.cli import main
from housekeeping.config import load_config
from housekeeping.database import AppDatabase
from housekeeping.demo.seed import seed_database
from tests.support.analytics_data import make_settings, make_store, publish, raw_requests
from tests.support.duckdb_session import DuckDBSession

RULES = """
rules:
  - name: requests_seen
    sql: "SELECT sum(requests) FROM requests_minute WHERE minute >= $window_start AND minute < $window_end"
    comparator: ">"
    window: 3h
    thresholds:
      warning: {value: 0}
  - name: error_rate
    metric: http_error_rate
    comparator: ">="
    window: 3h
    thresholds:
      warning: {value: 0}
"""
# Both rules fire on any value: a firing alert's state keeps the value the metric read.


def write_config(tmp_path: Path, timezone: str) -> str:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    path = tmp_path / "hk.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "timezone": timezone,
                "state_database_url": f"sqlite:///{tmp_path / 'state.db'}",
                "analytics": {
                    "root": str(tmp_path / "analytics"),
                    "database": str(tmp_path / "analytics" / "rollups.duckdb"),
                    "partitions_start": "2026-11-01",
                },
                "alerts": {
                    "database_url": f"sqlite:///{tmp_path / 'alerts.db'}",
                    "rules_file": str(rules),
                },
            }
        )
    )
    return str(path)


def materialize_hour(config_file: str, instance, hour: datetime) -> dg.ExecuteInProcessResult:
    config = load_config(config_file)
    settings = analytics_settings(config)
    asset = build_rollup_asset(
        REQUESTS_MINUTE_ASSET, settings, settings.day_timezone(config), config.owner
    )
    return dg.materialize(
        [asset],
        instance=instance,
        resources={RESOURCE_KEY: AnalyticsResource(config_file=config_file)},
        partition_key=hour_partition_key(hour),
        raise_on_error=False,
    )


def hk_query(config_file: str, sql: str) -> list[str]:
    result = CliRunner().invoke(main, ["query", sql, "--csv", "--config", config_file])
    assert result.exit_code == 0, result.output
    return result.output.splitlines()[1:]


def requests_in(db_frame, start: datetime, end: datetime) -> int:
    naive = db_frame.ts
    return int(((naive >= start.replace(tzinfo=None)) & (naive < end.replace(tzinfo=None))).sum())


@pytest.mark.parametrize("read_only", [False, True], ids=["read_write", "read_only"])
def test_a_session_on_the_views_file_stops_no_run_tick_evaluation_or_query(
    tmp_path, monkeypatch, read_only
):
    url = f"sqlite:///{tmp_path / 'app.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    now = datetime.now(UTC)
    seed_database(url, tokens=10, requests=20_000, days=1, now=now)
    raw = raw_requests(AppDatabase(url))
    config_file = write_config(tmp_path, "UTC")
    settings = analytics_settings(load_config(config_file))
    first = (now - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    second = first + timedelta(hours=1)
    (tmp_path / "dagster_home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as instance:
        assert materialize_hour(config_file, instance, first).success
        with DuckDBSession(settings.database_path, read_only=read_only) as analyst:
            if not read_only:
                # What an analyst may well do: a table of their own, written to the file's WAL.
                analyst.query("CREATE TABLE my_notes AS SELECT 42 AS answer")
            [[old_version]] = analyst.query(f"SELECT version FROM {META_TABLE}")
            # A config change makes the next run republish the views file while it is held.
            write_config(tmp_path, "Europe/Berlin")
            run = materialize_hour(config_file, instance, second)
            assert run.success, [
                event.event_specific_data.error.message
                for event in run.all_events
                if event.is_step_failure
            ]

            defs = build_analytics_defs(load_config(config_file), config_file)
            tick = defs.get_sensor_def("analytics_freshness_sensor")(
                dg.build_sensor_context(
                    instance=instance,
                    resources={RESOURCE_KEY: AnalyticsResource(config_file=config_file)},
                    definitions=defs,
                )
            )
            assert tick.cursor is not None

            runtime = AlertRuntime.load(config_file)
            try:
                report, _ = evaluate_and_deliver(runtime, ConsoleSender(lambda line: None), now)
                with runtime.store.transaction() as conn:
                    states = runtime.store.load_states(conn)
            finally:
                runtime.close()
            assert report.errors == {}
            assert report.rules == len(load_rules(runtime.settings.rules_file).rules)
            # Both rules read the published minutes: the SQL rule and the built-in metric.
            values = {key.rule: record.last_value for key, record in states.items()}
            assert values["requests_seen"] >= requests_in(raw, second, second + timedelta(hours=1))
            assert values["error_rate"] >= 0

            two_hours = requests_in(raw, first, second + timedelta(hours=1))
            assert hk_query(
                config_file,
                f"SELECT sum(requests) FROM requests_minute WHERE minute < TIMESTAMP "
                f"'{(second + timedelta(hours=1)).replace(tzinfo=None)}'",
            ) == [str(two_hours)]

            # The analyst's open session keeps working (the old views read the new files) ...
            [[held_total]] = analyst.query(
                "SELECT sum(requests) FROM requests_minute WHERE minute < "
                f"TIMESTAMP '{(second + timedelta(hours=1)).replace(tzinfo=None)}'"
            )
            assert held_total == two_hours
            if not read_only:
                assert analyst.query("SELECT answer FROM my_notes") == [[42]]
            # ... and sees the republished views once it reconnects.
            analyst.reconnect(read_only=True)
            [[new_version]] = analyst.query(f"SELECT version FROM {META_TABLE}")
            assert new_version != old_version
            store = RollupStore(settings.root_path, settings.database_path)
            assert new_version == store.published_manifest().version


def test_publishing_unchanged_views_never_opens_a_held_file(tmp_path):
    settings = make_settings(tmp_path)
    store = make_store(settings)
    publish(store, settings)
    before = settings.database_path.stat()
    with DuckDBSession(settings.database_path) as analyst:
        analyst.query("CREATE TABLE scratch AS SELECT 1 AS x")
        publish(store, settings)  # nothing changed: nothing opened, nothing replaced
        assert settings.database_path.stat().st_ino == before.st_ino
        assert analyst.query("SELECT x FROM scratch") == [[1]]


def test_a_reader_falls_back_to_the_manifest_while_the_file_is_held(tmp_path):
    settings = make_settings(tmp_path)
    store = make_store(settings)
    publish(store, settings)
    with DuckDBSession(settings.database_path):
        with pytest.raises(duckdb.IOException):
            duckdb.connect(str(settings.database_path), read_only=True)
        with open_rollups(store) as connection:
            # The same views, built in the connection's own memory from the manifest.
            assert connection.execute("SELECT count(*) FROM requests_daily").fetchall() == [(0,)]
            [(catalog,)] = connection.execute("SELECT current_database()").fetchall()
            assert catalog == "memory"
    with open_rollups(store) as connection:
        [(catalog,)] = connection.execute("SELECT current_database()").fetchall()
        assert catalog == "rollups"  # the file itself, attached read-only, once it is free


def test_a_held_views_file_from_before_manifests_is_checked_on_a_copy_and_replaced(tmp_path):
    settings = make_settings(tmp_path)
    store = make_store(settings)
    publish(store, settings)
    store.manifest_path.unlink()  # as published by a version without manifests
    with DuckDBSession(settings.database_path) as analyst:
        assert store.publish_views(["CREATE VIEW answer AS SELECT 42 AS value"])
        assert analyst.query("SELECT count(*) FROM requests_daily") == [[0]]
    assert store.published_manifest() is not None
    with duckdb.connect(str(settings.database_path), read_only=True) as connection:
        assert connection.execute("SELECT value FROM answer").fetchall() == [(42,)]


def test_a_held_foreign_database_at_the_published_path_is_refused_and_left_alone(tmp_path):
    settings = make_settings(tmp_path)
    settings.database_path.parent.mkdir(parents=True)
    with duckdb.connect(str(settings.database_path)) as connection:
        connection.execute("CREATE TABLE precious AS SELECT 42 AS answer")
    with DuckDBSession(settings.database_path) as owner:
        with pytest.raises(PublishError, match="was not published by the analytics pipeline"):
            publish(make_store(settings), settings)
        assert owner.query("SELECT answer FROM precious") == [[42]]
    assert not make_store(settings).manifest_path.exists()


def test_a_stale_write_ahead_log_of_a_replaced_file_does_not_break_readers(tmp_path):
    settings = make_settings(tmp_path)
    store = make_store(settings)
    publish(store, settings)
    with DuckDBSession(settings.database_path) as analyst:
        publish(store, settings, timezone="Asia/Tokyo")  # replaces the held file
        # The session writes to the replaced file; DuckDB puts its log beside the new one.
        analyst.query("CREATE TABLE late AS SELECT range AS x FROM range(10)")
        wal = Path(f"{settings.database_path}.wal")
        if wal.exists():
            with pytest.raises(duckdb.Error):
                duckdb.connect(str(settings.database_path), read_only=True)
        with open_rollups(store) as connection:
            assert connection.execute("SELECT count(*) FROM requests_minute").fetchall() == [(0,)]
        publish(store, settings, timezone="UTC")  # the next publish clears the stale log
        assert not wal.exists()
        with duckdb.connect(str(settings.database_path), read_only=True) as connection:
            assert connection.execute("SELECT count(*) FROM requests_minute").fetchall() == [(0,)]


def test_a_views_file_published_for_another_root_is_refused_naming_both_roots(tmp_path):
    settings = make_settings(tmp_path)
    publish(make_store(settings), settings)
    moved = RollupStore(tmp_path / "elsewhere", settings.database_path)
    with pytest.raises(PublishError) as refused:
        open_rollups(moved)
    message = str(refused.value)
    assert str(settings.root_path.resolve()) in message
    assert str((tmp_path / "elsewhere").resolve()) in message
    assert "re-publish the views" in message
    with open_rollups(make_store(settings)) as connection:  # its own root still opens
        assert connection.execute("SELECT count(*) FROM requests_daily").fetchall() == [(0,)]
