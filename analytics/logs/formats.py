"""What a JSON log line means: the format presets and the field mapping, as DuckDB SQL.

A log-file source (``analytics.sources.request_logs`` with ``kind: json_lines``) names either a
``format`` preset or a ``fields`` mapping (or a preset with some fields overridden). A mapping
says where each value lives in a line (a dotted path, ``req.url``), how the timestamp is written
(``iso`` text, ``epoch_s`` or ``epoch_ms`` numbers) and the unit of a bare-number duration
(``"222ms"``, ``"1.2s"`` and ``"350us"`` carry their own). ``select`` (a path, optionally
``select_value``) says which lines are requests; other lines (start-up messages, job logs) are
not counted and are not errors.

The presets:

- ``pino`` (pino-http): ``{"level":30,"time":1700000000000,"req":{"method","url"},
  "res":{"statusCode"},"responseTime":12.5}``; requests are the lines with ``res.statusCode``.
- ``winston`` (express-winston): ``{"level":"info","timestamp":"2025-...Z","meta":{"req":{...},
  "res":{"statusCode"},"responseTime":12}}``.
- ``bunyan`` (restify/bunyan audit): ``{"time":"2025-...Z","req":{...},"res":{"statusCode"},
  "latency":12}``.
- ``reference``: the operational monitoring guide's request/response/error lines; the response
  line (``"type":"response"``) carries method, ``url``, ``statusCode`` and ``"duration":"222ms"``,
  so it alone is the request (the ``request`` line is not counted again).

Everything here is SQL text built from validated config (paths are quoted as JSON path keys,
values as SQL strings): the hot path never runs Python per line.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from housekeeping.config_types import StrictModel
from housekeeping.sql import sql_string

TimestampFormat = Literal["iso", "epoch_s", "epoch_ms"]
DurationUnit = Literal["ms", "s", "us"]
_PATH = re.compile(r"^[A-Za-z_@$][A-Za-z0-9_@$\-]*(\.[A-Za-z_@$][A-Za-z0-9_@$\-]*)*$")
# A line time outside [EARLIEST_TIME, LATEST_TIME) is a bad timestamp: no log line is older than
# the epoch, and a year past 9999 has no Python datetime (the tick could not record its span).
EARLIEST_TIME, LATEST_TIME = "1970-01-01", "10000-01-01"
# The longest duration taken (about 31 years, in ms); a longer one is none, as text that does not
# parse (the staged microseconds must fit a BIGINT).
MAX_DURATION_MS = 1e12
_UNIT_MS = {"ns": 0.000001, "us": 0.001, "µs": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def valid_path(value: str) -> str:
    """``value`` when it is a dotted field path (``req.url``); ValueError naming it otherwise."""
    if not _PATH.match(value):
        raise ValueError(
            f"{value!r} is not a dotted field path (letters, digits, _ - @ $, parts joined by '.')"
        )
    return value


# A mapping key holding a dotted path: checked per key, so a bad one is reported under its own
# key path (analytics.sources.request_logs.fields.duration), not under ``fields``.
DottedPath = Annotated[str, AfterValidator(valid_path)]


class FieldMapping(StrictModel):
    """Where a request line keeps each value (dotted paths into the JSON object).

    Every key is optional so a preset can be adjusted key by key; a source without a preset must
    set ``timestamp``, ``route`` and ``select`` (``settings.JsonLinesSource`` checks).
    """

    timestamp: DottedPath | None = None
    timestamp_format: TimestampFormat | None = None
    method: DottedPath | None = None
    route: DottedPath | None = None
    status: DottedPath | None = None
    duration: DottedPath | None = None
    # The unit of a duration written as a bare number; text such as "222ms" carries its own.
    duration_unit: DurationUnit | None = None
    # A line is a request when this path is present (and equals select_value, when set).
    select: DottedPath | None = None
    select_value: str | None = None
    # Error lines (issue item 4 reads these): present when this path is, or the level is one of
    # error_levels.
    error_name: DottedPath | None = None
    level: DottedPath | None = None
    error_levels: list[str] | None = Field(default=None)


PRESETS: dict[str, FieldMapping] = {
    "pino": FieldMapping(
        timestamp="time",
        timestamp_format="epoch_ms",
        method="req.method",
        route="req.url",
        status="res.statusCode",
        duration="responseTime",
        duration_unit="ms",
        select="res.statusCode",
        error_name="err.type",
        level="level",
        error_levels=["50", "60"],
    ),
    "winston": FieldMapping(
        timestamp="timestamp",
        timestamp_format="iso",
        method="meta.req.method",
        route="meta.req.url",
        status="meta.res.statusCode",
        duration="meta.responseTime",
        duration_unit="ms",
        select="meta.res.statusCode",
        error_name="error.name",
        level="level",
        error_levels=["error"],
    ),
    "bunyan": FieldMapping(
        timestamp="time",
        timestamp_format="iso",
        method="req.method",
        route="req.url",
        status="res.statusCode",
        duration="latency",
        duration_unit="ms",
        select="res.statusCode",
        error_name="err.name",
        level="level",
        error_levels=["50", "60"],
    ),
    "reference": FieldMapping(
        timestamp="timestamp",
        timestamp_format="iso",
        method="method",
        route="url",
        status="statusCode",
        duration="duration",
        duration_unit="ms",
        select="type",
        select_value="response",
        error_name="error.name",
        level="type",
        error_levels=["error"],
    ),
}
PresetName = Literal["pino", "winston", "bunyan", "reference"]


def resolved_mapping(preset: str | None, fields: FieldMapping | None) -> FieldMapping:
    """The preset's mapping with every key ``fields`` sets laid over it (either may be None)."""
    base = PRESETS[preset].model_dump() if preset else {}
    if fields is not None:
        base.update(fields.model_dump(exclude_none=True))
    base.setdefault("timestamp_format", None)
    mapping = FieldMapping(**base)
    return mapping.model_copy(
        update={
            "timestamp_format": mapping.timestamp_format or "iso",
            "duration_unit": mapping.duration_unit or "ms",
        }
    )


