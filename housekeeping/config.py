"""The one YAML config file, loaded into pydantic models.

Every key is documented in the README. Loading validates shapes and values (durations, crons,
names); checking the config against the live database is `schema_check`'s job.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import Field, PrivateAttr, ValidationError, model_validator

from housekeeping.config_types import Cron, PositiveDuration, StrictModel, TimeZone
from housekeeping.errors import HkError
from housekeeping.policy_kinds import FilesPolicy, PolicyConfig

DEFAULT_CONFIG_PATH = "hk.yaml"
DEMO_DATABASE_URL = "sqlite:///var/demo.db"


class ConfigError(HkError):
    """The config file is missing, malformed or names something that does not exist."""


# Policy names become Dagster asset names and archive folder names.
PolicyName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]


class SafetyConfig(StrictModel):
    max_clock_skew: PositiveDuration = timedelta(seconds=30)
    max_delete_fraction: float = Field(default=0.5, gt=0, le=1)
    lock_timeout: PositiveDuration = timedelta(seconds=2)
    statement_timeout: PositiveDuration = timedelta(seconds=30)


# Two backends beat one DELETE on any server with two cores and leave the rest to the application.
DEFAULT_WORKERS = 2
MAX_WORKERS = 32


class BatchConfig(StrictModel):
    target_duration: PositiveDuration = timedelta(milliseconds=120)
    initial_size: int = Field(default=5000, ge=1)
    min_size: int = Field(default=100, ge=1)
    max_size: int = Field(default=1_000_000, ge=1)
    # Backends deleting at once, each on its own slice of the table's pages in its own short
    # transactions (PostgreSQL's page_ranges walk; every other walk, and SQLite, uses one).
    # Rule: at most the database server's cores that may go to housekeeping, fewer when its
    # storage is the bottleneck; 1 keeps a busy primary at one backend. See README. Strict: `true`,
    # `"3"` or `2.0` are errors, not silently 1, 3 or 2 (as analytics.extract_workers).
    workers: int = Field(default=DEFAULT_WORKERS, ge=1, le=MAX_WORKERS, strict=True)

    @model_validator(mode="after")
    def _ordered(self) -> BatchConfig:
        if not self.min_size <= self.initial_size <= self.max_size:
            raise ValueError("batch sizes must satisfy min_size <= initial_size <= max_size")
        return self


class ArchiveConfig(StrictModel):
    root: str = "var/archive"


class DagsterRunRetentionConfig(StrictModel):
    enabled: bool = True
    retention: PositiveDuration = timedelta(days=30)
    failed_retention: PositiveDuration = timedelta(days=90)
    schedule: Cron | None = "0 4 * * *"

    @model_validator(mode="after")
    def _failed_kept_at_least_as_long(self) -> DagsterRunRetentionConfig:
        if self.failed_retention < self.retention:
            raise ValueError("failed_retention must be at least as long as retention")
        return self


class HealthConfig(StrictModel):
    """When a policy's run history counts as unhealthy: the one place these numbers live.

    Read by the asset checks, `hk status`, the daily summary, the housekeeping summary rollup and
    the default alert rules (which name them as ``health.<key>``). Defaults are the reference
    teams' (token-cleanup-monitoring.md): degraded after 1-2 consecutive failed runs, critical
    after 3+; a warning after 3+ runs in a row deleted nothing; a warning when the cleanups
    average over one second.
    """

    # Consecutive failed runs that make a policy critical (1 failed run already degrades it).
    critical_after_failures: int = Field(default=3, ge=1)
    # Successful runs in a row that deleted nothing before the deletes_progress check warns.
    zero_deleted_runs_warning: int = Field(default=3, ge=1)
    # The duration check warns when the recent runs average longer than this.
    slow_average: PositiveDuration = timedelta(seconds=1)
    # How many recent completed runs that average covers.
    average_over_runs: int = Field(default=10, ge=1)

    def rule_values(self) -> dict[str, float]:
        """The thresholds rule files may name as ``health.<key>``; durations in milliseconds
        (the unit of the cleanup duration metric). ``average_over_runs`` is a window, not a
        threshold: the cleanup duration metric already averages over it."""
        return {
            "critical_after_failures": float(self.critical_after_failures),
            "zero_deleted_runs_warning": float(self.zero_deleted_runs_warning),
            "slow_average": self.slow_average.total_seconds() * 1000,
        }


class HousekeepingConfig(StrictModel):
    timezone: TimeZone = "UTC"
    owner: Annotated[str, Field(pattern=r"^(team:[A-Za-z0-9_-]+|[^@\s]+@[^@\s]+)$")] = (
        "team:operations"
    )
    state_database_url: str = "sqlite:///var/hk_state.db"
    archive: ArchiveConfig = ArchiveConfig()
    safety: SafetyConfig = SafetyConfig()
    batch: BatchConfig = BatchConfig()
    policies: dict[PolicyName, PolicyConfig] = Field(default_factory=dict)
    dagster_runs: DagsterRunRetentionConfig = DagsterRunRetentionConfig()
    health: HealthConfig = HealthConfig()
    # The analytics package validates its own section (analytics/settings.py).
    analytics: dict[str, Any] = Field(default_factory=dict)
    # The alerting package validates its own section (analytics/alerts/settings.py).
    alerts: dict[str, Any] = Field(default_factory=dict)
    # The `kind: files` entries of `policies:`, kept apart so `policies` holds table policies only.
    _file_policies: dict[str, FilesPolicy] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _file_policies_apart(self) -> HousekeepingConfig:
        files = {name: p for name, p in self.policies.items() if isinstance(p, FilesPolicy)}
        if files:
            # The model is frozen; this runs once, while it is being built.
            object.__setattr__(
                self, "policies", {n: p for n, p in self.policies.items() if n not in files}
            )
        self._file_policies = files
        return self

    @property
    def file_policies(self) -> dict[str, FilesPolicy]:
        """The ``kind: files`` policies by name (``policies`` holds the table kinds)."""
        return dict(self._file_policies)

    def every_policy(self) -> dict[str, PolicyConfig | FilesPolicy]:
        """Table and files policies by name, in config order (names are unique across both)."""
        return {**self.policies, **self._file_policies}

    def policy(self, name: str) -> PolicyConfig:
        """The table policy ``name``; ConfigError naming the configured ones otherwise."""
        try:
            return self.policies[name]
        except KeyError:
            if name in self._file_policies:
                raise ConfigError(
                    f"policy {name!r} is of kind 'files', not a table policy"
                ) from None
            known = ", ".join(sorted(self.every_policy())) or "none"
            raise ConfigError(f"unknown policy {name!r} (configured: {known})") from None

    def file_policy(self, name: str) -> FilesPolicy:
        """The files policy ``name``; ConfigError naming the configured ones otherwise."""
        try:
            return self._file_policies[name]
        except KeyError:
            if name in self.policies:
                raise ConfigError(
                    f"policy {name!r} is a table policy, not of kind 'files'"
                ) from None
            known = ", ".join(sorted(self.every_policy())) or "none"
            raise ConfigError(f"unknown policy {name!r} (configured: {known})") from None

    def delete_fraction_limit(self, policy: PolicyConfig | FilesPolicy) -> float:
        if policy.max_delete_fraction is not None:
            return policy.max_delete_fraction
        return self.safety.max_delete_fraction


M = TypeVar("M", bound=StrictModel)

_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_env(value: Any, path: str) -> Any:
    """Replace ${VAR} and ${VAR:-default} in string values, so secrets stay in the environment."""
    if isinstance(value, dict):
        return {
            key: _expand_env(item, f"{path}.{key}" if path else str(key))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_expand_env(item, f"{path}[{index}]") for index, item in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise ConfigError(f"{path}: environment variable {name} is not set")

    return _ENV_REFERENCE.sub(substitute, value)


def describe_validation_error(source: str, error: ValidationError, prefix: str = "") -> str:
    """One line per problem: ``<source>: <prefix><key.path>: <message>``."""
    lines = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (check the spelling against the README's config reference)"
        where = f"{prefix}{location}" if location else (prefix.rstrip(".") or "(top level)")
        lines.append(f"{source}: {where}: {message}")
    return "\n".join(lines)


def parse_section(model: type[M], data: Any, section: str, source: str) -> M:
    """Validate one section of the config file (``analytics:``, ``alerts:``, ...) as `model`.

    A missing section takes the model's defaults. Raises ConfigError whose lines read
    ``<source>: <section>.<key>: <message>``.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {section}: expected a mapping of keys")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(source, exc, f"{section}.")) from None


def parse_config(data: Any, source: str = "config") -> HousekeepingConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys at the top level")
    try:
        return HousekeepingConfig.model_validate(_expand_env(data, ""))
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(source, exc)) from None


def config_path() -> Path:
    return Path(os.environ.get("HK_CONFIG", DEFAULT_CONFIG_PATH))


def load_config(path: str | os.PathLike[str] | None = None) -> HousekeepingConfig:
    """Load and validate the config file (default: $HK_CONFIG, else ./hk.yaml)."""
    file = Path(path) if path is not None else config_path()
    named_by = "" if path is not None or "HK_CONFIG" not in os.environ else " (HK_CONFIG)"
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"config file {file}{named_by} not found (set HK_CONFIG or pass --config)"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"config file {file}{named_by} is a directory, not a file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {file}{named_by} is not UTF-8 text (byte {exc.start}: "
            f"{exc.object[exc.start : exc.start + 1]!r})"
        ) from None
    except OSError as exc:
        raise ConfigError(f"config file {file}{named_by} cannot be read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from None
    return parse_config(data, str(file))


def database_url() -> str:
    """The application database: $DATABASE_URL, else the demo's SQLite file."""
    return os.environ.get("DATABASE_URL") or DEMO_DATABASE_URL
