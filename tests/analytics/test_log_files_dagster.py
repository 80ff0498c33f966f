"""A log-file source through the real Dagster shell: the requests asset's hour partition run
stages the lines and publishes the same minutes, with the same metadata, as from a table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import duckdb
import yaml

from analytics.defs.assets import REQUESTS_MINUTE_ASSET, build_rollup_asset
from analytics.defs.partitions import hour_partition_key
from analytics.defs.resources import RESOURCE_KEY, AnalyticsResource
from analytics.logs.seed import write_log_files
from analytics.settings import analytics_settings
from housekeeping.config import load_config


def test_an_hour_partition_run_reads_the_log_files(tmp_path, instance, sqlite_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    now = datetime.now(UTC)
    written = write_log_files(tmp_path / "logs", requests=4000, days=1, seed=3, now=now)
    config_file = tmp_path / "hk.yaml"
    config_file.write_text(
        yaml.safe_dump(
            {
                "state_database_url": f"sqlite:///{tmp_path / 'state.db'}",
                "analytics": {
                    "root": str(tmp_path / "analytics"),
                    "database": str(tmp_path / "analytics" / "rollups.duckdb"),
                    "partitions_start": "2026-11-01",
                    "sources": {
                        "request_logs": {
                            "kind": "json_lines",
                            "path": str(tmp_path / "logs" / "winston" / "access.log*"),
                            "format": "winston",
                        }
                    },
                },
            }
        )
    )
    config = load_config(str(config_file))
    settings = analytics_settings(config)
    hour = (now - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    result = dg.materialize(
        [build_rollup_asset(REQUESTS_MINUTE_ASSET, settings, "UTC", config.owner)],
        instance=instance,
        resources={RESOURCE_KEY: AnalyticsResource(config_file=str(config_file))},
        partition_key=hour_partition_key(hour),
    )
    assert result.success
    [materialization] = result.asset_materializations_for_node("analytics__requests_minute")
    staged = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{settings.root_path}/.logs/request_logs/staged/*') "
        f"WHERE outcome = 'request' AND ts >= '{hour.replace(tzinfo=None)}' "
        f"AND ts < '{(hour + timedelta(hours=1)).replace(tzinfo=None)}'"
    ).fetchall()[0][0]
    assert materialization.metadata["rows_read"].value == staged > 0
    assert written.requests == 4000
    with duckdb.connect(str(settings.database_path), read_only=True) as connection:
        [(published,)] = connection.execute("SELECT sum(requests) FROM requests_minute").fetchall()
    assert published == staged
