"""Dagster assets: one per housekeeping policy, plus Dagster's own run history.

Thin adapters: they load the config, call the core (`run_and_record`, `purge_dagster_runs`) and
report what happened as metadata the UI plots across runs.
"""

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, Protocol

import dagster as dg
from pydantic import Field

from housekeeping.config import HousekeepingConfig, database_url
from housekeeping.config_types import format_duration
from housekeeping.dagster_runs import purge_dagster_runs
from housekeeping.defs.resources import HousekeepingResource
from housekeeping.errors import HkError
from housekeeping.history import PolicyRun, RunHistory, RunStatus
from housekeeping.policies import RunLockedOut, RunOptions, failure_recorded, run_and_record
from housekeeping.policy_kinds import PolicyConfig
from housekeeping.stopping import stop_on_terminate

GROUP = "housekeeping"
# The run-history purge is recorded in the run history like a policy, under these names.
DAGSTER_RUNS_POLICY = "dagster_run_history"
DAGSTER_RUNS_TABLE = "dagster runs"
DAGSTER_RUNS_ASSET = dg.AssetKey([GROUP, DAGSTER_RUNS_POLICY])


class CleanupRunConfig(dg.Config):
    dry_run: bool = Field(
        default=False, description="Count what would be deleted per table; delete nothing."
    )
    allow_large_delete: bool = Field(
        default=False,
        description="Delete even when the run would remove more than max_delete_fraction of "
        "the table (the safety refusal's override).",
    )


class RunRetentionRunConfig(dg.Config):
    dry_run: bool = Field(default=False, description="Count the runs to purge; purge nothing.")


def policy_asset_key(name: str) -> dg.AssetKey:
    """The asset of the policy called ``name`` in the config: ``housekeeping/<name>``."""
    return dg.AssetKey([GROUP, name])


def checked_asset_keys(config: HousekeepingConfig) -> dict[str, dg.AssetKey]:
    """Every asset whose runs are recorded in the run history, by its name there: the policies
    (files policies included), and the Dagster run-history purge when enabled."""
    keys = {name: policy_asset_key(name) for name in config.every_policy()}
    if config.dagster_runs.enabled:
        keys[DAGSTER_RUNS_POLICY] = DAGSTER_RUNS_ASSET
    return keys


def build_assets(config: HousekeepingConfig) -> list[dg.AssetsDefinition]:
    """One asset per policy, plus the Dagster run-history purge when enabled."""
    database_kind = "postgres" if database_url().startswith("postgres") else "sqlite"
    assets = [
        build_policy_asset(name, policy, config, database_kind)
        for name, policy in config.policies.items()
    ]
    if config.dagster_runs.enabled:
        assets.append(build_dagster_run_history_asset(config))
    return assets


def describe_policy(name: str, policy: PolicyConfig) -> str:
    """The asset's description: the policy's own, else which rows go from which table, and how."""
    if policy.description:
        return policy.description
    archive = " Deleted rows are archived to Parquet first." if policy.archive else ""
    return f"Deletes from `{policy.table}` {policy.rule()}, in short batched transactions.{archive}"


def readable(value: float) -> float:
    """``value`` rounded to what a person reads: 3 significant digits below 100, else one
    decimal (``46.77551899999344`` -> ``46.8``, ``0.0123456`` -> ``0.0123``)."""
    return round(value, 1) if abs(value) >= 100 else float(f"{value:.3g}")


def scalar_metadata(values: dict[str, Any]) -> dict[str, Any]:
    """The values that are set, floats rounded (``readable``); booleans and ints as they are."""
    return {
        key: readable(value) if isinstance(value, float) else value
        for key, value in values.items()
        if value is not None
    }


