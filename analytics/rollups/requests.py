"""HTTP requests per minute x route x method, with a mergeable latency sketch.

One Parquet file per UTC hour (``requests_minute/<YYYY-MM-DDTHH>.parquet``). A refresh replaces
the minutes of its range and keeps the other minutes of the hours it touches, so the freshness
sensor can refresh the last few minutes of the current hour. A refresh after the request log
retention deleted rows reads them back from the archive, or keeps the published minutes
(``cleaned_up.py``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from analytics.datasets import REQUESTS_MINUTE
from analytics.extract import (
    ColumnKind,
    Source,
    TimeRange,
    check_source,
    copy_pieces,
    read_pieces,
    rows_without,
)
from analytics.logs.errors import refresh_log_errors
from analytics.logs.ingest import (
    ingest_log_files,
    publish_line_counts,
    source_directory,
    staged_files,
)
from analytics.publish import RollupStore
from analytics.rollups.cleaned_up import (
    Cleanup,
    archived_rows,
    load_with_archive,
    stream_with_archive,
)
from analytics.rollups.engine import (
    MINUTE,
    RollupResult,
    check_range,
    conversion_failure,
    duckdb_session,
    hour_keys,
    keep_published_where_lower,
    preview_rows,
    replace_hour_partitions,
    text_or_placeholder,
    timestamp_literal,
)
from analytics.settings import AnalyticsSettings, JsonLinesSource
from analytics.sketch import bucket_sql, sketch_sql, sketches_of_buckets, sum_sketches
from housekeeping.config import HousekeepingConfig
from housekeeping.database import AppDatabase
from housekeeping.sql import sql_string

_DURATION = "CAST(duration_ms AS DOUBLE)"
# The source columns the minute rollup reads, by alias.
ALIASES = ("ts", "route", "method", "status_code", "duration_ms")
# One pass over ``source_rows`` (ts, route, method, status_code, duration_ms) grouped by
# minute x route x method; each group keeps its latency buckets as a plain list (2 bytes a row;
# NULL for a request without duration, which the sketch does not count), counted per bucket
# afterwards. Much cheaper than grouping by bucket too (millions of small hash groups).
MINUTE_GROUPS_SELECT = f"""
    SELECT
        make_timestamp(epoch_us(CAST(ts AS TIMESTAMPTZ)) // 60000000 * 60000000) AS minute,
        {text_or_placeholder("route")} AS route,
        {text_or_placeholder("upper(CAST(method AS VARCHAR))")} AS method,
        count(*) AS requests,
        count_if(status_code BETWEEN 200 AND 299) AS status_2xx,
        count_if(status_code BETWEEN 300 AND 399) AS status_3xx,
        count_if(status_code BETWEEN 400 AND 499) AS status_4xx,
        count_if(status_code BETWEEN 500 AND 599) AS status_5xx,
        count_if(status_code = 429) AS status_429,
        min({_DURATION}) AS latency_min_ms,
        max({_DURATION}) AS latency_max_ms,
        -- whole microseconds: an integer sum is the same in any order, so a re-run writes
        -- identical files (a float sum in parallel is not)
        sum(CAST(round({_DURATION} * 1000) AS BIGINT)) AS latency_sum_us,
        list({bucket_sql(_DURATION)}) AS buckets
    FROM source_rows
    GROUP BY ALL
"""
MINUTE_GROUPS_SQL = f"CREATE TEMP TABLE fine AS {MINUTE_GROUPS_SELECT}"
_COUNTS = ("requests", "status_2xx", "status_3xx", "status_4xx", "status_5xx", "status_429")
# The groups of several pieces (``group_minutes_in_pieces``: MINUTE_GROUPS_SELECT's columns with
# ``latency_sketch`` counted per piece instead of ``buckets``) as one group per minute x route x
# method: a minute can have groups in two pieces (naive timestamps around a clock change; a piece
# bound inside a minute). Sums, min and max are what one pass over all the rows gives, in any
# order; the concatenated sketches are summed per bucket afterwards (``sum_sketches``).
MERGE_PIECE_GROUPS_SELECT = f"""
    SELECT
        minute,
        route,
        method,
        {", ".join(f"CAST(sum({name}) AS BIGINT) AS {name}" for name in _COUNTS)},
        min(latency_min_ms) AS latency_min_ms,
        max(latency_max_ms) AS latency_max_ms,
        CAST(sum(latency_sum_us) AS BIGINT) AS latency_sum_us,
        flatten(list(latency_sketch)) AS latency_sketch,
        count(*) AS pieces
    FROM piece_groups
    GROUP BY minute, route, method
"""


def request_logs_source(settings: AnalyticsSettings) -> Source:
    """The request log table and columns ``analytics.sources.request_logs`` maps."""
    return Source.from_config(
        settings.sources.request_logs,
        "analytics.sources.request_logs",
        {
            "ts": ColumnKind.TIMESTAMP,
            "method": ColumnKind.TEXT,
            "route": ColumnKind.TEXT,
            "status_code": ColumnKind.INTEGER,
            "duration_ms": ColumnKind.NUMBER,
        },
    )


def refresh_requests(
    db: AppDatabase,
    store: RollupStore,
    settings: AnalyticsSettings,
    start: datetime,
    end: datetime,
    *,
    config: HousekeepingConfig | None = None,
    check: bool = True,
) -> RollupResult:
    """Recompute the minute rollups of ``[start, end)`` and replace them in their hour files.

    ``start`` and ``end`` fall on whole minutes. Rows of a touched hour outside the range are
    kept, so the freshness sensor can refresh the last few minutes of the current hour. With
    ``config``, rows its policies archived are read back (``cleaned_up.py``); a minute whose
    recount has fewer requests than published keeps its published rows either way.

    NULLs: a request without ``duration_ms`` counts as a request but not in the latency
    columns; without ``status_code`` it counts in ``status_other``; a NULL route or method is
    ``(none)``; a row without ``ts`` falls in no minute (``rows_without_timestamp``).

    On PostgreSQL without archived rows to add, the rows are read and grouped per UTC hour by
    ``analytics.extract_workers`` workers (``group_minutes_in_pieces``) and merged; the first
    failing hour stops them all and nothing is published. Raises ``SourceError`` (mapping,
    archive) or ``DatabaseError`` ("reading <table>: ..."); ``ValueError`` for a range that is
    not whole minutes.
    """
    check_range(start, end, MINUTE)
    if isinstance(settings.sources.request_logs, JsonLinesSource):
        return refresh_requests_from_log_files(store, settings, start, end)
    started = time.perf_counter()
    source = request_logs_source(settings)
    if check or db.is_postgres:  # the pieces need the live schema: indexes, naive columns
        source = check_source(db, source)
    where = [TimeRange("ts", start, end)]
    in_pieces = db.is_postgres and archived_rows(db, config, source, where) is None
    with duckdb_session(store.root / ".tmp") as connection:
        if in_pieces:
            groups = group_minutes_in_pieces(
                db, source, where, settings.extract_workers, store.root / ".tmp"
            )
            merge_minute_groups(connection, groups)
            from_archive = 0
        else:
            source, stream, archived = stream_with_archive(
                db, config, source, ALIASES, where, streams=settings.extract_workers
            )
            # While the stream is read, one DuckDB thread aggregates and the prefetch thread
            # decodes (and the server produces the rows): more threads contend on two cores.
            connection.execute("SET threads = 1")
            from_archive = load_with_archive(
                connection, stream, source, MINUTE_GROUPS_SQL, archived, where
            )
            connection.execute("RESET threads")
        rows_read, kept, partitions, rows_written, preview = _publish_minutes(
            connection, store, start, end
        )
    return RollupResult(
        REQUESTS_MINUTE.name,
        start,
        end,
        tuple(partitions),
        int(rows_read),
        rows_written,
        time.perf_counter() - started,
        preview,
        rows_from_archive=from_archive,
        kept_from_published=kept,
        kept_reason=(
            f"{kept} minute(s) had fewer requests in {source.table} than published; kept the "
            f"published minutes: {Cleanup.of(config, source.table).kept_why()}"
            if kept
            else ""
        ),
        rows_without_timestamp=rows_without(db, source, "ts"),
    )


def group_minutes_in_pieces(
    db: AppDatabase,
    source: Source,
    where: Sequence[TimeRange],
    workers: int,
    temp_directory: Path | None = None,
) -> list[pa.Table]:
    """The request rows of ``where`` (PostgreSQL; ``source`` checked) grouped per piece.

    The extract is cut into ``copy_pieces`` (one COPY per UTC hour of a long range) and read by
    ``read_pieces`` on ``workers`` connections; each worker groups the pieces it reads
    (MINUTE_GROUPS_SELECT) in a DuckDB of its own with one thread, so reading, decoding and
    grouping run in parallel; the worker also counts each group's latency sketch
    (``sketches_of_buckets``), so no bucket list outlives its piece. Returns each piece's groups (a
    table per piece, MINUTE_GROUPS_SELECT's columns, ``latency_sketch`` in place of ``buckets``) for
    ``merge_minute_groups``; nothing is published. Raises what ``read_pieces`` raises (the first
    failure stops every worker): ``DatabaseError`` "reading <table>: ...", or ``SourceError``
    naming the column of a value that does not convert.
    """
    pieces = copy_pieces(source, ALIASES, where)
    workers = max(1, min(workers, len(pieces)))
    groups: list[pa.Table] = []
    with ExitStack() as stack:
        sessions = [stack.enter_context(duckdb_session(temp_directory)) for _ in range(workers)]
        for session in sessions:
            session.execute("SET threads = 1")

        def consume(worker: int, reader: pa.RecordBatchReader) -> None:
            groups.append(group_piece(sessions[worker], source, reader))

        read_pieces(db, source, pieces, workers, consume)
    return groups


def group_piece(
    session: duckdb.DuckDBPyConnection,
    source: Source,
    rows: pa.RecordBatchReader | pa.Table,
) -> pa.Table:
    """One piece's request rows (ALIASES' columns) grouped per minute x route x method in
    ``session``: MINUTE_GROUPS_SELECT's columns with each group's ``latency_sketch`` counted
    (``sketches_of_buckets``) in place of its ``buckets``, here on the caller's thread, so the
    bucket lists (2 bytes a row) do not outlive their piece. ``SourceError`` naming the column
    of ``source`` that holds a value which does not convert."""
    session.register("source_rows", rows)
    try:
        fine = session.sql(MINUTE_GROUPS_SELECT).to_arrow_table()
    except duckdb.ConversionException as exc:
        raise conversion_failure(source, exc) from None
    finally:
        session.unregister("source_rows")
    buckets = fine.schema.get_field_index("buckets")
    return fine.set_column(buckets, "latency_sketch", sketches_of_buckets(fine.column(buckets)))


def merge_minute_groups(connection: duckdb.DuckDBPyConnection, groups: Sequence[pa.Table]) -> None:
    """The temp table ``fine`` (one row per minute x route x method, MINUTE_GROUPS_SQL's
    columns with ``latency_sketch`` for ``buckets``) from the groups of several pieces (a table
    per piece, ``group_piece``). When no two pieces share a minute (whole UTC hours of instants)
    their groups are ``fine`` as they are; else a group several pieces hold gets its counts
    added and its sketches summed (MERGE_PIECE_GROUPS_SELECT, ``sum_sketches``)."""
    if _minutes_apart(groups):
        merged = pa.concat_tables(groups)
    else:
        connection.register("piece_groups", pa.concat_tables(groups))
        try:
            merged = connection.sql(MERGE_PIECE_GROUPS_SELECT).to_arrow_table()
        finally:
            connection.unregister("piece_groups")
        sketches = merged.schema.get_field_index("latency_sketch")
        if (pc.max(merged.column("pieces")).as_py() or 0) > 1:
            merged = merged.set_column(
                sketches, "latency_sketch", sum_sketches(merged.column(sketches))
            )
        merged = merged.drop_columns(["pieces"])
    connection.register("merged_groups", merged)
    try:
        connection.execute("CREATE TEMP TABLE fine AS SELECT * FROM merged_groups")
    finally:
        connection.unregister("merged_groups")


def _minutes_apart(groups: Sequence[pa.Table]) -> bool:
    """Whether the pieces' minute ranges are disjoint, so no group is in two pieces."""
    spans = sorted(
        (span["min"], span["max"])
        for table in groups
        if table.num_rows
        for span in [pc.min_max(table.column("minute")).as_py()]
    )
    return all(high < low for (_, high), (low, _) in zip(spans, spans[1:], strict=False))


