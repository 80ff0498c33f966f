"""The policy kinds, ``expired | age | jobs | files``: a pydantic union discriminated by ``kind``.

Each kind is one class holding its own keys, their validation and the phrase that describes it;
the keys every kind shares are in ``BasePolicy``. A new kind is a new class added to
``AnyPolicy``: with one cutoff for the whole table it only needs ``cutoff()``; targets that need
the database (the jobs' per-queue ones) are built in policies.py.

A key of another kind is refused, naming the kind it belongs to; set to null it counts as unset.

``files`` (log files in a directory, file_retention.py) shares only the keys in ``PolicyKeys``;
the config keeps its policies apart from the table kinds' (``HousekeepingConfig.file_policies``).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from housekeeping.config_types import (
    Cron,
    Identifier,
    NonNegativeDuration,
    PositiveDuration,
    StrictModel,
    TableRef,
    TableSection,
    TimeZone,
    format_duration,
)


class PolicyKind(StrEnum):
    EXPIRED = "expired"  # rows whose cutoff column (an expiry time) has passed: revoked tokens
    AGE = "age"  # rows older than a retention age: request, error and audit logs
    JOBS = "jobs"  # finished jobs, per status retention and keep-last-N per queue
    FILES = "files"  # log files in a directory: compress rotated ones, archive then delete old ones


class DeleteStrategy(StrEnum):
    AUTO = "auto"
    PAGE_RANGES = "page_ranges"
    PRIMARY_KEY_RANGES = "primary_key_ranges"
    CUTOFF_INDEX = "cutoff_index"


def _needed(message: str) -> BeforeValidator:
    """For a key its kind cannot do without: missing (with ``validate_default``), null or ``{}``
    fails with ``message``, reported at the key."""

    def check(value: Any) -> Any:
        if value is None or value == {}:
            raise ValueError(message)
        return value

    return BeforeValidator(check)


class PolicyKeys(StrictModel):
    """The keys every policy kind has, the files kind included."""

    kind: PolicyKind
    archive: bool = False
    schedule: Cron | None = None
    max_delete_fraction: float | None = Field(default=None, gt=0, le=1)
    description: str | None = None


class BasePolicy(TableSection, PolicyKeys):
    """The keys of every table kind (``schema`` comes with TableSection)."""

    table: TableRef
    cutoff_column: Identifier
    # The zone whose wall clock a naive cutoff column (timestamp without time zone, date, any
    # SQLite column) is read in; a timestamp with time zone column holds instants and needs none.
    timezone: TimeZone = "UTC"
    primary_key: list[Identifier] | None = None
    strategy: DeleteStrategy = DeleteStrategy.AUTO

    def rule(self) -> str:
        """Which rows go, as a phrase for the asset's description."""
        raise NotImplementedError

    def kind_columns(self) -> dict[str, str]:
        """Columns this kind reads besides the cutoff column, by config key (checked to exist)."""
        return {}


class ExpiredPolicy(BasePolicy):
    """Rows whose cutoff column (an expiry time) has passed, by more than ``grace``."""

    kind: Literal[PolicyKind.EXPIRED]
    grace: NonNegativeDuration = timedelta(0)

    def cutoff(self, database_now: datetime) -> datetime:
        """Rows whose cutoff column is before this go."""
        return database_now - self.grace

    def rule(self) -> str:
        rule = f"rows whose `{self.cutoff_column}` has passed"
        if self.grace:
            rule += f" by more than {format_duration(self.grace)}"
        return rule


class AgePolicy(BasePolicy):
    """Rows older than ``retention``: request, error and audit logs."""

    kind: Literal[PolicyKind.AGE]
    retention: Annotated[
        PositiveDuration, _needed("kind 'age' needs 'retention' (e.g. retention: 30d)")
    ] = Field(default=None, validate_default=True)

    def cutoff(self, database_now: datetime) -> datetime:
        """Rows whose cutoff column is before this go."""
        return database_now - self.retention

    def rule(self) -> str:
        return f"rows whose `{self.cutoff_column}` is older than {format_duration(self.retention)}"


class JobStatusRetention(StrictModel):
    retention: PositiveDuration
    keep_last: int | None = Field(default=None, ge=1)


