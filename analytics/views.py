"""The analyst-facing views and macros of the published DuckDB file.

Each dataset is a view over its Parquet files. On top: hourly and daily request views, per route
and overall, whose percentiles come from merging the minute sketches (sum the counts per bucket,
walk the cumulative counts to the two ranks percentile_cont interpolates between) — never from
averaging percentiles — and table macros that do the same for any window.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

from analytics.datasets import Dataset, all_datasets
from analytics.publish import RollupStore
from analytics.settings import ServiceBudget
from analytics.sketch import PERCENTILES, bucket_value_sql, interpolated_sql, rank_buckets_sql
from housekeeping.sql import sql_string

_REQUEST_SUMS = (
    "requests",
    "status_2xx",
    "status_3xx",
    "status_4xx",
    "status_5xx",
    "status_429",
    "status_other",
)


def _merged_requests(keys: Sequence[tuple[str, str]], where: str = "", seconds: str = "60") -> str:
    """Requests grouped by ``keys`` ((alias, expression) pairs over requests_minute).

    ``seconds`` is an expression (over the key aliases) for the length of a group's window,
    for the request rate.
    """
    aliases = [alias for alias, _ in keys]
    key_select = ", ".join(f"{expression} AS {alias}" for alias, expression in keys)
    key_list = ", ".join(aliases)
    sums = ", ".join(f"CAST(sum({name}) AS BIGINT) AS {name}" for name in _REQUEST_SUMS)
    percentile_columns = ", ".join(
        f"{low} AS {name}_low, {high} AS {name}_high"
        for name, q in PERCENTILES.items()
        for low, high in [rank_buckets_sql(q, "cumulative", "total", "bucket")]
    )
    join = " AND ".join(f"t.{alias} IS NOT DISTINCT FROM p.{alias}" for alias in aliases)
    # Interpolated as percentile_cont does, then clamped to the exact min and max (which only
    # moves an estimate closer to the true value).
    percentile_values = ", ".join(
        f"least(greatest({interpolated_sql(q, 'p.timed', f'p.{name}_low', f'p.{name}_high')}, "
        f"t.latency_min_ms), t.latency_max_ms) AS latency_{name}_ms"
        for name, q in PERCENTILES.items()
    )
    return f"""
        WITH base AS (
            SELECT {key_select}, * FROM requests_minute {where}
        ),
        totals AS (
            SELECT {key_list}, {sums},
                min(latency_min_ms) AS latency_min_ms, max(latency_max_ms) AS latency_max_ms,
                sum(latency_sum_ms) AS latency_sum_ms
            FROM base GROUP BY {key_list}
        ),
        buckets AS (
            SELECT {key_list}, entry.bucket AS bucket, sum(entry.count) AS n
            FROM (SELECT {key_list}, unnest(latency_sketch) AS entry FROM base)
            GROUP BY ALL
        ),
        ranked AS (
            SELECT *,
                sum(n) OVER (PARTITION BY {key_list} ORDER BY bucket
                             ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS cumulative,
                sum(n) OVER (PARTITION BY {key_list}) AS total
            FROM buckets
        ),
        percentiles AS (
            SELECT {key_list}, max(total) AS timed, {percentile_columns}
            FROM ranked GROUP BY {key_list}
        )
        SELECT
            {", ".join(f"t.{alias}" for alias in aliases)},
            {", ".join(f"t.{name}" for name in _REQUEST_SUMS)},
            t.requests / ({seconds}) AS request_rate_per_s,
            t.status_5xx / nullif(t.requests, 0) AS error_rate,
            t.status_4xx / nullif(t.requests, 0) AS client_error_rate,
            t.status_429 / nullif(t.requests, 0) AS rate_limited_rate,
            t.latency_min_ms, t.latency_max_ms,
            -- over the requests that have a duration: the sketch counts exactly those
            t.latency_sum_ms / nullif(p.timed, 0) AS latency_avg_ms,
            {percentile_values}
        FROM totals t LEFT JOIN percentiles p ON {join}
    """


def view_statements(
    store: RollupStore,
    datasets: Sequence[Dataset],
    timezone: str,
    budgets: Mapping[str, ServiceBudget] | None = None,
) -> list[str]:
    """Every statement of the views file, in order (its content hash is its version)."""
    return _statements(store.dataset_glob, datasets, timezone, budgets)


def view_datasets(datasets: Sequence[Dataset]) -> dict[str, Dataset]:
    """Each view and table macro of the views file (``requests_hourly``, ``jobs_daily``,
    ``request_stats``...) -> the first of ``datasets`` its SQL reads, directly or through
    another view. A dataset's own view is not listed."""
    by_name = {dataset.name: dataset for dataset in datasets}
    views: dict[str, Dataset] = {}
    for statement in _statements(lambda name: name, datasets, "UTC", None):
        created = re.match(r"CREATE (?:VIEW|MACRO) ([A-Za-z_][A-Za-z0-9_]*)", statement)
        if created is None or created.group(1) in views or created.group(1) in by_name:
            continue
        for word in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", statement[created.end() :]):
            read = by_name.get(word) or views.get(word)
            if read is not None:
                views[created.group(1)] = read
                break
    return views


def _statements(
    glob_of: Callable[[str], str],
    datasets: Sequence[Dataset],
    timezone: str,
    budgets: Mapping[str, ServiceBudget] | None,
) -> list[str]:
    tz = sql_string(timezone)
    statements = [
        f"CREATE MACRO latency_bucket_value(bucket) AS {bucket_value_sql('bucket')}",
    ]
    for dataset in datasets:
        glob = sql_string(glob_of(dataset.name))
        statements.append(
            f"CREATE VIEW {dataset.name} AS SELECT * FROM read_parquet({glob}, union_by_name = true)"
        )
        statements.append(f"COMMENT ON VIEW {dataset.name} IS {sql_string(dataset.description)}")
    local_day = f"CAST(timezone({tz}, timezone('UTC', minute)) AS DATE)"
    day_seconds = (
        f"date_diff('second', timezone({tz}, CAST(t.day AS TIMESTAMP)), "
        f"timezone({tz}, CAST(t.day + 1 AS TIMESTAMP)))"
    )
    hour = "date_trunc('hour', minute)"
    statements += [
        "CREATE VIEW request_latency_buckets AS "
        "SELECT minute, route, method, unnest(latency_sketch, recursive := true) "
        "FROM requests_minute",
        "CREATE VIEW requests_hourly AS "
        + _merged_requests(
            [("hour", hour), ("route", "route"), ("method", "method")], seconds="3600"
        ),
        "CREATE VIEW requests_hourly_overall AS "
        + _merged_requests([("hour", hour)], seconds="3600"),
        "CREATE VIEW requests_daily AS "
        + _merged_requests(
            [("day", local_day), ("route", "route"), ("method", "method")], seconds=day_seconds
        ),
        "CREATE VIEW requests_daily_overall AS "
        + _merged_requests([("day", local_day)], seconds=day_seconds),
        *request_stat_macros(),
        "CREATE VIEW jobs_daily AS "
        f"SELECT CAST(timezone({tz}, timezone('UTC', hour)) AS DATE) AS day, queue, "
        "CAST(sum(created) AS BIGINT) AS created, CAST(sum(completed) AS BIGINT) AS completed, "
        "CAST(sum(failed) AS BIGINT) AS failed, CAST(sum(retried) AS BIGINT) AS retried, "
        "sum(failed) / nullif(sum(completed) + sum(failed), 0) AS failure_rate, "
        "max(backlog) AS max_backlog, max(stuck) AS max_stuck "
        "FROM (SELECT hour, queue, sum(created) AS created, sum(completed) AS completed, "
        "sum(failed) AS failed, sum(retried) AS retried, sum(backlog) AS backlog, "
        "sum(stuck) AS stuck FROM jobs_hourly GROUP BY hour, queue) GROUP BY ALL",
        *budget_statements(budgets or {}),
        *housekeeping_statements(),
    ]
    return statements


def budget_statements(budgets: Mapping[str, ServiceBudget]) -> list[str]:
    """The budget table (``analytics.budgets``) and the API-usage month-to-date view."""
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


def housekeeping_statements() -> list[str]:
    """Views over the housekeeping history, token revocation and table-stats datasets."""
    return [
        "CREATE VIEW housekeeping_daily AS "
        "SELECT day, policy, count(*) AS runs, count_if(status = 'success') AS successful_runs, "
        "count_if(status = 'failed') AS failed_runs, CAST(sum(deleted) AS BIGINT) AS deleted, "
        "CAST(sum(archived_rows) AS BIGINT) AS archived_rows, "
        "avg(duration_ms) FILTER (WHERE status <> 'failed') AS average_cleanup_ms, "
        "max(duration_ms) AS max_duration_ms "
        "FROM housekeeping_runs GROUP BY ALL",
        "CREATE VIEW token_revocations_user_distribution AS "
        "SELECT day, revoked AS revocations_per_user, count(*) AS users, "
        "CAST(sum(revoked) AS BIGINT) AS revocations "
        "FROM token_revocations_by_user WHERE user_hash IS NOT NULL GROUP BY ALL",
        "CREATE VIEW table_stats_latest AS "
        "SELECT * FROM table_stats QUALIFY row_number() OVER "
        "(PARTITION BY policy ORDER BY taken_at DESC) = 1",
    ]


def request_stat_macros() -> list[str]:
    """``request_stats(from, to)`` per route and ``request_stats_overall(from, to)``.

    Defined over a relation named ``requests_minute``: the published view, or the alert
    evaluation's in-memory copy of the minutes it needs.
    """
    window = "date_diff('second', CAST(from_ts AS TIMESTAMP), CAST(to_ts AS TIMESTAMP))"
    where = "WHERE minute >= from_ts AND minute < to_ts"
    return [
        "CREATE MACRO request_stats(from_ts, to_ts) AS TABLE "
        + _merged_requests([("route", "route")], where=where, seconds=window),
        "CREATE MACRO request_stats_overall(from_ts, to_ts) AS TABLE "
        + _merged_requests([("scope", "'all'")], where=where, seconds=window),
    ]


def publish_rollup_views(
    store: RollupStore, timezone: str, budgets: Mapping[str, ServiceBudget] | None = None
) -> bool:
    """Every dataset folder with its schema file, then the views file; False when unchanged."""
    datasets = all_datasets()
    store.prepare({dataset.name: dataset.typed_columns for dataset in datasets})
    return store.publish_views(view_statements(store, datasets, timezone, budgets))
