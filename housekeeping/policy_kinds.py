"""The policy kinds, ``expired | age | jobs``: a pydantic union discriminated by ``kind``.

Each kind is one class holding its own keys, their validation and the phrase that describes it;
the keys every kind shares are in ``BasePolicy``. A new kind is a new class added to
``AnyPolicy``: with one cutoff for the whole table it only needs ``cutoff()``; targets that need
the database (the jobs' per-queue ones) are built in policies.py.

A key of another kind is refused, naming the kind it belongs to; set to null it counts as unset.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal, get_args

from pydantic import (
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


class BasePolicy(TableSection):
    """The keys of every policy kind (``schema`` comes with TableSection)."""

    kind: PolicyKind
    table: TableRef
    cutoff_column: Identifier
    # The zone whose wall clock a naive cutoff column (timestamp without time zone, date, any
    # SQLite column) is read in; a timestamp with time zone column holds instants and needs none.
    timezone: TimeZone = "UTC"
    primary_key: list[Identifier] | None = None
    archive: bool = False
    schedule: Cron | None = None
    max_delete_fraction: float | None = Field(default=None, gt=0, le=1)
    strategy: DeleteStrategy = DeleteStrategy.AUTO
    description: str | None = None

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


# Every kind; a new kind is added here.
AnyPolicy = ExpiredPolicy | AgePolicy | JobsPolicy

# Each class by its tag: the one value its ``kind: Literal[...]`` admits.
_KINDS: dict[PolicyKind, type[BasePolicy]] = {
    get_args(kind.model_fields["kind"].annotation)[0]: kind for kind in get_args(AnyPolicy)
}
_KIND_UNION: TypeAdapter[BasePolicy] = TypeAdapter(
    Annotated[AnyPolicy, Field(discriminator="kind")]
)


def _own_keys(kind: type[BasePolicy]) -> list[str]:
    return [key for key in kind.model_fields if key not in BasePolicy.model_fields]


def _owner_of(key: str) -> PolicyKind | None:
    return next((tag for tag, kind in _KINDS.items() if key in _own_keys(kind)), None)


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
        message = (
            f"'{loc[0]}' is for kind '{owner}'; kind '{tag}' uses {_listed(_own_keys(_KINDS[tag]))}"
        )
        return {
            "type": PydanticCustomError("policy_kind_key", message),
            "loc": loc,
            "input": error["input"],
        }
    details: InitErrorDetails = {"type": error["type"], "loc": loc, "input": error["input"]}
    if "ctx" in error:
        details["ctx"] = error["ctx"]
    return details


def _validate_policy(value: Any) -> BasePolicy:
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
        return _KIND_UNION.validate_python(value)
    except ValidationError as exc:
        raise ValidationError.from_exception_data(
            exc.title, [_as_reported(error, tag) for error in exc.errors()]
        ) from None


# One policy of the config file, as the class of its kind. Errors are located at the policy's keys
# (``policies.<name>.<key>``), as for any other section.
PolicyConfig = Annotated[AnyPolicy, PlainValidator(_validate_policy)]
