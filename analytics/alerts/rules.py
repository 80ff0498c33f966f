"""Alert rules are data: a YAML file loaded into pydantic models and validated at load time.

A rule names a metric (built-in, see catalog.py, or a SQL query over the published rollups), a
grouping, thresholds per severity with a comparator and a ``for`` duration, a recovery threshold
(hysteresis), an evaluation window, a no-data policy, a renotify interval, Slack channels per
severity and labels. ``load_rules`` is the single entry point: ``hk rules check``, the Dagster
definitions and the backtest all go through it, so they fail with the same message.
"""

from __future__ import annotations

import contextlib
import re
from datetime import timedelta
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import Field, ValidationError, model_validator

from analytics.alerts.catalog import BUILTIN_METRICS, GroupBy, Source
from analytics.alerts.model import Severity
from housekeeping.config import HealthConfig
from housekeeping.config_types import (
    NonNegativeDuration,
    PositiveDuration,
    StrictModel,
    format_duration,
)
from housekeeping.errors import HkError

DEFAULT_RULES_FILE = "default_rules.yaml"
# The parameters a SQL rule may name; metrics.py binds them at every evaluation.
SQL_PARAMETERS = ("window_start", "window_end")
RuleName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
Channel = Annotated[str, Field(pattern=r"^[#@]?[A-Za-z0-9._-]{1,80}$")]
# A threshold may name a value of the config's health: section instead of repeating it.
_HEALTH_REFERENCE = re.compile(r"^\s*health\.([a-z_]+)\s*$")


class RulesError(HkError):
    """The rule file is missing, not YAML, or a rule in it is invalid; the message names which."""


class Comparator(StrEnum):
    GT = ">"
    GE = ">="
    LT = "<"
    LE = "<="

    def holds(self, value: float, threshold: float) -> bool:
        if self is Comparator.GT:
            return value > threshold
        if self is Comparator.GE:
            return value >= threshold
        if self is Comparator.LT:
            return value < threshold
        return value <= threshold

    @property
    def rising(self) -> bool:
        """True when bigger values are worse (>, >=)."""
        return self in (Comparator.GT, Comparator.GE)


class NoData(StrEnum):
    """What an evaluation without a value does (docs/alerts.md, "No data").

    The default is KEEP: an all-clear must mean the condition was observed to end, so a firing
    alert whose data stops stays firing (its messages say since when there is no data).
    """

    KEEP = "keep"  # no data changes nothing: a firing alert stays firing (the default)
    OK = "ok"  # no data counts as healthy: a firing alert resolves
    ALERT = "alert"  # no data is itself a problem, at ``no_data_severity``


class Threshold(StrictModel):
    value: float
    # How long the condition must hold before this severity fires; default: the rule's ``for``.
    for_: NonNegativeDuration | None = Field(default=None, alias="for")