def _publish_minutes(
    connection, store: RollupStore, start: datetime, end: datetime
) -> tuple[int, int, list[str], int, list]:
    """From the temp table ``fine`` (MINUTE_GROUPS_SQL) to the published hour files of
    ``[start, end)``: rows read, minutes kept from published, partitions, rows written, preview."""
    rows_read = sketch_minutes(connection)
    kept, partitions, rows_written, preview = publish_minutes(connection, store, start, end)
    return rows_read, kept, partitions, rows_written, preview


def sketch_minutes(connection: duckdb.DuckDBPyConnection) -> int:
    """The temp table ``rollup`` (REQUESTS_MINUTE's columns) from ``fine``, which is dropped;
    returns the requests it counts. The latency sketches are counted here from the bucket lists
    (MINUTE_GROUPS_SQL), or taken as they are when ``fine`` holds them already
    (``merge_minute_groups``)."""
    columns = {row[0] for row in connection.execute("DESCRIBE fine").fetchall()}
    sketch = "" if "latency_sketch" in columns else f", {sketch_sql('buckets')} AS latency_sketch"
    excluded = "latency_sum_us" if sketch == "" else "buckets, latency_sum_us"
    connection.execute(
        f"""
        CREATE TEMP TABLE rollup AS
        SELECT {REQUESTS_MINUTE.select_list()} FROM (
            SELECT
                * EXCLUDE ({excluded}),
                requests - status_2xx - status_3xx - status_4xx - status_5xx AS status_other,
                latency_sum_us / 1000.0 AS latency_sum_ms
                {sketch}
            FROM fine
        )
        """
    )
    connection.execute("DROP TABLE fine")
    return int(connection.execute("SELECT coalesce(sum(requests), 0) FROM rollup").fetchone()[0])


