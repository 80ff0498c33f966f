"""Dagster assets of the rollups: one factory over a table of thin adapters to analytics.rollups.

Each row of ``ROLLUP_ASSETS`` is one asset (or, for the token revocations, one step writing two
datasets): its datasets and descriptions, its partitions, its pool, its job, and the refresh it
runs. Each materialization replaces exactly its partitions, reports row counts, timing and a
preview as metadata the UI plots across runs, and declares its columns so the UI shows the schema.
Adding a rollup is one row here.
"""

import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cached_property
from typing import Any, Self

import dagster as dg

from analytics.datasets import (
    API_USAGE_DAILY,
    HOUSEKEEPING_RUNS,
    HOUSEKEEPING_SUMMARY,
    JOBS_HOURLY,
    PG_HEALTH,
    PG_STATEMENT_STATS,
    PG_TABLE_HEALTH,
    REQUEST_CLIENTS_MINUTE,
    REQUESTS_MINUTE,
    TABLE_STATS,
    TOKEN_REVOCATIONS_BY_USER,
    TOKEN_REVOCATIONS_DAILY,
    Dataset,
)
from analytics.defs.partitions import Partitioning, partitions_for
from analytics.defs.resources import AnalyticsResource
from analytics.rollups.api_usage import refresh_api_usage
from analytics.rollups.engine import RollupResult
from analytics.rollups.housekeeping_runs import (
    refresh_housekeeping_runs,
    refresh_housekeeping_summary,
)
from analytics.rollups.jobs import refresh_jobs
from analytics.rollups.pg_health import publish_snapshot
from analytics.rollups.request_clients import refresh_request_clients
from analytics.rollups.requests import refresh_requests
from analytics.rollups.table_stats import snapshot_table_stats
from analytics.rollups.token_revocations import refresh_token_revocations
from analytics.settings import AnalyticsSettings
from housekeeping.database import AppDatabase
from housekeeping.history import RunHistory

GROUP = "analytics"
KINDS = {"duckdb", "parquet"}
# Hourly rollups backfill 24 partitions per run; Dagster marks backfill_policy beta and warns on
# every definitions load (the demo, the CLI, each code-server start). Known and accepted.
warnings.filterwarnings("ignore", message=".*backfill_policy.*", category=dg.BetaWarning)
HOURLY_BACKFILL = dg.BackfillPolicy.multi_run(max_partitions_per_run=24)


def asset_key(dataset: Dataset) -> dg.AssetKey:
    """The asset key of a published dataset: ``analytics/<dataset>``."""
    return dg.AssetKey([GROUP, dataset.name])


def column_schema(dataset: Dataset) -> dg.TableSchema:
    """The dataset's columns as the UI shows them (name, DuckDB type, description)."""
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
    """A refresh's figures as materialization metadata (row counts, timing, range, preview;
    rows read back from the archive, published units kept and why, rows without timestamp)."""
    metadata: dict[str, Any] = {
        "dagster/row_count": result.rows_written,
        "rows_read": result.rows_read,
        "rows_written": result.rows_written,
        "partitions_written": len(result.partitions),
        "duration_ms": round(result.seconds * 1000, 1),
        "range": f"{result.start:%Y-%m-%d %H:%M} .. {result.end:%Y-%m-%d %H:%M} UTC",
        "preview": _preview_table(result.preview),
    }
    optional = {
        "rows_from_archive": result.rows_from_archive,
        "kept_from_published": result.kept_from_published,
        "kept_reason": result.kept_reason or None,
        "rows_without_timestamp": result.rows_without_timestamp,
    }
    metadata.update({key: value for key, value in optional.items() if value is not None})
    return metadata


