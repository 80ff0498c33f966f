"""Rows out of the application database as a stream of Arrow record batches.

PostgreSQL goes through ADBC: a query without bound parameters is executed as
``COPY (query) TO STDOUT (FORMAT binary)`` and decoded straight into Arrow, measured near raw COPY
speed (pandas ``read_sql`` is about 9x slower). Its time bounds are therefore rendered as literals
by psycopg's quoting from ``datetime`` values this code computes, never from user text. SQLite
(the demo) goes through the stdlib driver with bound parameters, in batches.

Table and column names come from the config; ``check_source`` verifies them against the live
schema first and every identifier is quoted.

Naive timestamp columns (``timestamp without time zone``, SQLite text) hold wall-clock readings in
the source's ``timezone`` (default UTC), as a policy's cutoff column does (housekeeping's
column_time): time bounds meet them as that zone's readings and their values leave as instants
(PostgreSQL converts with ``AT TIME ZONE``, SQLite values are converted here), so neither the
session's ``TimeZone`` nor the analytics time zone shifts a row.
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import adbc_driver_postgresql.dbapi as adbc
import pyarrow as pa
import sqlalchemy as sa
from psycopg import sql

from housekeeping.column_time import column_instant, column_value, wall_clock
from housekeeping.database import AppDatabase, DatabaseError, libpq_url
from housekeeping.errors import HkError, first_line
from housekeeping.schema_check import missing_column, missing_table
from housekeeping.sql import TableName, quote_identifier

SQLITE_BATCH_ROWS = 50_000
# A bounded range of at least two hours on an indexed timestamp column is read as one COPY per
# whole UTC hour, over this many connections at once (each its own backend): the default and
# the limit of ``analytics.extract_workers``.
DEFAULT_EXTRACT_WORKERS = 2
MAX_EXTRACT_WORKERS = 32
# What pg_stat_activity shows for the extract's connections.
APPLICATION_NAME = "hk-analytics"
_HOUR = timedelta(hours=1)


class SourceError(HkError):
    """A source table or column is missing or has the wrong type."""


class ColumnKind(StrEnum):
    TIMESTAMP = "a timestamp"
    TEXT = "text"
    INTEGER = "an integer"
    NUMBER = "a number"
    BOOLEAN = "a boolean"


_INTEGER_WORDS = ("INT",)
_NUMBER_WORDS = ("INT", "REAL", "FLOAT", "DOUBLE", "NUMERIC", "DECIMAL")
_BOOLEAN_WORDS = ("BOOL", "INT")


def _type_matches(kind: ColumnKind, type_name: str, is_timestamp: bool) -> bool:
    upper = type_name.upper()
    if kind is ColumnKind.TIMESTAMP:
        return is_timestamp
    if kind is ColumnKind.INTEGER:
        return any(word in upper for word in _INTEGER_WORDS)
    if kind is ColumnKind.NUMBER:
        return any(word in upper for word in _NUMBER_WORDS)
    if kind is ColumnKind.BOOLEAN:
        return any(word in upper for word in _BOOLEAN_WORDS)
    return not is_timestamp  # text: anything readable as text, but not a timestamp


@dataclass(frozen=True)
class SourceColumn:
    """A column the rollup reads: its name in the user's table and what it must hold."""

    alias: str  # the name the rollup SQL uses
    name: str  # the configured column
    kind: ColumnKind
    config_key: str  # e.g. analytics.sources.request_logs.duration_ms
    # A timestamp column's readings are in this zone; None: it holds instants (timestamptz), or
    # the source is not checked yet (``check_source`` fills it in from the live schema).
    zone: str | None = None


