"""Naive cutoff columns (timestamp without time zone, SQLite text) are read as wall clock in the
policy's ``timezone`` (default UTC), whatever the session's ``TimeZone``: the count, the dry run,
every delete (archive on and off), the remaining-expired count and the delete-fraction guard
select the same rows."""

from __future__ import annotations

from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
import yaml
from click.testing import CliRunner

from housekeeping.archive import LocalArchiveStore, TableArchive
from housekeeping.cli import main
from housekeeping.config import parse_config
from housekeeping.database import AppDatabase
from housekeeping.policies import RunOptions, SafetyRefusal, run_policy
from tests.support.app_tables import count
from tests.support.zoned_postgres import (
    create_app_logs,
    database_in_time_zone,
    fresh_schema,
    session_time_zone,
    stored_naive,
)

SESSION_ZONES = ["UTC", "Asia/Tokyo", "America/New_York"]


@pytest.fixture(scope="module")
def zoned_servers(postgres_server):
    """One database per session time zone (``ALTER DATABASE ... SET timezone``), made on demand."""
    with ExitStack() as stack:
        made: dict[str, str] = {}

        def url_for(zone: str) -> str:
            if zone not in made:
                made[zone] = stack.enter_context(database_in_time_zone(postgres_server, zone))
            return made[zone]

        yield url_for


@pytest.fixture(
    params=[("sqlite", None)] + [("postgres", zone) for zone in SESSION_ZONES],
    ids=lambda param: param[0] if param[1] is None else f"postgres-{param[1]}",
)
def db(request, tmp_path):
    """The application database: SQLite, and PostgreSQL in each session time zone."""
    backend, zone = request.param
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'app.db'}"
    else:
        url = fresh_schema(request.getfixturevalue("zoned_servers")(zone))
    database = AppDatabase(url)
    if zone is not None:
        assert session_time_zone(database) == zone
    yield database
    database.dispose()


def config(tmp_path, policy, *, max_delete_fraction=1.0):
    return parse_config(
        {
            "archive": {"root": str(tmp_path / "archive")},
            "safety": {"max_delete_fraction": max_delete_fraction},
            "batch": {"initial_size": 8, "min_size": 4, "max_size": 16},
            "policies": {"app_logs": {"table": "app_logs", "cutoff_column": "ts", **policy}},
        }
    )


# Each kind, set so that the rows older than now - 30 days go (21 of 41), and a jobs policy whose
# keep-last (the newest 10 of the queue) decides instead: 31 go.
KINDS = {
    "expired": ({"kind": "expired", "grace": "30d"}, 21),
    "age": ({"kind": "age", "retention": "30d"}, 21),
    "jobs": (
        {
            "kind": "jobs",
            "status_column": "status",
            "statuses": {"completed": {"retention": "30d"}},
        },
        21,
    ),
    "jobs-keep-last": (
        {
            "kind": "jobs",
            "status_column": "status",
            "queue_column": "queue",
            "statuses": {"completed": {"retention": "30d", "keep_last": 10}},
        },
        31,
    ),
}


def kept_messages(db):
    with db.connect() as conn:
        return conn.execute(sa.text("SELECT message FROM app_logs ORDER BY ts")).scalars().all()


