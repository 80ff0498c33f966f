"""Rows out of the application database as a stream of Arrow record batches.

PostgreSQL goes through ADBC: a query without bound parameters is executed as
``COPY (query) TO STDOUT (FORMAT binary)`` and decoded straight into Arrow, measured near raw COPY
speed (pandas ``read_sql`` is about 9x slower). Its time bounds are therefore rendered as literals
by psycopg's quoting from ``datetime`` values this code computes, never from user text. SQLite
(the demo) goes through the stdlib driver with bound parameters, in batches.

Table and column names come from the config; ``check_source`` verifies them against the live
schema first and every identifier is quoted.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import adbc_driver_postgresql.dbapi as adbc
import pyarrow as pa
import sqlalchemy as sa
from psycopg import sql

from housekeeping.database import AppDatabase, DatabaseError, libpq_url
from housekeeping.errors import HkError, first_line
from housekeeping.sql import quote_identifier

SQLITE_BATCH_ROWS = 50_000


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


@dataclass(frozen=True)
class Source:
    table: str
    config_key: str  # e.g. analytics.sources.request_logs
    columns: tuple[SourceColumn, ...]

    def column(self, alias: str) -> SourceColumn:
        return next(column for column in self.columns if column.alias == alias)

    @classmethod
    def from_config(cls, config: Any, config_key: str, kinds: Mapping[str, ColumnKind]) -> Source:
        """The table a source section maps, and per alias of ``kinds`` the column it names.

        ``config`` is the section (``config.table``, and ``config.<alias>`` for each column);
        errors about a column name the key ``<config_key>.<alias>``.
        """
        return cls(
            config.table,
            config_key,
            tuple(
                SourceColumn(alias, getattr(config, alias), kind, f"{config_key}.{alias}")
                for alias, kind in kinds.items()
            ),
        )


def check_source(db: AppDatabase, source: Source) -> None:
    """Refuse, naming the key and the object, when the live schema does not fit the mapping."""
    info = db.table_info(source.table)
    if info is None:
        raise SourceError(
            f"{source.config_key}.table: table {source.table!r} does not exist in {db.describe()}"
        )
    for column in source.columns:
        live = info.columns.get(column.name)
        if live is None:
            known = ", ".join(sorted(info.columns))
            raise SourceError(
                f"{column.config_key}: table {source.table!r} has no column {column.name!r} "
                f"(its columns: {known})"
            )
        if not _type_matches(column.kind, live.type_name, live.is_timestamp):
            raise SourceError(
                f"{column.config_key}: column {source.table}.{column.name} has type "
                f"{live.type_name}, expected {column.kind}"
            )


def rows_without(db: AppDatabase, source: Source, alias: str) -> int:
    """How many rows of the source have no value (NULL) in its ``alias`` column.

    A row without its partitioning timestamp falls in no partition, so no rollup counts it; the
    rollups report this number instead of dropping those rows silently.
    """
    column = source.column(alias)
    query = (
        f"SELECT count(*) FROM {quote_identifier(source.table)} "
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
    db: AppDatabase, source: Source, aliases: Sequence[str], where: Sequence[TimeRange] = ()
) -> RowStream:
    """The source's ``aliases`` columns (renamed to the aliases) of rows inside every range.

    PostgreSQL timestamps arrive as ``timestamp[us, tz=UTC]``; SQLite's as their stored text,
    which the rollup SQL casts (and names the column when a value does not parse).
    """
    columns = [source.column(alias) for alias in aliases]
    if db.is_postgres:
        return _stream_postgres(db, source, columns, where)
    return _stream_sqlite(db, source, columns, where)


def _stream_postgres(
    db: AppDatabase, source: Source, columns: list[SourceColumn], where: Sequence[TimeRange]
) -> RowStream:
    select = sql.SQL(", ").join(
        sql.SQL("{} AS {}").format(sql.Identifier(column.name), sql.Identifier(column.alias))
        for column in columns
    )
    conditions = []
    for bounds in where:
        name = sql.Identifier(source.column(bounds.column).name)
        if bounds.start is not None:
            conditions.append(sql.SQL("{} >= {}").format(name, sql.Literal(_utc(bounds.start))))
        if bounds.end is not None:
            conditions.append(sql.SQL("{} < {}").format(name, sql.Literal(_utc(bounds.end))))
    query = sql.SQL("SELECT {} FROM {}").format(select, sql.Identifier(source.table))
    if conditions:
        query = sql.SQL("{} WHERE {}").format(query, sql.SQL(" AND ").join(conditions))
    text = query.as_string(None)
    try:
        connection = adbc.connect(libpq_url(db.url))
    except adbc.Error as exc:
        raise DatabaseError(
            f"cannot connect to the application database {db.describe()}: {first_line(exc)}"
        ) from None
    cursor = connection.cursor()
    try:
        # The session time zone decides how timestamptz literals without offset parse: UTC.
        cursor.execute("SET TimeZone = 'UTC'")
        cursor.execute(text)
        reader = cursor.fetch_record_batch()
    except adbc.Error as exc:
        cursor.close()
        connection.close()
        raise DatabaseError(f"reading {source.table}: {first_line(exc)}") from None

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from _prefetched(reader)
        finally:
            cursor.close()
            connection.close()

    return _recording_errors(reader.schema, batches())


PREFETCH_BATCHES = 4
_DONE = object()


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
    parameters: list[str] = []
    for bounds in where:
        name = quote_identifier(source.column(bounds.column).name)
        if bounds.start is not None:
            conditions.append(f"{name} >= ?")
            parameters.append(db.bind_timestamp(_utc(bounds.start)))
        if bounds.end is not None:
            conditions.append(f"{name} < ?")
            parameters.append(db.bind_timestamp(_utc(bounds.end)))
    query = f"SELECT {select} FROM {quote_identifier(source.table)}"
    if conditions:
        query += " WHERE " + " AND ".join(conditions)
    schema = pa.schema([pa.field(column.alias, _SQLITE_TYPES[column.kind]) for column in columns])
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


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"time bounds must be timezone-aware, got {moment.isoformat()}")
    return moment.astimezone(UTC)