@dataclass(frozen=True)
class Source:
    """A table (or view) a rollup reads, the columns it maps, and the zone its naive timestamp
    columns are read in (``timezone``, default UTC). ``checked``: the live schema was read and
    each timestamp column's ``zone`` set."""

    table: TableName
    config_key: str  # e.g. analytics.sources.request_logs
    columns: tuple[SourceColumn, ...]
    timezone: str = "UTC"
    checked: bool = False
    # Columns an index of the table starts with (from the live schema; empty until checked).
    indexed_columns: frozenset[str] = frozenset()

    def column(self, alias: str) -> SourceColumn:
        return next(column for column in self.columns if column.alias == alias)

    @classmethod
    def from_config(cls, config: Any, config_key: str, kinds: Mapping[str, ColumnKind]) -> Source:
        """The table a source section maps, and per alias of ``kinds`` the column it names.

        ``config`` is the section (``config.table``, ``config.timezone`` and ``config.<alias>``
        for each column); errors about a column name the key ``<config_key>.<alias>``.
        """
        return cls(
            config.table,
            config_key,
            tuple(
                SourceColumn(alias, getattr(config, alias), kind, f"{config_key}.{alias}")
                for alias, kind in kinds.items()
            ),
            config.timezone,
        )


def check_source(db: AppDatabase, source: Source) -> Source:
    """The source as the live schema has it (each timestamp column's zone set); SourceError
    naming the key and the object when the schema does not fit the mapping: a table or column
    that does not exist as spelled (with "did you mean"), a column of the wrong type.

    Views, materialized views and foreign tables are fine: rows are only read.
    """
    info = db.table_info(source.table)
    if info is None:
        raise SourceError(missing_table(db, f"{source.config_key}.table", source.table))
    columns = []
    for column in source.columns:
        live = info.columns.get(column.name)
        if live is None:
            raise SourceError(missing_column(column.config_key, info, column.name))
        if not _type_matches(column.kind, live.type_name, live.is_timestamp):
            raise SourceError(
                f"{column.config_key}: column {source.table}.{column.name} has type "
                f"{live.type_name}, expected {column.kind}"
            )
        zone = live.reading_zone(source.timezone) if column.kind is ColumnKind.TIMESTAMP else None
        columns.append(dataclasses.replace(column, zone=zone))
    return dataclasses.replace(
        source,
        columns=tuple(columns),
        checked=True,
        indexed_columns=frozenset(info.indexed_leading_columns),
    )


def naive_columns(source: Source) -> list[SourceColumn]:
    """The checked source's timestamp columns that hold wall-clock readings (no time zone)."""
    return [column for column in source.columns if column.zone is not None]


def rows_without(db: AppDatabase, source: Source, alias: str) -> int:
    """How many rows of the source have no value (NULL) in its ``alias`` column.

    A row without its partitioning timestamp falls in no partition, so no rollup counts it; the
    rollups report this number instead of dropping those rows silently.
    """
    column = source.column(alias)
    query = (
        f"SELECT count(*) FROM {TableName.of(source.table).sql} "
        f"WHERE {quote_identifier(column.name)} IS NULL"
    )
    try:
        with db.connect() as connection:
            return int(connection.execute(sa.text(query)).scalar_one())
    except sa.exc.DBAPIError as exc:
        raise DatabaseError(f"reading {source.table}: {first_line(exc.orig)}") from None


@dataclass(frozen=True)
class TimeRange:
    """``column >= start AND column < end``; either bound may be open."""

    column: str  # an alias of the source
    start: datetime | None = None
    end: datetime | None = None


def stream_rows(
    db: AppDatabase,
    source: Source,
    aliases: Sequence[str],
    where: Sequence[TimeRange] = (),
    *,
    streams: int | None = None,
) -> RowStream:
    """The source's ``aliases`` columns (renamed to the aliases) of rows inside every range.

    The rows come in no particular order. On PostgreSQL a range of two hours or more on an
    indexed timestamp column (``copy_pieces``) is read by ``streams`` connections at once
    (``read_pieces``; default DEFAULT_EXTRACT_WORKERS, the rollups pass
    ``analytics.extract_workers``), each taking the next whole UTC hour as its own COPY; at most
    PREFETCH_BATCHES record batches per connection wait in memory.

    PostgreSQL timestamps arrive as ``timestamp[us, tz=UTC]``; SQLite's as text, which the
    rollup SQL casts (and names the column when a value does not parse): as stored when the
    source's zone is UTC, else converted to UTC (``+00:00``). An unchecked source is checked
    first (its columns' zones come from the live schema).
    """
    if not source.checked:
        source = check_source(db, source)
    columns = [source.column(alias) for alias in aliases]
    if db.is_postgres:
        streams = DEFAULT_EXTRACT_WORKERS if streams is None else streams
        texts = copy_pieces(source, aliases, where) if streams > 1 else []
        if len(texts) > 1:
            return _stream_postgres_parallel(db, source, texts, min(streams, len(texts)))
        return _stream_postgres(db, source, columns, where)
    return _stream_sqlite(db, source, columns, where)


