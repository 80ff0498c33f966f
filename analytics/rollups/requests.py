"""HTTP requests per minute x route x method, with a mergeable latency sketch.

One Parquet file per UTC hour (``requests_minute/<YYYY-MM-DDTHH>.parquet``). A refresh replaces
the minutes of its range and keeps the other minutes of the hours it touches, so the freshness
sensor can refresh the last few minutes of the current hour. A refresh after the request log
retention deleted rows reads them back from the archive, or keeps the published minutes
(``cleaned_up.py``).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from analytics.datasets import REQUESTS_MINUTE
from analytics.extract import (
    ColumnKind,
    Source,
    TimeRange,
    check_source,
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
from analytics.rollups.cleaned_up import Cleanup, load_with_archive, stream_with_archive
from analytics.rollups.engine import (
    MINUTE,
    RollupResult,
    check_range,
    duckdb_session,
    hour_keys,
    keep_published_where_lower,
    preview_rows,
    replace_hour_partitions,
    timestamp_literal,
)
from analytics.settings import AnalyticsSettings, JsonLinesSource
from analytics.sketch import bucket_sql, sketch_sql
from housekeeping.config import HousekeepingConfig
from housekeeping.database import AppDatabase
from housekeeping.sql import sql_string

_DURATION = "CAST(duration_ms AS DOUBLE)"
# One pass over ``source_rows`` (ts, route, method, status_code, duration_ms) grouped by
# minute x route x method; each group keeps its latency buckets as a plain list (2 bytes a row;
# NULL for a request without duration, which the sketch does not count), counted per bucket
# afterwards. Much cheaper than grouping by bucket too (millions of small hash groups).
MINUTE_GROUPS_SQL = f"""
    CREATE TEMP TABLE fine AS
    SELECT
        make_timestamp(epoch_us(CAST(ts AS TIMESTAMPTZ)) // 60000000 * 60000000) AS minute,
        coalesce(CAST(route AS VARCHAR), '(none)') AS route,
        coalesce(upper(CAST(method AS VARCHAR)), '(none)') AS method,
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
    Raises ``SourceError`` (mapping, archive) or ``DatabaseError``; ``ValueError`` for a range
    that is not whole minutes.
    """
    check_range(start, end, MINUTE)
    if isinstance(settings.sources.request_logs, JsonLinesSource):
        return refresh_requests_from_log_files(store, settings, start, end)
    started = time.perf_counter()
    source = request_logs_source(settings)
    if check:
        source = check_source(db, source)
    where = [TimeRange("ts", start, end)]
    aliases = ["ts", "route", "method", "status_code", "duration_ms"]
    source, stream, archived = stream_with_archive(db, config, source, aliases, where)
    with duckdb_session(store.root / ".tmp") as connection:
        # While the stream is read, one DuckDB thread aggregates and the prefetch thread decodes
        # (and the database server produces the rows): more threads only contend on two cores.
        connection.execute("SET threads = 1")
        from_archive = load_with_archive(
            connection,
            stream,
            source,
            MINUTE_GROUPS_SQL,
            archived,
            where,
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


def _publish_minutes(
    connection, store: RollupStore, start: datetime, end: datetime
) -> tuple[int, int, list[str], int, list]:
    """From the temp table ``fine`` (MINUTE_GROUPS_SQL) to the published hour files of
    ``[start, end)``: rows read, minutes kept from published, partitions, rows written, preview."""
    connection.execute(
        f"""
        CREATE TEMP TABLE rollup AS
        SELECT {REQUESTS_MINUTE.select_list()} FROM (
            SELECT
                * EXCLUDE (buckets, latency_sum_us),
                requests - status_2xx - status_3xx - status_4xx - status_5xx AS status_other,
                latency_sum_us / 1000.0 AS latency_sum_ms,
                {sketch_sql("buckets")} AS latency_sketch
            FROM fine
        )
        """
    )
    connection.execute("DROP TABLE fine")
    rows_read = connection.execute("SELECT coalesce(sum(requests), 0) FROM rollup").fetchone()[0]
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
    return int(rows_read), kept, partitions, rows_written, preview


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
