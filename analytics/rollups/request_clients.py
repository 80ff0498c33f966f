"""The security signals of the request logs: requests and 429s per minute x hashed client x
hashed user (``request_clients_minute``).

The client address and the user id are replaced, inside DuckDB as the rows stream in, by the
keyed SHA-256 the token rollup uses (``sha256(key || value)``, the key from
``analytics.user_hash_key_env`` or the key file beside the archive): no raw address or user id
is stored, logged or sent. The alert metrics count distinct rate-limited clients per window and
the busiest user's requests per minute from it.

One Parquet file per UTC hour, like ``requests_minute``; the freshness sensor recomputes the
minutes within ``analytics.late_row_grace`` every tick (``refresh_recent_clients``), and a
backfill recomputes any range. Rows the request log retention archived are read back from the
archive, as for ``requests_minute``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from analytics.datasets import REQUEST_CLIENTS_MINUTE
from analytics.extract import ColumnKind, Source, SourceError, TimeRange, check_source
from analytics.publish import RollupStore
from analytics.rollups.cleaned_up import load_with_archive, stream_with_archive
from analytics.rollups.engine import (
    HOUR,
    MINUTE,
    RollupResult,
    check_range,
    duckdb_session,
    floor_hour,
    floor_minute,
    preview_rows,
    replace_hour_partitions,
)
from analytics.rollups.token_revocations import user_hash_key
from analytics.settings import AnalyticsSettings
from housekeeping.config import HousekeepingConfig
from housekeeping.database import AppDatabase


def request_clients_source(settings: AnalyticsSettings) -> Source:
    """The request log table with the columns the security signals read."""
    return Source.from_config(
        settings.sources.request_logs,
        "analytics.sources.request_logs",
        {
            "ts": ColumnKind.TIMESTAMP,
            "status_code": ColumnKind.INTEGER,
            "ip": ColumnKind.TEXT,
            "user_id": ColumnKind.TEXT,
        },
    )


def refresh_request_clients(
    db: AppDatabase,
    store: RollupStore,
    settings: AnalyticsSettings,
    config: HousekeepingConfig,
    start: datetime,
    end: datetime,
) -> RollupResult:
    """Recompute ``[start, end)`` (whole minutes) of ``request_clients_minute``.

    A request without an address or user counts under a NULL hash; without ``ts`` it falls in
    no minute. Raises ``SourceError`` (the mapping: ``analytics.sources.request_logs.ip`` or
    ``.user_id`` missing, say), ``PublishError`` (the key file), ``ValueError`` for a range that
    is not whole minutes.
    """
    check_range(start, end, MINUTE)
    started = time.perf_counter()
    source = check_source(db, request_clients_source(settings))
    where = [TimeRange("ts", start, end)]
    aliases = ["ts", "status_code", "ip", "user_id"]
    key = user_hash_key(settings, config)
    source, stream, archived = stream_with_archive(
        db, config, source, aliases, where, streams=settings.extract_workers
    )
    with duckdb_session(store.root / ".tmp") as connection:
        connection.execute("SET VARIABLE user_hash_key = $key", {"key": key})
        load_with_archive(
            connection,
            stream,
            source,
            f"""
            CREATE TEMP TABLE rollup AS
            SELECT {REQUEST_CLIENTS_MINUTE.select_list()} FROM (
                SELECT
                    make_timestamp(epoch_us(CAST(ts AS TIMESTAMPTZ)) // 60000000 * 60000000)
                        AS minute,
                    CASE WHEN ip IS NULL THEN NULL
                        ELSE sha256(getvariable('user_hash_key') || CAST(ip AS VARCHAR)) END
                        AS client_hash,
                    CASE WHEN user_id IS NULL THEN NULL
                        ELSE sha256(getvariable('user_hash_key') || CAST(user_id AS VARCHAR)) END
                        AS user_hash,
                    count(*) AS requests,
                    count_if(status_code = 429) AS rate_limited
                FROM source_rows
                WHERE ts IS NOT NULL
                GROUP BY ALL
            )
            """,
            archived,
            where,
        )
        connection.execute("RESET VARIABLE user_hash_key")
        rows_read = connection.execute("SELECT coalesce(sum(requests), 0) FROM rollup").fetchone()[
            0
        ]
        partitions, rows_written = replace_hour_partitions(
            connection, store, REQUEST_CLIENTS_MINUTE, "minute", start, end
        )
        preview = preview_rows(connection, "rollup", "requests DESC")
    return RollupResult(
        REQUEST_CLIENTS_MINUTE.name,
        start,
        end,
        tuple(partitions),
        int(rows_read),
        rows_written,
        time.perf_counter() - started,
        preview,
    )


def refresh_recent_clients(
    db: AppDatabase,
    store: RollupStore,
    settings: AnalyticsSettings,
    config: HousekeepingConfig,
    now: datetime,
) -> str:
    """The freshness sensor's step: recompute the minutes within ``late_row_grace`` up to the
    end of the current hour. A request log without ``ip`` or ``user_id`` columns skips it, said
    in the returned line (as the jobs rollup does without a jobs table)."""
    now = now.astimezone(UTC)
    start = floor_minute(now - settings.late_row_grace)
    try:
        result = refresh_request_clients(db, store, settings, config, start, floor_hour(now) + HOUR)
    except SourceError as exc:
        return f"security signals skipped: {exc}"
    return (
        f"security signals from {result.start:%H:%M} UTC ({result.rows_read:,} requests, "
        f"{result.seconds:.2f} s)"
    )
