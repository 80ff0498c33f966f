"""The rollup extract over ``analytics.extract_workers`` connections (one COPY per UTC hour, each
worker grouping what it reads) publishes exactly what one worker does; the first failing piece
stops every worker with a one-line error and nothing is published; naive timestamps across a
clock change are read once each."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote
from zoneinfo import ZoneInfo

import duckdb
import psycopg
import pytest
from psycopg import sql

from analytics.extract import (
    APPLICATION_NAME,
    ColumnKind,
    Source,
    SourceColumn,
    TimeRange,
    check_source,
    copy_pieces,
    read_pieces,
    stream_rows,
)
from analytics.rollups.engine import duckdb_session, load_stream
from analytics.rollups.requests import (
    ALIASES,
    MINUTE_GROUPS_SQL,
    refresh_requests,
    request_logs_source,
    sketch_minutes,
)
from housekeeping.config import ConfigError
from housekeeping.database import AppDatabase, DatabaseError, libpq_url
from housekeeping.sql import TableName
from tests.support.analytics_data import make_settings, make_store
from tests.support.roles import role_database

START = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)
HOURS = 6
# Rows of the generated request log: every few seconds, routes, methods, statuses and
# durations (some NULL) spread by hashing the row number, a minute cut by each hour bound.
REQUESTS_SQL = """
    INSERT INTO request_logs (ts, method, route, status_code, duration_ms)
    SELECT
        %(start)s::timestamptz + g * interval '3.7 seconds',
        (ARRAY['GET', 'post', 'PUT', NULL])[1 + abs(hashint4(g)) %% 4],
        (ARRAY['/a', '/b/:id', '/c', NULL])[1 + abs(hashint4(g + 7)) %% 4],
        (ARRAY[200, 201, 302, 404, 429, 500, 503, NULL])[1 + abs(hashint4(g + 11)) %% 8],
        CASE WHEN g %% 17 = 0 THEN NULL ELSE (abs(hashint4(g + 13)) %% 100000) / 37.0 END
    FROM generate_series(0, %(rows)s - 1) AS g