def hour_pieces(source: Source, where: Sequence[TimeRange]) -> list[list[TimeRange]]:
    """``where`` cut into one condition per whole UTC hour of its first range that is bounded on
    both sides, spans two hours or more and is on an indexed column (each piece is then an index
    range, not a pass over the table); ``[where]`` when no range qualifies.

    Adjacent pieces share their bound, so their conditions meet without gap or overlap as long as
    the bounds' values in the column's terms ascend. On a naive column they may not: after an
    autumn clock change the first UTC hour edge reads earlier than a start inside the repeated
    hour (Europe/Berlin: 00:30 UTC reads 02:30, 01:00 UTC reads 02:00 again), and the pieces
    would read rows the range leaves out. Such an edge is moved back to the bound before it (its
    piece is then empty and dropped), so the pieces select exactly the rows the range does.
    """
    for index, bounds in enumerate(where):
        column = source.column(bounds.column)
        if (
            bounds.start is None
            or bounds.end is None
            or bounds.end - bounds.start < 2 * _HOUR
            or column.name not in source.indexed_columns
        ):
            continue
        edges = [_utc(bounds.start)]
        hour = edges[0].replace(minute=0, second=0, microsecond=0) + _HOUR
        while hour < _utc(bounds.end):
            edges.append(hour)
            hour += _HOUR
        edges.append(_utc(bounds.end))
        if column.zone is not None:
            for at in range(1, len(edges)):
                if wall_clock(edges[at], column.zone) < wall_clock(edges[at - 1], column.zone):
                    edges[at] = edges[at - 1]
        return [
            [*where[:index], TimeRange(bounds.column, low, high), *where[index + 1 :]]
            for low, high in zip(edges, edges[1:], strict=False)
            if low < high
        ]
    return [list(where)]


def _postgres_query(source: Source, columns: list[SourceColumn], where: Sequence[TimeRange]) -> str:
    selected = []
    for column in columns:
        value: sql.Composable = sql.Identifier(column.name)
        if column.zone is not None:  # wall-clock readings -> the instants they stand for
            value = sql.SQL("({} AT TIME ZONE {})").format(value, sql.Literal(column.zone))
        selected.append(sql.SQL("{} AS {}").format(value, sql.Identifier(column.alias)))
    conditions = []
    for bounds in where:
        column = source.column(bounds.column)
        name = sql.Identifier(column.name)
        # The bare column against the bound in its own terms: its index serves.
        for moment, operator in ((bounds.start, ">="), (bounds.end, "<")):
            if moment is not None:
                value = column_value(_utc(moment), column.zone, text=False)
                conditions.append(
                    sql.SQL("{} {} {}").format(name, sql.SQL(operator), sql.Literal(value))
                )
    table = source.table
    table_sql = (
        sql.Identifier(table.name)
        if table.schema is None
        else sql.Identifier(table.schema, table.name)
    )
    query = sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(selected), table_sql)
    if conditions:
        query = sql.SQL("{} WHERE {}").format(query, sql.SQL(" AND ").join(conditions))
    return query.as_string(None)


def _connect(db: AppDatabase) -> Any:
    """An ADBC connection whose session reads timestamptz literals without offset as UTC,
    named APPLICATION_NAME unless the URL names it."""
    url = db.url
    if "application_name" not in url.query:
        url = url.update_query_dict({"application_name": APPLICATION_NAME})
    try:
        connection = adbc.connect(libpq_url(url))
    except adbc.Error as exc:
        raise DatabaseError(
            f"cannot connect to the application database {db.describe()}: {first_line(exc)}"
        ) from None
    try:
        with connection.cursor() as cursor:
            cursor.execute("SET TimeZone = 'UTC'")
    except BaseException:
        connection.close()
        raise
    return connection


