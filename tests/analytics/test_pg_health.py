"""The application database's health snapshots: real conditions on PostgreSQL, and the alerts.

Each test makes the condition happen (a transaction left open in another connection, a session
blocked on a row lock, many connections, dead tuples left by a cleanup), takes a snapshot,
publishes it, and evaluates the default rules over the published dataset.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

import psycopg
import pytest
import sqlalchemy as sa

from analytics.alerts.model import AlertState, Severity
from analytics.alerts.rules import RulePack, Threshold, load_rules
from analytics.pg_health import StatementTotals, statement_deltas, take_snapshot
from analytics.rollups.pg_health import publish_snapshot
from housekeeping.config import parse_config
from housekeeping.database import AppDatabase, DatabaseError
from housekeeping.policies import run_policy
from housekeeping.sql import TableName
from tests.conftest import postgres_base_url
from tests.support.alert_support import evaluate_once
from tests.support.analytics_data import make_settings, make_store, publish, query
from tests.support.app_tables import create_revoked_tokens

pytestmark = pytest.mark.postgres


def token_config(tmp_path):
    return parse_config(
        {
            "archive": {"root": str(tmp_path / "archive")},
            "policies": {
                "revoked_tokens": {
                    "kind": "expired",
                    "table": "revoked_tokens",
                    "cutoff_column": "expires_at",
                    "max_delete_fraction": 0.95,
                }
            },
        }
    )


def default_rule(name: str, **changes) -> RulePack:
    """One rule of the default pack, ``for`` and thresholds changed only where a test says."""
    [rule] = load_rules().select([name]).rules
    return RulePack(rules=[rule.model_copy(update=changes)])


def evaluate(settings, tmp_path, pack, now):
    return evaluate_once(settings, tmp_path / "alerts.db", pack, now)


@pytest.fixture
def published(tmp_path):
    settings = make_settings(tmp_path)
    store = make_store(settings)
    publish(store, settings)
    return settings, store


def test_snapshot_sees_an_open_transaction_a_lock_wait_and_many_connections(
    pg_url, tmp_path, published
):
    settings, store = published
    db = AppDatabase(pg_url)
    with db.engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE accounts (id int PRIMARY KEY, balance int)"))
        conn.execute(sa.text("INSERT INTO accounts VALUES (1, 100)"))
        conn.execute(sa.text("CREATE TABLE revoked_tokens (expires_at timestamptz)"))
    holder = psycopg.connect(pg_url)  # a transaction left open, holding a row lock
    holder.execute("UPDATE accounts SET balance = 90 WHERE id = 1")
    waiter_started = threading.Event()

    def wait_for_the_row():
        with psycopg.connect(pg_url, autocommit=True) as waiter:
            waiter_started.set()
            waiter.execute("UPDATE accounts SET balance = 80 WHERE id = 1")

    waiter = threading.Thread(target=wait_for_the_row)
    waiter.start()
    idle = [psycopg.connect(pg_url, autocommit=True) for _ in range(12)]
    try:
        waiter_started.wait()
        time.sleep(1.5)  # the open transaction ages; the waiter is queued on the row lock
        snapshot, _ = publish_snapshot(db, store, token_config(tmp_path))
    finally:
        holder.rollback()
        holder.close()
        waiter.join()
        for connection in idle:
            connection.close()

    # Other sessions share the server: at least ours are there.
    assert snapshot.connections >= 14 and snapshot.connections_idle >= 12
    assert snapshot.connections_idle_in_transaction >= 1
    assert snapshot.longest_transaction_s >= 1.0
    assert snapshot.longest_idle_in_transaction_s >= 1.0
    assert snapshot.lock_waiting_sessions >= 1
    assert snapshot.max_connections > 0 and snapshot.database_bytes > 0
    assert snapshot.connections_used == snapshot.connections / snapshot.max_connections
    assert snapshot.missing == ()  # the test role is a superuser
    row = query(settings, "SELECT * FROM pg_health").iloc[0]
    assert (row.connections, row.lock_waiting_sessions) == (
        snapshot.connections,
        snapshot.lock_waiting_sessions,
    )

    # The default rules, over the published snapshot (evaluated a minute later, as the sensor's
    # next tick would). Thresholds the test cannot reach on a shared server are lowered, and
    # `for` is 0, so one snapshot decides; the comparisons and the data are the real ones.
    now = snapshot.taken_at + timedelta(minutes=1)
    pack = RulePack(
        rules=[
            default_rule(
                "pg_long_transaction",
                thresholds={Severity.WARNING: Threshold(value=1 / 60)},  # 1 s, in minutes
            ).rules[0],
            default_rule("pg_lock_waits", for_=timedelta(0)).rules[0],
            default_rule(
                "pg_connections_high",
                for_=timedelta(0),
                thresholds={Severity.WARNING: Threshold(value=10 / snapshot.max_connections)},
            ).rules[0],
        ]
    )
    states = evaluate(settings, tmp_path, pack, now)
    for rule in ("pg_long_transaction", "pg_lock_waits", "pg_connections_high"):
        assert states[(rule, "")].state is AlertState.FIRING, rule


def test_the_default_pack_stays_quiet_on_an_idle_database(pg_url, tmp_path, published):
    settings, store = published
    db = AppDatabase(pg_url)
    snapshot, _ = publish_snapshot(db, store, token_config(tmp_path))
    pack = RulePack(
        rules=[
            rule.model_copy(update={"for_": timedelta(0)})
            for rule in load_rules().rules
            if rule.name.startswith("pg_")
        ]
    )
    states = evaluate(settings, tmp_path, pack, snapshot.taken_at + timedelta(minutes=1))
    # Nothing on this database is near a default threshold (other helpers' sessions aside,
    # nothing here holds a transaction for 5 minutes or waits on a lock for long).
    firing = [key for key, record in states.items() if record.state is AlertState.FIRING]
    assert ("pg_dead_tuples", "revoked_tokens") not in firing
    assert ("pg_connections_high", "") not in firing


def test_dead_tuples_left_by_a_cleanup_are_reported_and_alert(pg_url, tmp_path, published):
    settings, store = published
    db = AppDatabase(pg_url)
    create_revoked_tokens(db, rows=4000, expired_fraction=0.8)
    with db.engine.begin() as conn:
        # Autovacuum would reclaim them at any moment: the table must keep its dead tuples.
        conn.execute(sa.text("ALTER TABLE revoked_tokens SET (autovacuum_enabled = false)"))
    config = token_config(tmp_path)
    result = run_policy(db, config, "revoked_tokens")
    assert result.deleted > 2000
    db.dispose()  # a backend flushes its table statistics when it exits
    deadline = time.monotonic() + 30
    while True:
        snapshot = take_snapshot(db, [TableName("revoked_tokens")])
        [table] = snapshot.tables
        if table.dead_tuples >= result.deleted or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert table.table_name == "revoked_tokens"
    assert table.dead_tuples == result.deleted
    # n_live_tup is the statistics' estimate (the deleting backend's delta may land later)
    assert table.live_tuples >= 4000 - result.deleted
    assert table.last_vacuum is None and table.last_autovacuum is None

    snapshot, _ = publish_snapshot(db, store, config)
    published_row = query(settings, "SELECT * FROM pg_table_health").iloc[0]
    assert published_row.dead_tuples == result.deleted
    assert published_row.dead_ratio == pytest.approx(
        published_row.dead_tuples / published_row.live_tuples
    )
    states = evaluate(
        settings,
        tmp_path,
        default_rule("pg_dead_tuples", for_=timedelta(0)),
        snapshot.taken_at + timedelta(minutes=1),
    )
    assert states[("pg_dead_tuples", "revoked_tokens")].state is AlertState.FIRING

    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM revoked_tokens"))
    db.dispose()
    deadline = time.monotonic() + 30
    while True:
        [table] = take_snapshot(db, [TableName("revoked_tokens")]).tables
        if table.last_vacuum is not None or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    # Reclaimed, unless another session's old transaction (this server is shared) holds back
    # the horizon: the very case the pg_long_transaction rule is for.
    assert table.last_vacuum is not None and table.dead_tuples <= result.deleted
    db.dispose()


def test_a_role_without_pg_read_all_stats_gets_the_rest_and_one_line_naming_what_is_missing(
    pg_url, postgres_server
):
    role = f"hk_health_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
    db = AppDatabase(postgres_base_url().replace("postgres@", f"{role}@", 1))
    other = psycopg.connect(pg_url)  # another role's session, in a transaction
    other.execute("SELECT 1")
    try:
        snapshot = take_snapshot(db, [TableName("nothing_here")])
    finally:
        other.close()
        db.dispose()
        with psycopg.connect(postgres_server, autocommit=True) as admin:
            admin.execute(f"DROP ROLE {role}")
    assert snapshot.connections >= 2 and snapshot.connections_hidden >= 1
    assert snapshot.database_bytes > 0 and snapshot.lock_waiting_sessions is not None
    line = snapshot.missing_line()
    assert line is not None and "\n" not in line
    assert f"role {role} lacks pg_read_all_stats" in line


def test_a_role_without_usage_on_a_housekept_schema_still_gets_a_snapshot_naming_a_lost_table(
    pg_url, postgres_server
):
    suffix = uuid.uuid4().hex[:8]
    role, locked = f"hk_health_{suffix}", f"hk_locked_{suffix}"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f"CREATE SCHEMA {locked}")  # no USAGE granted to the role
        admin.execute(f"CREATE TABLE {locked}.sessions (id int)")
        admin.execute(f"INSERT INTO {locked}.sessions SELECT generate_series(1, 10)")
        admin.execute(f"ANALYZE {locked}.sessions")
    db = AppDatabase(postgres_base_url().replace("postgres@", f"{role}@", 1))
    try:
        snapshot = take_snapshot(
            db,
            [
                TableName("sessions", locked),
                TableName("dropped_long_ago", locked),
                TableName("never_created"),
            ],
        )
    finally:
        db.dispose()
        with psycopg.connect(postgres_server, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {locked} CASCADE")
            admin.execute(f"DROP ROLE {role}")
    [table] = snapshot.tables
    assert table.table_name == f"{locked}.sessions"
    line = snapshot.missing_line()
    assert line is not None and "\n" not in line
    assert f"{locked}.dropped_long_ago, never_created not found by role {role}" in line


def test_pg_stat_statements_deltas_when_the_server_loads_it(pg_url, tmp_path, published):
    with psycopg.connect(postgres_base_url(), autocommit=True) as admin:
        preload = admin.execute("SHOW shared_preload_libraries").fetchone()[0]
    if "pg_stat_statements" not in preload:
        pytest.skip(
            "pg_stat_statements is not in shared_preload_libraries: add "
            "shared_preload_libraries = 'pg_stat_statements' to postgresql.conf, restart "
            "PostgreSQL and CREATE EXTENSION pg_stat_statements to run this test"
        )
    settings, store = published
    with psycopg.connect(postgres_base_url(), autocommit=True) as admin:
        admin.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    db = AppDatabase(pg_url)
    config = token_config(tmp_path)
    publish_snapshot(db, store, config)
    with psycopg.connect(pg_url, autocommit=True) as app:
        for _ in range(5):
            app.execute("SELECT pg_sleep(0.01), 'hk-health-probe'")
    snapshot, _ = publish_snapshot(db, store, config)
    rows = query(
        settings,
        "SELECT calls, mean_exec_ms FROM pg_statement_stats "
        "WHERE query LIKE '%hk-health-probe%' AND calls IS NOT NULL",
    )
    assert rows.calls.sum() == 5 and (rows.mean_exec_ms >= 10).all()


def test_pg_stat_statements_created_but_not_preloaded_is_named_in_one_line(pg_url):
    with psycopg.connect(postgres_base_url(), autocommit=True) as admin:
        preload = admin.execute("SHOW shared_preload_libraries").fetchone()[0]
        installed = admin.execute(
            "SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'"
        ).fetchone()
    if "pg_stat_statements" in preload or installed:
        pytest.skip("pg_stat_statements is loaded or installed on this server already")
    schema = pg_url.rsplit("search_path%3D", 1)[1]
    with psycopg.connect(postgres_base_url(), autocommit=True) as admin:
        # In the test's own schema: dropped with it.
        admin.execute(f'CREATE EXTENSION pg_stat_statements SCHEMA "{schema}"')
    db = AppDatabase(pg_url)
    snapshot = take_snapshot(db, [])
    db.dispose()
    assert snapshot.statements is None and snapshot.connections >= 1
    assert "pg_stat_statements: " in snapshot.missing_line()
    assert "shared_preload_libraries" in snapshot.missing_line()


def test_statement_deltas_count_since_the_previous_snapshot_and_survive_a_reset():
    current = [
        StatementTotals("1", "SELECT 1", 15, 150.0, 20.0),
        StatementTotals("2", "SELECT 2", 3, 30.0, 10.0),
        StatementTotals("3", "SELECT 3", 7, 70.0, 10.0),
    ]
    deltas = statement_deltas(current, {"1": (10, 100.0), "2": (40, 400.0)})
    assert [(delta.calls, delta.exec_ms) for delta in deltas] == [
        (5, 50.0),
        (3, 30.0),  # counters went down: reset since, the totals are the delta
        (None, None),  # first seen: no delta yet
    ]
    assert deltas[0].mean_exec_ms == 10.0


def test_sqlite_snapshot_is_the_file_size_only(sqlite_url, tmp_path, published):
    settings, store = published
    db = AppDatabase(sqlite_url)
    with db.engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (x int)"))
    snapshot, _ = publish_snapshot(db, store, parse_config({}))
    assert snapshot.engine == "sqlite" and snapshot.database_bytes > 0
    assert snapshot.connections is None and snapshot.tables == ()
    frame = query(settings, "SELECT engine, database_bytes, connections FROM pg_health")
    assert frame.engine.tolist() == ["sqlite"] and frame.connections.isna().all()


def test_an_unreachable_database_is_one_line_and_writes_nothing(tmp_path, published):
    settings, store = published
    db = AppDatabase("postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(DatabaseError, match="cannot connect to the application database"):
        publish_snapshot(db, store, parse_config({}))
    assert store.partition_keys("pg_health") == []


def test_the_sensor_tick_and_the_asset_each_append_a_snapshot(
    pg_url, tmp_path, instance, monkeypatch
):
    import dagster as dg
    import yaml

    from analytics.defs.assets import PG_HEALTH_ASSET, build_rollup_asset
    from analytics.defs.definitions import build_analytics_defs
    from analytics.defs.resources import RESOURCE_KEY, AnalyticsResource
    from analytics.settings import analytics_settings
    from housekeeping.config import load_config

    monkeypatch.setenv("DATABASE_URL", pg_url)
    db = AppDatabase(pg_url)
    create_revoked_tokens(db, rows=10, expired_fraction=0.5)
    db.dispose()
    path = tmp_path / "hk.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "state_database_url": f"sqlite:///{tmp_path / 'state.db'}",
                "archive": {"root": str(tmp_path / "archive")},
                # Both paths: analytics.database does not follow root (its default is under
                # the working directory, which a test must not write to).
                "analytics": {
                    "root": str(tmp_path / "analytics"),
                    "database": str(tmp_path / "analytics" / "rollups.duckdb"),
                },
                "policies": {
                    "revoked_tokens": {
                        "kind": "expired",
                        "table": "revoked_tokens",
                        "cutoff_column": "expires_at",
                    }
                },
            }
        )
    )
    config_file = str(path)
    resources = {RESOURCE_KEY: AnalyticsResource(config_file=config_file)}
    defs = build_analytics_defs(load_config(config_file), config_file)
    sensor = defs.get_sensor_def("analytics_pg_health_sensor")
    tick = sensor(dg.build_sensor_context(instance=instance, resources=resources, definitions=defs))
    assert "connections" in tick.skip_reason.skip_message and not tick.run_requests

    config = load_config(config_file)
    settings = analytics_settings(config, config_file)
    asset = build_rollup_asset(PG_HEALTH_ASSET, settings, "UTC", config.owner)
    result = dg.materialize([asset], instance=instance, resources=resources)
    assert result.success
    [health] = [
        event.materialization
        for event in result.get_asset_materialization_events()
        if event.materialization.asset_key.path[-1] == "pg_health"
    ]
    assert health.metadata["rows_in_hour_file"].value in (1, 2)  # an hour may turn between
    frame = query(settings, "SELECT * FROM pg_table_health ORDER BY taken_at")
    assert len(frame) == 2 and set(frame.table_name) == {"revoked_tokens"}
    assert (frame.live_tuples >= 0).all()
