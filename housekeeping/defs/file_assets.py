"""Dagster assets of the ``kind: files`` policies: one per policy, beside the table policies'.

Thin adapters over assets.py's ``run_cleanup`` shell: it loads the config, calls the core
(`run_and_record_files`) and reports what happened as metadata the UI plots across runs (files
compressed, archived, deleted, bytes freed, files skipped as active, within grace or
unreadable), with the asset's ``readable`` check.
"""

import re

import dagster as dg

from housekeeping.config import HousekeepingConfig
from housekeeping.config_types import format_duration
from housekeeping.defs.assets import GROUP, CleanupRunConfig, policy_asset_key, run_cleanup
from housekeeping.defs.resources import HousekeepingResource
from housekeeping.file_retention import FilesResult, run_and_record_files
from housekeeping.policy_kinds import FilesPolicy

# The check each files-policy asset evaluates as it runs: did every file it had to read open?
# Part of the asset (a check spec), so the health job, which only reads the run history,
# leaves it out (jobs.py).
READABLE_CHECK = "readable"


def readable_check_key(name: str) -> dg.AssetCheckKey:
    """The ``readable`` check of the files policy ``name``'s asset."""
    return dg.AssetCheckKey(policy_asset_key(name), READABLE_CHECK)


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
        check_specs=[
            dg.AssetCheckSpec(
                READABLE_CHECK,
                asset=key,
                description=(
                    "Warns when a run met log files it could not read (permission denied): "
                    "they are left alone, never compressed, archived or deleted, until their "
                    "permissions are fixed. Evaluated by each run of the policy."
                ),
            )
        ],
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
        yield from run_cleanup(
            context,
            key,
            config,
            housekeeping,
            lambda settings, history, **options: run_and_record_files(
                history, settings, name, **options
            ),
            stopped=lambda result: (
                f"Stopped on request: {result.compressed} files compressed, {result.deleted} "
                "deleted; the next run carries on."
            ),
            checks=lambda result: [readable_check_result(key, result)],
        )

    return files_cleanup


def readable_check_result(key: dg.AssetKey, result: FilesResult) -> dg.AssetCheckResult:
    """The ``readable`` check of one run: passes when every file the run had to read (to
    compress or archive it) could be read; else a warning naming the files left alone."""
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=READABLE_CHECK,
        passed=result.unreadable == 0,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"{result.unreadable} files could not be read (permission denied) and were left "
            f"alone: {result.unreadable_named()}"
            if result.unreadable
            else "every file this run had to read could be read"
        ),
        metadata={"unreadable": result.unreadable, "unreadable_files": result.unreadable_named()},
    )
