"""Freshness: with a controlled clock, published rollups trail the application by at most 2 min."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from analytics.freshness import FreshnessCursor, refresh_recent
from tests.support.analytics_data import (
    empty_reference_schema,
    insert_requests,
    make_settings,
    make_store,
    publish,
    query,
)

START = datetime(2026, 11, 19, 14, 50, tzinfo=UTC)
TICK = timedelta(seconds=60)
STEP = timedelta(seconds=10)


def published_count(settings, until: datetime) -> int:
    frame = query(
        settings,
        "SELECT coalesce(sum(requests), 0) AS n FROM requests_minute WHERE minute < ?::TIMESTAMP",
        [until.replace(tzinfo=None)],
    )
    return int(frame.n[0])


def test_published_rollups_trail_the_application_by_at_most_two_minutes(app_url, tmp_path):
    """Every 10 s of simulated time the app commits requests, some of them 40 s late; the
    sensor's refresh runs every 60 s. Each row's lag is the time from its commit until a
    refresh has published it."""
    db = empty_reference_schema(app_url)
    settings = make_settings(tmp_path, late_commit_overlap="2m", late_row_grace="5m")
    store = make_store(settings)
    publish(store, settings)
    rng = np.random.default_rng(5)
    cursor = FreshnessCursor()
    pending: list[tuple[datetime, datetime]] = []  # (ts, committed at)
    committed: list[datetime] = []
    lags: list[timedelta] = []
    clock = START
    next_tick = START + TICK
    while clock < START + timedelta(minutes=25):
        clock += STEP
        # This step's commits: rows stamped just now, and a few stamped 40 s ago (late commits).
        rows = [clock - timedelta(seconds=float(rng.uniform(0, 10))) for _ in range(5)]
        rows += [clock - timedelta(seconds=40)]
        insert_requests(db, [(ts, "GET", "/a", 200, 12.5) for ts in rows])
        pending += [(ts, clock) for ts in rows]
        committed += rows
        if clock >= next_tick:
            outcome = refresh_recent(db, store, settings, cursor, clock)
            cursor = outcome.cursor
            # Everything committed so far is published, late commits included.
            assert published_count(settings, clock + TICK) == len(committed)
            lags += [clock - at for _, at in pending]
            pending = []
            next_tick += TICK
    assert max(lags) <= timedelta(minutes=2)
    assert max(lags) <= TICK  # a tick every minute: nothing waits longer than one interval


def test_each_closed_hour_is_handed_over_for_finalisation_once_after_the_grace(app_url, tmp_path):
    db = empty_reference_schema(app_url)
    settings = make_settings(tmp_path, late_row_grace="5m")
    store = make_store(settings)
    cursor = FreshnessCursor()
    handed_over = []
    clock = datetime(2026, 11, 19, 14, 58, tzinfo=UTC)
    while clock < datetime(2026, 11, 19, 16, 10, tzinfo=UTC):
        outcome = refresh_recent(db, store, settings, cursor, clock)
        cursor = outcome.cursor
        handed_over += [(hour, clock) for hour in outcome.hours_to_finalise]
        clock += TICK
    hours = [hour for hour, _ in handed_over]
    assert hours == [
        datetime(2026, 11, 19, 14, tzinfo=UTC),
        datetime(2026, 11, 19, 15, tzinfo=UTC),
    ]
    for hour, at in handed_over:
        assert hour + timedelta(hours=1, minutes=5) <= at < hour + timedelta(hours=1, minutes=6)


def test_after_a_pause_the_refresh_reads_at_most_max_catch_up(app_url, tmp_path):
    db = empty_reference_schema(app_url)
    settings = make_settings(tmp_path, max_catch_up="2h")
    store = make_store(settings)
    paused = datetime(2026, 11, 16, 9, 0, tzinfo=UTC)
    old = FreshnessCursor(watermark=paused, next_hour_to_finalise=paused)
    now = datetime(2026, 11, 19, 15, 20, tzinfo=UTC)
    outcome = refresh_recent(db, store, settings, old, now)
    assert outcome.result.start == datetime(2026, 11, 19, 13, tzinfo=UTC)
    assert len(outcome.hours_to_finalise) == 48  # the rest is a backfill from the UI
    assert FreshnessCursor.from_json(outcome.cursor.to_json()) == outcome.cursor
