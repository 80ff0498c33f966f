"""A long range on an indexed timestamp column is read as one COPY per hour over several
connections: the same rows as one stream, none twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from analytics.extract import ColumnKind, Source, SourceColumn, TimeRange, hour_pieces, stream_rows
from housekeeping.database import AppDatabase
from housekeeping.sql import TableName

START = datetime(2026, 11, 20, 0, 30, tzinfo=UTC)
ROWS = 3000


@pytest.fixture
def pg(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE hits AS SELECT g AS id, "
            "%s::timestamptz + g * interval '7 seconds' AS ts, g %% 5 AS status "
            "FROM generate_series(0, %s) AS g",
            (START - timedelta(hours=1), ROWS - 1),
        )
        conn.execute("CREATE INDEX hits_ts ON hits (ts)")
        conn.execute("CREATE TABLE plain AS SELECT * FROM hits")
    database = AppDatabase(pg_url)
    yield database
    database.dispose()


def source(table: str) -> Source:
    return Source(
        TableName.of(table),
        f"analytics.sources.{table}",
        (
            SourceColumn("id", "id", ColumnKind.INTEGER, f"analytics.sources.{table}.id"),
            SourceColumn("ts", "ts", ColumnKind.TIMESTAMP, f"analytics.sources.{table}.ts"),
        ),
    )


def ids_of(db: AppDatabase, table: str, where: list[TimeRange], streams: int) -> list[int]:
    stream = stream_rows(db, source(table), ["id", "ts"], where, streams=streams)
    return stream.reader.read_all().column("id").to_pylist()


@pytest.mark.postgres
@pytest.mark.parametrize("streams", [2, 3, 8])
def test_hour_pieces_read_by_several_connections_give_every_row_once(pg, streams):
    # From mid-hour to mid-hour: the first and last pieces are part hours.
    where = [TimeRange("ts", START, START + timedelta(hours=4, minutes=10))]
    expected = ids_of(pg, "hits", where, streams=1)
    assert 2000 < len(expected) < ROWS  # rows on both sides of the range are left out

    ids = ids_of(pg, "hits", where, streams=streams)

    assert len(ids) == len(set(ids)) and sorted(ids) == sorted(expected)


@pytest.mark.postgres
def test_only_a_long_bounded_range_on_an_indexed_column_is_cut_into_hours(pg):
    from analytics.extract import check_source

    indexed, plain = check_source(pg, source("hits")), check_source(pg, source("plain"))
    long = [TimeRange("ts", START, START + timedelta(hours=4, minutes=10))]
    pieces = hour_pieces(indexed, long)
    assert [(piece[0].start, piece[0].end) for piece in pieces][:2] == [
        (START, START + timedelta(minutes=30)),
        (START + timedelta(minutes=30), START + timedelta(minutes=90)),
    ]
    assert pieces[-1][0].end == long[0].end and len(pieces) == 5
    # No index: one pass over the table, not one per hour. Short or open ranges: one stream.
    assert hour_pieces(plain, long) == [long]
    assert hour_pieces(indexed, [TimeRange("ts", START, START + timedelta(hours=1))]) == [
        [TimeRange("ts", START, START + timedelta(hours=1))]
    ]
    assert hour_pieces(indexed, [TimeRange("ts", START, None)]) == [[TimeRange("ts", START)]]