def _copy(connection: Any, source: Source, text: str) -> tuple[Any, pa.RecordBatchReader]:
    """Runs ``text`` (no parameters: ADBC sends it as COPY ... TO STDOUT binary) on a cursor of
    its own; returns the cursor and its Arrow reader. DatabaseError naming the table."""
    cursor = connection.cursor()
    try:
        cursor.execute(text)
        return cursor, cursor.fetch_record_batch()
    except adbc.Error as exc:
        cursor.close()
        raise DatabaseError(f"reading {source.table}: {first_line(exc)}") from None


def _stream_postgres(
    db: AppDatabase, source: Source, columns: list[SourceColumn], where: Sequence[TimeRange]
) -> RowStream:
    text = _postgres_query(source, columns, where)
    connection = _connect(db)
    try:
        cursor, reader = _copy(connection, source, text)
    except BaseException:
        connection.close()
        raise

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from _prefetched(reader)
        finally:
            cursor.close()
            connection.close()

    return _recording_errors(reader.schema, batches())


PREFETCH_BATCHES = 4
_DONE = object()


def copy_pieces(source: Source, aliases: Sequence[str], where: Sequence[TimeRange]) -> list[str]:
    """The queries of one extract of ``aliases`` in ``where``: one per whole UTC hour of a range
    ``hour_pieces`` cuts, else one. Each is a query without bound parameters, so ADBC runs it as
    ``COPY (query) TO STDOUT (FORMAT binary)``; together they select every row once (adjacent
    pieces share their bound, turned into the column's terms once; see ``hour_pieces``).
    ``source`` must be checked (``check_source``: naive columns' zones, the indexes)."""
    columns = [source.column(alias) for alias in aliases]
    return [_postgres_query(source, columns, piece) for piece in hour_pieces(source, where)]


class _Stopped(Exception):
    """A piece stopped after its batch because another failed or the reader was closed."""


def read_pieces(
    db: AppDatabase,
    source: Source,
    pieces: Sequence[str],
    workers: int,
    consume: Callable[[int, pa.RecordBatchReader], None],
    stop: threading.Event | None = None,
) -> None:
    """Run every query of ``pieces`` (``copy_pieces``) on PostgreSQL, ``workers`` at once.

    Each worker is a thread with a connection of its own (a backend; ``application_name``
    APPLICATION_NAME). A free worker takes the next piece in order and calls ``consume(worker,
    reader)`` on its own thread, ``worker`` in ``range(workers)``, with the piece's rows as an
    Arrow reader. All connections are opened before any piece runs and all are closed on return.

    The first failure (a piece's query or read, or ``consume`` raising) stops every worker after
    its current batch and no further piece starts; once all have stopped it is raised: a
    ``DatabaseError`` reading "reading <table>: <first line of the error>" for the database's,
    ``consume``'s own exception as it is. Setting ``stop`` from outside stops them the same way
    without an error.
    """
    stop = threading.Event() if stop is None else stop
    connections: list[Any] = []
    count = max(1, min(workers, len(pieces)))
    try:
        for _ in range(count):
            connections.append(_connect(db))
    except BaseException as exc:
        for connection in connections:
            connection.close()
        if isinstance(exc, DatabaseError) and count > 1:
            raise DatabaseError(
                f"{exc} (the extract opens {count} connections at once: analytics.extract_workers;"
                " lower it or raise the connection limit)"
            ) from None
        raise
    pending = deque(pieces)
    lock = threading.Lock()
    failures: list[BaseException] = []

    def run(worker: int, connection: Any) -> None:
        reading: list[BaseException] = []  # the reader's own error, as DuckDB re-wraps it
        try:
            while not stop.is_set():
                with lock:
                    text = pending.popleft() if pending else None
                if text is None:
                    return
                cursor, reader = _copy(connection, source, text)
                try:
                    consume(worker, _until_stopped(reader, stop, source, reading))
                finally:
                    cursor.close()
        except BaseException as exc:
            with lock:
                if not stop.is_set():  # the first failure; the others follow from the stop
                    failures.append(reading[0] if reading else exc)
                stop.set()

    threads = [
        threading.Thread(target=run, args=(index, connection), name=f"hk-analytics-copy-{index}")
        for index, connection in enumerate(connections)
    ]
    interrupted: BaseException | None = None
    try:
        for thread in threads:
            thread.start()
    finally:
        for thread in threads:
            while thread.is_alive():
                try:
                    thread.join()
                except BaseException as exc:  # an interrupt: stop the workers, wait for them
                    stop.set()
                    interrupted = interrupted or exc
        for connection in connections:
            connection.close()
    if interrupted is not None:
        raise interrupted
    if failures:
        raise failures[0]