class RollupRun:
    """One materialization's (or sensor tick's) inputs: the loaded config, the store, the
    partition, and the databases it opens (each on first use; disposed when the ``with`` block
    ends)."""

    def __init__(
        self,
        context: dg.AssetExecutionContext | dg.SensorEvaluationContext,
        analytics: AnalyticsResource,
    ) -> None:
        self.context = context
        self.log = context.log
        self.config, self.settings = analytics.load()
        # Every dataset folder and the current views file are in place before anything is read.
        self.store = analytics.store(self.config, self.settings)
        self.day_timezone = self.settings.day_timezone(self.config)
        self._analytics = analytics
        self._opened: list[AppDatabase | RunHistory] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for database in reversed(self._opened):
            database.dispose()

    @cached_property
    def app_database(self) -> AppDatabase:
        """The application database (``DATABASE_URL``)."""
        database = self._analytics.app_database()
        self._opened.append(database)
        return database

    @cached_property
    def history(self) -> RunHistory:
        """The housekeeping run history in the state database."""
        history = RunHistory.from_config(self.config)
        self._opened.append(history)
        return history

    @property
    def day(self) -> date:
        """The day of a daily partition."""
        return date.fromisoformat(self.context.partition_key)

    @property
    def hours(self) -> tuple[datetime, datetime]:
        """The UTC range of an hourly partition (or of a range of them)."""
        window = self.context.partition_time_window
        return window.start.astimezone(UTC), window.end.astimezone(UTC)


Refresh = Callable[[RollupRun], Iterator[dg.MaterializeResult]]


@dataclass(frozen=True)
class RollupAsset:
    """One row of the table: what the factory needs to build one rollup asset and its job.

    ``datasets`` pairs each dataset the step writes with its description, where ``{timezone}``
    stands for the analytics time zone. ``refresh`` runs the rollup and yields one
    ``MaterializeResult`` per dataset.
    """

    datasets: tuple[tuple[Dataset, str], ...]
    partitioning: Partitioning
    pool: str  # one writer per dataset: the instance's pool limit (1 by default) enforces it
    refresh: Refresh
    job: str
    job_description: str
    # The step's name when it writes several datasets; one dataset's step is named by its key.
    multi_asset_name: str | None = None

    @property
    def keys(self) -> list[dg.AssetKey]:
        """The asset keys of the row's datasets."""
        return [asset_key(dataset) for dataset, _ in self.datasets]


def _warn_about(run: RollupRun, result: RollupResult) -> None:
    """A recount that kept published rows, or source rows no partition holds, is a warning."""
    if result.kept_reason:
        run.log.warning(result.kept_reason)
    if result.rows_without_timestamp:
        run.log.warning(
            f"{result.rows_without_timestamp:,} row(s) of the source have no timestamp to place "
            "them in a partition; not counted"
        )


def _requests_minute(run: RollupRun) -> Iterator[dg.MaterializeResult]:
    start, end = run.hours
    result = refresh_requests(
        run.app_database, run.store, run.settings, start, end, config=run.config
    )
    _warn_about(run, result)
    run.log.info(
        f"{result.rows_read:,} request log rows -> {result.rows_written:,} minute rows in "
        f"{len(result.partitions)} hour file(s), {result.seconds:.2f} s"
    )
    yield dg.MaterializeResult(metadata=result_metadata(result))


def _api_usage_daily(run: RollupRun) -> Iterator[dg.MaterializeResult]:
    day = run.day
    result = refresh_api_usage(
        run.app_database, run.store, run.settings, day, run.day_timezone, config=run.config
    )
    _warn_about(run, result)
    run.log.info(
        f"{result.rows_read:,} API calls -> {result.rows_written:,} rows for {day}, "
        f"{result.seconds:.2f} s"
    )
    yield dg.MaterializeResult(metadata=result_metadata(result))


def _jobs_hourly(run: RollupRun) -> Iterator[dg.MaterializeResult]:
    start, end = run.hours
    db = run.app_database
    result = refresh_jobs(db, run.store, run.settings, start, end, db.clock(), config=run.config)
    _warn_about(run, result)
    run.log.info(
        f"{result.rows_read:,} jobs -> {result.rows_written:,} hourly rows in "
        f"{len(result.partitions)} hour file(s), {result.seconds:.2f} s"
    )
    yield dg.MaterializeResult(metadata=result_metadata(result))


def _housekeeping_runs(run: RollupRun) -> Iterator[dg.MaterializeResult]:
    result = refresh_housekeeping_runs(run.history, run.store, run.day, run.day_timezone)
    run.log.info(f"{result.rows_written:,} housekeeping runs on {run.context.partition_key}")
    yield dg.MaterializeResult(metadata=result_metadata(result))


