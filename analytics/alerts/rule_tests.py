"""Unit tests for alert rules, the ``promtool test rules`` way: input series in, alerts out.

A test file is one case, in YAML (the format is documented in docs/alerts.md, "Testing rules"):
per-minute request series of some routes (``"100x20 0x5"`` is 100 for 20 minutes, then 0 for 5),
housekeeping runs, an evaluation range, and every notification expected, in order.

``run_rule_test`` publishes the series as the ``requests_minute`` rollup and records the runs in
a scratch directory, replays a rule pack over them through the backtest (the very code the
sensor runs), and compares what the rules sent with what the case expects: no more, no fewer.
``hk rules test`` runs it on the user's own rule and test files; the shipped pack's cases
(tests/rule_tests/) run through it too.
"""

from __future__ import annotations

import difflib
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import yaml
from pydantic import AwareDatetime, Field, ValidationError, field_validator, model_validator

from analytics.alerts.backtest import backtest
from analytics.alerts.model import NotificationKind, Severity
from analytics.alerts.rules import RulePack
from analytics.datasets import REQUESTS_MINUTE
from analytics.publish import RollupStore, hour_key
from analytics.sketch import buckets_of
from analytics.views import publish_rollup_views
from housekeeping.config import HealthConfig
from housekeeping.config_types import (
    NonNegativeDuration,
    PositiveDuration,
    StrictModel,
    format_duration,
)
from housekeeping.errors import HkError, first_line
from housekeeping.history import PolicyRun, RunHistory, RunStatus

# One segment of a series: a value, optionally "x" and how many minutes it lasts.
_SEGMENT = re.compile(r"^(-?[0-9]+(?:\.[0-9]+)?)(?:x([0-9]+))?$")
Series = str | float


class RuleTestError(HkError):
    """A rule test file is missing, not YAML, or not a valid case; the message names the key."""


def expand(series: Series, length: int) -> list[float]:
    """A series as one value per minute: ``"a" | "axn"`` segments; a number repeats ``length``.

    Raises ValueError naming the segment that is neither.
    """
    if isinstance(series, int | float):
        return [float(series)] * length
    values: list[float] = []
    for segment in series.split():
        match = _SEGMENT.match(segment)
        if match is None:
            raise ValueError(
                f"{segment!r} is not a series segment (a value, or value x minutes: '100x20')"
            )
        values += [float(match[1])] * int(match[2] or 1)
    return values


class RouteSeries(StrictModel):
    """One route's minutes: ``requests`` sets how many; the others default to 0 (50 ms)."""

    route: str
    requests: str  # a series (a bare number would have no length)
    errors: Series = 0  # 5xx
    rate_limited: Series = 0  # 429
    latency_ms: Series = 50

    @field_validator("requests", "errors", "rate_limited", "latency_ms")
    @classmethod
    def _series(cls, value: Series) -> Series:
        expand(value, 0)
        return value

    @model_validator(mode="after")
    def _same_length(self) -> RouteSeries:
        length = len(expand(self.requests, 0))
        for name in ("errors", "rate_limited", "latency_ms"):
            values = expand(getattr(self, name), length)
            if len(values) != length:
                raise ValueError(
                    f"{name} covers {len(values)} minutes, requests {length}: give the same "
                    "length, or one number for every minute"
                )
        return self


class HistoryRun(StrictModel):
    """One housekeeping run of ``policy``, finished ``at`` after the case's start."""

    policy: str
    at: NonNegativeDuration
    status: RunStatus
    deleted: int = 0
    duration_ms: float = 200.0


class AlertEvent(StrictModel):
    """One notification: when (after the case's start), which alert, what happened."""

    at: NonNegativeDuration
    rule: str
    group: str = ""
    kind: NotificationKind
    severity: Severity

    def describe(self) -> str:
        """The notification as a test file writes it (flow YAML), for diffs."""
        group = f", group: {self.group}" if self.group else ""
        return (
            f"{{at: {format_duration(self.at)}, rule: {self.rule}{group}, "
            f"kind: {self.kind.value}, severity: {self.severity.value}}}"
        )