class Rule(StrictModel):
    name: RuleName
    description: str = ""
    metric: str | None = None
    sql: str | None = None
    group_by: GroupBy = GroupBy.NONE
    comparator: Comparator = Comparator.GT
    thresholds: dict[Severity, Threshold]
    for_: NonNegativeDuration = Field(default=timedelta(0), alias="for")
    window: PositiveDuration = timedelta(minutes=5)
    recovery: float | None = None
    no_data: NoData = NoData.KEEP
    no_data_severity: Severity = Severity.CRITICAL
    # A window the rollups cover only in part (they started less than a window ago): False
    # evaluates it over the covered part (a rate divides by the covered seconds); True gives no
    # data until the whole window is covered. Request metrics only (the others read no minutes).
    require_full_window: bool = False
    # Request metrics: a group (a route, or all traffic) with fewer requests than this in the
    # window has no data, so a quiet route's 1 error in 3 requests does not fire.
    min_requests: Annotated[int, Field(ge=1)] | None = None
    renotify: PositiveDuration | None = timedelta(hours=4)
    channels: dict[Severity, Channel] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    summary: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        if (self.metric is None) == (self.sql is None):
            raise ValueError("set exactly one of metric (a built-in metric) or sql (a query)")
        if self.metric is not None:
            spec = BUILTIN_METRICS.get(self.metric)
            if spec is None:
                known = ", ".join(sorted(BUILTIN_METRICS))
                raise ValueError(f"metric: unknown metric {self.metric!r} (built-in: {known})")
            if self.group_by not in spec.groupings:
                allowed = ", ".join(grouping.value for grouping in spec.groupings)
                raise ValueError(
                    f"group_by: metric {self.metric} cannot be grouped by "
                    f"{self.group_by.value!r} (allowed: {allowed})"
                )
        if self.min_requests is not None and (
            self.metric is None or BUILTIN_METRICS[self.metric].source is not Source.REQUEST_MINUTES
        ):
            raise ValueError(
                "min_requests: only request metrics (http_*) have a request count per window"
            )
        if self.sql is not None:
            # DuckDB's own parser decides (the evaluation runs it sandboxed, analytics/sandbox.py).
            # Imported here: the state machine loads rules without loading DuckDB.
            from analytics.sandbox import QueryError, reading_statements

            try:
                statements = reading_statements(self.sql)
            except QueryError as exc:
                raise ValueError(f"sql: {exc}") from None
            if len(statements) != 1:
                raise ValueError(f"sql: must be one query, got {len(statements)} statements")
            unbound = sorted(statements[0].named_parameters - set(SQL_PARAMETERS))
            if unbound:
                # DuckDB names a positional parameter (? or $1) by its position
                name = "?" if unbound[0].isdigit() else f"${unbound[0]}"
                raise ValueError(
                    f"sql: parameter {name} is never bound (a SQL rule gets "
                    + " and ".join(f"${parameter}" for parameter in SQL_PARAMETERS)
                    + ")"
                )
        if not self.thresholds:
            raise ValueError("thresholds: set at least one of warning, high, critical")
        ordered = sorted(self.thresholds.items(), key=lambda item: item[0].rank)
        for (lower, low), (higher, high) in zip(ordered, ordered[1:], strict=False):
            worse = high.value > low.value if self.comparator.rising else high.value < low.value
            if not worse and high.value != low.value:
                direction = "above" if self.comparator.rising else "below"
                raise ValueError(
                    f"thresholds: {higher.value} ({high.value:g}) must be {direction} "
                    f"{lower.value} ({low.value:g}): a higher severity is a worse value for "
                    f"comparator {self.comparator.value}"
                )
        if self.recovery is not None:
            mildest = ordered[0][1].value
            if self.comparator.holds(self.recovery, mildest):
                side = "at or below" if self.comparator.rising else "at or above"
                raise ValueError(
                    f"recovery: {self.recovery} would itself breach the {ordered[0][0].value} "
                    f"threshold {mildest}; set it {side} the threshold (hysteresis)"
                )
        return self

    @property
    def severities(self) -> list[Severity]:
        """Configured severities, mildest first."""
        return sorted(self.thresholds, key=lambda severity: severity.rank)

    def for_duration(self, severity: Severity) -> timedelta:
        threshold = self.thresholds.get(severity)
        if threshold is not None and threshold.for_ is not None:
            return threshold.for_
        return self.for_

    def threshold_value(self, severity: Severity) -> float | None:
        threshold = self.thresholds.get(severity)
        return None if threshold is None else threshold.value

    def recovered(self, value: float) -> bool:
        """Past the recovery threshold (default: no longer breaching the mildest threshold)."""
        if self.recovery is not None:
            return not self.comparator.holds(value, self.recovery) and value != self.recovery
        mildest = self.thresholds[self.severities[0]].value
        return not self.comparator.holds(value, mildest)

    def describe_condition(self, severity: Severity) -> str:
        threshold = self.thresholds[severity]
        text = f"{self.comparator.value} {threshold.value:g}"
        duration = self.for_duration(severity)
        return f"{text} for {format_duration(duration)}" if duration else text


class RulePack(StrictModel):
    rules: list[Rule]

    @model_validator(mode="after")
    def _unique_names(self) -> RulePack:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.name in seen:
                raise ValueError(f"rule name {rule.name!r} is used twice")
            seen.add(rule.name)
        return self

    def select(self, names: list[str] | None) -> RulePack:
        """The pack restricted to ``names`` (all when None); unknown names are an error."""
        if not names:
            return self
        known = {rule.name for rule in self.rules}
        missing = [name for name in names if name not in known]
        if missing:
            raise RulesError(
                f"unknown rule {', '.join(missing)} (known: {', '.join(sorted(known))})"
            )
        return RulePack(rules=[rule for rule in self.rules if rule.name in names])


