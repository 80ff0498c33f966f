"""The live demo traffic and the incidents `hk demo incident` injects, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from housekeeping.cli import main
from housekeeping.database import AppDatabase
from housekeeping.demo.live import (
    MAX_CATCH_UP,
    LiveDatabase,
    LiveError,
    catch_up,
    inject_incident,
    write_traffic,
)
from housekeeping.demo.seed import seed_database
from housekeeping.demo.traffic import live_routes


@pytest.fixture
def live(app_url):
    now = datetime.now(UTC) - timedelta(hours=6)
    seed_database(app_url, tokens=200, requests=2_000, days=2, seed=3, now=now)
    database = LiveDatabase(app_url)
    yield database
    database.close()


def rows(app_url, sql, **params):
    db = AppDatabase(app_url)
    try:
        with db.connect() as conn:
            return conn.execute(sa.text(sql), params).fetchall()
    finally:
        db.dispose()


def stamp(app_url, moment):
    """``moment`` as the table stores it: UTC text on SQLite, an instant on PostgreSQL."""
    if app_url.startswith("sqlite"):
        return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return moment


def error_share(app_url, start, end):
    stamps = (stamp(app_url, start), stamp(app_url, end))
    ((total, failed),) = rows(
        app_url,
        "SELECT count(*), sum(CASE WHEN status_code >= 500 THEN 1 ELSE 0 END) FROM request_logs "
        "WHERE ts >= :start AND ts < :end",
        start=stamps[0],
        end=stamps[1],
    )
    return total, (failed or 0) / total


def test_an_error_burst_shapes_only_its_window_of_the_live_traffic(live, app_url):
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(minutes=30)
    inject_incident(live, "error-burst", None, timedelta(minutes=10), start + timedelta(minutes=10))

    written = write_traffic(live, np.random.default_rng(1), start, now, rate=300)

    assert written["request_logs"] > 7_000 and written["jobs"] > 300
    total, ordinary = error_share(app_url, start, start + timedelta(minutes=10))
    burst_total, burst = error_share(
        app_url, start + timedelta(minutes=10), start + timedelta(minutes=20)
    )
    assert total > 2_000 and ordinary < 0.01
    assert burst_total > 2_000 and burst > 0.2
    # Ordinary jobs complete: nothing for the job rules to page on.
    statuses = rows(
        app_url, "SELECT DISTINCT status FROM jobs WHERE created_at >= :t", t=stamp(app_url, start)
    )
    assert {status for (status,) in statuses} <= {"completed"}


def test_a_stuck_job_stays_active_until_its_incident_ends(live, app_url):
    now = datetime.now(UTC).replace(microsecond=0)
    incident = inject_incident(
        live, "stuck-job", None, timedelta(minutes=5), now, stuck_after=timedelta(hours=2)
    )
    state = "SELECT status FROM jobs WHERE id = :id"

    write_traffic(live, np.random.default_rng(2), now, now + timedelta(minutes=1))
    during = rows(app_url, state, id=incident.job_id)
    write_traffic(
        live, np.random.default_rng(3), now + timedelta(minutes=5), now + timedelta(minutes=6)
    )
    after = rows(app_url, state, id=incident.job_id)

    assert during == [("active",)] and after == [("completed",)]
    assert incident.start - timedelta(hours=2) > rows_started(app_url, incident.job_id)


def rows_started(app_url, job_id):
    db = AppDatabase(app_url)
    try:
        with db.connect() as conn:
            value = conn.execute(
                sa.text("SELECT started_at FROM jobs WHERE id = :id"), {"id": job_id}
            ).scalar_one()
        return db.read_timestamp(value)
    finally:
        db.dispose()


def test_catching_up_fills_at_most_two_hours_and_finishes_jobs_left_active(live, app_url):
    now = datetime.now(UTC).replace(microsecond=0)
    start, written = catch_up(live, np.random.default_rng(4), now, rate=60)

    assert start == now - MAX_CATCH_UP  # the seed ends 6 h ago
    assert 6_000 < written["request_logs"] < 8_500
    assert live.newest_request() > now - timedelta(minutes=1)
    stale = rows(app_url, "SELECT count(*) FROM jobs WHERE status = 'active'")
    assert stale == [(0,)]


def test_an_unknown_route_or_kind_is_refused_in_one_line_and_nothing_is_recorded(live, app_url):
    now = datetime.now(UTC)
    with pytest.raises(LiveError, match=r"unknown route '/nope' \(the demo's routes: "):
        inject_incident(live, "error-burst", "/nope", timedelta(minutes=5), now)
    with pytest.raises(LiveError, match="unknown incident 'flood'"):
        inject_incident(live, "flood", None, timedelta(minutes=5), now)
    with pytest.raises(LiveError, match="--route does not apply to a stuck-job"):
        inject_incident(live, "stuck-job", "/health", timedelta(minutes=5), now)
    assert live.incidents(now - timedelta(days=1)) == []


def test_hk_demo_incident_records_the_incident_or_names_the_bad_option(app_url, tmp_path):
    now = datetime.now(UTC)
    seed_database(app_url, tokens=10, requests=100, days=1, seed=5, now=now)
    env = {"DATABASE_URL": app_url}
    runner = CliRunner()

    done = runner.invoke(
        main, ["demo", "incident", "slow", "--route", "/health", "--for", "3m"], env=env
    )
    bad_route = runner.invoke(main, ["demo", "incident", "slow", "--route", "/x"], env=env)
    bad_for = runner.invoke(main, ["demo", "incident", "outage", "--for", "soon"], env=env)

    assert done.exit_code == 0, done.output
    assert "slow on /health from " in done.output
    assert bad_route.exit_code == 1 and "unknown route '/x'" in bad_route.output
    assert len(bad_route.output.strip().splitlines()) == 1
    assert bad_for.exit_code == 2 and "--for" in bad_for.output
    database = LiveDatabase(app_url)
    try:
        (incident,) = database.incidents(now - timedelta(minutes=1))
    finally:
        database.close()
    assert (incident.kind, incident.route) == ("slow", "/health")
    assert incident.end - incident.start == timedelta(minutes=3)


def test_a_route_served_by_several_methods_has_its_incident_on_every_method(live, app_url):
    # /api/v1/orders is GET and POST: the rollups (and the rules) group by route, so both.
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(minutes=20)
    inject_incident(live, "outage", "/api/v1/orders", timedelta(minutes=20), start)

    write_traffic(live, np.random.default_rng(6), start, now, rate=600)

    by_method = rows(
        app_url,
        "SELECT method, count(*), sum(CASE WHEN status_code = 503 THEN 1 ELSE 0 END) "
        "FROM request_logs WHERE route = '/api/v1/orders' AND ts >= :t GROUP BY method",
        t=stamp(app_url, start),
    )
    assert {method for method, _, _ in by_method} == {"GET", "POST"}
    assert all(total > 0 and failed == total for _, total, failed in by_method), by_method
    assert live_routes().count("/api/v1/orders") == 1


def test_an_incident_longer_than_a_day_is_refused_and_nothing_is_recorded(live):
    now = datetime.now(UTC)
    with pytest.raises(LiveError, match=r"--for must be between 0 and 24h .*got 30d"):
        inject_incident(live, "outage", None, timedelta(days=30), now)
    assert live.incidents(now - timedelta(days=1)) == []
    runner = CliRunner()
    result = runner.invoke(
        main, ["demo", "incident", "outage", "--for", "30d"], env={"DATABASE_URL": live_url(live)}
    )
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert "--for must be between 0 and 24h" in result.output
    assert live.incidents(now - timedelta(days=1)) == []


def live_url(live):
    target = live.target
    return f"sqlite:///{target.address}" if target.dialect == "sqlite" else target.address


def test_the_live_demo_without_its_database_says_so_and_creates_nothing(tmp_path):
    url = f"sqlite:///{tmp_path}/var/demo.db"
    runner = CliRunner()
    for args in (["demo", "incident", "error-burst"], ["demo", "traffic"]):
        result = runner.invoke(main, args, env={"DATABASE_URL": url})
        assert result.exit_code == 1, result.output
        assert result.output.strip() == (
            f"Error: {url} does not exist: run `hk demo` (or `hk seed`) first"
        )
    assert list(tmp_path.iterdir()) == []