def _housekeeping_summary(run: RollupRun) -> Iterator[dg.MaterializeResult]:
    result = refresh_housekeeping_summary(
        run.history,
        run.store,
        {name: str(policy.table) for name, policy in run.config.policies.items()},
        datetime.now(UTC),
    )
    run.log.info(f"summary of {result.rows_written} policies")
    metadata = result_metadata(result)
    metadata.pop("range")
    yield dg.MaterializeResult(metadata=metadata)


def _token_revocations(run: RollupRun) -> Iterator[dg.MaterializeResult]:
    db = run.app_database
    result = refresh_token_revocations(
        db,
        run.store,
        run.settings,
        run.config,
        run.history,
        run.day,
        run.day_timezone,
        now=db.clock(),
    )
    partition = run.context.partition_key
    if result.kept_from_published:
        run.log.warning(
            f"{result.kept_from_published} count(s) of {partition} were higher "
            "in the published files than in the recount (tokens cleaned up without archive); "
            "kept the published values"
        )
    run.log.info(
        f"{result.daily.rows_read:,} revocations on {partition}, "
        f"{result.by_user.rows_written:,} users"
    )
    for dataset, part in (
        (TOKEN_REVOCATIONS_DAILY, result.daily),
        (TOKEN_REVOCATIONS_BY_USER, result.by_user),
    ):
        metadata = result_metadata(part)
        metadata["kept_from_published"] = result.kept_from_published
        yield dg.MaterializeResult(asset_key=asset_key(dataset), metadata=metadata)


def _table_stats(run: RollupRun) -> Iterator[dg.MaterializeResult]:
    result = snapshot_table_stats(run.app_database, run.store, run.config)
    run.log.info(f"snapshot of {result.rows_read} tables taken at {result.start:%H:%M:%S}")
    metadata = result_metadata(result)
    metadata["dagster/row_count"] = result.rows_read
    metadata["rows_in_day_file"] = metadata.pop("rows_written")
    metadata["range"] = f"{result.start:%Y-%m-%d %H:%M:%S} UTC"
    yield dg.MaterializeResult(metadata=metadata)


def _pg_health(run: RollupRun) -> Iterator[dg.MaterializeResult]:
    snapshot, result = publish_snapshot(run.app_database, run.store, run.config)
    run.log.info(f"health snapshot taken at {result.start:%H:%M:%S}")
    metadata = result_metadata(result)
    metadata["rows_in_hour_file"] = metadata.pop("rows_written")
    if snapshot.missing:
        metadata["missing"] = snapshot.missing_line()
        run.log.warning(f"health snapshot incomplete: {snapshot.missing_line()}")
    yield dg.MaterializeResult(asset_key=asset_key(PG_HEALTH), metadata=metadata)
    for dataset in (PG_TABLE_HEALTH, PG_STATEMENT_STATS):
        yield dg.MaterializeResult(asset_key=asset_key(dataset))


REQUESTS_MINUTE_ASSET = RollupAsset(
    datasets=(
        (
            REQUESTS_MINUTE,
            "HTTP requests per minute x route x method from the application's request logs: "
            "counts by status class, 429s, latency min/max/sum and a mergeable latency sketch "
            "(p50/p95/p99 over any window within 1 %). One Parquet file per UTC hour; "
            "re-materialising an hour replaces exactly that hour. The current hour is kept "
            "fresh by analytics_freshness_sensor; closed hours are finalised after the "
            "late-row grace.",
        ),
    ),
    partitioning=Partitioning.HOURLY,
    # The dataset lock file covers the freshness sensor and anything outside Dagster.
    pool="analytics_requests_minute",
    refresh=_requests_minute,
    job="analytics_requests_job",
    job_description="Recomputes hours of the minute request rollups from the request logs.",
)

JOBS_HOURLY_ASSET = RollupAsset(
    datasets=(
        (
            JOBS_HOURLY,
            "Background jobs per hour x queue x name from the application's jobs table: created, "
            "completed, failed, retried, run time (mean, p95 and a mergeable sketch), and the "
            "backlog (waiting) and stuck (active > stuck_after) snapshots at the end of the hour. "
            "One Parquet file per UTC hour; the current and the previous hour are kept fresh by "
            "analytics_freshness_sensor.",
        ),
    ),
    partitioning=Partitioning.HOURLY,
    pool="analytics_jobs_hourly",
    refresh=_jobs_hourly,
    job="analytics_jobs_job",
    job_description="Recomputes hours of the jobs rollup from the jobs table.",
)

