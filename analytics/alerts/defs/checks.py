"""Alert state as asset checks: one check per rule, on the published dataset the rule reads.

``alert_rules_sensor`` reports each rule's state as an ``AssetCheckEvaluation`` (a runless event)
whenever it changes, so a firing rule turns its dataset's check red in the lineage graph and the
catalog, with value, threshold, severity and since-when as metadata; a pending rule is a
warning (yellow). The checks can also be executed from the UI: they read the stored state (the
last evaluation's), they never evaluate a rule themselves.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import dagster as dg

from analytics.alerts.catalog import BUILTIN_METRICS, Source, unit_of
from analytics.alerts.defs.resources import AlertsResource
from analytics.alerts.model import AlertRecord, AlertState, Severity
from analytics.alerts.rules import Rule, RulePack
from analytics.datasets import (
    API_USAGE_DAILY,
    HOUSEKEEPING_RUNS,
    JOBS_HOURLY,
    LOG_ERRORS_HOURLY,
    LOG_INGEST_ERRORS,
    REQUESTS_MINUTE,
    TABLE_STATS,
    Dataset,
    all_datasets,
)
from analytics.views import view_datasets

CHECK_PREFIX = "alert_"
# The analytics shell's asset keys are analytics/<dataset> (analytics/defs/assets.py).
ASSET_PREFIX = "analytics"
# Groups listed in a grouped rule's metadata, worst first.
LISTED_GROUPS = 10

# The dataset each metric source reads or stands for: the request rollups, the job rollups, the
# API usage, the housekeeping run history (published as housekeeping_runs), and the application
# database (whose tables table_stats snapshots).
SOURCE_DATASETS: dict[Source, Dataset] = {
    Source.REQUEST_MINUTES: REQUESTS_MINUTE,
    Source.ROLLUP_LAG: REQUESTS_MINUTE,
    Source.JOB_HOURS: JOBS_HOURLY,
    Source.API_USAGE_MONTH: API_USAGE_DAILY,
    Source.POLICY_HEALTH: HOUSEKEEPING_RUNS,
    Source.POLICY_FAILURES: HOUSEKEEPING_RUNS,
    Source.POLICY_UNRECOVERED_FAILURES: HOUSEKEEPING_RUNS,
    Source.APP_DATABASE: TABLE_STATS,
}

# Datasets with no asset of their own, and the asset whose materialization writes them: a log-file
# source's line counts and error rollup are written by the request rollup that reads the files.
WRITTEN_BY: dict[Dataset, Dataset] = {
    LOG_INGEST_ERRORS: REQUESTS_MINUTE,
    LOG_ERRORS_HOURLY: REQUESTS_MINUTE,
}


def rule_dataset(rule: Rule) -> Dataset:
    """The published dataset ``rule`` reads: its metric's source (for a metric over published
    snapshots, the first dataset its SQL names), or for a SQL rule the first dataset its query
    names, directly or through a view (jobs_daily is jobs_hourly's; requests_minute when it names
    none); a dataset written by another asset's run stands for that asset's (WRITTEN_BY)."""
    if rule.metric is not None:
        spec = BUILTIN_METRICS[rule.metric]
        if spec.source in SOURCE_DATASETS:
            return SOURCE_DATASETS[spec.source]
        sql = " ".join(spec.sql.values())
    else:
        sql = rule.sql or ""
    named = _first_dataset(sql, _view_datasets())
    return WRITTEN_BY.get(named, named) if named else REQUESTS_MINUTE


def _first_dataset(sql: str, views: dict[str, Dataset]) -> Dataset | None:
    """The first dataset ``sql`` names, directly or through a view of ``views``."""
    datasets = {dataset.name: dataset for dataset in all_datasets()}
    for word in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", sql):
        if word in datasets:
            return datasets[word]
        if word in views:
            return views[word]
    return None


@functools.cache
def _view_datasets() -> dict[str, Dataset]:
    """Each view and table macro of the views file -> the dataset its SQL reads."""
    return view_datasets(all_datasets())


def rule_asset_key(rule: Rule) -> dg.AssetKey:
    """The asset key of the dataset ``rule`` reads, e.g. ``analytics/requests_minute``."""
    return dg.AssetKey([ASSET_PREFIX, rule_dataset(rule).name])


def check_key(rule: Rule) -> dg.AssetCheckKey:
    """The asset check that shows ``rule``'s state: ``alert_<rule>`` on its dataset's asset."""
    return dg.AssetCheckKey(rule_asset_key(rule), f"{CHECK_PREFIX}{rule.name}")


_STATE_RANK = {AlertState.FIRING: 3, AlertState.PENDING: 2, AlertState.RESOLVED: 1}


def _severity_of(record: AlertRecord) -> Severity | None:
    """The firing severity, or for a pending alert the worst severity whose threshold holds."""
    if record.severity is not None:
        return record.severity
    return max(record.breach_since, key=lambda s: s.rank) if record.breach_since else None


def _worst_first(records: Iterable[AlertRecord]) -> list[AlertRecord]:
    def rank(record: AlertRecord) -> tuple[int, int, str]:
        severity = _severity_of(record)
        return (
            -_STATE_RANK.get(record.state, 0),
            -(severity.rank if severity else 0),
            record.key.group,
        )

    return sorted(records, key=rank)


def _format(rule: Rule, value: float | None) -> str:
    if value is None:
        return "no data"
    unit = unit_of(rule.metric)
    return unit.format(value) if unit is not None else f"{value:g}"


def _minute(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC") if at else ""


@dataclass(frozen=True)
class RuleVerdict:
    """What the check of one rule says: passed unless a group is pending or firing.

    ``severity`` is Dagster's: ERROR (red) while firing, WARN (yellow) while only pending.
    ``metadata`` holds plain values (strings, numbers rounded to what a person reads).
    """

    rule: str
    passed: bool
    severity: dg.AssetCheckSeverity
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)
    # "<group> <state>" of the groups not ok, worst first: what the signature compares.
    group_states: tuple[str, ...] = ()

    @property
    def state(self) -> str:
        return str(self.metadata.get("state", AlertState.OK.value))

    def signature(self) -> str:
        """What, when it changes, is worth a new check evaluation (not the value's wobble): the
        state, the severity and which groups are in which state (not their values)."""
        # A digest: the sensor's cursor keeps one signature per rule, whatever its groups.
        groups = hashlib.sha1("\n".join(self.group_states).encode()).hexdigest()[:16]
        return f"{self.passed}|{self.state}|{self.metadata.get('severity', '')}|{groups}"

    def headline(self) -> str:
        """``http_error_rate critical`` / ``jobs_stuck warning (3 groups)``, for the tick."""
        count = int(self.metadata.get("groups_not_ok_count", 0))
        text = f"{self.rule} {self.metadata.get('severity', '')}".strip()
        return f"{text} ({count} groups)" if count > 1 else text


def rule_verdict(rule: Rule, records: Sequence[AlertRecord]) -> RuleVerdict:
    """The verdict of ``rule`` from its (rule, group) records after an evaluation.

    ``records`` are the not-OK ones (OK groups may be passed too and are ignored). The worst
    group (firing before pending, then the higher severity) gives value, threshold, severity and
    since-when; the others are listed (at most ``LISTED_GROUPS``).
    """
    troubled = _worst_first(
        r for r in records if r.state in (AlertState.PENDING, AlertState.FIRING)
    )
    if not troubled:
        resolved = [r for r in records if r.state is AlertState.RESOLVED]
        text = "resolved" if resolved else "ok"
        return RuleVerdict(
            rule.name,
            True,
            dg.AssetCheckSeverity.WARN,
            f"{rule.name}: {text}",
            {"state": AlertState.RESOLVED.value if resolved else AlertState.OK.value},
        )
    worst = troubled[0]
    severity = _severity_of(worst)
    threshold = rule.threshold_value(severity) if severity else None
    since = worst.firing_since if worst.state is AlertState.FIRING else worst.pending_since
    condition = (
        f"{rule.comparator.value} {_format(rule, threshold)}" if threshold is not None else ""
    )
    where = f" ({rule.group_by.value} {worst.key.group})" if worst.key.group else ""
    description = (
        f"{worst.state.value.upper()} {severity.value if severity else ''} since {_minute(since)}: "
        f"{rule.name}{where} = {_format(rule, worst.last_value)} {condition}"
    )
    metadata: dict[str, Any] = {
        "state": worst.state.value,
        "severity": severity.value if severity else "",
        "value": _format(rule, worst.last_value),
        "threshold": condition,
        "since": _minute(since),
        "window": str(rule.window),
        "groups_not_ok_count": len(troubled),
    }
    if worst.last_value is not None:
        metadata["value_raw"] = round(worst.last_value, 4)
    if rule.group_by.value != "none":
        metadata["groups_not_ok"] = ", ".join(
            f"{r.key.group} ({r.state.value}, {_format(rule, r.last_value)})"
            for r in troubled[:LISTED_GROUPS]
        )
    firing = worst.state is AlertState.FIRING
    return RuleVerdict(
        rule.name,
        False,
        dg.AssetCheckSeverity.ERROR if firing else dg.AssetCheckSeverity.WARN,
        description,
        metadata,
        tuple(f"{r.key.group} {r.state.value}" for r in troubled),
    )


def verdicts(pack: RulePack, records: Iterable[AlertRecord]) -> dict[str, RuleVerdict]:
    """Every rule's verdict from the records of an evaluation (or the store), by rule name."""
    by_rule: dict[str, list[AlertRecord]] = {rule.name: [] for rule in pack.rules}
    for record in records:
        by_rule.setdefault(record.key.rule, []).append(record)
    return {rule.name: rule_verdict(rule, by_rule[rule.name]) for rule in pack.rules}


def check_evaluation(rule: Rule, verdict: RuleVerdict) -> dg.AssetCheckEvaluation:
    """The runless check evaluation the sensor reports for ``rule``."""
    key = check_key(rule)
    return dg.AssetCheckEvaluation(
        asset_key=key.asset_key,
        check_name=key.name,
        passed=verdict.passed,
        severity=verdict.severity,
        description=verdict.description,
        metadata=verdict.metadata,
        blocking=False,
    )


def _description(rule: Rule) -> str:
    what = rule.description or rule.summary or f"{rule.metric or 'SQL'} {rule.comparator.value}"
    conditions = ", ".join(
        f"{severity.value} {rule.describe_condition(severity)}" for severity in rule.severities
    )
    return (
        f"Alert rule {rule.name}: {what} ({conditions}). Reported by alert_rules_sensor: fails "
        "(error) while firing, warns while pending."
    )


def build_alert_checks(pack: RulePack) -> list[dg.AssetChecksDefinition]:
    """One asset check per rule of ``pack`` (see ``check_key``); executing one reports the
    stored state of its rule as of the last evaluation."""
    return [_build_check(rule) for rule in pack.rules]


def _build_check(rule: Rule) -> dg.AssetChecksDefinition:
    key = check_key(rule)

    @dg.asset_check(
        asset=key.asset_key, name=key.name, description=_description(rule), blocking=False
    )
    def alert_check(alerts: AlertsResource) -> dg.AssetCheckResult:
        runtime = alerts.runtime()
        try:
            with runtime.store.transaction() as conn:
                records = runtime.store.load_states(conn, [rule.name])
            current = next((r for r in runtime.rules.rules if r.name == rule.name), rule)
        finally:
            runtime.close()
        verdict = rule_verdict(current, list(records.values()))
        return dg.AssetCheckResult(
            passed=verdict.passed,
            severity=verdict.severity,
            description=verdict.description,
            metadata=verdict.metadata,
        )

    return alert_check