def publish_minutes(
    connection: duckdb.DuckDBPyConnection, store: RollupStore, start: datetime, end: datetime
) -> tuple[int, list[str], int, list]:
    """The temp table ``rollup`` published as the hour files of ``[start, end)`` (a minute whose
    recount is lower keeps its published rows): minutes kept, partitions, rows written, preview."""
    kept = keep_published_where_lower(
        connection,
        store,
        REQUESTS_MINUTE,
        hour_keys(start, end),
        "minute",
        f"minute >= {timestamp_literal(start)} AND minute < {timestamp_literal(end)}",
        {"requests": "TRUE"},
    )
    partitions, rows_written = replace_hour_partitions(
        connection, store, REQUESTS_MINUTE, "minute", start, end
    )
    preview = preview_rows(connection, "rollup", "requests DESC")
    return kept, partitions, rows_written, preview


def refresh_requests_from_log_files(
    store: RollupStore,
    settings: AnalyticsSettings,
    start: datetime,
    end: datetime,
    now: datetime | None = None,
) -> RollupResult:
    """The minute rollups of ``[start, end)`` from a ``json_lines`` source (analytics/logs/).

    First one ingest tick stages the lines not read before (exactly once, bad lines counted in
    ``log_ingest_errors``, whose partition of the tick's hour is republished) and the error
    lines of the range's hours are republished (``log_errors_hourly``); then the staged
    rows of the range are grouped exactly as rows of a table are (MINUTE_GROUPS_SQL). A late
    line lands in its own minute when its hour is refreshed again (the freshness sensor's
    overlap, or the hour's finalising run after ``late_row_grace``). ``rows_without_timestamp``
    counts this tick's request lines without a usable timestamp. Raises ``LogSourceError`` for
    an unreadable directory or file (nothing staged then).
    """
    started = time.perf_counter()
    source = settings.sources.request_logs
    directory = source_directory(store.root)
    ingested = ingest_log_files(directory, source, now)
    if ingested.seq is not None:
        publish_line_counts(store, now or datetime.now(UTC))
    refresh_log_errors(store, start, end)
    files = staged_files(directory, start, end)
    with duckdb_session(store.root / ".tmp") as connection:
        paths = "[" + ", ".join(sql_string(str(path)) for path in files) + "]"
        relation = (
            f"read_parquet({paths})"
            if files
            else "(SELECT NULL::VARCHAR AS outcome, NULL::TIMESTAMP AS ts, NULL::VARCHAR AS route, "
            "NULL::VARCHAR AS method, NULL::INTEGER AS status_code, NULL::DOUBLE AS duration_ms "
            "WHERE false)"
        )
        connection.execute(
            f"CREATE TEMP VIEW source_rows AS SELECT * FROM {relation} WHERE outcome = 'request' "
            f"AND ts >= {timestamp_literal(start)} AND ts < {timestamp_literal(end)}"
        )
        connection.execute(MINUTE_GROUPS_SQL)
        rows_read, kept, partitions, rows_written, preview = _publish_minutes(
            connection, store, start, end
        )
    return RollupResult(
        REQUESTS_MINUTE.name,
        start,
        end,
        tuple(partitions),
        rows_read,
        rows_written,
        time.perf_counter() - started,
        preview,
        kept_from_published=kept,
        kept_reason=(
            f"{kept} minute(s) had fewer requests in the staged log lines than published; kept "
            "the published minutes"
            if kept
            else ""
        ),
        rows_without_timestamp=ingested.lines.get("missing_timestamp", 0)
        + ingested.lines.get("bad_timestamp", 0),
    )
