"""The rollup engine: what every rollup shares, from the source stream to the published files.

Plain Python, no Dagster: the rollups in this package, the freshness refresh, the alerts and the
benchmarks call these. A rollup recomputes a time range from the source and replaces exactly the
rows of that range in the partitions it touches, so running it twice changes nothing and late rows
are picked up by running it again; a recount with fewer source rows than published (rows deleted
by retention) keeps the published ones instead (``keep_published_where_lower``, and
``cleaned_up.py`` for reading the cleanup's archive back).

Times are UTC; a daily partition is a day in the analytics time zone (``day_bounds``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import pyarrow as pa

from analytics.datasets import Dataset
from analytics.extract import ColumnKind, RowStream, Source, SourceError
from analytics.publish import RollupStore, hour_key
from housekeeping.sql import sql_string

HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
DUCKDB_MEMORY_LIMIT = "1GB"


@dataclass(frozen=True)
class RollupResult:
    """What one refresh did: the range recomputed (UTC), the partitions replaced, row counts.

    ``preview`` holds a few rows of the result for the run's metadata (sketches shown as their
    bucket count). ``rows_from_archive``: source rows read from the cleanup's archive (deleted
    from the table, not otherwise in the live rows); ``kept_from_published``: time units (minutes,
    hours, days) whose published rows were kept because the recount had fewer source rows, with
    ``kept_reason`` saying why; ``rows_without_timestamp``: source rows whose partitioning
    timestamp is NULL, which no partition counts. Each is None where it does not apply (the
    rollups of the housekeeping history and table sizes read no cleaned source).
    """

    dataset: str
    start: datetime
    end: datetime
    partitions: tuple[str, ...]
    rows_read: int
    rows_written: int
    seconds: float
    preview: list[dict[str, Any]] = field(default_factory=list)
    rows_from_archive: int | None = None
    kept_from_published: int | None = None
    kept_reason: str = ""
    rows_without_timestamp: int | None = None


@contextmanager
def duckdb_session(temp_directory: Path | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A private in-memory DuckDB: nothing published is ever opened for writing."""
    connection = duckdb.connect(config={"memory_limit": DUCKDB_MEMORY_LIMIT})
    try:
        connection.execute("SET TimeZone = 'UTC'")
        if temp_directory is not None:
            temp_directory.mkdir(parents=True, exist_ok=True)
            connection.execute(f"SET temp_directory = {sql_string(str(temp_directory))}")
        yield connection
    finally:
        connection.close()


