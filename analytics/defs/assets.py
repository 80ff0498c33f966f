"""Dagster assets of the rollups: thin adapters over analytics.rollups.

Each materialization replaces exactly its partitions, reports row counts, timing and a preview as
metadata the UI plots across runs, and declares its columns so the UI shows the schema.
"""

import warnings
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

import dagster as dg

from analytics.datasets import (
    API_USAGE_DAILY,
    HOUSEKEEPING_RUNS,
    HOUSEKEEPING_SUMMARY,
    JOBS_HOURLY,
    REQUESTS_MINUTE,
    TABLE_STATS,
    TOKEN_REVOCATIONS_BY_USER,
    TOKEN_REVOCATIONS_DAILY,
    Dataset,
)
from analytics.defs.partitions import daily_partitions, hourly_partitions
from analytics.defs.resources import AnalyticsResource
from analytics.rollups.api_usage import refresh_api_usage
from analytics.rollups.engine import RollupResult
from analytics.rollups.housekeeping_runs import (
    refresh_housekeeping_runs,
    refresh_housekeeping_summary,
)
from analytics.rollups.jobs import refresh_jobs
from analytics.rollups.requests import refresh_requests
from analytics.rollups.table_stats import snapshot_table_stats
from analytics.rollups.token_revocations import refresh_token_revocations
from analytics.settings import AnalyticsSettings
from housekeeping.history import RunHistory

GROUP = "analytics"
# Hourly rollups backfill 24 partitions per run; Dagster marks backfill_policy beta and warns on
# every definitions load (the demo, the CLI, each code-server start). Known and accepted.
warnings.filterwarnings("ignore", message=".*backfill_policy.*", category=dg.BetaWarning)
REQUESTS_MINUTE_KEY = dg.AssetKey([GROUP, REQUESTS_MINUTE.name])
# One writer per dataset at a time; the instance's pool limit (1 by default) enforces it, and
# the dataset lock file covers the freshness sensor and anything outside Dagster.
REQUESTS_POOL = "analytics_requests_minute"


def column_schema(dataset: Dataset) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(column.name, column.type, description=column.description)
            for column in dataset.columns
        ]
    )


def _preview_table(rows: Sequence[dict[str, Any]]) -> dg.MarkdownMetadataValue:
    if not rows:
        return dg.MetadataValue.md("(no rows)")
    names = list(rows[0])
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for row in rows:
        cells = []
        for name in names:
            value = row[name]
            cells.append(f"{value:.2f}" if isinstance(value, float) else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return dg.MetadataValue.md("\n".join(lines))


def result_metadata(result: RollupResult) -> dict[str, Any]:
    return {
        "dagster/row_count": result.rows_written,
        "rows_read": result.rows_read,
        "rows_written": result.rows_written,
        "partitions_written": len(result.partitions),
        "duration_ms": round(result.seconds * 1000, 1),
        "range": f"{result.start:%Y-%m-%d %H:%M} .. {result.end:%Y-%m-%d %H:%M} UTC",
        "preview": _preview_table(result.preview),
    }


def build_requests_minute_asset(settings: AnalyticsSettings, owner: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=REQUESTS_MINUTE_KEY,
        group_name=GROUP,
        description=(
            "HTTP requests per minute x route x method from the application's request logs: "
            "counts by status class, 429s, latency min/max/sum and a mergeable latency sketch "
            "(p50/p95/p99 over any window within 1 %). One Parquet file per UTC hour; "
            "re-materialising an hour replaces exactly that hour. The current hour is kept "
            "fresh by analytics_freshness_sensor; closed hours are finalised after the "
            "late-row grace."
        ),
        partitions_def=hourly_partitions(settings),
        backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=24),
        pool=REQUESTS_POOL,
        kinds={"duckdb", "parquet"},
        owners=[owner],
        metadata={"dagster/column_schema": column_schema(REQUESTS_MINUTE)},
    )
    def requests_minute(
        context: dg.AssetExecutionContext, analytics: AnalyticsResource
    ) -> dg.MaterializeResult:
        config, loaded = analytics.load()
        store = analytics.store(config, loaded)
        window = context.partition_time_window
        result = refresh_requests(
            analytics.app_database(),
            store,
            loaded,
            window.start.astimezone(UTC),
            window.end.astimezone(UTC),
        )
        context.log.info(
            f"{result.rows_read:,} request log rows -> {result.rows_written:,} minute rows in "
            f"{len(result.partitions)} hour file(s), {result.seconds:.2f} s"
        )
        return dg.MaterializeResult(metadata=result_metadata(result))

    return requests_minute