def _until_stopped(
    reader: pa.RecordBatchReader,
    stop: threading.Event,
    source: Source,
    reading: list[BaseException],
) -> pa.RecordBatchReader:
    """``reader``, ending with ``_Stopped`` at the first batch after ``stop`` is set; an error
    of the reader itself becomes a DatabaseError naming the table, kept in ``reading``."""

    def batches() -> Iterator[pa.RecordBatch]:
        iterator = iter(reader)
        while True:
            if stop.is_set():
                raise _Stopped()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            except (adbc.Error, pa.ArrowException) as exc:
                reading.append(DatabaseError(f"reading {source.table}: {first_line(exc)}"))
                raise reading[-1] from None
            yield batch

    return pa.RecordBatchReader.from_batches(reader.schema, batches())


def _stream_postgres_parallel(
    db: AppDatabase, source: Source, texts: Sequence[str], streams: int
) -> RowStream:
    """The rows of every query of ``texts`` (same columns) read by ``read_pieces`` on a thread
    of its own, into one stream.

    A bad connection or first query raises (DatabaseError) here, before any row is read. At most
    PREFETCH_BATCHES record batches per connection wait for the consumer; when it stops early,
    every reader stops after its batch.
    """
    batches: queue.Queue = queue.Queue(maxsize=PREFETCH_BATCHES * streams)
    stop = threading.Event()
    first_piece = threading.Lock()  # taken once, by the first piece: it sends the schema

    def put(item: object) -> None:
        while True:
            if stop.is_set():
                raise _Stopped()
            try:
                batches.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def consume(_worker: int, reader: pa.RecordBatchReader) -> None:
        if first_piece.acquire(blocking=False):
            put(reader.schema)
        for batch in reader:
            put(batch)

    def produce() -> None:
        item: object = _DONE
        try:
            read_pieces(db, source, texts, streams, consume, stop)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            item = exc
        with contextlib.suppress(_Stopped):
            put(item)

    producer = threading.Thread(target=produce, name="hk-analytics-pieces", daemon=True)
    producer.start()

    def finish() -> None:
        stop.set()
        producer.join()

    first = batches.get()
    if isinstance(first, BaseException):
        finish()
        raise first

    def merged() -> Iterator[pa.RecordBatch]:
        try:
            while True:
                item = batches.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            finish()

    return _recording_errors(first, merged())


