"""The history of housekeeping runs, and the health it implies.

Kept in the product's own state database (``state_database_url``: a SQLite file by default,
PostgreSQL in production), not in the application database, so a run that failed because the
application database was unreachable is recorded all the same. The health thresholds are the
config's ``health:`` section (`HealthConfig`, defaults from the teams in ``reference/``): healthy;
degraded after 1-2 consecutive failures; critical after 3+; a warning after 0 deleted for 3+ runs
in a row; a warning when cleanups average over 1000 ms.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

import sqlalchemy as sa

from housekeeping.config import HealthConfig, HousekeepingConfig
from housekeeping.database import add_missing_columns, open_own_database, redact_url
from housekeeping.errors import HkError

metadata = sa.MetaData()

policy_runs = sa.Table(
    "hk_policy_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("policy", sa.String(64), nullable=False, index=True),
    sa.Column("table_name", sa.String(128), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # success | failed | stopped
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("deleted", sa.BigInteger, nullable=False, default=0),
    sa.Column("expected_deleted", sa.BigInteger, nullable=False, default=0),
    sa.Column("remaining_expired", sa.BigInteger, nullable=False, default=0),
    sa.Column("archived_rows", sa.BigInteger, nullable=False, default=0),
    sa.Column("batches", sa.Integer, nullable=False, default=0),
    sa.Column("duration_ms", sa.Float, nullable=False, default=0.0),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("dagster_run_id", sa.String(64), nullable=True),
    # Added after the first release: add_missing_columns adds it to older state databases.
    sa.Column("skipped_locked", sa.BigInteger, nullable=False, default=0, server_default="0"),
)

# Columns added to hk_policy_runs since it was first created; existing rows get the default.
_ADDED_COLUMNS = ("skipped_locked",)


class RunStatus(StrEnum):
    SUCCESS = "success"
    FAILED = "failed"
    STOPPED = "stopped"


class HealthStatus(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    CRITICAL = "critical"


@dataclass(frozen=True)
class PolicyRun:
    policy: str
    table_name: str
    status: RunStatus
    started_at: datetime
    finished_at: datetime
    deleted: int = 0
    expected_deleted: int = 0
    remaining_expired: int = 0
    archived_rows: int = 0
    batches: int = 0
    duration_ms: float = 0.0
    error: str | None = None
    dagster_run_id: str | None = None
    # expired rows other sessions had locked, which the run skipped
    skipped_locked: int = 0


@dataclass(frozen=True)
class PolicyHealth:
    policy: str
    status: HealthStatus
    consecutive_failures: int
    consecutive_zero_deletes: int
    average_duration_ms: float | None
    total_runs: int
    successful_runs: int
    failed_runs: int
    total_deleted: int
    last_run: datetime | None
    last_success: datetime | None
    last_failure: datetime | None
    last_error: str | None
    # True when `consecutive_zero_deletes` reached health.zero_deleted_runs_warning.
    zero_deletes_warning: bool = False
    # True when `average_duration_ms` is above health.slow_average (never for an untimed policy).
    slow_warning: bool = False
    # False for a policy whose duration is not judged (a files policy: gzipping a day of logs
    # takes seconds by nature): no `duration` check, no value for cleanup_average_duration_ms.
    timed: bool = True
    # Rows the newest run (failed ones included) skipped because other sessions had them locked.
    last_skipped_locked: int = 0


def evaluate_health(
    policy: str, runs: Sequence[PolicyRun], thresholds: HealthConfig, *, timed: bool = True
) -> PolicyHealth:
    """Health from a policy's runs (newest first), judged by the config's ``health:`` section
    (``timed`` False: its duration is not judged, ``slow_warning`` stays False).

    Critical after ``thresholds.critical_after_failures`` consecutive failed runs, degraded after
    fewer (at least one), else healthy; the average covers the newest
    ``thresholds.average_over_runs`` completed (not failed) runs, in milliseconds.
    """
    failures = 0
    for run in runs:
        if run.status is not RunStatus.FAILED:
            break
        failures += 1
    zero_deletes = 0
    for run in runs:
        if run.status is RunStatus.FAILED:
            continue  # failures are judged by the rule above
        if run.deleted:
            break
        zero_deletes += 1
    completed = [run for run in runs if run.status is not RunStatus.FAILED][
        : thresholds.average_over_runs
    ]
    average = sum(run.duration_ms for run in completed) / len(completed) if completed else None
    if failures >= thresholds.critical_after_failures:
        status = HealthStatus.CRITICAL
    elif failures:
        status = HealthStatus.DEGRADED
    else:
        status = HealthStatus.HEALTHY
    failed = [run for run in runs if run.status is RunStatus.FAILED]
    succeeded = [run for run in runs if run.status is RunStatus.SUCCESS]
    return PolicyHealth(
        policy=policy,
        status=status,
        consecutive_failures=failures,
        consecutive_zero_deletes=zero_deletes,
        average_duration_ms=average,
        total_runs=len(runs),
        successful_runs=len(succeeded),
        failed_runs=len(failed),
        total_deleted=sum(run.deleted for run in runs),
        last_run=runs[0].finished_at if runs else None,
        last_success=succeeded[0].finished_at if succeeded else None,
        last_failure=failed[0].finished_at if failed else None,
        last_error=failed[0].error if failed else None,
        last_skipped_locked=runs[0].skipped_locked if runs else 0,
        zero_deletes_warning=zero_deletes >= thresholds.zero_deleted_runs_warning,
        slow_warning=timed
        and average is not None
        and average > thresholds.slow_average.total_seconds() * 1000,
        timed=timed,
    )


class StateDatabaseError(HkError):
    """The state database (``state_database_url``) is not a URL, unreachable or not writable."""


class RunHistory:
    """Reads and writes ``hk_policy_runs`` in the state database, and judges health by
    `thresholds` (the config's ``health:`` section; `from_config` passes it); the policies in
    `untimed` (the files policies; `from_config` passes them) have no duration judged."""

    def __init__(
        self,
        url: str,
        thresholds: HealthConfig | None = None,
        untimed: Collection[str] = (),
    ) -> None:
        """Raises StateDatabaseError (naming ``state_database_url``) for a URL that is not one
        or a database that cannot be reached or written."""
        self.thresholds = thresholds or HealthConfig()
        self.untimed = frozenset(untimed)
        self.engine = open_own_database(
            url,
            metadata,
            key="state_database_url",
            what="state database",
            error=StateDatabaseError,
        )
        self.description = redact_url(self.engine.url)
        add_missing_columns(self.engine, policy_runs, _ADDED_COLUMNS)

    @classmethod
    def from_config(cls, config: HousekeepingConfig) -> RunHistory:
        """The run history of `config`: its ``state_database_url`` and ``health:`` thresholds;
        its files policies untimed."""
        return cls(config.state_database_url, config.health, untimed=config.file_policies)

    def record(self, run: PolicyRun) -> None:
        values = {
            field: getattr(run, field)
            for field in PolicyRun.__dataclass_fields__
            if field != "status"
        }
        values["status"] = str(run.status)
        if values["error"]:
            values["error"] = values["error"][:2000]
        with self.engine.begin() as conn:
            conn.execute(policy_runs.insert().values(**values))

    def recent(self, policy: str, limit: int = 100) -> list[PolicyRun]:
        query = (
            sa.select(policy_runs)
            .where(policy_runs.c.policy == policy)
            .order_by(policy_runs.c.finished_at.desc(), policy_runs.c.id.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [_run_from_row(row) for row in rows]

    def finished_between(self, start: datetime, end: datetime) -> list[RecordedRun]:
        """Every run that finished in ``[start, end)``, oldest first, with its history id."""
        query = (
            sa.select(policy_runs)
            .where(policy_runs.c.finished_at >= start, policy_runs.c.finished_at < end)
            .order_by(policy_runs.c.finished_at, policy_runs.c.id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [RecordedRun(row["id"], _run_from_row(row)) for row in rows]

    def recorded_after(self, last_id: int) -> list[RecordedRun]:
        """Runs recorded after the one with id ``last_id`` (ids only grow), oldest first."""
        query = sa.select(policy_runs).where(policy_runs.c.id > last_id).order_by(policy_runs.c.id)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [RecordedRun(row["id"], _run_from_row(row)) for row in rows]

    def policies(self) -> list[str]:
        """Every policy with at least one recorded run."""
        query = sa.select(policy_runs.c.policy).distinct().order_by(policy_runs.c.policy)
        with self.engine.connect() as conn:
            return [row[0] for row in conn.execute(query)]

    def health(self, policy: str, runs: Sequence[PolicyRun] | None = None) -> PolicyHealth:
        """A policy's health from its newest 500 runs, or from `runs` (newest first) if given."""
        if runs is None:
            runs = self.recent(policy, limit=500)
        return evaluate_health(policy, runs, self.thresholds, timed=policy not in self.untimed)

    def dispose(self) -> None:
        self.engine.dispose()


@dataclass(frozen=True)
class RecordedRun:
    """A run as stored: its id in ``hk_policy_runs`` and its fields."""

    id: int
    run: PolicyRun


def _run_from_row(row: sa.RowMapping) -> PolicyRun:
    return PolicyRun(
        policy=row["policy"],
        table_name=row["table_name"],
        status=RunStatus(row["status"]),
        started_at=_utc(row["started_at"]),
        finished_at=_utc(row["finished_at"]),
        deleted=row["deleted"],
        expected_deleted=row["expected_deleted"],
        remaining_expired=row["remaining_expired"],
        archived_rows=row["archived_rows"],
        batches=row["batches"],
        duration_ms=row["duration_ms"],
        error=row["error"],
        dagster_run_id=row["dagster_run_id"],
        skipped_locked=row["skipped_locked"],
    )


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything stored here is UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)