API_USAGE_DAILY_KEY = dg.AssetKey([GROUP, API_USAGE_DAILY.name])


def build_api_usage_daily_asset(
    settings: AnalyticsSettings, timezone: str, owner: str
) -> dg.AssetsDefinition:
    @dg.asset(
        key=API_USAGE_DAILY_KEY,
        group_name=GROUP,
        description=(
            "Calls to paid external APIs per day x service x endpoint: calls, errors, tokens, "
            "cost, p95 response time and a mergeable sketch; the api_usage_month_to_date view "
            "compares each service's month with its budget (analytics.budgets). One Parquet "
            f"file per day ({timezone}); today's is refreshed every 15 minutes by "
            "analytics_api_usage_schedule."
        ),
        partitions_def=daily_partitions(settings, timezone),
        pool="analytics_api_usage_daily",
        kinds={"duckdb", "parquet"},
        owners=[owner],
        metadata={"dagster/column_schema": column_schema(API_USAGE_DAILY)},
    )
    def api_usage_daily(
        context: dg.AssetExecutionContext, analytics: AnalyticsResource
    ) -> dg.MaterializeResult:
        config, loaded = analytics.load()
        store = analytics.store(config, loaded)
        day = date.fromisoformat(context.partition_key)
        db = analytics.app_database()
        try:
            result = refresh_api_usage(db, store, loaded, day, loaded.day_timezone(config))
        finally:
            db.dispose()
        context.log.info(
            f"{result.rows_read:,} API calls -> {result.rows_written:,} rows for {day}, "
            f"{result.seconds:.2f} s"
        )
        return dg.MaterializeResult(metadata=result_metadata(result))

    return api_usage_daily


JOBS_HOURLY_KEY = dg.AssetKey([GROUP, JOBS_HOURLY.name])


def build_jobs_hourly_asset(settings: AnalyticsSettings, owner: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=JOBS_HOURLY_KEY,
        group_name=GROUP,
        description=(
            "Background jobs per hour x queue x name from the application's jobs table: created, "
            "completed, failed, retried, run time (mean, p95 and a mergeable sketch), and the "
            "backlog (waiting) and stuck (active > stuck_after) snapshots at the end of the hour. "
            "One Parquet file per UTC hour; the current and the previous hour are kept fresh by "
            "analytics_freshness_sensor."
        ),
        partitions_def=hourly_partitions(settings),
        backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=24),
        pool="analytics_jobs_hourly",
        kinds={"duckdb", "parquet"},
        owners=[owner],
        metadata={"dagster/column_schema": column_schema(JOBS_HOURLY)},
    )
    def jobs_hourly(
        context: dg.AssetExecutionContext, analytics: AnalyticsResource
    ) -> dg.MaterializeResult:
        config, loaded = analytics.load()
        store = analytics.store(config, loaded)
        window = context.partition_time_window
        db = analytics.app_database()
        try:
            result = refresh_jobs(
                db,
                store,
                loaded,
                window.start.astimezone(UTC),
                window.end.astimezone(UTC),
                now=db.clock(),
            )
        finally:
            db.dispose()
        context.log.info(
            f"{result.rows_read:,} jobs -> {result.rows_written:,} hourly rows in "
            f"{len(result.partitions)} hour file(s), {result.seconds:.2f} s"
        )
        return dg.MaterializeResult(metadata=result_metadata(result))

    return jobs_hourly