def _prefetched(reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
    """Decode the next batches on a thread of their own while DuckDB aggregates this one.

    pyarrow releases the GIL while the driver decodes the COPY stream, so on two cores reading
    and aggregating overlap instead of taking turns. At most PREFETCH_BATCHES wait in memory.
    """
    batches: queue.Queue = queue.Queue(maxsize=PREFETCH_BATCHES)
    stop = threading.Event()

    def produce() -> None:
        try:
            for batch in reader:
                while not stop.is_set():
                    try:
                        batches.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            batches.put(_DONE)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            batches.put(exc)

    producer = threading.Thread(target=produce, name="analytics-prefetch", daemon=True)
    producer.start()
    try:
        while True:
            item = batches.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        producer.join()


_SQLITE_TYPES = {
    ColumnKind.TIMESTAMP: pa.string(),
    ColumnKind.TEXT: pa.string(),
    ColumnKind.INTEGER: pa.int64(),
    ColumnKind.NUMBER: pa.float64(),
    ColumnKind.BOOLEAN: pa.int64(),
}


def _stream_sqlite(
    db: AppDatabase, source: Source, columns: list[SourceColumn], where: Sequence[TimeRange]
) -> RowStream:
    select = ", ".join(
        f"{quote_identifier(column.name)} AS {quote_identifier(column.alias)}" for column in columns
    )
    conditions: list[str] = []
    parameters: list[Any] = []
    for bounds in where:
        column = source.column(bounds.column)
        name = quote_identifier(column.name)
        for moment, operator in ((bounds.start, ">="), (bounds.end, "<")):
            if moment is not None:
                conditions.append(f"{name} {operator} ?")
                parameters.append(column_value(_utc(moment), column.zone or "UTC", text=True))
    query = f"SELECT {select} FROM {source.table.sql}"
    if conditions:
        query += " WHERE " + " AND ".join(conditions)
    schema = pa.schema([pa.field(column.alias, _SQLITE_TYPES[column.kind]) for column in columns])
    # Readings in a zone other than UTC become UTC text here; UTC ones stay as stored (the rollup
    # SQL reads text without an offset as UTC).
    shifted = {index for index, column in enumerate(columns) if column.zone not in (None, "UTC")}
    path = db.url.database or ""
    try:
        # DuckDB pulls the batches from its own threads, one at a time.
        connection = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, timeout=30, check_same_thread=False
        )
        cursor = connection.execute(query, parameters)
    except sqlite3.Error as exc:
        raise DatabaseError(f"reading {source.table}: {first_line(exc)}") from None

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            while rows := cursor.fetchmany(SQLITE_BATCH_ROWS):
                values = list(zip(*rows, strict=True))
                arrays = []
                for index, field in enumerate(schema):
                    column_values = values[index]
                    if field.type == pa.string():
                        column_values = [None if v is None else str(v) for v in column_values]
                    if index in shifted:
                        column_values = _as_utc_text(column_values, columns[index], source)
                    try:
                        arrays.append(pa.array(column_values, type=field.type))
                    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                        column = columns[index]
                        raise SourceError(
                            f"{column.config_key}: column {source.table}.{column.name} holds a "
                            f"value that is not {column.kind} ({first_line(exc)})"
                        ) from None
                yield pa.RecordBatch.from_arrays(arrays, schema=schema)
        finally:
            connection.close()

    return _recording_errors(schema, batches())


@dataclass
class RowStream:
    """An Arrow stream of source rows, and the exception its producer raised, if any.

    DuckDB consumes the stream on its own threads and reports a producer's exception as a
    generic error; the rollups re-raise ``error`` (a SourceError naming the column, a
    DatabaseError) instead.
    """

    reader: pa.RecordBatchReader
    error: BaseException | None = None


def _recording_errors(schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> RowStream:
    stream = RowStream(pa.RecordBatchReader.from_batches(schema, iter(())))

    def guarded() -> Iterator[pa.RecordBatch]:
        try:
            yield from batches
        except BaseException as exc:
            stream.error = exc
            raise

    stream.reader = pa.RecordBatchReader.from_batches(schema, guarded())
    return stream


def _as_utc_text(values: Sequence[str | None], column: SourceColumn, source: Source) -> list:
    """Wall-clock text read in ``column.zone`` -> ISO text of the instant with ``+00:00``."""
    converted = []
    for value in values:
        try:
            instant = column_instant(value, column.zone)
        except ValueError:
            raise SourceError(
                f"{column.config_key}: column {source.table}.{column.name} holds a value that is "
                f"not {column.kind} ({value!r})"
            ) from None
        converted.append(None if instant is None else instant.isoformat(sep=" "))
    return converted


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"time bounds must be timezone-aware, got {moment.isoformat()}")
    return moment.astimezone(UTC)
