"""What `hk config check` verifies of the `analytics:` and `alerts:` sections: what a rollup run, a
sensor tick or the daily summary would otherwise fail on.

The `analytics:` section parses (durations with units, time zones, names), and every source's
table and columns exist in the live database with the right types (the check each rollup runs
before it reads). The `alerts:` section parses (the summary's cron and time zone, intervals) and
its rule file loads. Each problem is one line naming the key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from analytics.alerts.settings import alerts_settings
from analytics.extract import ColumnKind, Source, check_source
from analytics.logs.ingest import log_files
from analytics.rollups.api_usage import api_usage_source
from analytics.rollups.cleaned_up import primary_key
from analytics.rollups.jobs import jobs_source
from analytics.rollups.requests import request_logs_source
from analytics.rollups.token_revocations import revoked_tokens_source
from analytics.settings import (
    AnalyticsSettings,
    JobsJsonLinesSource,
    JsonLinesSource,
    LogFilesSource,
    analytics_settings,
)
from housekeeping.config import HousekeepingConfig
from housekeeping.database import AppDatabase
from housekeeping.errors import HkError


@dataclass
class SectionReport:
    """What one section's check found: ``ok`` lines, warnings, and problems (each naming a key)."""

    ok: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def sources(
    db: AppDatabase, config: HousekeepingConfig, settings: AnalyticsSettings
) -> list[Source]:
    """Every source a rollup reads, as ``analytics.sources`` maps it."""
    token_table = settings.sources.revoked_tokens.table
    tables = []
    if not isinstance(settings.sources.request_logs, JsonLinesSource):
        tables.append(request_logs_source(settings))
    if not isinstance(settings.sources.jobs, JobsJsonLinesSource):
        tables.append(jobs_source(settings))
    return [
        *tables,
        api_usage_source(settings),
        revoked_tokens_source(settings, primary_key(db, config, token_table)),
    ]


def check_analytics(
    db: AppDatabase | None, config: HousekeepingConfig, source: str
) -> SectionReport:
    """The `analytics:` section parsed, and every source against the live database (``db``;
    None: the database cannot be reached, the section is only parsed)."""
    report = SectionReport()
    try:
        settings = analytics_settings(config, source)
    except HkError as exc:
        report.problems.extend(str(exc).splitlines())
        return report
    for logs in (settings.sources.request_logs, settings.sources.jobs):
        if isinstance(logs, LogFilesSource):
            try:
                files = log_files(logs)
                report.ok.append(f"{logs.config_key}: {len(files)} log file(s) match {logs.path}")
                if not files:
                    report.warnings.append(
                        f"{logs.config_key}.path: no file matches {logs.path} yet "
                        "(check the glob: a rollup would read nothing)"
                    )
            except HkError as exc:
                report.problems.append(str(exc))
    if db is None:
        return report
    for mapped in sources(db, config, settings):
        try:
            checked = check_source(db, mapped)
        except HkError as exc:
            report.problems.append(str(exc))
            continue
        naive = [column.name for column in checked.columns if column.zone is not None]
        line = f"{mapped.config_key}: {mapped.table}"
        if naive:
            line += (
                f" ({', '.join(naive)} without time zone: read as wall clock in "
                f"{checked.timezone}, {mapped.config_key}.timezone)"
            )
        report.ok.append(line)
        report.warnings.extend(_zone_disagreements(config, checked))
    return report


def _zone_disagreements(config: HousekeepingConfig, checked: Source) -> list[str]:
    """A policy and a source reading the same naive column in different zones count its rows in
    different hours; say so."""
    warnings = []
    for name, policy in config.policies.items():
        if policy.table != checked.table:
            continue
        for column in checked.columns:
            if (
                column.kind is ColumnKind.TIMESTAMP
                and column.zone is not None
                and column.name == policy.cutoff_column
                and policy.timezone != column.zone
            ):
                warnings.append(
                    f"policies.{name}.timezone is {policy.timezone} but "
                    f"{checked.config_key}.timezone is {column.zone}: both read "
                    f"{checked.table}.{column.name}, so one of them is wrong"
                )
    return warnings


def check_alerts(config: HousekeepingConfig, source: str) -> SectionReport:
    """The `alerts:` section parsed, and its rule file (or the shipped pack) loaded."""
    report = SectionReport()
    try:
        settings = alerts_settings(config, source)
        pack = settings.load_rules(config.health)
    except HkError as exc:
        report.problems.extend(str(exc).splitlines())
        return report
    zone = settings.summary.timezone or config.timezone
    report.ok.append(
        f"alerts: {len(pack.rules)} rules ({settings.rules_file or 'the shipped pack'}), "
        f"daily summary '{settings.summary.cron}' in {zone}"
    )
    return report


# The sections `hk config check --section` can name, besides policies (housekeeping's own).
SECTION_CHECKS: dict[
    str, Callable[[AppDatabase | None, HousekeepingConfig, str], SectionReport]
] = {
    "analytics": check_analytics,
    "alerts": lambda db, config, source: check_alerts(config, source),
}
