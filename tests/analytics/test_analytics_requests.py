"""Request rollups: exact counts, merged percentiles within 1 %, idempotent partitions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import duckdb
import numpy as np
import pytest

from analytics.publish import RollupStore
from analytics.rollups.requests import refresh_requests
from analytics.sketch import RELATIVE_ACCURACY, exact_quantile
from housekeeping.database import AppDatabase
from housekeeping.demo.seed import seed_database
from tests.support.analytics_data import (
    NOW,
    empty_reference_schema,
    insert_requests,
    make_settings,
    make_store,
    publish,
    query,
    raw_requests,
)

DAY_START = datetime(2026, 11, 19, tzinfo=UTC)
DAY_END = DAY_START + timedelta(days=1)


@pytest.fixture
def seeded(app_url):
    seed_database(app_url, tokens=100, requests=30_000, days=2, now=NOW, seed=3)
    return AppDatabase(app_url)


def rollup_everything(db, settings) -> RollupStore:
    store = make_store(settings)
    refresh_requests(
        db, store, settings, NOW - timedelta(days=2, minutes=30), NOW + timedelta(minutes=30)
    )
    publish(store, settings)
    return store


def partition_rows(store: RollupStore, key: str) -> list[tuple]:
    path = store.partition_path("requests_minute", key)
    return duckdb.sql(f"SELECT * FROM read_parquet('{path}')").fetchall()


def within_accuracy(estimate: float, exact: float) -> bool:
    return abs(estimate - exact) <= RELATIVE_ACCURACY * exact + 1e-9


def test_minute_counts_equal_an_independent_count_of_the_raw_rows(seeded, tmp_path):
    settings = make_settings(tmp_path)
    rollup_everything(seeded, settings)
    raw = raw_requests(seeded)
    expected = (
        raw.assign(
            s5=raw.status_code.between(500, 599),
            s4=raw.status_code.between(400, 499),
            s429=raw.status_code == 429,
        )
        .groupby(["minute", "route", "method"])
        .agg(
            requests=("ts", "size"),
            status_5xx=("s5", "sum"),
            status_4xx=("s4", "sum"),
            status_429=("s429", "sum"),
            latency_max_ms=("duration_ms", "max"),
            latency_sum_ms=("duration_ms", "sum"),
        )
        .reset_index()
        .sort_values(["minute", "route", "method"], ignore_index=True)
    )
    published = query(
        settings,
        "SELECT minute, route, method, requests, status_5xx, status_4xx, status_429, "
        "latency_max_ms, latency_sum_ms FROM requests_minute ORDER BY minute, route, method",
    )
    assert len(published) == len(expected) > 1000
    for column in ["requests", "status_5xx", "status_4xx", "status_429"]:
        assert (published[column].to_numpy() == expected[column].to_numpy()).all(), column
    assert (published["minute"].to_numpy() == expected["minute"].to_numpy()).all()
    assert np.allclose(published["latency_max_ms"], expected["latency_max_ms"])
    assert np.allclose(published["latency_sum_ms"], expected["latency_sum_ms"])
    totals = query(settings, "SELECT sum(requests) AS n FROM requests_hourly_overall")
    assert totals.n[0] == len(raw)


def test_percentiles_over_an_hour_a_day_and_the_whole_range_are_within_one_percent(
    seeded, tmp_path
):
    settings = make_settings(tmp_path)
    rollup_everything(seeded, settings)
    raw = raw_requests(seeded)
    busiest = raw.groupby(raw.ts.dt.floor("h")).size().idxmax()
    windows = {
        "hour": (busiest, busiest + timedelta(hours=1)),
        "day": (DAY_START.replace(tzinfo=None), DAY_END.replace(tzinfo=None)),
        "whole range": (raw.ts.min().floor("min"), raw.ts.max().ceil("min") + timedelta(minutes=1)),
    }
    checked = 0
    for start, end in windows.values():
        rows = raw[(raw.ts >= start) & (raw.ts < end)]
        overall = query(
            settings,
            "SELECT * FROM request_stats_overall(?::TIMESTAMP, ?::TIMESTAMP)",
            [start, end],
        )
        by_route = query(
            settings, "SELECT * FROM request_stats(?::TIMESTAMP, ?::TIMESTAMP)", [start, end]
        ).set_index("route")
        for name, q in {"p50": 0.5, "p95": 0.95, "p99": 0.99}.items():
            exact = exact_quantile(rows.duration_ms, q)
            assert within_accuracy(overall[f"latency_{name}_ms"][0], exact), (start, name)
            for route, group in rows.groupby("route"):
                estimate = by_route.loc[route, f"latency_{name}_ms"]
                assert within_accuracy(estimate, exact_quantile(group.duration_ms, q)), route
                checked += 1
    assert checked > 100


def test_daily_view_merges_sketches_per_route(seeded, tmp_path):
    settings = make_settings(tmp_path)
    rollup_everything(seeded, settings)
    raw = raw_requests(seeded)
    day = raw[(raw.ts >= DAY_START.replace(tzinfo=None)) & (raw.ts < DAY_END.replace(tzinfo=None))]
    daily = query(settings, "SELECT * FROM requests_daily WHERE day = DATE '2026-11-19'").set_index(
        ["route", "method"]
    )
    for (route, method), group in day.groupby(["route", "method"]):
        row = daily.loc[(route, method)]
        assert row.requests == len(group)
        assert within_accuracy(row.latency_p95_ms, exact_quantile(group.duration_ms, 0.95))
        assert row.error_rate == pytest.approx((group.status_code >= 500).mean())


def test_busy_minute_inside_a_quiet_hour_gets_the_true_p95_not_an_average(app_url, tmp_path):
    db = empty_reference_schema(app_url)
    hour = datetime(2026, 11, 19, 10, tzinfo=UTC)
    rng = np.random.default_rng(1)
    quiet = [
        (hour + timedelta(minutes=m, seconds=5), "GET", "/a", 200, float(rng.uniform(8, 12)))
        for m in range(60)
        if m != 30
    ]
    busy = [
        (
            hour + timedelta(minutes=30, milliseconds=i),
            "GET",
            "/a",
            200,
            float(rng.uniform(900, 1100)),
        )
        for i in range(2000)
    ]
    insert_requests(db, quiet + busy)
    settings = make_settings(tmp_path)
    store = make_store(settings)
    refresh_requests(db, store, settings, hour, hour + timedelta(hours=1))
    publish(store, settings)

    durations = np.array([row[4] for row in quiet + busy])
    exact = exact_quantile(durations, 0.95)
    hourly = query(settings, "SELECT * FROM requests_hourly_overall")
    assert within_accuracy(hourly.latency_p95_ms[0], exact)
    per_minute = raw_requests(db).groupby("minute").duration_ms.quantile(0.95)
    assert per_minute.mean() < exact / 5  # what averaging per-minute p95s would have said


def test_rerunning_a_partition_changes_nothing(seeded, tmp_path):
    settings = make_settings(tmp_path)
    store = make_store(settings)
    hour = datetime(2026, 11, 19, 15, tzinfo=UTC)
    first = refresh_requests(seeded, store, settings, hour, hour + timedelta(hours=1))
    content = store.partition_path("requests_minute", "2026-11-19T15").read_bytes()
    second = refresh_requests(seeded, store, settings, hour, hour + timedelta(hours=1))
    assert first.rows_written == second.rows_written > 0
    assert store.partition_path("requests_minute", "2026-11-19T15").read_bytes() == content
    assert store.partition_keys("requests_minute") == ["2026-11-19T15"]


def test_refreshing_the_last_minutes_keeps_the_rest_of_the_hour(seeded, tmp_path):
    settings = make_settings(tmp_path)
    hour = datetime(2026, 11, 19, 15, tzinfo=UTC)
    whole, partial = make_store(settings), None
    refresh_requests(seeded, whole, settings, hour, hour + timedelta(hours=1))
    expected = partition_rows(whole, "2026-11-19T15")
    # The same hour built as the sensor builds it: minute ranges, one after another.
    partial = RollupStore(tmp_path / "partial", tmp_path / "partial.duckdb")
    for start_minute in (0, 17, 42, 58):
        refresh_requests(
            seeded,
            partial,
            settings,
            hour + timedelta(minutes=start_minute),
            hour + timedelta(hours=1),
        )
    assert partition_rows(partial, "2026-11-19T15") == expected


def test_an_empty_hour_is_written_as_zero_rows_not_a_failure(app_url, tmp_path):
    db = empty_reference_schema(app_url)
    settings = make_settings(tmp_path)
    store = make_store(settings)
    hour = datetime(2026, 11, 19, 3, tzinfo=UTC)
    result = refresh_requests(db, store, settings, hour, hour + timedelta(hours=1))
    assert (result.rows_read, result.rows_written, result.partitions) == (0, 0, ("2026-11-19T03",))
    publish(store, settings)
    assert query(settings, "SELECT count(*) AS n FROM requests_hourly").n[0] == 0