"""


def create_request_logs(conn: psycopg.Connection, ts_type: str = "timestamptz") -> None:
    conn.execute(
        f"CREATE TABLE request_logs (id bigserial PRIMARY KEY, ts {ts_type}, method text, "
        "route text, status_code integer, duration_ms double precision)"
    )
    conn.execute("CREATE INDEX request_logs_ts ON request_logs (ts)")


@pytest.fixture
def requests_db(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        create_request_logs(conn)
        conn.execute(REQUESTS_SQL, {"start": START, "rows": int(HOURS * 3600 / 3.7)})
    database = AppDatabase(pg_url)
    yield database
    database.dispose()


def published(root: Path) -> list[tuple]:
    """Every published requests_minute row, in one order."""
    files = sorted((root / "requests_minute").glob("*.parquet"))
    assert files, f"nothing published under {root}"
    paths = ", ".join(f"'{path}'" for path in files)
    with duckdb.connect() as connection:
        return connection.execute(
            f"SELECT * FROM read_parquet([{paths}]) ORDER BY minute, route, method"
        ).fetchall()


def backfill(db: AppDatabase, tmp_path: Path, name: str, workers: int, start, end, **sections):
    settings = make_settings(tmp_path / name, extract_workers=workers, **sections)
    store = make_store(settings)
    result = refresh_requests(db, store, settings, start, end)
    return result, settings


@pytest.mark.postgres
@pytest.mark.parametrize("workers", [2, 5])
def test_parallel_backfill_publishes_exactly_what_one_worker_does(requests_db, tmp_path, workers):
    # From mid-hour to mid-hour: part-hour pieces at both ends.
    start, end = START + timedelta(minutes=30), START + timedelta(hours=HOURS - 1, minutes=10)
    one, one_settings = backfill(requests_db, tmp_path, "one", 1, start, end)
    many, many_settings = backfill(requests_db, tmp_path, "many", workers, start, end)

    with psycopg.connect(libpq_url(requests_db.url)) as conn:
        expected = conn.execute(
            "SELECT count(*) FROM request_logs WHERE ts >= %s AND ts < %s", (start, end)
        ).fetchone()[0]
    assert one.rows_read == many.rows_read == expected > 4000
    assert one.partitions == many.partitions
    rows = published(many_settings.root_path)
    # Counts, sums, min/max and the sketches (sorted bucket counts) are exact, not close.
    assert rows == published(one_settings.root_path)
    keys = [(row[0], row[1], row[2]) for row in rows]
    assert len(keys) == len(set(keys))


@pytest.mark.postgres
def test_sketches_counted_per_piece_are_those_of_one_pass_over_all_rows(requests_db, tmp_path):
    # The workers count each hour's sketches and the merge sums them; the reference is one COPY
    # grouped in one pass with the sketches counted by sketch_sql (the archive path's way).
    start, end = START + timedelta(minutes=30), START + timedelta(hours=HOURS - 1, minutes=10)
    _, settings = backfill(requests_db, tmp_path, "pieces", 2, start, end)
    source = check_source(requests_db, request_logs_source(settings))
    stream = stream_rows(requests_db, source, ALIASES, [TimeRange("ts", start, end)], streams=1)
    with duckdb_session() as connection:
        load_stream(connection, stream, source, MINUTE_GROUPS_SQL)
        sketch_minutes(connection)
        expected = connection.execute(
            "SELECT * FROM rollup ORDER BY minute, route, method"
        ).fetchall()

    assert published(settings.root_path) == expected
    assert any(len(row[-1]) > 1 for row in expected)  # sketches of several buckets


@pytest.mark.postgres
def test_each_worker_is_a_connection_of_its_own_named_hk_analytics(requests_db, pg_url):
    schema = requests_db.url.query["options"].split("=", 1)[1]
    source = check_source(requests_db, request_source(f"{schema}.request_logs"))
    pieces = copy_pieces(source, ["ts"], [TimeRange("ts", START, START + timedelta(hours=4))])
    seen: list[int] = []
    barrier = threading.Barrier(2, timeout=30)

    def consume(_worker, reader):
        barrier.wait()  # both workers are inside a COPY of their own now
        with psycopg.connect(pg_url) as conn:
            seen.append(
                conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                    "AND query LIKE %s",
                    (APPLICATION_NAME, f'%"{schema}"."request_logs"%'),
                ).fetchone()[0]
            )
        reader.read_all()
        barrier.wait()

    read_pieces(requests_db, source, pieces[:2], 2, consume)
    assert len(pieces) == 4 and seen == [2, 2]


def request_source(table: str) -> Source:
    key = "analytics.sources.request_logs"
    return Source(
        TableName.of(table),
        key,
        (
            SourceColumn("ts", "ts", ColumnKind.TIMESTAMP, f"{key}.ts"),
            SourceColumn("id", "id", ColumnKind.INTEGER, f"{key}.id"),
        ),
    )


@pytest.mark.postgres
def test_the_first_failing_piece_stops_every_worker_and_no_further_piece_starts(requests_db):
    source = check_source(requests_db, request_source("request_logs"))
    pieces = copy_pieces(source, ["id"], [TimeRange("ts", START, START + timedelta(hours=HOURS))])
    stop = threading.Event()
    started: list[int] = []
    all_started = threading.Barrier(3, timeout=30)

    def consume(worker, reader):
        started.append(worker)
        all_started.wait()
        if worker == 0:
            raise RuntimeError("piece 0 cannot be grouped")
        stop.wait(30)  # the others read on only after the failure stopped them
        reader.read_all()

    with pytest.raises(RuntimeError, match="^piece 0 cannot be grouped$"):
        read_pieces(requests_db, source, pieces, 3, consume, stop)
    assert len(pieces) == HOURS and sorted(started) == [0, 1, 2]


@pytest.fixture
def hourly_partitions(pg_url):
    """request_logs partitioned per UTC hour, whose sessions wait for a lock at most 300 ms."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE request_logs (id bigint, ts timestamptz NOT NULL, method text, "
            "route text, status_code integer, duration_ms double precision) PARTITION BY RANGE (ts)"
        )
        for hour in range(HOURS):
            conn.execute(
                sql.SQL(
                    "CREATE TABLE {} PARTITION OF request_logs FOR VALUES FROM ({}) TO ({})"
                ).format(
                    sql.Identifier(f"request_logs_{hour}"),
                    sql.Literal(START + timedelta(hours=hour)),
                    sql.Literal(START + timedelta(hours=hour + 1)),
                )
            )
        conn.execute("CREATE INDEX ON request_logs (ts)")
        conn.execute(REQUESTS_SQL, {"start": START, "rows": int(HOURS * 3600 / 3.7)})
    # Its own options: libpq takes one; the table is named with its schema in the settings.
    schema = pg_url.split("search_path%3D", 1)[1]
    database = AppDatabase(pg_url.split("?", 1)[0] + "?options=" + quote("-clock_timeout=300"))
    yield database, pg_url, f"{schema}.request_logs"
    database.dispose()