class EvaluationRange(StrictModel):
    from_: NonNegativeDuration = Field(alias="from")
    to: NonNegativeDuration
    step: PositiveDuration = timedelta(minutes=1)

    @model_validator(mode="after")
    def _ordered(self) -> EvaluationRange:
        if self.to <= self.from_:
            raise ValueError("to must be after from")
        return self


class RuleTestCase(StrictModel):
    """One test file: input series, an evaluation range, the notifications expected."""

    description: str = ""
    start: AwareDatetime
    evaluate: EvaluationRange
    requests: list[RouteSeries] = Field(default_factory=list)
    history: list[HistoryRun] = Field(default_factory=list)
    expected: list[AlertEvent] = Field(default_factory=list)


@dataclass(frozen=True)
class RequestMinute:
    """One published minute of one route: counts and a latency all its requests share."""

    minute: datetime
    route: str = "/api/orders"
    requests: int = 100
    errors: int = 0  # 5xx
    rate_limited: int = 0  # 429
    latency_ms: float = 50.0


@dataclass(frozen=True)
class RuleTestResult:
    """What the rules sent against what the case expected; ``errors``: rules that failed."""

    source: str
    description: str
    expected: list[AlertEvent]
    got: list[AlertEvent]
    errors: dict[str, str]

    @property
    def passed(self) -> bool:
        return not self.errors and self.got == self.expected

    def diff(self) -> list[str]:
        """A unified diff of the expected notifications (-) against those sent (+)."""
        return list(
            difflib.unified_diff(
                [item.describe() for item in self.expected],
                [item.describe() for item in self.got],
                "expected",
                "got",
                lineterm="",
            )
        )


def parse_rule_test(data: Any, source: str) -> RuleTestCase:
    """Validate a loaded test file; RuleTestError lines read ``<source>: <key>: <message>``."""
    if not isinstance(data, dict):
        raise RuleTestError(
            f"{source}: expected a mapping with start, evaluate and expected "
            "(see docs/alerts.md, Testing rules)"
        )
    try:
        return RuleTestCase.model_validate(data)
    except ValidationError as exc:
        lines = []
        for item in exc.errors():
            key = ".".join(str(part) for part in item["loc"]) or "(top level)"
            message = item["msg"].removeprefix("Value error, ")
            if item["type"] == "extra_forbidden":
                message = "unknown key (see docs/alerts.md, Testing rules)"
            lines.append(f"{source}: {key}: {message}")
        raise RuleTestError("\n".join(lines)) from None


