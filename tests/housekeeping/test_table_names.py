"""Names real schemas have: schema-qualified tables, mixed case, and views.

A policy's or a source's table is ``table: app.sessions`` or ``table: sessions`` + ``schema: app``,
quoted exactly everywhere it is used; a name that differs in case or schema is answered with "did
you mean"; a view (materialized view, foreign table) is refused before anything runs.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import sqlalchemy as sa
import yaml
from click.testing import CliRunner

from analytics.extract import SourceError
from analytics.rollups.requests import refresh_requests
from analytics.rollups.table_stats import snapshot_table_stats
from housekeeping.archive import LocalArchiveStore, TableArchive
from housekeeping.cli import main
from housekeeping.config import ConfigError, parse_config
from housekeeping.database import AppDatabase
from housekeeping.history import RunHistory
from housekeeping.policies import run_and_record, run_policy
from housekeeping.sql import TableName
from tests.support.analytics_data import make_settings, make_store, publish, query
from tests.support.app_tables import count
from tests.support.zoned_postgres import create_app_logs, database_in_time_zone, fresh_schema


@pytest.fixture
def db(app_url):
    database = AppDatabase(app_url)
    yield database
    database.dispose()


@pytest.fixture
def other_schema(pg_url, postgres_server):
    """A schema that is not on the test's search path, dropped afterwards."""
    name = f"hk_app_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    yield name
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{name}" CASCADE')


def settings_for(tmp_path, policy, **sections):
    return parse_config(
        {
            "archive": {"root": str(tmp_path / "archive")},
            "state_database_url": f"sqlite:///{tmp_path / 'state.db'}",
            "safety": {"max_delete_fraction": 1.0},
            "batch": {"initial_size": 8, "min_size": 4, "max_size": 16},
            "policies": {
                "logs": {"kind": "age", "cutoff_column": "ts", "retention": "30d", **policy}
            },
            **sections,
        }
    )


def config_check(db, tmp_path, policy):
    path = tmp_path / "hk.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "archive": {"root": str(tmp_path / "archive")},
                "policies": {
                    "logs": {"kind": "age", "cutoff_column": "ts", "retention": "30d", **policy}
                },
            }
        )
    )
    url = db.url.render_as_string(hide_password=False)
    return CliRunner().invoke(
        main,
        ["config", "check", "--config", str(path), "--database-url", url, "--section", "policies"],
    )


@pytest.mark.parametrize("table_text", ["dotted", "schema_key"])
def test_config_reads_a_schema_qualified_table_from_a_dotted_name_or_a_schema_key(table_text):
    policy = (
        {"table": "app.sessions"}
        if table_text == "dotted"
        else {"table": "sessions", "schema": "app"}
    )

    config = parse_config(
        {"policies": {"logs": {"kind": "age", "cutoff_column": "ts", "retention": "1d", **policy}}}
    )

    assert config.policies["logs"].table == TableName("sessions", "app")
    assert config.policies["logs"].table.sql == '"app"."sessions"'


def test_a_name_with_a_dot_is_the_verbatim_table_of_its_schema_key():
    config = parse_config(
        {
            "policies": {
                "logs": {
                    "kind": "age",
                    "table": "v1.sessions",
                    "schema": "app",
                    "cutoff_column": "ts",
                    "retention": "1d",
                }
            }
        }
    )

    assert config.policies["logs"].table.sql == '"app"."v1.sessions"'


def test_a_table_name_with_two_dots_is_an_error_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"policies\.logs\.table: 'a\.b\.c' is not a table name"):
        settings_for(tmp_path, {"table": "a.b.c"})


@pytest.mark.postgres
@pytest.mark.parametrize("strategy", ["page_ranges", "primary_key_ranges", "cutoff_index"])
@pytest.mark.parametrize("spelling", ["dotted", "schema_key"])
def test_a_schema_qualified_table_is_housekept_and_the_same_name_on_the_search_path_left_alone(
    pg_url, other_schema, tmp_path, strategy, spelling
):
    db = AppDatabase(pg_url)
    create_app_logs(db, table="app_logs")  # the decoy, first on the search path
    create_app_logs(db, table=f'"{other_schema}".app_logs')
    table = (
        {"table": f"{other_schema}.app_logs"}
        if spelling == "dotted"
        else {"table": "app_logs", "schema": other_schema}
    )
    config = settings_for(tmp_path, {**table, "archive": True, "strategy": strategy})
    history = RunHistory(config.state_database_url)

    result = run_and_record(history, db, config, "logs")

    assert result.deleted == 21 and result.remaining_expired == 0
    assert count(db, f'"{other_schema}".app_logs') == 20
    assert count(db, "app_logs") == 41
    archive = TableArchive(
        LocalArchiveStore(tmp_path / "archive"), f"{other_schema}.app_logs", "ts"
    )
    assert archive.read_all().num_rows == 21
    assert history.recent("logs")[0].table_name == f"{other_schema}.app_logs"
    check = config_check(db, tmp_path, table)
    assert check.exit_code == 0, check.output
    assert f"ok    logs: {other_schema}.app_logs.ts" in check.output
    history.dispose()
    db.dispose()