def floor_hour(moment: datetime) -> datetime:
    """The start of the UTC hour holding ``moment`` (an aware datetime), in UTC."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def floor_minute(moment: datetime) -> datetime:
    """The start of the minute holding ``moment`` (an aware datetime), in UTC."""
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


def day_bounds(day: date, timezone: str) -> tuple[datetime, datetime]:
    """The UTC instants where ``day`` starts and ends in ``timezone`` (23 or 25 h on DST days)."""
    zone = ZoneInfo(timezone)
    start = datetime.combine(day, datetime.min.time(), zone)
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), zone)
    return start.astimezone(UTC), end.astimezone(UTC)


def hour_keys(start: datetime, end: datetime) -> list[str]:
    """The file keys of the UTC hours that overlap ``[start, end)``."""
    return [hour_key(hour) for hour in _hours(start, end)]


def _hours(start: datetime, end: datetime) -> list[datetime]:
    """The UTC hours that overlap ``[start, end)``."""
    hours = []
    hour = floor_hour(start)
    while hour < end:
        hours.append(hour)
        hour += HOUR
    return hours


def timestamp_literal(moment: datetime) -> str:
    """An aware instant as a DuckDB ``TIMESTAMP`` literal in UTC.

    Only for values from our own clock or arithmetic, never user text.
    """
    return f"TIMESTAMP '{moment.astimezone(UTC).replace(tzinfo=None).isoformat(sep=' ')}'"


def text_or_placeholder(expression: str, placeholder: str = "(none)") -> str:
    """SQL: ``expression`` as text, ``placeholder`` when it is NULL or empty: a group with no
    route, method, queue, name or error name is shown one way (``(none)``, ``(unnamed)``),
    whether the source left it NULL (a missing JSON key, a NULL column) or wrote ``""``."""
    return f"coalesce(nullif(CAST({expression} AS VARCHAR), ''), {sql_string(placeholder)})"


def check_range(start: datetime, end: datetime, unit: timedelta) -> None:
    """Refuse a range a rollup cannot replace exactly.

    Raises ``ValueError`` unless ``start`` and ``end`` are timezone-aware, fall on a whole
    ``unit`` (a minute, an hour) and ``start < end``.
    """
    for name, moment in (("start", start), ("end", end)):
        if moment.tzinfo is None:
            raise ValueError(f"{name} must be timezone-aware, got {moment.isoformat()}")
        if (moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)) % unit:
            raise ValueError(f"{name} must fall on a whole {unit}, got {moment.isoformat()}")
    if end <= start:
        raise ValueError(f"empty range: {start.isoformat()} .. {end.isoformat()}")


def conversion_failure(source: Source, error: duckdb.Error) -> SourceError:
    """A value that does not convert: name the column when the message tells which kind failed."""
    text = str(error).strip().splitlines()[0]
    if "TIMESTAMP" in text.upper():
        for column in source.columns:
            if column.kind is ColumnKind.TIMESTAMP:
                return SourceError(
                    f"{column.config_key}: column {source.table}.{column.name} holds a value that "
                    f"is not {column.kind} ({text})"
                )
    return SourceError(
        f"{source.config_key}: table {source.table} holds a value of the wrong type ({text})"
    )


def load_stream(
    connection: duckdb.DuckDBPyConnection, stream: RowStream, source: Source, sql: str
) -> None:
    """Run ``sql`` over ``stream`` registered as ``source_rows``, then close the stream.

    A failure while extracting is the stream's own error (it names the database); a value DuckDB
    cannot convert names the source column.
    """
    connection.register("source_rows", stream.reader)
    try:
        connection.execute(sql)
    except duckdb.Error as exc:
        if stream.error is not None:
            raise stream.error from None
        if isinstance(exc, duckdb.ConversionException):
            raise conversion_failure(source, exc) from None
        raise
    finally:
        connection.unregister("source_rows")
        stream.reader.close()


def create_rollup_table(
    connection: duckdb.DuckDBPyConnection, dataset: Dataset, rows: pa.Table
) -> None:
    """The temp table ``rollup``: ``rows`` (Arrow, same column names) in ``dataset``'s types."""
    connection.register("arrow_rows", rows)
    try:
        connection.execute(
            f"CREATE TEMP TABLE rollup AS SELECT {dataset.select_list()} FROM arrow_rows"
        )
    finally:
        connection.unregister("arrow_rows")


def replace_dataset_partition(
    connection: duckdb.DuckDBPyConnection,
    store: RollupStore,
    dataset: Dataset,
    partition: str,
    relation: str,
    order_by: str,
) -> int:
    """Publish ``relation`` (ordered) as ``partition`` of ``dataset``, replacing it; rows written."""
    store.prepare({dataset.name: dataset.typed_columns})
    with store.writing(dataset.name):
        return store.replace_partition(
            connection, dataset.name, partition, f"SELECT * FROM {relation} ORDER BY {order_by}"
        )


def append_to_partition(
    connection: duckdb.DuckDBPyConnection,
    store: RollupStore,
    dataset: Dataset,
    key: str,
    order_by: str,
) -> int:
    """Add the temp table ``rollup``'s rows to partition ``key`` of ``dataset`` (the file is
    rewritten with its rows and the new ones, replaced by rename); the rows it now holds."""
    store.prepare({dataset.name: dataset.typed_columns})
    with store.writing(dataset.name):
        select = "SELECT * FROM rollup"
        existing = store.existing_partition(dataset.name, key)
        if existing is not None:
            select += (
                f" UNION ALL SELECT {dataset.select_list()} "
                f"FROM read_parquet({sql_string(str(existing))})"
            )
        return store.replace_partition(
            connection, dataset.name, key, f"SELECT * FROM ({select}) ORDER BY {order_by}"
        )