def json_path(path: str) -> str:
    """A dotted path as a DuckDB JSON path literal: ``req.url`` -> ``'$."req"."url"'``."""
    return sql_string("$" + "".join(f'."{part}"' for part in path.split(".")))


def duration_ms_sql(text: str, unit: str) -> str:
    """SQL: a duration value (JSON scalar text) in milliseconds, NULL when it does not parse.

    A bare number is in ``unit``; text carries its unit (``222ms``, ``1.2s``, ``350us``,
    ``2m``); anything else is NULL (the request counts, not in the latency columns).
    """
    factors = " ".join(
        f"WHEN {sql_string(suffix)} THEN {factor}" for suffix, factor in _UNIT_MS.items()
    )
    pattern = "'^\\s*([0-9]*\\.?[0-9]+)\\s*([a-zµ]*)\\s*$'"
    # CASE, not coalesce: the regular expressions run only for values that are not numbers.
    duration = (
        f"CASE WHEN TRY_CAST({text} AS DOUBLE) IS NOT NULL "
        f"THEN TRY_CAST({text} AS DOUBLE) * {_UNIT_MS[unit]} "
        f"ELSE TRY_CAST(regexp_extract({text}, {pattern}, 1) AS DOUBLE) * "
        f"CASE regexp_extract({text}, {pattern}, 2) {factors} "
        f"WHEN '' THEN {_UNIT_MS[unit]} END END"
    )
    # A negative, NaN, infinite or absurd number is no duration (NaN compares above all).
    return f"CASE WHEN ({duration}) BETWEEN 0 AND {MAX_DURATION_MS} THEN ({duration}) END"


def timestamp_sql(text: str, timestamp_format: str, timezone: str) -> str:
    """SQL: the line's timestamp as a UTC ``TIMESTAMP``, NULL when it does not parse.

    ``iso`` text with an offset or ``Z`` is an instant; without one it is a wall-clock reading in
    ``timezone`` (the source's). ``epoch_s``/``epoch_ms``: numbers (or numeric text).
    """
    if timestamp_format in ("epoch_ms", "epoch_s"):
        micros = 1000 if timestamp_format == "epoch_ms" else 1000000
        instant = f"make_timestamp(TRY_CAST(TRY_CAST({text} AS DOUBLE) * {micros} AS BIGINT))"
    else:
        zone = sql_string(timezone)
        has_zone = f"regexp_matches({text}, '(Z|z|[+-][0-9]{{2}}:?[0-9]{{2}})$')"
        instant = (
            f"CASE WHEN {has_zone} THEN TRY_CAST(TRY_CAST({text} AS TIMESTAMPTZ) AS TIMESTAMP) "
            f"ELSE TRY_CAST(timezone({zone}, TRY_CAST({text} AS TIMESTAMP)) AS TIMESTAMP) END"
        )
    return (
        f"CASE WHEN ({instant}) >= TIMESTAMP '{EARLIEST_TIME}' "
        f"AND ({instant}) < TIMESTAMP '{LATEST_TIME}' THEN ({instant}) END"
    )
