"""The Dagster shell: real runs with dg.materialize, the freshness sensor, the merged location."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
import yaml

from analytics.datasets import REQUESTS_MINUTE
from analytics.defs.assets import REQUESTS_MINUTE_ASSET, asset_key, build_rollup_asset
from analytics.defs.definitions import build_analytics_defs
from analytics.defs.partitions import hour_partition_key
from analytics.defs.resources import RESOURCE_KEY, AnalyticsResource
from analytics.freshness import FreshnessCursor
from analytics.publish import hour_key
from analytics.settings import analytics_settings
from housekeeping.config import load_config
from housekeeping.database import AppDatabase
from housekeeping.definitions import build_definitions
from housekeeping.demo.seed import seed_database
from tests.support.analytics_data import raw_requests

REQUESTS_MINUTE_KEY = asset_key(REQUESTS_MINUTE)


@pytest.fixture
def config_file(tmp_path) -> str:
    path = tmp_path / "hk.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "state_database_url": f"sqlite:///{tmp_path / 'state.db'}",
                "analytics": {
                    "root": str(tmp_path / "analytics"),
                    "database": str(tmp_path / "analytics" / "rollups.duckdb"),
                    "partitions_start": "2026-11-01",
                },
            }
        )
    )
    return str(path)


@pytest.fixture
def app(app_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", app_url)
    now = datetime.now(UTC)
    seed_database(app_url, tokens=10, requests=20_000, days=1, now=now)
    return AppDatabase(app_url), now


def materialize(config_file, instance, **kwargs) -> dg.ExecuteInProcessResult:
    config = load_config(config_file)
    settings = analytics_settings(config)
    return dg.materialize(
        [
            build_rollup_asset(
                REQUESTS_MINUTE_ASSET, settings, settings.day_timezone(config), config.owner
            )
        ],
        instance=instance,
        resources={RESOURCE_KEY: AnalyticsResource(config_file=config_file)},
        **kwargs,
    )


def published_requests(config_file, sql: str):
    import duckdb

    settings = analytics_settings(load_config(config_file))
    with duckdb.connect(str(settings.database_path), read_only=True) as connection:
        return connection.execute(sql).fetchall()


def test_materializing_an_hour_publishes_its_minutes_and_reports_metadata(
    app, config_file, instance
):
    db, now = app
    hour = (now - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    result = materialize(config_file, instance, partition_key=hour_partition_key(hour))
    assert result.success
    [materialization] = result.asset_materializations_for_node("analytics__requests_minute")
    raw = raw_requests(db)
    in_hour = raw[
        (raw.ts >= hour.replace(tzinfo=None))
        & (raw.ts < (hour + timedelta(hours=1)).replace(tzinfo=None))
    ]
    assert materialization.metadata["rows_read"].value == len(in_hour) > 0
    assert materialization.metadata["partitions_written"].value == 1
    assert "preview" in materialization.metadata
    [(published,)] = published_requests(config_file, "SELECT sum(requests) FROM requests_minute")
    assert published == len(in_hour)


def test_a_partition_range_runs_once_and_replaces_exactly_those_hours(app, config_file, instance):
    db, now = app
    first = (now - timedelta(hours=6)).replace(minute=0, second=0, microsecond=0)
    last = first + timedelta(hours=3)
    tags = {
        "dagster/asset_partition_range_start": hour_partition_key(first),
        "dagster/asset_partition_range_end": hour_partition_key(last),
    }
    assert materialize(config_file, instance, tags=tags).success
    again = materialize(config_file, instance, tags=tags)
    assert again.success
    raw = raw_requests(db)
    expected = (
        (raw.ts >= first.replace(tzinfo=None))
        & (raw.ts < (last + timedelta(hours=1)).replace(tzinfo=None))
    ).sum()
    [(published, hours)] = published_requests(
        config_file,
        "SELECT sum(requests), count(DISTINCT date_trunc('hour', minute)) FROM requests_minute",
    )
    assert (published, hours) == (expected, 4)


def test_the_freshness_sensor_refreshes_the_current_hour_and_keeps_its_watermark(
    app, config_file, instance
):
    db, now = app
    defs = build_analytics_defs(load_config(config_file), config_file)
    sensor = defs.get_sensor_def("analytics_freshness_sensor")
    context = dg.build_sensor_context(
        instance=instance,
        cursor=None,
        resources={RESOURCE_KEY: AnalyticsResource(config_file=config_file)},
        definitions=defs,
    )
    result = sensor(context)
    cursor = FreshnessCursor.from_json(result.cursor)
    assert cursor.watermark is not None and abs(cursor.watermark - datetime.now(UTC)) < timedelta(
        minutes=1
    )
    raw = raw_requests(db)
    current_hour = now.replace(minute=0, second=0, microsecond=0).replace(tzinfo=None)
    [(published,)] = published_requests(
        config_file,
        f"SELECT coalesce(sum(requests), 0) FROM requests_minute WHERE minute >= TIMESTAMP '{current_hour}'",
    )
    assert published == (raw.ts >= current_hour).sum()
    assert result.skip_reason or result.run_requests


def test_the_analytics_definitions_merge_into_the_code_location(config_file, monkeypatch):
    config = load_config(config_file)
    merged = build_definitions(config, config_file)
    repository = merged.get_repository_def()
    assert repository.has_job("analytics_requests_job")
    assert repository.has_sensor_def("analytics_freshness_sensor")
    assert REQUESTS_MINUTE_KEY in {key for key in merged.resolve_all_asset_keys()}


def test_an_hour_is_named_by_its_file_key_on_disk_and_by_dagsters_key_in_the_ui(config_file):
    hour = datetime(2026, 11, 5, 13, tzinfo=UTC)
    assert hour_key(hour) == "2026-11-05T13"
    assert hour_partition_key(hour) == "2026-11-05-13:00"
    defs = build_analytics_defs(load_config(config_file), config_file)
    partitions = defs.resolve_job_def("analytics_requests_job").partitions_def
    assert hour_partition_key(hour) in partitions.get_partition_keys(
        current_time=hour + timedelta(hours=2)
    )