API_USAGE_DAILY_ASSET = RollupAsset(
    datasets=(
        (
            API_USAGE_DAILY,
            "Calls to paid external APIs per day x service x endpoint: calls, errors, tokens, "
            "cost, p95 response time and a mergeable sketch; the api_usage_month_to_date view "
            "compares each service's month with its budget (analytics.budgets). One Parquet "
            "file per day ({timezone}); today's is refreshed every 15 minutes by "
            "analytics_api_usage_schedule.",
        ),
    ),
    partitioning=Partitioning.DAILY,
    pool="analytics_api_usage_daily",
    refresh=_api_usage_daily,
    job="analytics_api_usage_job",
    job_description="Recomputes days of the API-usage rollup from the api_usage table.",
)

HOUSEKEEPING_RUNS_ASSET = RollupAsset(
    datasets=(
        (
            HOUSEKEEPING_RUNS,
            "One row per housekeeping run (token cleanup, log and job retention) from the run "
            "history in the state database: status, rows deleted and archived, expected and "
            "remaining expired rows, batches, duration, error. One Parquet file per day "
            "({timezone}) the runs finished; analytics_housekeeping_history_sensor refreshes a "
            "day when a run is recorded.",
        ),
    ),
    partitioning=Partitioning.DAILY,
    pool="analytics_housekeeping_runs",
    refresh=_housekeeping_runs,
    job="analytics_housekeeping_runs_job",
    job_description="Recomputes days of the housekeeping run history rollup.",
)

HOUSEKEEPING_SUMMARY_ASSET = RollupAsset(
    datasets=(
        (
            HOUSEKEEPING_SUMMARY,
            "Per housekeeping policy, the reference cleanup metrics: total, successful and "
            "failed runs, rows deleted, average cleanup ms, last success, last failure, last "
            "error, and the status healthy/degraded/critical — computed by the same code as "
            "hk status and the health checks. Rewritten whenever a run is recorded.",
        ),
    ),
    partitioning=Partitioning.NONE,
    pool="analytics_housekeeping_summary",
    refresh=_housekeeping_summary,
    job="analytics_housekeeping_summary_job",
    job_description="Rewrites the per-policy housekeeping summary (hk status's figures).",
)

TOKEN_REVOCATIONS_ASSET = RollupAsset(
    datasets=(
        (
            TOKEN_REVOCATIONS_DAILY,
            "Revoked tokens per day: revoked, expired, cleaned up (rows the token cleanup "
            "deleted, from the housekeeping history), users with revocations and the "
            "most revocations of one user. One Parquet file per day ({timezone}); "
            "archived tokens are counted too, and a recount never lowers a published "
            "count (cleanup deletes rows). Refreshed hourly by "
            "analytics_token_revocations_schedule.",
        ),
        (
            TOKEN_REVOCATIONS_BY_USER,
            "Token revocations per day x user with the user id replaced by a keyed "
            "SHA-256 (analytics.user_hash_key_env): the per-user revocation analytics, "
            "without raw user ids. The view token_revocations_user_distribution counts "
            "users per number of revocations.",
        ),
    ),
    partitioning=Partitioning.DAILY,
    pool="analytics_token_revocations",
    refresh=_token_revocations,
    job="analytics_token_revocations_job",
    job_description="Recomputes days of the token revocation rollups (daily and per hashed user).",
    multi_asset_name="token_revocations",
)

TABLE_STATS_ASSET = RollupAsset(
    datasets=(
        (
            TABLE_STATS,
            "Snapshots of every housekept table (one row per policy per snapshot): rows, rows "
            "past the policy's cutoff (what the next cleanup deletes), and size on disk (table, "
            "indexes). Each materialization appends one snapshot to the day's Parquet file; "
            "analytics_table_stats_schedule takes one every hour.",
        ),
    ),
    partitioning=Partitioning.NONE,
    pool="analytics_table_stats",
    refresh=_table_stats,
    job="analytics_table_stats_job",
    job_description="Takes one snapshot of every housekept table's rows, expired rows and size.",
)