HOUSEKEEPING_RUNS_KEY = dg.AssetKey([GROUP, HOUSEKEEPING_RUNS.name])
HOUSEKEEPING_SUMMARY_KEY = dg.AssetKey([GROUP, HOUSEKEEPING_SUMMARY.name])
TOKEN_REVOCATIONS_DAILY_KEY = dg.AssetKey([GROUP, TOKEN_REVOCATIONS_DAILY.name])
TOKEN_REVOCATIONS_BY_USER_KEY = dg.AssetKey([GROUP, TOKEN_REVOCATIONS_BY_USER.name])
TABLE_STATS_KEY = dg.AssetKey([GROUP, TABLE_STATS.name])


def build_housekeeping_runs_asset(
    settings: AnalyticsSettings, timezone: str, owner: str
) -> dg.AssetsDefinition:
    @dg.asset(
        key=HOUSEKEEPING_RUNS_KEY,
        group_name=GROUP,
        description=(
            "One row per housekeeping run (token cleanup, log and job retention) from the run "
            "history in the state database: status, rows deleted and archived, expected and "
            "remaining expired rows, batches, duration, error. One Parquet file per day "
            f"({timezone}) the runs finished; analytics_housekeeping_history_sensor refreshes a "
            "day when a run is recorded."
        ),
        partitions_def=daily_partitions(settings, timezone),
        pool="analytics_housekeeping_runs",
        kinds={"duckdb", "parquet"},
        owners=[owner],
        metadata={"dagster/column_schema": column_schema(HOUSEKEEPING_RUNS)},
    )
    def housekeeping_runs(
        context: dg.AssetExecutionContext, analytics: AnalyticsResource
    ) -> dg.MaterializeResult:
        config, loaded = analytics.load()
        store = analytics.store(config, loaded)
        history = RunHistory(config.state_database_url)
        try:
            result = refresh_housekeeping_runs(
                history,
                store,
                date.fromisoformat(context.partition_key),
                loaded.day_timezone(config),
            )
        finally:
            history.dispose()
        context.log.info(f"{result.rows_written:,} housekeeping runs on {context.partition_key}")
        return dg.MaterializeResult(metadata=result_metadata(result))

    return housekeeping_runs


def build_housekeeping_summary_asset(owner: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=HOUSEKEEPING_SUMMARY_KEY,
        group_name=GROUP,
        description=(
            "Per housekeeping policy, the reference cleanup metrics: total, successful and "
            "failed runs, rows deleted, average cleanup ms, last success, last failure, last "
            "error, and the status healthy/degraded/critical — computed by the same code as "
            "hk status and the health checks. Rewritten whenever a run is recorded."
        ),
        pool="analytics_housekeeping_summary",
        kinds={"duckdb", "parquet"},
        owners=[owner],
        metadata={"dagster/column_schema": column_schema(HOUSEKEEPING_SUMMARY)},
    )
    def housekeeping_summary(
        context: dg.AssetExecutionContext, analytics: AnalyticsResource
    ) -> dg.MaterializeResult:
        config, loaded = analytics.load()
        store = analytics.store(config, loaded)
        history = RunHistory(config.state_database_url)
        try:
            result = refresh_housekeeping_summary(
                history,
                store,
                {name: policy.table for name, policy in config.policies.items()},
                datetime.now(UTC),
            )
        finally:
            history.dispose()
        context.log.info(f"summary of {result.rows_written} policies")
        metadata = result_metadata(result)
        metadata.pop("range")
        return dg.MaterializeResult(metadata=metadata)

    return housekeeping_summary


