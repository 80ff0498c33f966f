"""The value types config sections are built from: durations, crons, identifiers, table names,
time zones, StrictModel (the base of every config model) and TableSection (a section naming a
table).

Below config.py and policy_kinds.py, which both build on them; of ours it imports only sql.py.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    model_validator,
)

from housekeeping.sql import TableName, unquote_identifier

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_BARE_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")
DURATION_UNITS = "ms, s, m, h, d or w"


def parse_duration(value: Any) -> timedelta:
    """'250ms', '30s', '15m', '24h', '30d', '2w' -> timedelta; a timedelta passes through.

    A bare number (``30`` or ``"30"``) is refused, naming the accepted units: ``retention: 30``
    reads as 30 days to one person and 30 seconds to another. Raises ValueError.
    """
    if isinstance(value, timedelta):
        return value
    text = str(value).strip() if isinstance(value, int | float | str) else None
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            try:
                return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])
            except OverflowError:
                raise ValueError(
                    f"{value!r} is too long (at most {timedelta.max.days:,} days)"
                ) from None
    if text is not None and not isinstance(value, bool) and _BARE_NUMBER.match(text):
        raise ValueError(
            f"{value!r} has no unit: write it with one of {DURATION_UNITS} (e.g. '{text}d')"
        )
    raise ValueError(
        f"expected a duration like '30d', '24h', '15m' or '250ms' (units: {DURATION_UNITS}), "
        f"got {value!r}"
    )


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


# PostgreSQL truncates longer names: a longer one in the config could never match.
MAX_NAME_BYTES = 63


def _table_name(value: Any) -> TableName:
    if isinstance(value, str):
        value = TableName.parse(value)
    elif not isinstance(value, TableName):
        raise ValueError(f"expected a table name like 'sessions' or 'app.sessions', got {value!r}")
    for part in (value.schema, value.name):
        if part is not None and len(part.encode()) > MAX_NAME_BYTES:
            raise ValueError(f"{part!r} is longer than PostgreSQL's {MAX_NAME_BYTES}-byte names")
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


def _unquoted(value: Any) -> Any:
    return unquote_identifier(value) if isinstance(value, str) else value


# A column (or other) name as written in the config, SQL's double quotes optional ('"CreatedAt"'
# is CreatedAt); exact, case included (PostgreSQL's limit: 63 bytes).
Identifier = Annotated[str, BeforeValidator(_unquoted), Field(min_length=1, max_length=63)]
TimeZone = Annotated[str, AfterValidator(_valid_timezone)]
# A table as the config names it: 'sessions' or 'app.sessions' (see TableSection for `schema:`).
TableRef = Annotated[TableName, PlainValidator(_table_name), PlainSerializer(str, return_type=str)]


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors (a typo never passes silently), and a
    loaded config is immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TableSection(StrictModel):
    """A section naming a table in ``table``: ``table: app.sessions`` (schema ``app``), or
    ``table: sessions`` with ``schema: app``, which takes the table name verbatim (dots
    included). Either may be in SQL's double quotes. Without a schema the table is looked up on
    the search path (SQLite: main)."""

    schema_: Identifier | None = Field(default=None, alias="schema")

    @model_validator(mode="before")
    @classmethod
    def _schema_into_table(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("schema"), str):
            table = data.get("table", cls.model_fields["table"].default)
            if isinstance(table, TableName):  # a section's default table
                table = table.name
            if isinstance(table, str):
                schema = unquote_identifier(data["schema"])
                data = {**data, "table": TableName(unquote_identifier(table), schema)}
        return data
