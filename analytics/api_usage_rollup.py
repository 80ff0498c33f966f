"""Paid-API usage per day x service x endpoint, and month-to-date totals against budgets.

Days follow the analytics time zone (``analytics.timezone``, else the config's), so "today's
cost" matches the finance team's day. One Parquet file per day; re-materialising a day replaces
exactly it. The month-to-date view compares each service's totals with its configured monthly
limits (``analytics.budgets``): ``budget_used_fraction`` is the largest of calls, tokens and cost
used, NULL when the service has no budget.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from analytics.extract import ColumnKind, Source, SourceColumn, TimeRange, check_source, stream_rows
from analytics.publish import RollupStore
from analytics.rollups import (
    SKETCH_TYPE,
    Column,
    Dataset,
    RollupResult,
    _preview,
    duckdb_session,
    load_stream,
    replace_dataset_partition,
)
from analytics.settings import AnalyticsSettings, ServiceBudget
from analytics.sketch import bucket_sql
from housekeeping.database import AppDatabase
from housekeeping.sql import sql_string

API_USAGE_DAILY = Dataset(
    "api_usage_daily",
    "Calls to paid external APIs per day x service x endpoint: calls, errors, tokens, cost, "
    "response time.",
    (
        Column("day", "DATE", "the day in the analytics time zone"),
        Column("service", "VARCHAR", "external service"),
        Column("endpoint", "VARCHAR", "endpoint or model"),
        Column("calls", "BIGINT", "calls made"),
        Column("errors", "BIGINT", "calls that did not succeed"),
        Column("tokens", "BIGINT", "tokens used"),
        Column("cost_usd", "DOUBLE", "cost in USD"),
        Column("response_time_p95_ms", "DOUBLE", "p95 response time (ms)"),
        Column("response_time_sketch", SKETCH_TYPE, "response time histogram; merge by summing"),
    ),
)


def api_usage_source(settings: AnalyticsSettings) -> Source:
    config = settings.sources.api_usage
    key = "analytics.sources.api_usage"
    kinds = {
        "ts": ColumnKind.TIMESTAMP,
        "service": ColumnKind.TEXT,
        "endpoint": ColumnKind.TEXT,
        "response_time_ms": ColumnKind.NUMBER,
        "tokens_used": ColumnKind.NUMBER,
        "cost_usd": ColumnKind.NUMBER,
        "success": ColumnKind.BOOLEAN,
    }
    return Source(
        config.table,
        key,
        tuple(
            SourceColumn(alias, getattr(config, alias), kind, f"{key}.{alias}")
            for alias, kind in kinds.items()
        ),
    )


def day_bounds(day: date, timezone: str) -> tuple[datetime, datetime]:
    """The UTC instants where ``day`` starts and ends in ``timezone`` (23 or 25 h on DST days)."""
    zone = ZoneInfo(timezone)
    start = datetime.combine(day, datetime.min.time(), zone)
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), zone)
    return start.astimezone(UTC), end.astimezone(UTC)


def refresh_api_usage(
    db: AppDatabase,
    store: RollupStore,
    settings: AnalyticsSettings,
    day: date,
    timezone: str,
    *,
    check: bool = True,
) -> RollupResult:
    """Recompute one day (in ``timezone``) and replace its file."""
    started = time.perf_counter()
    source = api_usage_source(settings)
    if check:
        check_source(db, source)
    start, end = day_bounds(day, timezone)
    stream = stream_rows(
        db,
        source,
        ["ts", "service", "endpoint", "response_time_ms", "tokens_used", "cost_usd", "success"],
        [TimeRange("ts", start, end)],
    )
    response = "CAST(response_time_ms AS DOUBLE)"
    with duckdb_session(store.root / ".tmp") as connection:
        load_stream(
            connection,
            stream,
            source,
            f"""
                CREATE TEMP TABLE rollup AS
                SELECT {API_USAGE_DAILY.select_list()} FROM (
                    SELECT
                        DATE {sql_string(day.isoformat())} AS day,
                        coalesce(CAST(service AS VARCHAR), '(none)') AS service,
                        coalesce(CAST(endpoint AS VARCHAR), '(none)') AS endpoint,
                        count(*) AS calls,
                        count(*) FILTER (WHERE NOT CAST(success AS BOOLEAN)) AS errors,
                        CAST(coalesce(sum(tokens_used), 0) AS BIGINT) AS tokens,
                        coalesce(sum(CAST(cost_usd AS DOUBLE)), 0) AS cost_usd,
                        quantile_disc({response}, 0.95) AS response_time_p95_ms,
                        list_sort(list_transform(
                            map_entries(list_aggregate(
                                list({bucket_sql(response)}) FILTER (WHERE {response} IS NOT NULL),
                                'histogram')),
                            lambda e: {{'bucket': e.key, 'count': CAST(e.value AS INTEGER)}}
                        )) AS response_time_sketch
                    FROM source_rows
                    GROUP BY ALL
                )
                """,
        )
        rows_read = connection.execute("SELECT coalesce(sum(calls), 0) FROM rollup").fetchone()[0]
        written = replace_dataset_partition(
            connection, store, API_USAGE_DAILY, day.isoformat(), "rollup", "service, endpoint"
        )
        preview = _preview(connection, "rollup", "cost_usd DESC")
    return RollupResult(
        API_USAGE_DAILY.name,
        start,
        end,
        (day.isoformat(),),
        int(rows_read),
        written,
        time.perf_counter() - started,
        preview,
    )


def budget_statements(budgets: dict[str, ServiceBudget]) -> list[str]:
    """The budget table and the month-to-date view of the views file."""
    rows = [
        "("
        + ", ".join(
            [
                sql_string(service),
                str(budget.monthly_calls) if budget.monthly_calls is not None else "NULL",
                str(budget.monthly_tokens) if budget.monthly_tokens is not None else "NULL",
                repr(budget.monthly_cost_usd) if budget.monthly_cost_usd is not None else "NULL",
            ]
        )
        + ")"
        for service, budget in sorted(budgets.items())
    ]
    table = (
        "CREATE TABLE api_budgets (service VARCHAR, monthly_calls BIGINT, "
        "monthly_tokens BIGINT, monthly_cost_usd DOUBLE)"
    )
    statements = [table]
    if rows:
        statements.append(f"INSERT INTO api_budgets VALUES {', '.join(rows)}")
    statements.append(
        "CREATE VIEW api_usage_month_to_date AS "
        "SELECT u.month, u.service, u.calls, u.errors, u.tokens, u.cost_usd, "
        "b.monthly_calls, b.monthly_tokens, b.monthly_cost_usd, "
        "list_max([u.calls / b.monthly_calls, u.tokens / b.monthly_tokens, "
        "u.cost_usd / b.monthly_cost_usd]) AS budget_used_fraction "
        "FROM (SELECT CAST(date_trunc('month', day) AS DATE) AS month, service, "
        "CAST(sum(calls) AS BIGINT) AS calls, CAST(sum(errors) AS BIGINT) AS errors, "
        "CAST(sum(tokens) AS BIGINT) AS tokens, sum(cost_usd) AS cost_usd "
        "FROM api_usage_daily GROUP BY ALL) u LEFT JOIN api_budgets b USING (service)"
    )
    return statements
