"""Paid-API usage per day x service x endpoint, and month-to-date totals against budgets.

Days follow the analytics time zone (``analytics.timezone``, else the config's), so "today's
cost" matches the finance team's day. One Parquet file per day; re-materialising a day replaces
exactly it: with the rows a cleanup policy archived read back, and never with fewer calls, errors
or tokens than published (``cleaned_up.py``).

NULLs: a call without ``ts`` is in no day (``rows_without_timestamp``); without
``response_time_ms`` it counts as a call but not in the response time columns; NULL
``tokens_used`` or ``cost_usd`` adds nothing to the sums (the sums are over the calls that report
them); NULL ``success`` is not an error (unknown); a NULL service or endpoint is ``(none)``. The month-to-date view (analytics/views.py) compares each service's totals with its
configured monthly limits (``analytics.budgets``): ``budget_used_fraction`` is the largest of
calls, tokens and cost used, NULL when the service has no budget.
"""

from __future__ import annotations

import time
from datetime import date

from analytics.datasets import API_USAGE_DAILY
from analytics.extract import (
    ColumnKind,
    Source,
    TimeRange,
    check_source,
    rows_without,
)
from analytics.publish import RollupStore
from analytics.rollups.cleaned_up import Cleanup, load_with_archive, stream_with_archive
from analytics.rollups.engine import (
    RollupResult,
    day_bounds,
    duckdb_session,
    keep_published_where_lower,
    preview_rows,
    replace_dataset_partition,
    text_or_placeholder,
)
from analytics.settings import AnalyticsSettings
from analytics.sketch import bucket_sql, sketch_sql
from housekeeping.config import HousekeepingConfig
from housekeeping.database import AppDatabase
from housekeeping.sql import sql_string


def api_usage_source(settings: AnalyticsSettings) -> Source:
    """The API usage table and columns ``analytics.sources.api_usage`` maps."""
    return Source.from_config(
        settings.sources.api_usage,
        "analytics.sources.api_usage",
        {
            "ts": ColumnKind.TIMESTAMP,
            "service": ColumnKind.TEXT,
            "endpoint": ColumnKind.TEXT,
            "response_time_ms": ColumnKind.NUMBER,
            "tokens_used": ColumnKind.NUMBER,
            "cost_usd": ColumnKind.NUMBER,
            "success": ColumnKind.BOOLEAN,
        },
    )


def refresh_api_usage(
    db: AppDatabase,
    store: RollupStore,
    settings: AnalyticsSettings,
    day: date,
    timezone: str,
    *,
    config: HousekeepingConfig | None = None,
    check: bool = True,
) -> RollupResult:
    """Recompute one day (in ``timezone``) and replace its file.

    With ``config``, the rows its policies archived are read back. Raises ``SourceError``
    (mapping, archive) or ``DatabaseError``.
    """
    started = time.perf_counter()
    source = api_usage_source(settings)
    if check:
        source = check_source(db, source)
    start, end = day_bounds(day, timezone)
    where = [TimeRange("ts", start, end)]
    aliases = [
        "ts",
        "service",
        "endpoint",
        "response_time_ms",
        "tokens_used",
        "cost_usd",
        "success",
    ]
    source, stream, archived = stream_with_archive(
        db, config, source, aliases, where, streams=settings.extract_workers
    )
    response = "CAST(response_time_ms AS DOUBLE)"
    buckets = f"list({bucket_sql(response)})"
    with duckdb_session(store.root / ".tmp") as connection:
        from_archive = load_with_archive(
            connection,
            stream,
            source,
            f"""
                CREATE TEMP TABLE rollup AS
                SELECT {API_USAGE_DAILY.select_list()} FROM (
                    SELECT
                        DATE {sql_string(day.isoformat())} AS day,
                        {text_or_placeholder("service")} AS service,
                        {text_or_placeholder("endpoint")} AS endpoint,
                        count(*) AS calls,
                        count(*) FILTER (WHERE NOT CAST(success AS BOOLEAN)) AS errors,
                        CAST(coalesce(sum(tokens_used), 0) AS BIGINT) AS tokens,
                        -- an exact decimal sum is the same in any row order, so a re-run
                        -- (with archived rows read back) writes the same number
                        coalesce(sum(CAST(cost_usd AS DECIMAL(38, 9))), 0) AS cost_usd,
                        quantile_cont({response}, 0.95) AS response_time_p95_ms,
                        {sketch_sql(buckets)} AS response_time_sketch
                    FROM source_rows
                    GROUP BY ALL
                )
                """,
            archived,
            where,
        )
        rows_read = connection.execute("SELECT coalesce(sum(calls), 0) FROM rollup").fetchone()[0]
        kept = keep_published_where_lower(
            connection,
            store,
            API_USAGE_DAILY,
            [day.isoformat()],
            "day",
            "TRUE",
            {"calls": "TRUE", "errors": "TRUE", "tokens": "TRUE"},
        )
        written = replace_dataset_partition(
            connection, store, API_USAGE_DAILY, day.isoformat(), "rollup", "service, endpoint"
        )
        preview = preview_rows(connection, "rollup", "cost_usd DESC")
    return RollupResult(
        API_USAGE_DAILY.name,
        start,
        end,
        (day.isoformat(),),
        int(rows_read),
        written,
        time.perf_counter() - started,
        preview,
        rows_from_archive=from_archive,
        kept_from_published=kept,
        kept_reason=(
            f"{day} had fewer calls in {source.table} than published; kept the published day: "
            f"{Cleanup.of(config, source.table).kept_why()}"
            if kept
            else ""
        ),
        rows_without_timestamp=rows_without(db, source, "ts"),
    )