def build_policy_asset(
    name: str, policy: PolicyConfig, config: HousekeepingConfig, database_kind: str
) -> dg.AssetsDefinition:
    key = policy_asset_key(name)
    kinds = {database_kind} | ({"parquet"} if policy.archive else set())

    @dg.asset(
        key=key,
        group_name=GROUP,
        description=describe_policy(name, policy),
        kinds=kinds,
        owners=[config.owner],
        # One run per table at a time; the advisory lock guards against anything else.
        # Dagster pool names cannot hold whitespace; table names can.
        pool=f"hk_table_{'_'.join(str(policy.table).split())}",
        output_required=False,
        tags={"hk/kind": str(policy.kind)},
        metadata={
            "table": str(policy.table),
            "cutoff_column": policy.cutoff_column,
            "archive": policy.archive,
            "schedule": policy.schedule or "manual only",
        },
    )
    def policy_cleanup(
        context: dg.AssetExecutionContext,
        config: CleanupRunConfig,
        housekeeping: HousekeepingResource,
    ):
        db = housekeeping.app_database()

        def run(settings: HousekeepingConfig, history: RunHistory, **options: Any) -> Any:
            result = run_and_record(history, db, settings, name, **options)
            context.log.info(result.summary_line())
            return result

        try:
            yield from run_cleanup(
                context,
                key,
                config,
                housekeeping,
                run,
                stopped=lambda result: (
                    f"Stopped on request after {result.batches} batches: {result.deleted:,} "
                    "rows deleted (and archived where configured); the next run carries on."
                ),
            )
        finally:
            db.dispose()

    return policy_cleanup


class CleanupResult(Protocol):
    """What a cleanup core returns (a table policy's RunResult, a files policy's FilesResult)."""

    dry_run: bool
    stopped_early: bool

    def metadata(self) -> dict[str, Any]: ...


def run_cleanup(
    context: dg.AssetExecutionContext,
    key: dg.AssetKey,
    run_config: CleanupRunConfig,
    housekeeping: HousekeepingResource,
    run: Callable[..., CleanupResult],
    *,
    stopped: Callable[[Any], str],
    checks: Callable[[Any], list[dg.AssetCheckResult]] = lambda result: [],
) -> Iterator[dg.AssetObservation | dg.AssetMaterialization | dg.MaterializeResult]:
    """The one shell of every cleanup asset (table and files policies): loads the config and
    the run history, calls ``run(settings, history, dagster_run_id=, options=, run_id=,
    should_stop=, log=)`` (the core, which records the run in the history) with the run's
    dry-run and large-delete switches and a stop on SIGTERM, then yields what ``cleanup_events``
    yields, the asset's ``checks(result)`` included. A run locked out (RunLockedOut) is one
    line: what it deleted before is materialized, then a Failure. Any other HkError (a refusal,
    bad config, a full disk) is a Failure with its message, not a traceback."""
    try:
        settings = housekeeping.load()
        history = housekeeping.run_history(settings)
    except HkError as exc:
        raise dg.Failure(description=str(exc), metadata={"error": type(exc).__name__}) from None
    try:
        with stop_on_terminate() as stop:
            result = run(
                settings,
                history,
                dagster_run_id=context.run_id,
                options=RunOptions(run_config.dry_run, run_config.allow_large_delete),
                run_id=context.run_id,
                should_stop=stop,
                log=context.log.info,
            )
    except RunLockedOut as exc:
        # The lock is the operator's to look at, not our code: one line, not a traceback,
        # and what the run deleted before it is on the record like any materialization.
        metadata = scalar_metadata(exc.result.metadata())
        if exc.result.deleted:
            yield dg.AssetMaterialization(asset_key=key, metadata=metadata)
        raise dg.Failure(description=str(exc), metadata=metadata) from None
    except HkError as exc:
        # The product's own explanation (HkError) is the operator's to read, not our code.
        raise dg.Failure(description=str(exc), metadata={"error": type(exc).__name__}) from None
    finally:
        history.dispose()
    yield from cleanup_events(
        key,
        scalar_metadata(result.metadata()),
        dry_run=result.dry_run,
        stopped=stopped(result) if result.stopped_early else None,
        checks=checks(result),
    )


