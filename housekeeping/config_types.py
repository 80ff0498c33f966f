"""The value types config sections are built from: durations, crons, identifiers, time zones,
and StrictModel, the base of every config model.

Below config.py and policy_kinds.py, which both build on them; it imports no other module of ours.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> timedelta:
    """'250ms', '30s', '15m', '24h', '30d', '2w' (or a number of seconds) -> timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '30d' or '15m', got {value!r}")
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    raise ValueError(f"expected a duration like '30d', '24h', '15m' or '250ms', got {value!r}")


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError(f"must be greater than 0, got {format_duration(value)}")
    return value


def _non_negative(value: timedelta) -> timedelta:
    if value < timedelta(0):
        raise ValueError(f"must not be negative, got {format_duration(value)}")
    return value


def _valid_cron(value: str) -> str:
    if not isinstance(value, str) or not croniter.is_valid(value) or len(value.split()) != 5:
        raise ValueError(f"not a valid 5-field cron expression: {value!r}")
    return value


def _valid_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {value!r} (use an IANA name like 'Europe/Berlin')"
        ) from None
    return value


def format_duration(value: timedelta) -> str:
    """timedelta -> the largest whole unit that fits: '30d', '2w', '15m', else milliseconds."""
    seconds = value.total_seconds()
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNIT_SECONDS[unit]
        if seconds and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds * 1000:g}ms"


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
PositiveDuration = Annotated[timedelta, BeforeValidator(parse_duration), AfterValidator(_positive)]
NonNegativeDuration = Annotated[
    timedelta, BeforeValidator(parse_duration), AfterValidator(_non_negative)
]
Cron = Annotated[str, AfterValidator(_valid_cron)]
# A table or column name as written in the config (PostgreSQL's limit: 63 bytes).
Identifier = Annotated[str, Field(min_length=1, max_length=63)]
TimeZone = Annotated[str, AfterValidator(_valid_timezone)]


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors (a typo never passes silently), and a
    loaded config is immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)