@pytest.mark.postgres
def test_index_advice_names_the_schema_qualified_table(pg_url, other_schema, tmp_path):
    db = AppDatabase(pg_url)
    create_app_logs(db, table=f'"{other_schema}".app_logs', index=False)

    check = config_check(db, tmp_path, {"table": f"{other_schema}.app_logs"})

    assert (
        f'CREATE INDEX CONCURRENTLY "idx_app_logs_ts" ON "{other_schema}"."app_logs" ("ts");'
        in check.output
    )
    db.dispose()


def test_sqlite_takes_main_as_the_schema_of_its_tables(sqlite_url, tmp_path):
    db = AppDatabase(sqlite_url)
    create_app_logs(db)

    result = run_policy(db, settings_for(tmp_path, {"table": "main.app_logs"}), "logs")

    assert result.deleted == 21 and count(db, "app_logs") == 20
    db.dispose()


@pytest.mark.parametrize("spelled", ["AuditTrail", '"AuditTrail"'], ids=["plain", "sql-quoted"])
def test_mixed_case_names_are_quoted_exactly_as_written(db, tmp_path, spelled):
    with db.engine.begin() as conn:
        key = "bigserial" if db.is_postgres else "INTEGER"
        conn.execute(
            sa.text(
                f'CREATE TABLE "AuditTrail" ("Id" {key} PRIMARY KEY, "CreatedAt" TIMESTAMP, '
                '"Action" text)'
            )
        )
        now = datetime.now(UTC)
        conn.execute(
            sa.text('INSERT INTO "AuditTrail" ("CreatedAt", "Action") VALUES (:at, :action)'),
            [
                {
                    "at": (now - timedelta(days=days + 0.5))
                    .replace(tzinfo=None)
                    .isoformat(sep=" "),
                    "action": f"a{days}",
                }
                for days in range(10)
            ],
        )
    policy = {"table": spelled, "cutoff_column": "CreatedAt", "retention": "5d"}
    config = settings_for(tmp_path, {**policy, "archive": True})

    result = run_policy(db, config, "logs")

    assert result.deleted == 5  # 5.5 .. 9.5 days old
    assert count(db, '"AuditTrail"') == 5
    assert result.table == "AuditTrail"


@pytest.mark.parametrize(
    ("live", "configured", "key", "suggestion"),
    [
        ("request_logs", {"table": "Request_Logs"}, "table", "request_logs"),
        ('"AuditTrail"', {"table": "audittrail"}, "table", "AuditTrail"),
        ("request_logs", {"table": "request_log"}, "table", "request_logs"),
        ("request_logs", {"table": "request_logs", "cutoff_column": "TS"}, "cutoff_column", "ts"),
    ],
    ids=["table-case", "mixed-case", "table-typo", "column-case"],
)
def test_a_name_that_differs_in_case_is_answered_with_did_you_mean(
    db, tmp_path, live, configured, key, suggestion
):
    create_app_logs(db, table=live)
    config = settings_for(tmp_path, configured)

    with pytest.raises(
        ConfigError, match=rf"policies\.logs\.{key}: .*\(did you mean '{suggestion}'\?\)"
    ):
        run_policy(db, config, "logs")
    check = config_check(db, tmp_path, configured)

    assert check.exit_code == 1
    assert "Traceback" not in check.output
    assert f"(did you mean '{suggestion}'?)" in check.output
    assert count(db, live) == 41


@pytest.mark.postgres
def test_a_table_of_another_schema_is_suggested_with_its_schema(pg_url, other_schema, tmp_path):
    db = AppDatabase(pg_url)
    create_app_logs(db, table=f'"{other_schema}".sessions')

    with pytest.raises(ConfigError, match=rf"\(did you mean .*'{other_schema}\.sessions'"):
        run_policy(db, settings_for(tmp_path, {"table": "sessions"}), "logs")
    db.dispose()


