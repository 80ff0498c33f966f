"""Shared helpers of the alerting tests (no tests here): published minute rollups, a store, a pack."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import yaml

from analytics.alerts.rules import RulePack, parse_rules
from analytics.alerts.settings import AlertsSettings, parse_alerts_settings
from analytics.alerts.store import AlertStore
from analytics.datasets import REQUESTS_MINUTE
from analytics.publish import RollupStore, hour_key
from analytics.settings import AnalyticsSettings, parse_analytics_settings
from analytics.sketch import buckets_of
from analytics.views import publish_rollup_views

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Minute:
    """One published minute of one route: counts and a latency all requests share."""

    minute: datetime
    route: str = "/api/orders"
    requests: int = 100
    errors: int = 0  # 5xx
    rate_limited: int = 0  # 429
    latency_ms: float = 50.0


def analytics_settings_at(tmp_path: Path) -> AnalyticsSettings:
    return parse_analytics_settings(
        {
            "root": str(tmp_path / "analytics"),
            "database": str(tmp_path / "analytics" / "rollups.duckdb"),
        }
    )


def publish_minutes(settings: AnalyticsSettings, minutes: Iterable[Minute]) -> None:
    """Publish ``minutes`` as the requests_minute dataset, one Parquet file per hour."""
    store = RollupStore(settings.root_path, settings.database_path)
    publish_rollup_views(store, "UTC")
    rows = list(minutes)
    by_hour: dict[datetime, list[Minute]] = {}
    for row in rows:
        hour = row.minute.replace(minute=0, second=0, microsecond=0)
        by_hour.setdefault(hour, []).append(row)
    with duckdb.connect() as connection:
        for hour, items in by_hour.items():
            table = pa.table(
                {
                    "minute": [item.minute.astimezone(UTC).replace(tzinfo=None) for item in items],
                    "route": [item.route for item in items],
                    "method": ["GET"] * len(items),
                    "requests": [item.requests for item in items],
                    "status_2xx": [
                        item.requests - item.errors - item.rate_limited for item in items
                    ],
                    "status_3xx": [0] * len(items),
                    "status_4xx": [item.rate_limited for item in items],
                    "status_5xx": [item.errors for item in items],
                    "status_429": [item.rate_limited for item in items],
                    "status_other": [0] * len(items),
                    "latency_min_ms": [item.latency_ms for item in items],
                    "latency_max_ms": [item.latency_ms for item in items],
                    "latency_sum_ms": [item.latency_ms * item.requests for item in items],
                    "latency_sketch": [
                        [
                            {
                                "bucket": int(buckets_of(np.array([item.latency_ms]))[0]),
                                "count": item.requests,
                            }
                        ]
                        for item in items
                    ],
                }
            )
            connection.register("minutes", table)
            store.replace_partition(
                connection,
                REQUESTS_MINUTE.name,
                hour_key(hour),
                f"SELECT {REQUESTS_MINUTE.select_list()} FROM minutes",
            )
            connection.unregister("minutes")


def steady_traffic(
    start: datetime, minutes: int, route: str = "/api/orders", **overrides
) -> list[Minute]:
    return [
        Minute(start + timedelta(minutes=offset), route=route, **overrides)
        for offset in range(minutes)
    ]


def alert_settings_at(tmp_path: Path, **overrides) -> AlertsSettings:
    data = {"database_url": f"sqlite:///{tmp_path / 'alerts.db'}"}
    data.update(overrides)
    return parse_alerts_settings(data)


def pack(text: str) -> RulePack:
    return parse_rules(yaml.safe_load(text), "rules.yaml")


def store_at(tmp_path: Path) -> AlertStore:
    return AlertStore(f"sqlite:///{tmp_path / 'alerts.db'}")
