"""Sketches counted per piece and summed give bit-identical rollups to one pass over all rows.

The minute rollup read in pieces counts each piece's latency sketches on the worker that read
it (``group_piece``: ``sketches_of_buckets``) and sums the sketches of a group several pieces
hold (``merge_minute_groups``: ``sum_sketches``). The reference is the single pass the archive
and log-file paths still take: MINUTE_GROUPS_SQL over all rows, sketches by ``sketch_sql``.
"""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from analytics.extract import Source
from analytics.rollups.engine import duckdb_session
from analytics.rollups.requests import (
    MINUTE_GROUPS_SQL,
    group_piece,
    merge_minute_groups,
    sketch_minutes,
)
from analytics.sketch import (
    SKETCH_ARROW_TYPE,
    sketch_sql,
    sketches_of_buckets,
    sum_sketches,
)
from housekeeping.sql import TableName

START = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)
SOURCE = Source(
    TableName(None, "request_logs"),
    "analytics.sources.request_logs",
    (),
)


def generated_rows(rows: int = 30_000, hours: int = 3, seed: int = 16) -> pa.Table:
    """Requests in time order over ``hours``: routes and methods with NULLs, durations with
    NULLs, zeros, negatives, sub-nanosecond and large values."""
    rng = np.random.default_rng(seed)
    offsets = np.sort(rng.integers(0, hours * 3600 * 10**6, rows))
    start_us = int(START.timestamp()) * 10**6
    durations = rng.lognormal(3, 2, rows)
    durations[rng.random(rows) < 0.05] = 0.0
    durations[rng.random(rows) < 0.01] = -1.5
    durations[rng.random(rows) < 0.01] = 1e-9
    duration_values = [None if rng.random() < 0.06 else float(value) for value in durations]

    def choice(options):
        return [options[index] for index in rng.integers(0, len(options), rows)]

    return pa.table(
        {
            "ts": pa.array(start_us + offsets, pa.timestamp("us", tz="UTC")),
            "route": pa.array(choice(["/a", "/b/:id", "/c", None])),
            "method": pa.array(choice(["GET", "post", "PUT", None])),
            "status_code": pa.array(choice([200, 201, 302, 404, 429, 500, None]), pa.int32()),
            "duration_ms": pa.array(duration_values, pa.float64()),
        }
    )


def rollup_rows(connection: duckdb.DuckDBPyConnection) -> list[tuple]:
    return connection.execute("SELECT * FROM rollup ORDER BY minute, route, method").fetchall()


def single_pass(rows: pa.Table) -> list[tuple]:
    with duckdb_session() as connection:
        connection.register("source_rows", rows)
        connection.execute(MINUTE_GROUPS_SQL)
        connection.unregister("source_rows")
        sketch_minutes(connection)
        return rollup_rows(connection)


def in_pieces(pieces: list[pa.Table]) -> tuple[list[tuple], int]:
    """The rollup of ``pieces`` grouped one by one and merged; also how many groups the pieces
    held together (more than the merged rows when a group is in two pieces)."""
    with duckdb_session() as worker:
        worker.execute("SET threads = 1")
        groups = [group_piece(worker, SOURCE, piece) for piece in pieces]
    with duckdb_session() as connection:
        merge_minute_groups(connection, groups)
        sketch_minutes(connection)
        return rollup_rows(connection), sum(table.num_rows for table in groups)


def hour_index(rows: pa.Table, hour: int) -> int:
    """The first row at or after ``hour`` hours past START."""
    moments = rows.column("ts").cast(pa.int64()).to_numpy()
    return int(np.searchsorted(moments, (int(START.timestamp()) + hour * 3600) * 10**6))


def test_hour_pieces_merge_to_exactly_the_single_pass():
    rows = generated_rows()
    bounds = [0, hour_index(rows, 1), hour_index(rows, 2), rows.num_rows]
    pieces = [rows.slice(low, high - low) for low, high in zip(bounds, bounds[1:], strict=False)]

    merged, _ = in_pieces(pieces)

    assert merged == single_pass(rows)
    assert sum(row[3] for row in merged) == rows.num_rows


