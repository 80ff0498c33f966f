"""Shared helpers of the alerting tests (no tests here): published minute rollups, a store, a pack."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from analytics.alerts.rule_tests import RequestMinute as Minute
from analytics.alerts.rule_tests import publish_request_minutes
from analytics.alerts.rules import RulePack, parse_rules
from analytics.alerts.settings import AlertsSettings, parse_alerts_settings
from analytics.alerts.store import AlertStore
from analytics.publish import RollupStore
from analytics.settings import AnalyticsSettings, parse_analytics_settings

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def analytics_settings_at(tmp_path: Path) -> AnalyticsSettings:
    return parse_analytics_settings(
        {
            "root": str(tmp_path / "analytics"),
            "database": str(tmp_path / "analytics" / "rollups.duckdb"),
        }
    )


def publish_minutes(settings: AnalyticsSettings, minutes: Iterable[Minute]) -> None:
    """Publish ``minutes`` as the requests_minute dataset, one Parquet file per hour."""
    publish_request_minutes(RollupStore(settings.root_path, settings.database_path), minutes)


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


def evaluate_once(settings: AnalyticsSettings, alerts_db: Path, pack: RulePack, now: datetime):
    """One evaluation of ``pack`` over the published rollups into the alert store at
    ``alerts_db``; the stored records by (rule, group)."""
    from analytics.alerts.evaluate import evaluate_rules
    from analytics.alerts.metrics import MetricSource
    from analytics.alerts.model import Severity

    store = AlertStore(f"sqlite:///{alerts_db}")
    with MetricSource(settings.database_path, rollup_root=settings.root_path) as metrics:
        evaluate_rules(pack, metrics, store, now, {severity: "#alerts" for severity in Severity})
    with store.transaction() as conn:
        states = store.load_states(conn)
    store.dispose()
    return {(key.rule, key.group): record for key, record in states.items()}