class JobsPolicy(BasePolicy):
    """Finished jobs: per status a retention, and optionally only the newest N per queue kept."""

    kind: Literal[PolicyKind.JOBS]
    status_column: Annotated[Identifier, _needed("kind 'jobs' needs 'status_column'")] = Field(
        default=None, validate_default=True
    )
    queue_column: Identifier | None = None
    statuses: Annotated[
        dict[str, JobStatusRetention],
        _needed("kind 'jobs' needs 'statuses', e.g. statuses: {completed: {retention: 24h}}"),
    ] = Field(default=None, validate_default=True)

    @model_validator(mode="after")
    def _queue_column_for_keep_last(self) -> JobsPolicy:
        if any(rule.keep_last for rule in self.statuses.values()) and not self.queue_column:
            raise ValueError("'keep_last' counts jobs per queue, so it needs 'queue_column'")
        return self

    def rule(self) -> str:
        parts = []
        for status, rule in self.statuses.items():
            part = f"{status} older than {format_duration(rule.retention)}"
            if rule.keep_last:
                part += f" or beyond the newest {rule.keep_last} per queue"
            parts.append(part)
        return "finished jobs: " + "; ".join(parts)

    def kind_columns(self) -> dict[str, str]:
        columns = {"status_column": self.status_column}
        if self.queue_column:
            columns["queue_column"] = self.queue_column
        return columns


# A file modified more recently than this may still be written to: never touched.
DEFAULT_FILE_GRACE = timedelta(minutes=10)


def _file_name_pattern(value: str) -> str:
    if not value.strip() or "/" in value or value in (".", ".."):
        raise ValueError(
            f"expected a file-name pattern such as 'app-*.log*' (matched against the names in "
            f"'directory', so without '/'), got {value!r}"
        )
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _stream_pattern(value: str | None) -> str | None:
    if value is None:
        return value
    try:
        compiled = re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    if compiled.groups == 0:
        raise ValueError(
            "needs a group that captures the stream's name, e.g. '^(?P<stream>[a-z]+)-' "
            "(a named group 'stream', else the first group)"
        )
    return value


class FilesPolicy(PolicyKeys):
    """Log files in ``directory`` whose names match ``glob``: plain files older than
    ``compress_after`` are gzipped, files older than ``retention`` are archived (with
    ``archive: true``) then deleted. The newest file of each stream and any file modified within
    ``grace`` are never touched (file_retention.py does the work)."""

    kind: Literal[PolicyKind.FILES]
    directory: Annotated[
        str,
        AfterValidator(_not_blank),
        _needed("kind 'files' needs 'directory', the folder the log files are in"),
    ] = Field(default=None, validate_default=True)
    glob: Annotated[
        str,
        AfterValidator(_file_name_pattern),
        _needed("kind 'files' needs 'glob', the file names it covers (e.g. glob: 'app-*.log*')"),
    ] = Field(default=None, validate_default=True)
    retention: Annotated[
        PositiveDuration,
        _needed("kind 'files' needs 'retention' (e.g. retention: 30d)"),
    ] = Field(default=None, validate_default=True)
    compress_after: PositiveDuration | None = None
    grace: PositiveDuration = DEFAULT_FILE_GRACE
    # Which files make one stream (its newest file is the one being written): a regex whose group
    # `stream` (else its first group) captures the stream's name; None: the name without its
    # rotation date, number and .gz (see file_retention.stream_of).
    stream_pattern: Annotated[str | None, AfterValidator(_stream_pattern)] = None
    # Deleting log files without a copy is a decision to write down: no default.
    archive: Annotated[
        bool,
        _needed(
            "kind 'files' needs 'archive': true (copy each file into archive.root before "
            "deleting it) or false (delete without a copy)"
        ),
    ] = Field(default=None, validate_default=True)

    @model_validator(mode="after")
    def _compressed_before_deleted(self) -> FilesPolicy:
        if self.compress_after is not None and self.compress_after >= self.retention:
            raise ValueError(
                f"'compress_after' ({format_duration(self.compress_after)}) must be shorter than "
                f"'retention' ({format_duration(self.retention)}): files are deleted first"
            )
        return self

    def rule(self) -> str:
        """What happens to which files, as a phrase for the asset's description."""
        rule = f"`{self.glob}` files in `{self.directory}`"
        if self.compress_after is not None:
            rule += f": gzipped after {format_duration(self.compress_after)},"
        action = "archived then deleted" if self.archive else "deleted"
        return f"{rule} {action} after {format_duration(self.retention)}"