def build_token_revocations_assets(
    settings: AnalyticsSettings, timezone: str, owner: str
) -> dg.AssetsDefinition:
    partitions = daily_partitions(settings, timezone)
    common = dict(group_name=GROUP, kinds={"duckdb", "parquet"}, owners=[owner])

    @dg.multi_asset(
        name="token_revocations",
        specs=[
            dg.AssetSpec(
                TOKEN_REVOCATIONS_DAILY_KEY,
                description=(
                    "Revoked tokens per day: revoked, expired, cleaned up (rows the token cleanup "
                    "deleted, from the housekeeping history), users with revocations and the "
                    f"most revocations of one user. One Parquet file per day ({timezone}); "
                    "archived tokens are counted too, and a recount never lowers a published "
                    "count (cleanup deletes rows). Refreshed hourly by "
                    "analytics_token_revocations_schedule."
                ),
                metadata={"dagster/column_schema": column_schema(TOKEN_REVOCATIONS_DAILY)},
                **common,
            ),
            dg.AssetSpec(
                TOKEN_REVOCATIONS_BY_USER_KEY,
                description=(
                    "Token revocations per day x user with the user id replaced by a keyed "
                    "SHA-256 (analytics.user_hash_key_env): the per-user revocation analytics, "
                    "without raw user ids. The view token_revocations_user_distribution counts "
                    "users per number of revocations."
                ),
                metadata={"dagster/column_schema": column_schema(TOKEN_REVOCATIONS_BY_USER)},
                **common,
            ),
        ],
        partitions_def=partitions,
        pool="analytics_token_revocations",
    )
    def token_revocations(context: dg.AssetExecutionContext, analytics: AnalyticsResource):
        config, loaded = analytics.load()
        store = analytics.store(config, loaded)
        db = analytics.app_database()
        history = RunHistory(config.state_database_url)
        try:
            result = refresh_token_revocations(
                db,
                store,
                loaded,
                config,
                history,
                date.fromisoformat(context.partition_key),
                loaded.day_timezone(config),
                now=db.clock(),
            )
        finally:
            history.dispose()
            db.dispose()
        if result.kept_from_published:
            context.log.warning(
                f"{result.kept_from_published} count(s) of {context.partition_key} were higher "
                "in the published files than in the recount (tokens cleaned up without archive); "
                "kept the published values"
            )
        context.log.info(
            f"{result.daily.rows_read:,} revocations on {context.partition_key}, "
            f"{result.by_user.rows_written:,} users"
        )
        for key, part in (
            (TOKEN_REVOCATIONS_DAILY_KEY, result.daily),
            (TOKEN_REVOCATIONS_BY_USER_KEY, result.by_user),
        ):
            metadata = result_metadata(part)
            metadata["kept_from_published"] = result.kept_from_published
            yield dg.MaterializeResult(asset_key=key, metadata=metadata)

    return token_revocations


def build_table_stats_asset(owner: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=TABLE_STATS_KEY,
        group_name=GROUP,
        description=(
            "Snapshots of every housekept table (one row per policy per snapshot): rows, rows "
            "past the policy's cutoff (what the next cleanup deletes), and size on disk (table, "
            "indexes). Each materialization appends one snapshot to the day's Parquet file; "
            "analytics_table_stats_schedule takes one every hour."
        ),
        pool="analytics_table_stats",
        kinds={"duckdb", "parquet"},
        owners=[owner],
        metadata={"dagster/column_schema": column_schema(TABLE_STATS)},
    )
    def table_stats(
        context: dg.AssetExecutionContext, analytics: AnalyticsResource
    ) -> dg.MaterializeResult:
        config, loaded = analytics.load()
        store = analytics.store(config, loaded)
        db = analytics.app_database()
        try:
            result = snapshot_table_stats(db, store, config)
        finally:
            db.dispose()
        context.log.info(f"snapshot of {result.rows_read} tables taken at {result.start:%H:%M:%S}")
        metadata = result_metadata(result)
        metadata["dagster/row_count"] = result.rows_read
        metadata["rows_in_day_file"] = metadata.pop("rows_written")
        metadata["range"] = f"{result.start:%Y-%m-%d %H:%M:%S} UTC"
        return dg.MaterializeResult(metadata=metadata)

    return table_stats