def load_rule_test(path: str | Path) -> RuleTestCase:
    """Load and validate one test file; RuleTestError (one line per problem) otherwise."""
    file = Path(path)
    try:
        text = file.read_text()
    except FileNotFoundError:
        raise RuleTestError(f"rule test file {file} not found") from None
    except OSError as exc:
        raise RuleTestError(f"rule test file {file} cannot be read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RuleTestError(f"{file}: not valid YAML: {first_line(exc)}") from None
    return parse_rule_test(data, str(file))


def publish_request_minutes(
    store: RollupStore, minutes: Iterable[RequestMinute], every_hour: bool = False
) -> None:
    """Publish ``minutes`` as the requests_minute dataset (one file per hour) behind the views.

    ``every_hour``: also an empty file for each hour without a minute between the first and the
    last, as the rollup job writes them (the pipeline ran; the application logged nothing).
    """
    publish_rollup_views(store, "UTC")
    by_hour: dict[datetime, list[RequestMinute]] = {}
    for row in minutes:
        by_hour.setdefault(row.minute.replace(minute=0, second=0, microsecond=0), []).append(row)
    if every_hour and by_hour:
        hour, last = min(by_hour), max(by_hour)
        while hour < last:
            by_hour.setdefault(hour, [])
            hour += timedelta(hours=1)
    with duckdb.connect() as connection:
        for hour, items in by_hour.items():
            table = pa.table(
                {
                    "minute": [item.minute.astimezone(UTC).replace(tzinfo=None) for item in items],
                    "route": [item.route for item in items],
                    "method": ["GET"] * len(items),
                    "requests": [item.requests for item in items],
                    "status_2xx": [
                        item.requests - item.errors - item.rate_limited for item in items
                    ],
                    "status_3xx": [0] * len(items),
                    "status_4xx": [item.rate_limited for item in items],
                    "status_5xx": [item.errors for item in items],
                    "status_429": [item.rate_limited for item in items],
                    "status_other": [0] * len(items),
                    "latency_min_ms": [item.latency_ms for item in items],
                    "latency_max_ms": [item.latency_ms for item in items],
                    "latency_sum_ms": [item.latency_ms * item.requests for item in items],
                    "latency_sketch": [
                        [
                            {
                                "bucket": int(buckets_of(np.array([item.latency_ms]))[0]),
                                "count": item.requests,
                            }
                        ]
                        for item in items
                    ],
                }
            )
            connection.register("minutes", table)
            store.replace_partition(
                connection,
                REQUESTS_MINUTE.name,
                hour_key(hour),
                f"SELECT {REQUESTS_MINUTE.select_list()} FROM minutes",
            )
            connection.unregister("minutes")


def _minutes(case: RuleTestCase, start: datetime) -> list[RequestMinute]:
    minutes = []
    for route in case.requests:
        requests = expand(route.requests, 0)
        length = len(requests)
        errors = expand(route.errors, length)
        limited = expand(route.rate_limited, length)
        latency = expand(route.latency_ms, length)
        minutes += [
            RequestMinute(
                start + timedelta(minutes=offset),
                route=route.route,
                requests=int(requests[offset]),
                errors=int(errors[offset]),
                rate_limited=int(limited[offset]),
                latency_ms=latency[offset],
            )
            for offset in range(length)
            if requests[offset]
        ]
    return minutes


def _record_history(history: RunHistory, case: RuleTestCase, start: datetime) -> None:
    for run in case.history:
        finished = start + run.at
        history.record(
            PolicyRun(
                policy=run.policy,
                table_name=run.policy,
                status=run.status,
                started_at=finished - timedelta(seconds=1),
                finished_at=finished,
                deleted=run.deleted,
                duration_ms=run.duration_ms,
                error="boom" if run.status is RunStatus.FAILED else None,
            )
        )


def run_rule_test(
    pack: RulePack,
    case: RuleTestCase,
    workdir: Path | None = None,
    source: str = "",
    health: HealthConfig | None = None,
) -> RuleTestResult:
    """Replay ``pack`` over ``case``'s series; its data lives in ``workdir`` (default: a temp dir).
    The cleanup health of the case's run history is judged by `health` (the config's health:
    section; default: its defaults), as the sensor judges it.

    Nothing is stored or sent: the backtest keeps states in memory. Metrics without input in a
    test file (jobs, API usage, the application database) have no data.
    """
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="hk-rule-test-") as scratch:
            return run_rule_test(pack, case, Path(scratch), source, health)
    start = case.start.astimezone(UTC)
    store = RollupStore(workdir / "analytics", workdir / "analytics" / "rollups.duckdb")
    publish_request_minutes(store, _minutes(case, start), every_hour=True)
    history = RunHistory(f"sqlite:///{workdir / 'state.db'}", health)
    try:
        _record_history(history, case, start)
        result = backtest(
            pack,
            store.database,
            history,
            start + case.evaluate.from_,
            start + case.evaluate.to,
            case.evaluate.step,
            rollup_root=store.root,
        )
    finally:
        history.dispose()
    got = [
        AlertEvent(
            at=item.evaluated_at - start,
            rule=item.key.rule,
            group=item.key.group,
            kind=item.kind,
            severity=item.severity,
        )
        for item in result.notifications
    ]
    return RuleTestResult(source, case.description, list(case.expected), got, result.errors)