def replace_hour_partitions(
    connection: duckdb.DuckDBPyConnection,
    store: RollupStore,
    dataset: Dataset,
    time_column: str,
    start: datetime,
    end: datetime,
) -> tuple[list[str], int]:
    """Replace the rows of ``[start, end)`` in every hour file of ``dataset`` the range touches.

    The new rows are the temp table ``rollup``; ``time_column`` (UTC ``TIMESTAMP``) places them.
    Rows of a touched hour outside the range are kept. Returns the hour keys written and the rows
    the files now hold.
    """
    store.prepare({dataset.name: dataset.typed_columns})
    partitions = []
    written = 0
    with store.writing(dataset.name):
        for hour in _hours(start, end):
            key = hour_key(hour)
            low, high = max(start, hour), min(end, hour + HOUR)
            select = (
                f"SELECT * FROM rollup WHERE {time_column} >= {timestamp_literal(low)} "
                f"AND {time_column} < {timestamp_literal(high)}"
            )
            existing = store.existing_partition(dataset.name, key)
            if existing is not None and (low > hour or high < hour + HOUR):
                select += (
                    f" UNION ALL SELECT {dataset.select_list()} "
                    f"FROM read_parquet({sql_string(str(existing))}) "
                    f"WHERE {time_column} < {timestamp_literal(low)} "
                    f"OR {time_column} >= {timestamp_literal(high)}"
                )
            order = ", ".join(column.name for column in dataset.columns[:3])
            written += store.replace_partition(
                connection, dataset.name, key, f"SELECT * FROM ({select}) ORDER BY {order}"
            )
            partitions.append(key)
    return partitions, written


def keep_published_where_lower(
    connection: duckdb.DuckDBPyConnection,
    store: RollupStore,
    dataset: Dataset,
    partitions: Sequence[str],
    unit: str,
    where: str,
    compared: Mapping[str, str],
) -> int:
    """Never lower a published number: put the published rows back where the recount has less.

    The recount is the temp table ``rollup`` (``dataset``'s columns). The published rows are
    those of ``partitions``' files that match ``where`` (SQL over the dataset's columns). Per
    ``unit`` (an expression: the minute, the hour, the day), when any counter of ``compared``
    (column -> SQL condition over ``unit`` under which it is compared, ``TRUE`` for always) sums
    to less in the recount than in the published rows, the unit's recounted rows are replaced by
    its published ones. Returns how many units were kept.
    """
    files = [path for key in partitions if (path := store.existing_partition(dataset.name, key))]
    if not files:
        return 0
    paths = "[" + ", ".join(sql_string(str(path)) for path in files) + "]"
    connection.execute(
        f"CREATE OR REPLACE TEMP TABLE published AS SELECT {dataset.select_list()} "
        f"FROM read_parquet({paths}, union_by_name = true) WHERE {where}"
    )
    sums = ", ".join(f"sum({column}) AS {column}" for column in compared)
    lowered = " OR ".join(
        f"(({condition}) AND p.{column} > coalesce(r.{column}, 0))"
        for column, condition in compared.items()
    )
    connection.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE kept_units AS
        SELECT p.unit FROM (SELECT {unit} AS unit, {sums} FROM published GROUP BY ALL) p
        LEFT JOIN (SELECT {unit} AS unit, {sums} FROM rollup GROUP BY ALL) r USING (unit)
        WHERE {lowered}
        """
    )
    kept = connection.execute("SELECT count(*) FROM kept_units").fetchone()[0]
    if kept:
        connection.execute(f"DELETE FROM rollup WHERE {unit} IN (SELECT unit FROM kept_units)")
        connection.execute(
            f"INSERT INTO rollup SELECT * FROM published "
            f"WHERE {unit} IN (SELECT unit FROM kept_units)"
        )
    connection.execute("DROP TABLE published")
    connection.execute("DROP TABLE kept_units")
    return int(kept)


def preview_rows(
    connection: duckdb.DuckDBPyConnection, table: str, order: str, limit: int = 5
) -> list[dict[str, Any]]:
    """The first ``limit`` rows of ``table`` by ``order``, as dicts; a list shows its length."""
    relation = connection.execute(f"SELECT * FROM {table} ORDER BY {order} LIMIT {limit}")
    names = [column[0] for column in relation.description]
    rows = []
    for values in relation.fetchall():
        row = {}
        for name, value in zip(names, values, strict=True):
            if isinstance(value, list):
                value = f"[{len(value)} buckets]"
            row[name] = value
        rows.append(row)
    return rows
