"""Dagster assets of the ``kind: files`` policies: one per policy, beside the table policies'.

Thin adapters like assets.py: load the config, call the core (`run_and_record_files`) and report
what happened as metadata the UI plots across runs (files compressed, archived, deleted, bytes
freed, files skipped as active or within grace).
"""

import re

import dagster as dg

from housekeeping.config import HousekeepingConfig
from housekeeping.config_types import format_duration
from housekeeping.defs.assets import (
    GROUP,
    CleanupRunConfig,
    cleanup_events,
    policy_asset_key,
    scalar_metadata,
)
from housekeeping.defs.resources import HousekeepingResource
from housekeeping.file_retention import run_and_record_files
from housekeeping.policies import RunOptions
from housekeeping.policy_kinds import FilesPolicy
from housekeeping.stopping import stop_on_terminate


def describe_files_policy(policy: FilesPolicy) -> str:
    """The asset's description: the policy's own, else what happens to which files."""
    if policy.description:
        return policy.description
    return (
        f"Log files: {policy.rule()}. The newest file of each stream and files modified within "
        f"{format_duration(policy.grace)} are never touched."
    )


def build_files_assets(config: HousekeepingConfig) -> list[dg.AssetsDefinition]:
    """One asset per files policy."""
    return [
        build_files_policy_asset(name, policy, config)
        for name, policy in config.file_policies.items()
    ]


def build_files_policy_asset(
    name: str, policy: FilesPolicy, config: HousekeepingConfig
) -> dg.AssetsDefinition:
    """The asset ``housekeeping/<name>`` that runs the files policy ``name``."""
    key = policy_asset_key(name)

    @dg.asset(
        key=key,
        group_name=GROUP,
        description=describe_files_policy(policy),
        kinds={"files"} | ({"gzip"} if policy.compress_after else set()),
        owners=[config.owner],
        # One run per directory at a time; the directory lock guards against anything else.
        pool=f"hk_files_{re.sub(r'[^A-Za-z0-9_]', '_', policy.directory.strip('/'))}",
        output_required=False,
        tags={"hk/kind": str(policy.kind)},
        metadata={
            "directory": policy.directory,
            "glob": policy.glob,
            "archive": policy.archive,
            "schedule": policy.schedule or "manual only",
        },
    )
    def files_cleanup(
        context: dg.AssetExecutionContext,
        config: CleanupRunConfig,
        housekeeping: HousekeepingResource,
    ):
        settings = housekeeping.load()
        history = housekeeping.run_history(settings)
        try:
            with stop_on_terminate() as stop:
                result = run_and_record_files(
                    history,
                    settings,
                    name,
                    dagster_run_id=context.run_id,
                    options=RunOptions(config.dry_run, config.allow_large_delete),
                    run_id=context.run_id,
                    should_stop=stop,
                    log=context.log.info,
                )
        finally:
            history.dispose()
        stopped = (
            f"Stopped on request: {result.compressed} files compressed, {result.deleted} "
            "deleted; the next run carries on."
        )
        yield from cleanup_events(
            key,
            scalar_metadata(result.metadata()),
            dry_run=result.dry_run,
            stopped=stopped if result.stopped_early else None,
        )

    return files_cleanup