def _create_view(db, kind):
    create_app_logs(db)
    with db.engine.begin() as conn:
        conn.execute(sa.text(f"CREATE {kind} recent_logs AS SELECT * FROM app_logs"))


def test_a_view_as_a_policy_table_is_refused_with_the_reason_before_anything_runs(db, tmp_path):
    _create_view(db, "VIEW")
    reason = "is a view: rows are deleted from tables"

    with pytest.raises(ConfigError, match=rf"policies\.logs\.table: 'recent_logs' {reason}"):
        run_policy(db, settings_for(tmp_path, {"table": "recent_logs", "archive": True}), "logs")
    check = config_check(db, tmp_path, {"table": "recent_logs"})

    assert check.exit_code == 1 and reason in check.output
    assert count(db, "app_logs") == 41
    assert not (tmp_path / "archive" / "recent_logs").exists()


@pytest.mark.postgres
def test_a_materialized_view_as_a_policy_table_is_refused(pg_url, tmp_path):
    db = AppDatabase(pg_url)
    _create_view(db, "MATERIALIZED VIEW")

    with pytest.raises(ConfigError, match=r"'recent_logs' is a materialized view: it is rebuilt"):
        run_policy(db, settings_for(tmp_path, {"table": "recent_logs"}), "logs")
    db.dispose()


@pytest.mark.postgres
def test_a_foreign_table_as_a_policy_table_is_refused(postgres_server, tmp_path):
    # file_fdw: a foreign table without a second server; a database of its own for the extension.
    with database_in_time_zone(postgres_server, "UTC") as url:
        db = AppDatabase(fresh_schema(url))
        create_app_logs(db)
        with db.engine.begin() as conn:
            conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS file_fdw"))
            conn.execute(sa.text("CREATE SERVER files FOREIGN DATA WRAPPER file_fdw"))
            conn.execute(
                sa.text(
                    "CREATE FOREIGN TABLE logs_file (id bigint, ts timestamp) SERVER files "
                    "OPTIONS (filename '/dev/null', format 'csv')"
                )
            )

        with pytest.raises(ConfigError, match=r"'logs_file' is a foreign table"):
            run_policy(db, settings_for(tmp_path, {"table": "logs_file"}), "logs")
        db.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("spelling", ["dotted", "schema_key"])
def test_a_rollup_reads_its_source_from_the_schema_the_config_names(
    pg_url, other_schema, tmp_path, spelling
):
    db = AppDatabase(pg_url)
    hour = datetime(2026, 11, 20, 3, tzinfo=UTC)
    for table, rows in (("request_logs", 7), (f'"{other_schema}".request_logs', 12)):
        with db.engine.begin() as conn:
            conn.execute(
                sa.text(
                    f"CREATE TABLE {table} (id bigserial primary key, ts timestamptz, method text, "
                    "route text, status_code integer, duration_ms double precision)"
                )
            )
            conn.execute(
                sa.text(
                    f"INSERT INTO {table} (ts, method, route, status_code, duration_ms) "
                    "VALUES (:ts, 'GET', '/x', 200, 5)"
                ),
                [{"ts": hour + timedelta(minutes=index)} for index in range(rows)],
            )
    source = (
        {"table": f"{other_schema}.request_logs"}
        if spelling == "dotted"
        else {"table": "request_logs", "schema": other_schema}
    )
    settings = make_settings(tmp_path, sources={"request_logs": source})
    store = make_store(settings)

    result = refresh_requests(db, store, settings, hour, hour + timedelta(hours=1))

    assert result.rows_read == 12
    db.dispose()


def test_a_view_is_a_valid_rollup_source(db, tmp_path):
    hour = datetime(2026, 11, 20, 3, tzinfo=UTC)
    with db.engine.begin() as conn:
        stamp = "timestamptz" if db.is_postgres else "TIMESTAMP"
        conn.execute(
            sa.text(
                f"CREATE TABLE http_log (id integer primary key, at {stamp}, verb text, "
                "path text, code integer, ms double precision)"
            )
        )
        conn.execute(
            sa.text("INSERT INTO http_log VALUES (:id, :at, 'GET', '/x', 200, 5)"),
            [
                {
                    "id": index,
                    "at": (hour + timedelta(minutes=index)).replace(tzinfo=None).isoformat(sep=" ")
                    if not db.is_postgres
                    else hour + timedelta(minutes=index),
                }
                for index in range(9)
            ],
        )
        conn.execute(
            sa.text(
                "CREATE VIEW request_view AS SELECT at AS ts, verb AS method, path AS route, "
                "code AS status_code, ms AS duration_ms FROM http_log"
            )
        )
    settings = make_settings(tmp_path, sources={"request_logs": {"table": "request_view"}})

    result = refresh_requests(db, make_store(settings), settings, hour, hour + timedelta(hours=1))

    assert result.rows_read == 9