PG_HEALTH_ASSET = RollupAsset(
    datasets=(
        (
            PG_HEALTH,
            "Health snapshots of the application database: connections by state against "
            "max_connections, the oldest transaction, lock waits, database size (SQLite: the "
            "file size only). analytics_pg_health_sensor takes one every minute; one Parquet "
            "file per UTC hour.",
        ),
        (
            PG_TABLE_HEALTH,
            "Per housekept table and snapshot: live and dead tuples, the last (auto)vacuum and "
            "(auto)analyze.",
        ),
        (
            PG_STATEMENT_STATS,
            "Per statement and snapshot (when pg_stat_statements is installed): calls and "
            "execution time since the previous snapshot. Query text stays in this dataset.",
        ),
    ),
    partitioning=Partitioning.NONE,
    pool="analytics_pg_health",
    refresh=_pg_health,
    job="analytics_pg_health_job",
    job_description="Takes one health snapshot of the application database.",
    multi_asset_name="pg_health_snapshot",
)


def _request_clients_minute(run: RollupRun) -> Iterator[dg.MaterializeResult]:
    start, end = run.hours
    result = refresh_request_clients(
        run.app_database, run.store, run.settings, run.config, start, end
    )
    yield dg.MaterializeResult(metadata=result_metadata(result))


REQUEST_CLIENTS_ASSET = RollupAsset(
    datasets=(
        (
            REQUEST_CLIENTS_MINUTE,
            "Requests and 429s per minute x hashed client address x hashed user (the token "
            "rollup's keyed SHA-256; raw addresses and user ids are never stored): the security "
            "signals behind http_rate_limit_abuse and http_user_flooding. One Parquet file per "
            "UTC hour; analytics_freshness_sensor keeps the recent minutes current.",
        ),
    ),
    partitioning=Partitioning.HOURLY,
    pool="analytics_request_clients",
    refresh=_request_clients_minute,
    job="analytics_request_clients_job",
    job_description="Recomputes hours of the security signals (hashed clients and users).",
)

ROLLUP_ASSETS = (
    REQUESTS_MINUTE_ASSET,
    JOBS_HOURLY_ASSET,
    API_USAGE_DAILY_ASSET,
    HOUSEKEEPING_RUNS_ASSET,
    HOUSEKEEPING_SUMMARY_ASSET,
    TOKEN_REVOCATIONS_ASSET,
    TABLE_STATS_ASSET,
    PG_HEALTH_ASSET,
    REQUEST_CLIENTS_ASSET,
)


def build_rollup_asset(
    rollup: RollupAsset, settings: AnalyticsSettings, timezone: str, owner: str
) -> dg.AssetsDefinition:
    """The Dagster asset of one row; ``timezone`` is the analytics time zone (daily partitions)."""
    specs = [
        dg.AssetSpec(
            asset_key(dataset),
            description=description.format(timezone=timezone),
            group_name=GROUP,
            kinds=KINDS,
            owners=[owner],
            metadata={"dagster/column_schema": column_schema(dataset)},
        )
        for dataset, description in rollup.datasets
    ]

    def materialize(
        context: dg.AssetExecutionContext, analytics: AnalyticsResource
    ) -> Iterator[dg.MaterializeResult]:
        with RollupRun(context, analytics) as run:
            yield from rollup.refresh(run)

    step = {
        "partitions_def": partitions_for(rollup.partitioning, settings, timezone),
        "backfill_policy": HOURLY_BACKFILL if rollup.partitioning is Partitioning.HOURLY else None,
        "pool": rollup.pool,
    }
    if len(specs) > 1:
        return dg.multi_asset(name=rollup.multi_asset_name, specs=specs, **step)(materialize)
    # One dataset: a plain asset, whose step is named after its key.
    [spec] = specs
    return dg.asset(
        key=spec.key,
        description=spec.description,
        group_name=spec.group_name,
        kinds=KINDS,
        owners=spec.owners,
        metadata=spec.metadata,
        **step,
    )(materialize)


def build_rollup_assets(
    settings: AnalyticsSettings, timezone: str, owner: str
) -> list[dg.AssetsDefinition]:
    """Every rollup asset of the table."""
    return [build_rollup_asset(rollup, settings, timezone, owner) for rollup in ROLLUP_ASSETS]
