"""The `analytics:` section of the config file, validated with the same rules as the rest.

Every key is documented in docs/analytics.md ("Configuration"). Source tables and columns default
to the reference schema; real users map their own names here. Errors read
``<file>: analytics.<key>: <message>``.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, PlainValidator, model_validator

from analytics.extract import DEFAULT_EXTRACT_WORKERS, MAX_EXTRACT_WORKERS
from analytics.logs.formats import FieldMapping, PresetName, resolved_mapping
from analytics.logs.job_formats import (
    REQUIRED_JOB_FIELDS,
    JobFieldMapping,
    JobPresetName,
    resolved_job_mapping,
)
from housekeeping.config import HousekeepingConfig, parse_section
from housekeeping.config_types import (
    Identifier,
    NonNegativeDuration,
    PositiveDuration,
    StrictModel,
    TableRef,
    TableSection,
    TimeZone,
)
from housekeeping.sql import TableName


class RequestLogsSource(TableSection):
    """One HTTP request per row."""

    # json_lines instead: read from log files (JsonLinesSource, JobsJsonLinesSource).
    kind: Literal["table"] = "table"
    table: TableRef = TableName("request_logs")
    # The zone whose wall clock naive timestamp columns hold (timestamptz ones hold instants).
    timezone: TimeZone = "UTC"
    ts: Identifier = "ts"
    method: Identifier = "method"
    route: Identifier = "route"
    status_code: Identifier = "status_code"
    duration_ms: Identifier = "duration_ms"
    # The security signals (request_clients_minute) read these two, hashed with the user key.
    ip: Identifier = "ip"
    user_id: Identifier = "user_id"


class JobsSource(TableSection):
    """One background job per row (BullMQ/Sidekiq-style statuses)."""

    # json_lines instead: read from log files (JsonLinesSource, JobsJsonLinesSource).
    kind: Literal["table"] = "table"
    table: TableRef = TableName("jobs")
    # The zone whose wall clock naive timestamp columns hold (timestamptz ones hold instants).
    timezone: TimeZone = "UTC"
    queue: Identifier = "queue"
    name: Identifier = "name"
    status: Identifier = "status"
    created_at: Identifier = "created_at"
    started_at: Identifier = "started_at"
    finished_at: Identifier = "finished_at"
    attempts: Identifier = "attempts"
    completed_status: str = "completed"
    failed_status: str = "failed"
    waiting_statuses: list[str] = Field(default_factory=lambda: ["waiting", "delayed"])
    active_status: str = "active"


class ApiUsageSource(TableSection):
    """One call to a paid external API per row."""

    table: TableRef = TableName("api_usage")
    # The zone whose wall clock naive timestamp columns hold (timestamptz ones hold instants).
    timezone: TimeZone = "UTC"
    ts: Identifier = "ts"
    service: Identifier = "service_name"
    endpoint: Identifier = "endpoint"
    response_time_ms: Identifier = "response_time_ms"
    tokens_used: Identifier = "tokens_used"
    cost_usd: Identifier = "cost_usd"
    success: Identifier = "success"


class RevokedTokensSource(TableSection):
    table: TableRef = TableName("revoked_tokens")
    # The zone whose wall clock naive timestamp columns hold (timestamptz ones hold instants).
    timezone: TimeZone = "UTC"
    user_id: Identifier = "user_id"
    revoked_at: Identifier = "revoked_at"
    expires_at: Identifier = "expires_at"


class LogFilesSource(StrictModel):
    """What every source read from JSON-lines log files has (analytics/logs/): ``path`` is a glob
    (``/var/log/app/access.log*``: rotated and ``.gz`` files included)."""

    # The config key errors name (log_files).
    config_key: ClassVar[str] = "analytics.sources.request_logs"
    kind: Literal["json_lines"]
    path: str = Field(min_length=1)
    # The zone of ISO timestamps written without an offset.
    timezone: TimeZone = "UTC"
    # A longer line is counted as bad (line_too_long), never parsed.
    max_line_bytes: int = Field(default=1 << 20, ge=1024, le=64 << 20)
    # A file modified this recently may still be written (a .gz being compressed): wait for it.
    settle: NonNegativeDuration = timedelta(seconds=60)


class JsonLinesSource(LogFilesSource):
    """Requests read from JSON-lines log files instead of a table (analytics/logs/).

    ``format`` a preset (analytics/logs/formats.py) and/or ``fields`` a mapping laid over it.
    """

    format: PresetName | None = None
    fields: FieldMapping | None = None

    @model_validator(mode="after")
    def _mapped(self) -> JsonLinesSource:
        if self.format is None and self.fields is None:
            raise ValueError("set format (pino, winston, bunyan, reference) or fields")
        mapping = resolved_mapping(self.format, self.fields)
        missing = [key for key in ("timestamp", "route", "select") if getattr(mapping, key) is None]
        if missing:
            raise ValueError(f"fields: set {', '.join(missing)} (no format preset gives them)")
        return self

    @property
    def mapping(self) -> FieldMapping:
        """The preset with ``fields`` laid over it."""
        return resolved_mapping(self.format, self.fields)


class JobsJsonLinesSource(LogFilesSource):
    """Job lifecycle lines read from JSON-lines log files instead of a jobs table
    (analytics/logs/jobs.py): ``format`` a job preset (analytics/logs/job_formats.py) and/or
    ``fields`` a job mapping laid over it."""

    config_key: ClassVar[str] = "analytics.sources.jobs"
    format: JobPresetName | None = None
    fields: JobFieldMapping | None = None
    # Staged chunks (one per tick) folded into one compacted job state once this many are not
    # folded yet (analytics/logs/jobs.py ``compact_job_chunks``); null: never.
    compact_after_chunks: int | None = Field(default=24, ge=2, le=100_000)

    @model_validator(mode="after")
    def _mapped(self) -> JobsJsonLinesSource:
        if self.format is None and self.fields is None:
            raise ValueError("set format (pino, winston) or fields")
        mapping = resolved_job_mapping(self.format, self.fields)
        missing = [key for key in REQUIRED_JOB_FIELDS if getattr(mapping, key) is None]
        if missing:
            raise ValueError(f"fields: set {', '.join(missing)} (no format preset gives them)")
        if not (mapping.completed_states or mapping.failed_states):
            raise ValueError("fields: set completed_states or failed_states")
        return self

    @property
    def mapping(self) -> JobFieldMapping:
        """The preset with ``fields`` laid over it."""
        return resolved_job_mapping(self.format, self.fields)


def _by_kind(table: type[StrictModel], files: type[StrictModel]) -> PlainValidator:
    """A source section validated as ``table`` (``kind: table``, the default) or as ``files``
    (``kind: json_lines``); errors are located at the section's keys, as any other section's
    (a discriminated union would put the kind in front of them)."""

    def validate(value: Any) -> StrictModel:
        if isinstance(value, (table, files)):
            return value
        kind = value.get("kind", "table") if isinstance(value, dict) else "table"
        if kind not in ("table", "json_lines"):
            raise ValueError(f"kind: expected table or json_lines, got {kind!r}")
        return (files if kind == "json_lines" else table).model_validate(value)

    return PlainValidator(validate)


RequestSource = Annotated[
    RequestLogsSource | JsonLinesSource, _by_kind(RequestLogsSource, JsonLinesSource)
]
JobSource = Annotated[JobsSource | JobsJsonLinesSource, _by_kind(JobsSource, JobsJsonLinesSource)]


class SourcesSettings(StrictModel):
    request_logs: RequestSource = RequestLogsSource()
    jobs: JobSource = JobsSource()
    api_usage: ApiUsageSource = ApiUsageSource()
    revoked_tokens: RevokedTokensSource = RevokedTokensSource()


class ServiceBudget(StrictModel):
    """Monthly limits of one external service; month-to-date totals are compared against them."""

    monthly_calls: int | None = Field(default=None, gt=0)
    monthly_tokens: int | None = Field(default=None, gt=0)
    monthly_cost_usd: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _something_set(self) -> ServiceBudget:
        if (
            self.monthly_calls is None
            and self.monthly_tokens is None
            and self.monthly_cost_usd is None
        ):
            raise ValueError("set at least one of monthly_calls, monthly_tokens, monthly_cost_usd")
        return self


class AnalyticsSettings(StrictModel):
    # Parquet datasets, one file per partition: replaced atomically, never written in place.
    root: str = "var/analytics"
    # The small DuckDB file of views analysts open (read-only); rewritten only by rename.
    # Default: rollups.duckdb under root, so moving root moves the views with the data.
    database: str | None = None
    # Day boundaries of the daily views and daily partitions; default: the top-level timezone.
    timezone: TimeZone | None = None
    # First hour/day of the time partitions (the Dagster UI offers backfills from here).
    partitions_start: date = date(2026, 1, 1)
    # A closed hour is finalised (recomputed from the source) once this much time has passed.
    late_row_grace: NonNegativeDuration = timedelta(minutes=5)
    # Each refresh re-reads this far behind its previous watermark, for rows committed late.
    late_commit_overlap: NonNegativeDuration = timedelta(minutes=2)
    # How often the freshness sensor refreshes the current hour.
    refresh_interval: PositiveDuration = timedelta(seconds=60)
    # After a pause, the sensor refreshes at most this far back; older hours are finalised by runs.
    max_catch_up: PositiveDuration = timedelta(hours=2)
    # A job active for longer than this counts as stuck.
    stuck_after: PositiveDuration = timedelta(hours=2)
    # Connections (each a database backend and a client thread) a rollup extract reads over at
    # once, one UTC hour per COPY; docs/analytics.md ("Extract workers") says how to choose it.
    extract_workers: int = Field(
        default=DEFAULT_EXTRACT_WORKERS, ge=1, le=MAX_EXTRACT_WORKERS, strict=True
    )
    # Environment variable holding the key that hashes user ids; unset: a key file under root.
    user_hash_key_env: Identifier = "HK_USER_HASH_KEY"
    sources: SourcesSettings = SourcesSettings()
    budgets: dict[Identifier, ServiceBudget] = Field(default_factory=dict)

    def day_timezone(self, config: HousekeepingConfig) -> str:
        return self.timezone or config.timezone

    @property
    def root_path(self) -> Path:
        return Path(self.root).expanduser().resolve()

    @property
    def database_path(self) -> Path:
        """The views file: ``database``, or ``<root>/rollups.duckdb`` when it is not set."""
        if self.database is None:
            return self.root_path / "rollups.duckdb"
        return Path(self.database).expanduser().resolve()


def parse_analytics_settings(data: Any, source: str = "config") -> AnalyticsSettings:
    return parse_section(AnalyticsSettings, data, "analytics", source)


def analytics_settings(config: HousekeepingConfig, source: str = "config") -> AnalyticsSettings:
    """The validated `analytics:` section of a loaded config."""
    return parse_analytics_settings(config.analytics, source)