@pytest.mark.parametrize("archive", [True, False], ids=["archive", "no-archive"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_each_kind_counts_deletes_and_archives_the_same_rows_whatever_the_session_time_zone(
    db, tmp_path, kind, archive
):
    policy, expected = KINDS[kind]
    older = create_app_logs(db)
    assert older == 21
    settings = config(tmp_path, {**policy, "archive": archive})

    dry = run_policy(db, settings, "app_logs", options=RunOptions(dry_run=True))
    result = run_policy(db, settings, "app_logs")
    again = run_policy(db, settings, "app_logs")

    assert dry.expected_deleted == expected and dry.table_rows == 41
    assert result.expected_deleted == expected
    assert result.deleted == expected
    assert result.remaining_expired == 0
    assert count(db, "app_logs") == 41 - expected
    # the newest rows stay: m<expected> .. m40
    assert kept_messages(db) == [f"m{index}" for index in range(expected, 41)]
    assert again.expected_deleted == 0 and again.deleted == 0 and again.remaining_expired == 0
    if archive:
        archived = TableArchive(LocalArchiveStore(tmp_path / "archive"), "app_logs", "ts")
        assert result.archived_rows == expected
        assert sorted(archived.read_all().column("message").to_pylist()) == sorted(
            f"m{index}" for index in range(expected)
        )
    else:
        assert result.archived_rows == 0


@pytest.mark.parametrize("kind", list(KINDS))
def test_naive_values_written_in_another_zone_are_read_in_the_policy_timezone(db, tmp_path, kind):
    policy, expected = KINDS[kind]
    create_app_logs(db, zone="Asia/Tokyo")
    settings = config(tmp_path, {**policy, "timezone": "Asia/Tokyo", "archive": True})

    dry = run_policy(db, settings, "app_logs", options=RunOptions(dry_run=True))
    result = run_policy(db, settings, "app_logs")

    assert dry.expected_deleted == expected
    assert result.deleted == expected and result.archived_rows == expected
    assert result.remaining_expired == 0
    assert kept_messages(db) == [f"m{index}" for index in range(expected, 41)]


@pytest.mark.parametrize("archive", [True, False], ids=["archive", "no-archive"])
def test_the_delete_fraction_guard_refuses_the_same_run_in_every_session_time_zone(
    db, tmp_path, archive
):
    create_app_logs(db)  # 21 of 41 rows (51 %) are older than 30 days
    policy = {"kind": "age", "retention": "30d", "archive": archive}

    with pytest.raises(SafetyRefusal, match="would delete 21 of 41 rows"):
        run_policy(db, config(tmp_path, policy, max_delete_fraction=0.5), "app_logs")
    assert count(db, "app_logs") == 41

    result = run_policy(db, config(tmp_path, policy, max_delete_fraction=0.52), "app_logs")
    assert result.deleted == 21


@pytest.mark.postgres
@pytest.mark.parametrize("session_zone", ["Asia/Tokyo", "America/New_York"])
def test_a_timestamptz_cutoff_column_holds_instants_and_ignores_the_policy_timezone(
    zoned_servers, tmp_path, session_zone
):
    db = AppDatabase(fresh_schema(zoned_servers(session_zone)))
    centre = datetime.now(UTC) - timedelta(days=30)
    with db.engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE app_logs (id bigserial primary key, ts timestamptz)"))
        conn.execute(
            sa.text("INSERT INTO app_logs (ts) VALUES (:ts)"),
            [{"ts": centre + timedelta(minutes=15) * (index - 20)} for index in range(41)],
        )
    policy = {"kind": "age", "retention": "30d", "timezone": "Asia/Tokyo", "archive": True}

    result = run_policy(db, config(tmp_path, policy), "app_logs")

    assert result.deleted == 21 and result.remaining_expired == 0
    db.dispose()


@pytest.mark.postgres
def test_whole_partitions_of_a_naive_partition_key_expire_by_the_policy_timezone(
    zoned_servers, tmp_path
):
    # Daily partitions at Tokyo midnights, values written as Tokyo wall clock, a New York session.
    db = AppDatabase(fresh_schema(zoned_servers("America/New_York")))
    zone = "Asia/Tokyo"
    now = datetime.now(UTC)
    today = now.astimezone(ZoneInfo(zone)).replace(hour=0, minute=0, second=0, microsecond=0)
    days = [today + timedelta(days=offset) for offset in range(-8, 2)]
    # Every 2 h back from now, skipping anything within 30 min of the 3-day cutoff.
    moments = [
        now - timedelta(hours=hours)
        for hours in range(1, 8 * 24, 2)
        if abs(hours - 72) > 0.5 and now - timedelta(hours=hours) >= days[0]
    ]
    with db.engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE app_logs (id bigint generated by default as identity, "
                "ts timestamp NOT NULL, PRIMARY KEY (id, ts)) PARTITION BY RANGE (ts)"
            )
        )
        conn.execute(sa.text("CREATE INDEX ON app_logs (ts)"))
        for start in days:
            low, high = start.replace(tzinfo=None), (start + timedelta(days=1)).replace(tzinfo=None)
            conn.execute(
                sa.text(
                    f"CREATE TABLE app_logs_p{start:%Y%m%d} PARTITION OF app_logs "
                    f"FOR VALUES FROM ('{low.isoformat()}') TO ('{high.isoformat()}')"
                )
            )
        conn.execute(
            sa.text("INSERT INTO app_logs (ts) VALUES (:ts)"),
            [{"ts": stored_naive(db, moment, zone)} for moment in moments],
        )
    cutoff = now - timedelta(days=3)
    expired = sum(moment < cutoff for moment in moments)
    whole_days = sum(start + timedelta(days=1) <= cutoff for start in days)
    policy = {"kind": "age", "retention": "3d", "timezone": zone, "archive": True}

    result = run_policy(db, config(tmp_path, policy), "app_logs")

    assert result.partitions_dropped == whole_days
    assert result.deleted == expired and result.archived_rows == expired
    assert result.remaining_expired == 0
    assert count(db, "app_logs") == len(moments) - expired
    db.dispose()


def test_config_check_names_the_zone_each_naive_cutoff_column_is_read_in(db, tmp_path):
    create_app_logs(db)
    path = tmp_path / "hk.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "policies": {
                    "app_logs": {
                        "kind": "age",
                        "table": "app_logs",
                        "cutoff_column": "ts",
                        "retention": "30d",
                        "timezone": "Asia/Tokyo",
                    }
                }
            }
        )
    )

    result = CliRunner().invoke(
        main,
        [
            "config",
            "check",
            "--config",
            str(path),
            "--database-url",
            db.url.render_as_string(hide_password=False),
            "--section",
            "policies",
        ],
    )

    assert "read as wall clock in Asia/Tokyo (policies.app_logs.timezone)" in result.output
