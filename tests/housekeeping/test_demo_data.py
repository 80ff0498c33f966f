"""The demo data generator: the reference schema, realistic rows, incidents, and safe re-seeding."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pytest
import sqlalchemy as sa

from housekeeping.database import AppDatabase
from housekeeping.demo.incidents import IncidentKind
from housekeeping.demo.load import SeedError
from housekeeping.demo.schema import REFERENCE_TABLES, partition_name
from housekeeping.demo.seed import create_schema, seed_database
from tests.conftest import with_search_path

NOW = datetime(2025, 3, 10, 12, 34, 56, 789012, tzinfo=UTC)
EXPECTED_COLUMNS = {
    "revoked_tokens": ["id", "user_id", "token_hash", "revoked_at", "expires_at"],
    "request_logs": [
        "id", "request_id", "ts", "method", "route", "status_code", "duration_ms", "ip",
        "user_id", "user_agent",
    ],
    "error_logs": ["id", "request_id", "ts", "route", "error_name", "message", "stack"],
    "audit_logs": ["id", "ts", "actor", "action", "target", "ip", "detail"],
    "jobs": [
        "id", "queue", "name", "status", "created_at", "started_at", "finished_at", "attempts",
        "error",
    ],
    "api_usage": [
        "id", "ts", "service_name", "endpoint", "user_id", "response_time_ms", "tokens_used",
        "cost_usd", "success",
    ],
}  # fmt: skip
TIMESTAMP_COLUMNS = {
    "revoked_tokens": ["revoked_at", "expires_at"],
    "request_logs": ["ts"],
    "error_logs": ["ts"],
    "audit_logs": ["ts"],
    "jobs": ["created_at", "started_at", "finished_at"],
    "api_usage": ["ts"],
}
SQLITE_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}$")


@pytest.fixture
def db(app_url):
    database = AppDatabase(app_url)
    yield database
    database.dispose()


def seed_small(url: str, **overrides):
    knobs = {"tokens": 2_000, "requests": 20_000, "days": 2, "seed": 7, "now": NOW}
    return seed_database(url, **(knobs | overrides))


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def seeded(request, tmp_path_factory):
    """One database seeded with ``seed_small()`` per backend, shared by the read-only tests."""
    schema = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('seeded') / 'app.db'}"
    else:
        server = request.getfixturevalue("postgres_server")
        schema = f"hk_test_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        url = with_search_path(server, schema)
    summary = seed_small(url)
    database = AppDatabase(url)
    yield database, summary
    database.dispose()
    if schema:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def scalar(db: AppDatabase, query: str, **params):
    with db.connect() as conn:
        return conn.execute(sa.text(query), params).scalar_one()


def rows(db: AppDatabase, query: str, **params) -> list[tuple]:
    with db.connect() as conn:
        return [tuple(row) for row in conn.execute(sa.text(query), params)]


def counts_per_table(db: AppDatabase) -> dict[str, int]:
    return {table: scalar(db, f"SELECT count(*) FROM {table}") for table in REFERENCE_TABLES}


def requests_between(db: AppDatabase, start: datetime, end: datetime) -> list[tuple]:
    return rows(
        db,
        "SELECT route, status_code, duration_ms FROM request_logs WHERE ts >= :start AND ts < :end",
        start=db.bind_timestamp(start),
        end=db.bind_timestamp(end),
    )


def test_create_schema_makes_the_reference_tables_and_indexes(db, app_url):
    create_schema(app_url)

    for table, columns in EXPECTED_COLUMNS.items():
        info = db.table_info(table)
        assert list(info.columns) == columns, table
        assert info.primary_key == ("id",)
        assert all(info.columns[name].is_timestamp for name in TIMESTAMP_COLUMNS[table])
        assert scalar(db, f"SELECT count(*) FROM {table}") == 0
    assert {"expires_at", "user_id"} <= db.table_info("revoked_tokens").indexed_leading_columns
    assert {"status", "queue"} <= db.table_info("jobs").indexed_leading_columns
    for table in ("request_logs", "error_logs", "audit_logs", "api_usage"):
        assert "ts" in db.table_info(table).indexed_leading_columns


def test_postgres_schema_uses_identity_timestamptz_double_and_boolean(pg_url):
    create_schema(pg_url)

    with psycopg.connect(pg_url) as conn:
        types = dict(
            conn.execute(
                "SELECT table_name || '.' || column_name, data_type || "
                "CASE WHEN is_identity = 'YES' THEN ' identity' ELSE '' END "
                "FROM information_schema.columns WHERE table_schema = current_schema()"
            ).fetchall()
        )
    assert types["revoked_tokens.id"] == "bigint identity"
    assert types["revoked_tokens.expires_at"] == "timestamp with time zone"
    assert types["request_logs.duration_ms"] == "double precision"
    assert types["api_usage.cost_usd"] == "double precision"
    assert types["api_usage.success"] == "boolean"


def test_row_counts_follow_the_knobs_and_error_logs_follow_the_5xx(seeded):
    db, summary = seeded

    actual = counts_per_table(db)
    assert summary.row_counts == actual
    assert actual["revoked_tokens"] == 2_000
    assert actual["request_logs"] == 20_000
    assert actual["audit_logs"] == 20_000 // 50
    assert actual["jobs"] == 20_000 // 20
    assert actual["api_usage"] == 20_000 // 10
    assert actual["error_logs"] == scalar(
        db, "SELECT count(*) FROM request_logs WHERE status_code >= 500"
    )
    orphans = scalar(
        db,
        "SELECT count(*) FROM error_logs e WHERE NOT EXISTS (SELECT 1 FROM request_logs r "
        "WHERE r.request_id = e.request_id AND r.status_code >= 500)",
    )
    assert orphans == 0


def test_every_generated_time_lies_in_the_range_except_token_expiry(seeded):
    db, summary = seeded

    assert summary.now == NOW
    assert summary.start == NOW - timedelta(days=2)
    earliest, latest = db.bind_timestamp(summary.start), db.bind_timestamp(NOW)
    for table, columns in TIMESTAMP_COLUMNS.items():
        for column in columns:
            if column == "expires_at":
                continue
            outside = scalar(
                db,
                f"SELECT count(*) FROM {table} WHERE {column} < :earliest OR {column} > :latest",
                earliest=earliest,
                latest=latest,
            )
            assert outside == 0, f"{table}.{column}"
    assert scalar(db, "SELECT count(*) FROM revoked_tokens WHERE expires_at > :now", now=latest)


def test_token_expiry_is_not_in_insertion_order_and_three_quarters_expired(db, app_url):
    seed_small(app_url, tokens=5_000, requests=0, days=30)

    tokens = rows(
        db, "SELECT id, revoked_at, expires_at, token_hash FROM revoked_tokens ORDER BY id"
    )
    revoked = [db.read_timestamp(row[1]) for row in tokens]
    expires = np.array([db.read_timestamp(row[2]).timestamp() for row in tokens])
    assert revoked == sorted(revoked)
    decreasing = np.mean(np.diff(expires) < 0)
    assert 0.35 < decreasing < 0.65
    expired = np.mean(expires < NOW.timestamp())
    assert 0.65 < expired < 0.85
    assert all(re.fullmatch(r"[0-9a-f]{64}", row[3]) for row in tokens)


def test_sqlite_stores_every_timestamp_as_utc_text_with_six_fractional_digits(sqlite_url):
    seed_small(sqlite_url)

    db = AppDatabase(sqlite_url)
    for table, columns in TIMESTAMP_COLUMNS.items():
        for column in columns:
            values = [
                value for (value,) in rows(db, f"SELECT {column} FROM {table}") if value is not None
            ]
            assert values, f"{table}.{column}"
            assert all(SQLITE_TIMESTAMP.match(value) for value in values), f"{table}.{column}"
    newest = scalar(db, "SELECT max(ts) FROM request_logs")
    assert newest <= NOW.strftime("%Y-%m-%d %H:%M:%S.%f")
    db.dispose()


def test_error_burst_is_over_ten_percent_5xx_concentrated_on_one_route(seeded):
    db, summary = seeded
    burst = summary.incident(IncidentKind.ERROR_BURST)

    window = requests_between(db, burst.start, burst.end)
    failed = [route for route, status, _ in window if status >= 500]
    assert burst.end - burst.start == timedelta(minutes=20)
    assert len(failed) / len(window) > 0.10
    assert failed.count(burst.route) / len(failed) > 0.8
    day_before = requests_between(db, burst.start - timedelta(hours=12), burst.start)
    assert np.mean([status >= 500 for _, status, _ in day_before]) < 0.02


def test_slow_period_has_p95_latency_over_two_seconds(seeded):
    db, summary = seeded
    slow = summary.incident(IncidentKind.SLOW_PERIOD)

    window = requests_between(db, slow.start, slow.end)
    before = requests_between(db, slow.start - timedelta(hours=6), slow.start)
    assert np.percentile([duration for *_, duration in window], 95) > 2_000
    assert np.percentile([duration for *_, duration in before], 95) < 500
    assert np.median([duration for *_, duration in before]) < 200


def test_traffic_gap_has_no_request_logs_but_traffic_around_it(seeded):
    db, summary = seeded
    gap = summary.incident(IncidentKind.TRAFFIC_GAP)

    assert gap.end - gap.start >= timedelta(minutes=15)
    assert requests_between(db, gap.start, gap.end) == []
    assert requests_between(db, gap.start - timedelta(minutes=10), gap.start)
    assert requests_between(db, gap.end, gap.end + timedelta(minutes=10))


def test_rate_limit_burst_has_over_twenty_percent_429s(seeded):
    db, summary = seeded
    burst = summary.incident(IncidentKind.RATE_LIMIT_BURST)

    window = requests_between(db, burst.start, burst.end)
    assert np.mean([status == 429 for _, status, _ in window]) > 0.20


def test_jobs_have_a_stuck_job_a_backlog_and_a_failure_streak(seeded):
    db, summary = seeded
    stuck = summary.incident(IncidentKind.STUCK_JOB)
    streak = summary.incident(IncidentKind.JOB_FAILURE_STREAK)

    by_status = dict(rows(db, "SELECT status, count(*) FROM jobs GROUP BY status"))
    assert set(by_status) == {"waiting", "active", "completed", "failed", "delayed"}
    assert by_status["completed"] > 0.9 * sum(by_status.values())
    assert by_status["waiting"] + by_status["delayed"] >= 3
    two_hours_ago = db.bind_timestamp(NOW - timedelta(hours=2))
    stuck_jobs = rows(
        db,
        "SELECT started_at FROM jobs WHERE status = 'active' AND started_at < :cutoff",
        cutoff=two_hours_ago,
    )
    assert [db.read_timestamp(started) for (started,) in stuck_jobs] == [stuck.start]
    unfinished_with_end = scalar(
        db,
        "SELECT count(*) FROM jobs WHERE finished_at IS NOT NULL "
        "AND status NOT IN ('completed', 'failed')",
    )
    assert unfinished_with_end == 0
    assert scalar(db, "SELECT count(*) FROM jobs WHERE status = 'failed' AND error IS NULL") == 0
    outcomes = rows(
        db,
        "SELECT status FROM jobs WHERE queue = 'webhooks' AND created_at >= :start "
        "AND created_at < :end ORDER BY id",
        start=db.bind_timestamp(streak.start),
        end=db.bind_timestamp(streak.end),
    )
    assert len(outcomes) >= 3
    assert {status for (status,) in outcomes} == {"failed"}


def test_seeding_a_populated_database_without_reset_names_the_table_and_changes_nothing(
    db, app_url
):
    seed_small(app_url)
    before = counts_per_table(db)
    tokens_before = rows(db, "SELECT * FROM revoked_tokens ORDER BY id")

    with pytest.raises(SeedError, match=r"revoked_tokens.*reset"):
        seed_small(app_url, seed=8, tokens=10)

    assert counts_per_table(db) == before
    assert rows(db, "SELECT * FROM revoked_tokens ORDER BY id") == tokens_before


def test_the_refusal_names_whichever_table_holds_rows(db, app_url):
    create_schema(app_url)
    with db.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO jobs (queue, name, status, created_at, attempts) "
                "VALUES ('emails', 'send_receipt', 'waiting', :now, 0)"
            ),
            {"now": db.bind_timestamp(NOW)},
        )

    with pytest.raises(SeedError, match="table jobs"):
        seed_small(app_url)

    assert scalar(db, "SELECT count(*) FROM jobs") == 1


def test_reset_drops_and_refills_the_tables(db, app_url):
    seed_small(app_url)

    summary = seed_small(app_url, tokens=300, requests=1_000, reset=True)

    assert counts_per_table(db) == summary.row_counts
    assert summary.row_counts["revoked_tokens"] == 300
    assert summary.row_counts["request_logs"] == 1_000


def test_empty_reference_tables_are_seeded_without_reset(db, app_url):
    create_schema(app_url)

    summary = seed_small(app_url)

    assert counts_per_table(db) == summary.row_counts


def test_same_seed_and_now_give_the_same_rows(db, app_url):
    knobs = {"tokens": 500, "requests": 5_000}
    seed_small(app_url, **knobs)
    first = {table: rows(db, f"SELECT * FROM {table} ORDER BY id") for table in REFERENCE_TABLES}

    seed_small(app_url, reset=True, **knobs)
    second = {table: rows(db, f"SELECT * FROM {table} ORDER BY id") for table in REFERENCE_TABLES}
    seed_small(app_url, reset=True, seed=8, **knobs)
    other = rows(db, "SELECT * FROM request_logs ORDER BY id")

    assert first == second
    assert other != first["request_logs"]


def test_seeding_with_no_rows_creates_empty_tables_and_no_incidents(db, app_url):
    summary = seed_small(app_url, tokens=0, requests=0)

    assert set(summary.row_counts.values()) == {0}
    assert summary.incidents == ()
    assert counts_per_table(db) == dict.fromkeys(REFERENCE_TABLES, 0)


def test_postgres_ids_continue_after_the_seeded_rows(pg_url):
    seed_small(pg_url, tokens=50, requests=100)

    with psycopg.connect(pg_url) as conn:
        new_id = conn.execute(
            "INSERT INTO revoked_tokens (user_id, token_hash, revoked_at, expires_at) "
            "VALUES (1, 'x', now(), now()) RETURNING id"
        ).fetchone()[0]
    assert new_id == 51


def test_partitioned_request_logs_land_in_daily_partitions(pg_url):
    summary = seed_small(pg_url, days=3, partitioned_request_logs=True)

    with psycopg.connect(pg_url) as conn:
        partitions = [
            name
            for (name,) in conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'request_logs'::regclass ORDER BY c.relname"
            )
        ]
        per_partition = conn.execute(
            "SELECT tableoid::regclass::text, count(*), min(ts), max(ts) FROM request_logs "
            "GROUP BY 1 ORDER BY 1"
        ).fetchall()
        key = conn.execute(
            "SELECT array_agg(a.attname ORDER BY a.attname) FROM pg_index x "
            "JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = ANY(x.indkey) "
            "WHERE x.indrelid = 'request_logs'::regclass AND x.indisprimary"
        ).fetchone()[0]

    first_day = summary.start.replace(hour=0, minute=0, second=0, microsecond=0)
    expected = [partition_name(first_day + timedelta(days=offset)) for offset in range(3 + 1 + 3)]
    assert partitions == expected
    assert sum(count for _, count, _, _ in per_partition) == 20_000
    for name, _, earliest, latest in per_partition:
        day = datetime.strptime(name.removeprefix("request_logs_p"), "%Y%m%d").replace(tzinfo=UTC)
        assert day <= earliest and latest < day + timedelta(days=1)
    assert sorted(key) == ["id", "ts"]


def test_partitioned_request_logs_are_refused_on_sqlite(sqlite_url):
    with pytest.raises(SeedError, match="PostgreSQL"):
        seed_small(sqlite_url, partitioned_request_logs=True)

    assert AppDatabase(sqlite_url).table_names() == []


def test_an_unsupported_url_scheme_is_named_without_the_password():
    with pytest.raises(SeedError, match="mysql") as raised:
        seed_small("mysql://app:s3cret@db.example.com/app")

    assert "s3cret" not in str(raised.value)


@pytest.mark.parametrize(
    ("knob", "value"),
    [("tokens", -1), ("requests", 1.5), ("days", 0), ("now", datetime(2025, 3, 10))],
)
def test_bad_knobs_are_refused_by_name(sqlite_url, knob, value):
    with pytest.raises(SeedError, match=knob):
        seed_small(sqlite_url, **{knob: value})
