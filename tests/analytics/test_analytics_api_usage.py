"""API usage per day x service x endpoint, month to date against budgets."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import numpy as np
import pytest
import sqlalchemy as sa

from analytics.alerts.metrics import MetricSource
from analytics.alerts.rules import parse_rules
from analytics.rollups.api_usage import refresh_api_usage
from analytics.rollups.engine import day_bounds
from analytics.settings import parse_analytics_settings
from housekeeping.config import ConfigError
from tests.support.analytics_data import (
    empty_reference_schema,
    make_settings,
    make_store,
    publish,
    query,
    stored,
)

BERLIN = "Europe/Berlin"
DAY = date(2026, 11, 20)


def insert(db, rows):
    values = [
        {
            "ts": stored(db, ts),
            "service_name": service,
            "endpoint": endpoint,
            "user_id": 1,
            "response_time_ms": response,
            "tokens_used": tokens,
            "cost_usd": cost,
            "success": success,
        }
        for ts, service, endpoint, response, tokens, cost, success in rows
    ]
    with db.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO api_usage (ts, service_name, endpoint, user_id, response_time_ms, "
                "tokens_used, cost_usd, success) VALUES (:ts, :service_name, :endpoint, :user_id, "
                ":response_time_ms, :tokens_used, :cost_usd, :success)"
            ),
            values,
        )


def test_a_day_follows_the_configured_time_zone_and_counts_match_the_raw_rows(app_url, tmp_path):
    start, end = day_bounds(DAY, BERLIN)  # 2026-11-19 23:00 UTC .. 2026-11-20 23:00 UTC
    rng = np.random.default_rng(3)
    rows = []
    for index in range(2000):
        ts = start - timedelta(hours=2) + timedelta(seconds=float(rng.uniform(0, 28 * 3600)))
        service = ["openai", "stripe"][index % 2]
        rows.append(
            (
                ts,
                service,
                f"/v1/e{index % 3}",
                float(rng.lognormal(5, 1)),
                int(rng.integers(0, 500)),
                round(float(rng.uniform(0, 0.02)), 6),
                bool(rng.random() > 0.05),
            )
        )
    db = empty_reference_schema(app_url)
    insert(db, rows)
    settings = make_settings(tmp_path)
    store = make_store(settings)
    publish(store, settings)

    result = refresh_api_usage(db, store, settings, DAY, BERLIN)

    inside = [row for row in rows if start <= row[0] < end]
    assert result.partitions == ("2026-11-20",)
    frame = query(settings, "SELECT * FROM api_usage_daily ORDER BY service, endpoint")
    assert int(frame.calls.sum()) == len(inside)
    for item in frame.itertuples():
        mine = [row for row in inside if row[1] == item.service and row[2] == item.endpoint]
        assert item.calls == len(mine)
        assert item.errors == sum(1 for row in mine if not row[6])
        assert item.tokens == sum(row[4] for row in mine)
        assert item.cost_usd == pytest.approx(sum(row[5] for row in mine))
        exact = float(np.quantile([row[3] for row in mine], 0.95, method="inverted_cdf"))
        assert item.response_time_p95_ms == pytest.approx(exact, rel=0.01)


def test_month_to_date_against_budgets_feeds_the_budget_rule(sqlite_url, tmp_path):
    db = empty_reference_schema(sqlite_url)
    noon = datetime(2026, 11, 3, 12, tzinfo=UTC)
    insert(db, [(noon, "openai", "/v1/chat", 100.0, 1000, 40.0, True)] * 3)  # $120, 3 calls
    insert(db, [(noon + timedelta(days=1), "openai", "/v1/chat", 100.0, 1000, 45.0, True)])
    insert(db, [(noon, "stripe", "/v1/charges", 80.0, 0, 0.0, True)] * 5)
    settings = make_settings(
        tmp_path,
        budgets={"openai": {"monthly_cost_usd": 200.0, "monthly_calls": 1000}},
    )
    store = make_store(settings)
    from analytics.views import publish_rollup_views

    publish_rollup_views(store, "UTC", settings.budgets)
    for day in (date(2026, 11, 3), date(2026, 11, 4)):
        refresh_api_usage(db, store, settings, day, "UTC")

    frame = query(settings, "SELECT * FROM api_usage_month_to_date ORDER BY service")
    openai, stripe = frame.itertuples()
    assert (openai.calls, openai.cost_usd) == (4, 165.0)
    assert openai.budget_used_fraction == pytest.approx(165.0 / 200.0)  # cost is the tightest
    assert stripe.budget_used_fraction is None or np.isnan(stripe.budget_used_fraction)

    rules = parse_rules(
        {
            "rules": [
                {
                    "name": "api_budget",
                    "metric": "api_budget_used",
                    "group_by": "service",
                    "thresholds": {"high": {"value": 0.8}, "critical": {"value": 1.0}},
                }
            ]
        }
    )
    with MetricSource(settings.database_path) as metrics:
        values = metrics.values(rules.rules[0], datetime(2026, 11, 5, tzinfo=UTC))
    assert values == {"openai": pytest.approx(0.825)}


def test_a_bad_budget_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"analytics.budgets.openai.monthly_cost_usd"):
        parse_analytics_settings({"budgets": {"openai": {"monthly_cost_usd": -5}}})
    with pytest.raises(ConfigError, match="set at least one of"):
        parse_analytics_settings({"budgets": {"openai": {}}})


def test_the_schedule_refreshes_today_and_in_the_first_hour_yesterday_too(tmp_path):
    from analytics.defs.definitions import build_analytics_defs
    from housekeeping.config import parse_config

    config = parse_config(
        {
            "timezone": BERLIN,
            "analytics": {
                "root": str(tmp_path / "a"),
                "database": str(tmp_path / "a" / "v.duckdb"),
            },
        }
    )
    defs = build_analytics_defs(config)
    schedule = defs.get_schedule_def("analytics_api_usage_schedule")

    def partitions(moment):
        context = dg.build_schedule_context(
            scheduled_execution_time=moment, repository_def=defs.get_repository_def()
        )
        return [request.partition_key for request in schedule.evaluate_tick(context).run_requests]

    assert partitions(datetime(2026, 11, 20, 14, 15, tzinfo=UTC)) == ["2026-11-20"]
    # 00:15 in Berlin is 23:15 UTC the day before
    assert partitions(datetime(2026, 11, 20, 23, 15, tzinfo=UTC)) == ["2026-11-20", "2026-11-21"]