@pytest.mark.postgres
def test_a_piece_the_database_refuses_stops_the_backfill_with_one_line_and_publishes_nothing(
    hourly_partitions, tmp_path
):
    db, pg_url, table = hourly_partitions
    start, end = START, START + timedelta(hours=HOURS)
    sources = {"request_logs": {"table": table}}
    _, settings = backfill(db, tmp_path, "store", 3, start, end, sources=sources)
    before = {
        path: path.read_bytes() for path in (settings.root_path / "requests_minute").iterdir()
    }
    with psycopg.connect(pg_url, autocommit=True) as conn:  # more requests in hours 0 and 5
        conn.execute(REQUESTS_SQL, {"start": START, "rows": 500})
        conn.execute(REQUESTS_SQL, {"start": START + timedelta(hours=HOURS - 1), "rows": 500})

    with psycopg.connect(pg_url) as locker:  # holds hour 4 until the backfill gave up
        locker.execute("LOCK TABLE request_logs_4 IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(DatabaseError) as caught:
            refresh_requests(db, make_store(settings), settings, start, end)

    message = str(caught.value)
    assert message.startswith(f"reading {table}: ") and "lock timeout" in message
    assert "\n" not in message
    after = {path: path.read_bytes() for path in (settings.root_path / "requests_minute").iterdir()}
    assert after == before  # not one hour file replaced, though hours 0 and 5 have more rows


# Europe/Berlin's autumn change: at 01:00 UTC the clocks go from 03:00 back to 02:00, so the
# readings 02:00-02:59 occur twice. In spring (01:00 UTC) they jump from 02:00 to 03:00.
BERLIN = ZoneInfo("Europe/Berlin")
AUTUMN = datetime(2026, 10, 25, 0, 0, tzinfo=UTC)
SPRING = datetime(2026, 3, 29, 0, 0, tzinfo=UTC)


@pytest.fixture
def naive_berlin(pg_url):
    """request_logs with naive readings of Berlin clocks: every minute of the autumn night as a
    clock shows it (02:00-02:59 twice), and the spring night's readings 01:00-04:59 including
    the skipped hour (a writer that ignores the change)."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        create_request_logs(conn, "timestamp without time zone")
        autumn = [AUTUMN + timedelta(minutes=minute) for minute in range(-60, 300)]
        readings = [moment.astimezone(BERLIN).replace(tzinfo=None) for moment in autumn]
        readings += [datetime(2026, 3, 29, 1, 0) + timedelta(minutes=m) for m in range(240)]
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO request_logs (ts, method, route, status_code, duration_ms) "
                "VALUES (%s, 'GET', %s, 200, %s)",
                [
                    (reading, f"/r{index % 3}", 1.0 + index % 50)
                    for index, reading in enumerate(readings)
                ],
            )
    database = AppDatabase(pg_url)
    yield database
    database.dispose()


def berlin_source() -> Source:
    source = request_source("request_logs")
    return Source(source.table, source.config_key, source.columns, "Europe/Berlin")


@pytest.mark.postgres
@pytest.mark.parametrize(
    "start",
    [AUTUMN - timedelta(minutes=30), AUTUMN + timedelta(minutes=30), AUTUMN + timedelta(hours=1)],
)
def test_hour_pieces_of_naive_readings_across_the_autumn_change_read_each_row_once(
    naive_berlin, start
):
    db = naive_berlin
    where = [TimeRange("ts", start, AUTUMN + timedelta(hours=3, minutes=20))]
    single = stream_rows(db, berlin_source(), ["id"], where, streams=1)
    expected = single.reader.read_all().column("id").to_pylist()
    assert expected

    for streams in (2, 4):
        stream = stream_rows(db, berlin_source(), ["id"], where, streams=streams)
        ids = stream.reader.read_all().column("id").to_pylist()
        assert len(ids) == len(set(ids)) and sorted(ids) == sorted(expected)


@pytest.mark.postgres
@pytest.mark.parametrize("day", [AUTUMN, SPRING])
def test_naive_readings_across_a_clock_change_are_counted_once_in_their_minute(
    naive_berlin, tmp_path, day
):
    db = naive_berlin
    start, end = day - timedelta(hours=1), day + timedelta(hours=4)
    sections = {"sources": {"request_logs": {"timezone": "Europe/Berlin"}}}
    results = {}
    for workers in (1, 3):
        settings = make_settings(tmp_path / f"w{workers}", extract_workers=workers, **sections)
        refresh_requests(db, make_store(settings), settings, start, end)
        results[workers] = published(settings.root_path)

    assert results[3] == results[1]
    # Per minute, what PostgreSQL's own AT TIME ZONE makes of the readings (a repeated reading
    # is its later instant, a skipped one is read with the offset before the change).
    with psycopg.connect(libpq_url(db.url)) as conn:
        expected = conn.execute(
            "SELECT minute, route, count(*) FROM (SELECT route, date_trunc('minute', "
            "ts AT TIME ZONE 'Europe/Berlin' AT TIME ZONE 'UTC') AS minute FROM request_logs) r "
            "WHERE minute >= %s AND minute < %s GROUP BY 1, 2 ORDER BY 1, 2",
            (start.replace(tzinfo=None), end.replace(tzinfo=None)),
        ).fetchall()
    assert [(row[0], row[1], row[3]) for row in results[3]] == expected
    assert max(count for _, _, count in expected) > 1  # some minute holds two readings


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "greater than or equal to 1"),
        (33, "less than or equal to 32"),
        ("two", "valid integer"),
        (1.5, "valid integer"),
        (True, "valid integer"),
    ],
)
def test_bad_extract_workers_name_the_key_in_one_line(tmp_path, value, message):
    with pytest.raises(ConfigError) as caught:
        make_settings(tmp_path, extract_workers=value)
    text = str(caught.value)
    assert "analytics.extract_workers: " in text and message in text and "\n" not in text


def test_extract_workers_defaults_to_two(tmp_path):
    assert make_settings(tmp_path).extract_workers == 2


@pytest.mark.postgres
def test_a_connection_limit_below_the_extract_workers_names_the_key_and_publishes_nothing(
    requests_db, postgres_server, tmp_path
):
    settings = make_settings(tmp_path / "store", extract_workers=4)
    with (
        role_database(
            postgres_server, requests_db, "hk_limited", "SELECT", connection_limit=2
        ) as limited,
        pytest.raises(DatabaseError) as caught,
    ):
        refresh_requests(
            limited, make_store(settings), settings, START, START + timedelta(hours=HOURS)
        )
    message = str(caught.value)
    assert "too many connections" in message and "analytics.extract_workers" in message
    assert "\n" not in message
    assert not list(settings.root_path.rglob("*.parquet"))