def test_an_hour_split_across_pieces_merges_to_exactly_the_single_pass():
    rows = generated_rows()
    one, two = hour_index(rows, 1), hour_index(rows, 2)
    middle = (one + two) // 2 + 7  # inside a minute: its groups are in both halves
    # The last hour as every other row: two pieces over the same minutes, out of one order.
    last = rows.slice(two)
    even = last.take(np.arange(0, last.num_rows, 2))
    odd = last.take(np.arange(1, last.num_rows, 2))
    pieces = [
        odd,
        rows.slice(middle, two - middle),
        rows.slice(0, one),
        rows.slice(one, middle - one),
        even,
    ]

    merged, piece_groups = in_pieces(pieces)

    assert piece_groups > len(merged)  # some groups were in two pieces and got summed
    assert merged == single_pass(rows)


def test_pieces_without_rows_merge_to_the_single_pass():
    rows = generated_rows(rows=2_000, hours=1)
    merged, _ = in_pieces([rows.slice(0, 0), rows, rows.slice(0, 0)])
    assert merged == single_pass(rows)


def test_numpy_sketches_are_those_of_sketch_sql():
    rng = np.random.default_rng(7)
    lists = []
    for _ in range(300):
        size = int(rng.integers(0, 60))
        lists.append(
            [None if rng.random() < 0.1 else int(b) for b in rng.integers(-40, 900, size)]
            + ([-32768, 32767] if rng.random() < 0.1 else [])
        )
    array = pa.array(lists, pa.list_(pa.int16()))
    with duckdb.connect() as connection:
        connection.register("lists", pa.table({"buckets": array}))
        expected = connection.execute(f"SELECT {sketch_sql('buckets')} FROM lists").fetchall()

    assert sketches_of_buckets(array).to_pylist() == [row[0] for row in expected]
    # Summing the sketches of two halves of each list gives the sketch of the whole list.
    halves = [
        sketches_of_buckets(pa.array([values[: len(values) // 2] for values in lists], array.type)),
        sketches_of_buckets(pa.array([values[len(values) // 2 :] for values in lists], array.type)),
    ]
    concatenated = pa.array(
        [a + b for a, b in zip(halves[0].to_pylist(), halves[1].to_pylist(), strict=True)],
        SKETCH_ARROW_TYPE,
    )
    assert sum_sketches(concatenated).to_pylist() == [row[0] for row in expected]


def test_a_null_list_is_the_empty_sketch():
    array = pa.array([None, [3, 3], None], pa.list_(pa.int16()))
    assert sketches_of_buckets(array).to_pylist() == [[], [{"bucket": 3, "count": 2}], []]
    sketches = pa.array(
        [None, [{"bucket": 1, "count": 2}, {"bucket": 1, "count": 3}]], SKETCH_ARROW_TYPE
    )
    assert sum_sketches(sketches).to_pylist() == [[], [{"bucket": 1, "count": 5}]]


@pytest.mark.parametrize(
    ("call", "value", "error", "message"),
    [
        (sketches_of_buckets, pa.array([["a"]]), TypeError, "lists of bucket numbers expected"),
        (sketches_of_buckets, pa.array([1, 2]), TypeError, "a list array expected, got Int64Array"),
        (sum_sketches, pa.array([[1]]), TypeError, "sketches of type"),
        (sum_sketches, pa.array([1]), TypeError, "sketches: a list array expected"),
        (
            sum_sketches,
            pa.array(
                [[{"bucket": 1, "count": 2**31 - 1}, {"bucket": 1, "count": 1}]], SKETCH_ARROW_TYPE
            ),
            ValueError,
            "a summed sketch count (2147483648) does not fit INTEGER",
        ),
    ],
)
def test_bad_input_is_named_in_one_line(call, value, error, message):
    with pytest.raises(error, match=None) as raised:
        call(value)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)
