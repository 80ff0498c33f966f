"""The rollup SQL: source rows (an Arrow stream) aggregated in DuckDB, written as partitions.

Plain Python, no Dagster: the assets, the freshness sensor, the CLI and the benchmark call these.
Every function recomputes a time range from the source and replaces exactly the rows of that
range in the partitions it touches, so running it twice changes nothing and late rows are picked
up by running it again.

Times are stored as UTC ``TIMESTAMP`` (no zone); daily partitions and views follow the configured
time zone.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from analytics.extract import (
    ColumnKind,
    RowStream,
    Source,
    SourceColumn,
    SourceError,
    TimeRange,
    check_source,
    stream_rows,
)
from analytics.publish import RollupStore
from analytics.settings import AnalyticsSettings
from analytics.sketch import bucket_sql
from housekeeping.database import AppDatabase
from housekeeping.sql import sql_string

HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
DUCKDB_MEMORY_LIMIT = "1GB"


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # DuckDB type
    description: str


@dataclass(frozen=True)
class Dataset:
    name: str
    description: str
    columns: tuple[Column, ...]

    @property
    def typed_columns(self) -> list[tuple[str, str]]:
        return [(column.name, column.type) for column in self.columns]

    def select_list(self) -> str:
        """Columns in their published order and types, from a relation with the same names."""
        return ", ".join(
            f"CAST({column.name} AS {column.type}) AS {column.name}" for column in self.columns
        )


SKETCH_TYPE = "STRUCT(bucket SMALLINT, count INTEGER)[]"

REQUESTS_MINUTE = Dataset(
    "requests_minute",
    "HTTP requests per minute x route x method, with a mergeable latency sketch.",
    (
        Column("minute", "TIMESTAMP", "start of the minute (UTC)"),
        Column("route", "VARCHAR", "route pattern, e.g. /api/v1/users/:id"),
        Column("method", "VARCHAR", "HTTP method"),
        Column("requests", "BIGINT", "requests in the minute"),
        Column("status_2xx", "BIGINT", "responses 200-299"),
        Column("status_3xx", "BIGINT", "responses 300-399"),
        Column("status_4xx", "BIGINT", "responses 400-499 (429 included)"),
        Column("status_5xx", "BIGINT", "responses 500-599"),
        Column("status_429", "BIGINT", "responses 429 (rate limited), also counted in status_4xx"),
        Column("status_other", "BIGINT", "any other status code"),
        Column("latency_min_ms", "DOUBLE", "fastest request (ms)"),
        Column("latency_max_ms", "DOUBLE", "slowest request (ms)"),
        Column(
            "latency_sum_ms", "DOUBLE", "sum of durations (ms): divide by requests for the mean"
        ),
        Column(
            "latency_sketch",
            SKETCH_TYPE,
            "latency histogram: (bucket, count) pairs, 1 % relative accuracy; merge by summing",
        ),
    ),
)


@dataclass(frozen=True)
class RollupResult:
    dataset: str
    start: datetime
    end: datetime
    partitions: tuple[str, ...]
    rows_read: int
    rows_written: int
    seconds: float
    preview: list[dict[str, Any]] = field(default_factory=list)


def request_logs_source(settings: AnalyticsSettings) -> Source:
    config = settings.sources.request_logs
    key = "analytics.sources.request_logs"
    kinds = {
        "ts": ColumnKind.TIMESTAMP,
        "method": ColumnKind.TEXT,
        "route": ColumnKind.TEXT,
        "status_code": ColumnKind.INTEGER,
        "duration_ms": ColumnKind.NUMBER,
    }
    return Source(
        config.table,
        key,
        tuple(
            SourceColumn(alias, getattr(config, alias), kind, f"{key}.{alias}")
            for alias, kind in kinds.items()
        ),
    )


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
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def floor_minute(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


def hour_key(hour: datetime) -> str:
    return hour.astimezone(UTC).strftime("%Y-%m-%dT%H")


def _hours(start: datetime, end: datetime) -> list[datetime]:
    hours = []
    hour = floor_hour(start)
    while hour < end:
        hours.append(hour)
        hour += HOUR
    return hours


def _timestamp_literal(moment: datetime) -> str:
    """A UTC instant as a DuckDB TIMESTAMP literal (values from our own clock, not user text)."""
    return f"TIMESTAMP '{moment.astimezone(UTC).replace(tzinfo=None).isoformat(sep=' ')}'"


def _check_range(start: datetime, end: datetime, unit: timedelta) -> None:
    for name, moment in (("start", start), ("end", end)):
        if moment.tzinfo is None:
            raise ValueError(f"{name} must be timezone-aware, got {moment.isoformat()}")
        if (moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)) % unit:
            raise ValueError(f"{name} must fall on a whole {unit}, got {moment.isoformat()}")
    if end <= start:
        raise ValueError(f"empty range: {start.isoformat()} .. {end.isoformat()}")


def _source_failure(source: Source, error: duckdb.Error) -> SourceError:
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


def refresh_requests(
    db: AppDatabase,
    store: RollupStore,
    settings: AnalyticsSettings,
    start: datetime,
    end: datetime,
    *,
    check: bool = True,
) -> RollupResult:
    """Recompute the minute rollups of ``[start, end)`` and replace them in their hour files.

    ``start`` and ``end`` fall on whole minutes. Rows of a touched hour outside the range are
    kept, so the freshness sensor can refresh the last few minutes of the current hour.
    """
    _check_range(start, end, MINUTE)
    started = time.perf_counter()
    source = request_logs_source(settings)
    if check:
        check_source(db, source)
    stream = stream_rows(
        db,
        source,
        ["ts", "route", "method", "status_code", "duration_ms"],
        [TimeRange("ts", start, end)],
    )
    with duckdb_session(store.root / ".tmp") as connection:
        duration = "CAST(duration_ms AS DOUBLE)"
        # While the stream is read, one DuckDB thread aggregates and the prefetch thread decodes
        # (and the database server produces the rows): more threads only contend on two cores.
        connection.execute("SET threads = 1")
        # One pass over the stream grouped by minute x route x method; each group keeps its
        # latency buckets as a plain list (2 bytes a row), counted per bucket afterwards.
        # Much cheaper than grouping by bucket too (millions of small hash groups).
        load_stream(
            connection,
            stream,
            source,
            f"""
                CREATE TEMP TABLE fine AS
                SELECT
                    make_timestamp(epoch_us(CAST(ts AS TIMESTAMPTZ)) // 60000000 * 60000000)
                        AS minute,
                    coalesce(CAST(route AS VARCHAR), '(none)') AS route,
                    coalesce(upper(CAST(method AS VARCHAR)), '(none)') AS method,
                    count(*) AS requests,
                    count_if(status_code BETWEEN 200 AND 299) AS status_2xx,
                    count_if(status_code BETWEEN 300 AND 399) AS status_3xx,
                    count_if(status_code BETWEEN 400 AND 499) AS status_4xx,
                    count_if(status_code BETWEEN 500 AND 599) AS status_5xx,
                    count_if(status_code = 429) AS status_429,
                    min({duration}) AS latency_min_ms,
                    max({duration}) AS latency_max_ms,
                    -- whole microseconds: an integer sum is the same in any order, so a re-run
                    -- writes identical files (a float sum in parallel is not)
                    sum(CAST(round({duration} * 1000) AS BIGINT)) AS latency_sum_us,
                    list({bucket_sql(duration)}) AS buckets
                FROM source_rows
                GROUP BY ALL
                """,
        )
        connection.execute("RESET threads")
        connection.execute(
            f"""
            CREATE TEMP TABLE rollup AS
            SELECT {REQUESTS_MINUTE.select_list()} FROM (
                SELECT
                    * EXCLUDE (buckets, latency_sum_us),
                    requests - status_2xx - status_3xx - status_4xx - status_5xx AS status_other,
                    latency_sum_us / 1000.0 AS latency_sum_ms,
                    list_sort(list_transform(
                        map_entries(list_aggregate(buckets, 'histogram')),
                        lambda e: {{'bucket': e.key, 'count': CAST(e.value AS INTEGER)}}
                    )) AS latency_sketch
                FROM fine
            )
            """
        )
        connection.execute("DROP TABLE fine")
        rows_read = connection.execute("SELECT coalesce(sum(requests), 0) FROM rollup").fetchone()[
            0
        ]
        partitions, rows_written = _write_minute_partitions(
            connection, store, REQUESTS_MINUTE, "minute", start, end
        )
        preview = _preview(connection, "rollup", "requests DESC")
    return RollupResult(
        REQUESTS_MINUTE.name,
        start,
        end,
        tuple(partitions),
        int(rows_read),
        rows_written,
        time.perf_counter() - started,
        preview,
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
            raise _source_failure(source, exc) from None
        raise
    finally:
        connection.unregister("source_rows")
        stream.reader.close()


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


def _write_minute_partitions(
    connection: duckdb.DuckDBPyConnection,
    store: RollupStore,
    dataset: Dataset,
    time_column: str,
    start: datetime,
    end: datetime,
) -> tuple[list[str], int]:
    """Replace the rows of ``[start, end)`` in every hour file the range touches."""
    store.prepare({dataset.name: dataset.typed_columns})
    partitions = []
    written = 0
    with store.writing(dataset.name):
        for hour in _hours(start, end):
            key = hour_key(hour)
            low, high = max(start, hour), min(end, hour + HOUR)
            select = (
                f"SELECT * FROM rollup WHERE {time_column} >= {_timestamp_literal(low)} "
                f"AND {time_column} < {_timestamp_literal(high)}"
            )
            existing = store.existing_partition(dataset.name, key)
            if existing is not None and (low > hour or high < hour + HOUR):
                select += (
                    f" UNION ALL SELECT {dataset.select_list()} "
                    f"FROM read_parquet({sql_string(str(existing))}) "
                    f"WHERE {time_column} < {_timestamp_literal(low)} "
                    f"OR {time_column} >= {_timestamp_literal(high)}"
                )
            order = ", ".join(column.name for column in dataset.columns[:3])
            written += store.replace_partition(
                connection, dataset.name, key, f"SELECT * FROM ({select}) ORDER BY {order}"
            )
            partitions.append(key)
    return partitions, written


def _preview(
    connection: duckdb.DuckDBPyConnection, table: str, order: str, limit: int = 5
) -> list[dict[str, Any]]:
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


def all_datasets() -> Sequence[Dataset]:
    # defined on top of this module
    from analytics.api_usage_rollup import API_USAGE_DAILY
    from analytics.housekeeping_rollup import HOUSEKEEPING_RUNS, HOUSEKEEPING_SUMMARY
    from analytics.jobs_rollup import JOBS_HOURLY
    from analytics.table_stats import TABLE_STATS
    from analytics.token_rollup import TOKEN_REVOCATIONS_BY_USER, TOKEN_REVOCATIONS_DAILY

    return (
        REQUESTS_MINUTE,
        JOBS_HOURLY,
        API_USAGE_DAILY,
        HOUSEKEEPING_RUNS,
        HOUSEKEEPING_SUMMARY,
        TOKEN_REVOCATIONS_DAILY,
        TOKEN_REVOCATIONS_BY_USER,
        TABLE_STATS,
    )