def default_rules_path() -> Path:
    return Path(str(resources.files("analytics.alerts").joinpath(DEFAULT_RULES_FILE)))


def _describe(source: str, data: Any, error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        location = list(item["loc"])
        prefix = source
        if len(location) >= 2 and location[0] == "rules" and isinstance(location[1], int):
            index = location[1]
            name = ""
            with contextlib.suppress(KeyError, IndexError, TypeError):
                name = f" ({data['rules'][index]['name']})"
            prefix = f"{source}: rules[{index}]{name}"
            location = location[2:]
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (see docs/alerts.md, Rules)"
        key = ".".join(str(part) for part in location if part != "for_")
        lines.append(f"{prefix}: {key}: {message}" if key else f"{prefix}: {message}")
    return "\n".join(lines)


def parse_rules(data: Any, source: str = "rules", health: HealthConfig | None = None) -> RulePack:
    """Validate a rule file's parsed YAML into a RulePack.

    A threshold ``value`` may be ``health.<key>``: the value of that key in the config's
    ``health:`` section (`health`, default: that section's defaults; durations in milliseconds),
    so the cleanup rules and the asset checks read one number. Raises RulesError naming the rule
    and key of every problem.
    """
    if not isinstance(data, dict) or "rules" not in data:
        raise RulesError(f"{source}: expected a mapping with a 'rules:' list")
    resolved = _resolve_health_references(data, source, (health or HealthConfig()).rule_values())
    try:
        return RulePack.model_validate(resolved)
    except ValidationError as exc:
        raise RulesError(_describe(source, data, exc)) from None


def _resolve_health_references(data: dict, source: str, values: dict[str, float]) -> dict:
    """A copy of `data` with every ``health.<key>`` (a threshold's ``value``, or ``recovery``)
    replaced by its number. Raises RulesError naming the rule and key for any other text that
    starts with ``health``."""
    rules = data.get("rules")
    if not isinstance(rules, list):
        return data

    def resolve(value: Any, where: str) -> Any:
        if not (isinstance(value, str) and value.strip().startswith("health")):
            return value
        match = _HEALTH_REFERENCE.match(value)
        if match and match.group(1) in values:
            return values[match.group(1)]
        known = ", ".join(f"health.{name}" for name in values)
        raise RulesError(f"{where}: {value.strip()!r} is not a health value (known: {known})")

    resolved_rules = []
    for index, rule in enumerate(rules):
        if not isinstance(rule, dict):
            resolved_rules.append(rule)
            continue
        prefix = f"{source}: rules[{index}] ({rule.get('name', '?')})"
        resolved = dict(rule)
        if "recovery" in rule:
            resolved["recovery"] = resolve(rule["recovery"], f"{prefix}: recovery")
        thresholds = rule.get("thresholds")
        if isinstance(thresholds, dict):
            resolved["thresholds"] = {
                severity: (
                    {
                        **threshold,
                        "value": resolve(
                            threshold.get("value"), f"{prefix}: thresholds.{severity}.value"
                        ),
                    }
                    if isinstance(threshold, dict)
                    else threshold
                )
                for severity, threshold in thresholds.items()
            }
        resolved_rules.append(resolved)
    return {**data, "rules": resolved_rules}


def load_rules(path: str | Path | None = None, health: HealthConfig | None = None) -> RulePack:
    """Load and validate a rule file (default: the shipped default rule pack); `health` resolves
    ``health.<key>`` threshold values (see `parse_rules`). Raises RulesError."""
    file = Path(path) if path is not None else default_rules_path()
    try:
        text = file.read_text()
    except FileNotFoundError:
        raise RulesError(f"rule file {file} not found") from None
    except OSError as exc:
        raise RulesError(f"rule file {file} cannot be read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RulesError(f"{file}: not valid YAML: {exc}") from None
    return parse_rules(data, str(file), health)