# Every table kind; a new one is added here.
AnyPolicy = ExpiredPolicy | AgePolicy | JobsPolicy

# Each class by its tag: the one value its ``kind: Literal[...]`` admits.
_KINDS: dict[PolicyKind, type[PolicyKeys]] = {
    get_args(kind.model_fields["kind"].annotation)[0]: kind
    for kind in (*get_args(AnyPolicy), FilesPolicy)
}
_KIND_UNION: TypeAdapter[BasePolicy] = TypeAdapter(
    Annotated[AnyPolicy, Field(discriminator="kind")]
)
_FILES: TypeAdapter[FilesPolicy] = TypeAdapter(FilesPolicy)
_TABLE_KINDS = "the table kinds (expired, age and jobs)"


def _own_keys(kind: type[PolicyKeys]) -> list[str]:
    shared = PolicyKeys if kind is FilesPolicy else BasePolicy
    return [key for key in kind.model_fields if key not in shared.model_fields]


def _owner_of(key: str) -> PolicyKind | str | None:
    """The kind a key belongs to; a key every table kind has: those kinds, as a phrase."""
    owner = next((tag for tag, kind in _KINDS.items() if key in _own_keys(kind)), None)
    if owner is None and key in BasePolicy.model_fields and key not in PolicyKeys.model_fields:
        return _TABLE_KINDS
    return owner


def _listed(words: list[str], last: str = "and") -> str:
    quoted = [f"'{word}'" for word in words]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} {last} {quoted[-1]}"


def _as_reported(error: Any, tag: PolicyKind | None) -> InitErrorDetails:
    """One error of the union as the config file's reader needs it: located at the key, without
    the kind pydantic puts in front, and a key of another kind named as such."""
    if error["type"] == "union_tag_not_found":
        return {"type": "missing", "loc": ("kind",), "input": error["input"]}
    if error["type"] == "union_tag_invalid":
        expected = _listed([str(tag) for tag in _KINDS], "or")
        return {
            "type": "enum",
            "loc": ("kind",),
            "input": error["input"],
            "ctx": {"expected": expected},
        }
    loc = error["loc"][1:] if tag is not None and error["loc"][:1] == (tag.value,) else error["loc"]
    owner = _owner_of(str(loc[0])) if error["type"] == "extra_forbidden" and len(loc) == 1 else None
    if owner is not None and tag is not None:
        whose = owner if owner == _TABLE_KINDS else f"kind '{owner}'"
        message = f"'{loc[0]}' is for {whose}; kind '{tag}' uses {_listed(_own_keys(_KINDS[tag]))}"
        return {
            "type": PydanticCustomError("policy_kind_key", message),
            "loc": loc,
            "input": error["input"],
        }
    details: InitErrorDetails = {"type": error["type"], "loc": loc, "input": error["input"]}
    if "ctx" in error:
        details["ctx"] = error["ctx"]
    return details


def _validate_policy(value: Any) -> BasePolicy | FilesPolicy:
    tag = None
    if isinstance(value, dict):
        try:
            tag = PolicyKind(value.get("kind"))
        except (TypeError, ValueError):
            pass  # the union reports the kind
        else:
            # A key of another kind set to null is as good as absent.
            own = _KINDS[tag].model_fields
            value = {key: item for key, item in value.items() if item is not None or key in own}
    try:
        if tag is PolicyKind.FILES:
            return _FILES.validate_python(value)
        return _KIND_UNION.validate_python(value)
    except ValidationError as exc:
        raise ValidationError.from_exception_data(
            exc.title, [_as_reported(error, tag) for error in exc.errors()]
        ) from None


# One policy of the config file, as the class of its kind. Errors are located at the policy's keys
# (``policies.<name>.<key>``), as for any other section.
PolicyConfig = Annotated[AnyPolicy, PlainValidator(_validate_policy)]