def cleanup_events(
    key: dg.AssetKey,
    metadata: dict[str, Any],
    *,
    dry_run: bool,
    stopped: str | None,
    checks: list[dg.AssetCheckResult] | None = None,
) -> Iterator[
    dg.AssetObservation | dg.AssetMaterialization | dg.MaterializeResult | dg.AssetCheckResult
]:
    """What a cleanup asset yields once its run is done: a dry run as an observation (not a
    materialization: the plotted history stays real), a run stopped on request as a
    materialization then a Failure saying ``stopped``, else a MaterializeResult; the asset's
    own ``checks`` (results of its check specs) with each."""
    checks = checks or []
    if dry_run:
        yield dg.AssetObservation(asset_key=key, metadata=metadata)
        yield from checks
        return
    if stopped is not None:
        # Yielded (not logged) so it is recorded before the failure ends the step.
        yield dg.AssetMaterialization(asset_key=key, metadata=metadata)
        yield from checks
        raise dg.Failure(description=stopped, metadata=metadata)
    yield dg.MaterializeResult(metadata=metadata, check_results=checks)


def build_dagster_run_history_asset(config: HousekeepingConfig) -> dg.AssetsDefinition:
    retention = config.dagster_runs

    @dg.asset(
        key=DAGSTER_RUNS_ASSET,
        group_name=GROUP,
        description=(
            f"Purges Dagster runs older than {format_duration(retention.retention)} (failed and "
            f"canceled runs after {format_duration(retention.failed_retention)}) with their event "
            "logs and compute logs, through Dagster's public instance API. Runs in progress are "
            "never touched."
        ),
        kinds={"dagster"},
        owners=[config.owner],
        pool="hk_dagster_run_history",
        output_required=False,
        metadata={"schedule": retention.schedule or "manual only"},
    )
    def dagster_run_history(
        context: dg.AssetExecutionContext,
        config: RunRetentionRunConfig,
        housekeeping: HousekeepingResource,
    ):
        settings = housekeeping.load()
        history = housekeeping.run_history(settings)
        try:
            with (
                failure_recorded(
                    history, DAGSTER_RUNS_POLICY, DAGSTER_RUNS_TABLE, context.run_id
                ) as started,
                stop_on_terminate() as stop,
            ):
                result = purge_dagster_runs(
                    context.instance,
                    now=started,
                    retention=settings.dagster_runs.retention,
                    failed_retention=settings.dagster_runs.failed_retention,
                    dry_run=config.dry_run,
                    should_stop=stop,
                    keep_run_ids={context.run_id},
                )
            if not config.dry_run:
                history.record(
                    PolicyRun(
                        policy=DAGSTER_RUNS_POLICY,
                        table_name=DAGSTER_RUNS_TABLE,
                        status=RunStatus.STOPPED if result.stopped_early else RunStatus.SUCCESS,
                        started_at=started,
                        finished_at=datetime.now(UTC),
                        deleted=result.runs_deleted,
                        expected_deleted=result.would_delete,
                        duration_ms=result.duration_ms,
                        dagster_run_id=context.run_id,
                    )
                )
        finally:
            history.dispose()
        metadata = scalar_metadata(
            {
                "runs_deleted": result.runs_deleted,
                "failed_runs_deleted": result.failed_runs_deleted,
                "would_delete": result.would_delete,
                "compute_log_dirs_deleted": result.compute_log_dirs_deleted,
                "materializations_reported": result.materializations_reported,
                "oldest_remaining_run": (
                    result.oldest_remaining_run_created_at.isoformat()
                    if result.oldest_remaining_run_created_at
                    else None
                ),
                "stopped_early": result.stopped_early,
                "duration_ms": result.duration_ms,
                "dry_run": config.dry_run,
            }
        )
        context.log.info(
            f"dagster_run_history: {'would purge' if config.dry_run else 'purged'} "
            f"{result.would_delete if config.dry_run else result.runs_deleted} runs"
        )
        if config.dry_run:
            yield dg.AssetObservation(asset_key=DAGSTER_RUNS_ASSET, metadata=metadata)
            return
        yield dg.MaterializeResult(metadata=metadata)

    return dagster_run_history