def test_a_source_table_that_differs_in_case_is_answered_with_did_you_mean(db, tmp_path):
    create_app_logs(db, table="request_logs")
    settings = make_settings(tmp_path, sources={"request_logs": {"table": "Request_Logs"}})
    hour = datetime(2026, 11, 20, 3, tzinfo=UTC)

    with pytest.raises(
        SourceError,
        match=r"analytics\.sources\.request_logs\.table: .*\(did you mean 'request_logs'\?\)",
    ):
        refresh_requests(db, make_store(settings), settings, hour, hour + timedelta(hours=1))


@pytest.mark.postgres
def test_whole_partitions_of_a_schema_qualified_table_are_dropped(pg_url, other_schema, tmp_path):
    db = AppDatabase(pg_url)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    parent = f'"{other_schema}".logs'
    with db.engine.begin() as conn:
        conn.execute(
            sa.text(
                f"CREATE TABLE {parent} (id bigint generated by default as identity, "
                "ts timestamptz NOT NULL, PRIMARY KEY (id, ts)) PARTITION BY RANGE (ts)"
            )
        )
        conn.execute(sa.text(f"CREATE INDEX ON {parent} (ts)"))
        for offset in range(-6, 2):
            start = today + timedelta(days=offset)
            conn.execute(
                sa.text(
                    f'CREATE TABLE "{other_schema}".logs_p{start:%Y%m%d} PARTITION OF {parent} '
                    f"FOR VALUES FROM ('{start.isoformat()}') "
                    f"TO ('{(start + timedelta(days=1)).isoformat()}')"
                )
            )
        conn.execute(
            sa.text(f"INSERT INTO {parent} (ts) VALUES (:ts)"),
            # Day -3 holds the cutoff (now - 3 days) itself: a row there would be expired or
            # not by the time of day the test runs, so it stays empty.
            [{"ts": today + timedelta(days=offset, hours=12)} for offset in (-6, -5, -4, -2, -1)],
        )
    config = settings_for(
        tmp_path, {"table": f"{other_schema}.logs", "retention": "3d", "archive": True}
    )

    result = run_policy(db, config, "logs")

    assert result.partitions_dropped == 3  # days -6 .. -4 end before now - 3 days
    assert result.deleted == result.archived_rows == 3
    assert count(db, parent) == 2
    db.dispose()


def test_table_stats_snapshot_a_schema_qualified_table(db, tmp_path):
    table = "main.app_logs" if not db.is_postgres else "app_logs"
    create_app_logs(db)
    if db.is_postgres:
        with db.connect() as conn:
            table = f"{conn.execute(sa.text('SELECT current_schema()')).scalar_one()}.app_logs"
    config = settings_for(tmp_path, {"table": table})
    settings = make_settings(tmp_path)
    store = make_store(settings)

    snapshot_table_stats(db, store, config)
    publish(store, settings)

    row = query(settings, "SELECT * FROM table_stats").iloc[0]
    assert (row.table_name, row.rows, row.expired_rows) == (table, 41, 21)
    if db.is_postgres:
        assert row.total_bytes > 0


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ('"AuditTrail"', TableName("AuditTrail")),
        ('"App"."Audit.Trail"', TableName("Audit.Trail", "App")),
        ('app."v1.sessions"', TableName("v1.sessions", "app")),
        ("AuditTrail", TableName("AuditTrail")),
    ],
)
def test_names_copied_from_sql_keep_their_quoted_parts_exactly(written, expected):
    config = parse_config(
        {
            "policies": {
                "logs": {
                    "kind": "age",
                    "table": written,
                    "cutoff_column": '"CreatedAt"',
                    "retention": "1d",
                }
            }
        }
    )

    assert config.policies["logs"].table == expected
    assert TableName.parse(str(expected)) == expected
    assert config.policies["logs"].cutoff_column == "CreatedAt"
