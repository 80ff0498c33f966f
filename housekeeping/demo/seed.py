"""The demo data generator's entry points: the reference schema, filled with realistic traffic.

It feeds the demo, the tests and the benchmarks, on SQLite (the demo) or PostgreSQL. Columns are
drawn vectorised with numpy in chunks of ``CHUNK_ROWS`` rows, so memory stays bounded whatever the
volume. Everything is a pure function of ``seed``, ``now`` and the volume knobs; the incidents the
default alert rules should catch are listed in ``SeedSummary.incidents``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from housekeeping.demo.clock import DAY_US, from_us, resolve_now, to_us
from housekeeping.demo.incidents import Incident, IncidentKind
from housekeeping.demo.load import (
    SeedError,
    Target,
    connect_postgres,
    connect_sqlite,
    existing_tables_postgres,
    existing_tables_sqlite,
    parse_url,
    refuse_existing,
    seed_postgres,
    seed_sqlite,
)
from housekeeping.demo.plan import Plan
from housekeeping.demo.schema import (
    REFERENCE_TABLES,
    after_load_sql,
    create_partitions,
    create_table_sql,
    partition_days,
)


@dataclass(frozen=True)
class SeedSummary:
    """What ``seed_database`` wrote: rows per table, the time range and the injected incidents."""

    row_counts: dict[str, int]
    elapsed_seconds: float
    incidents: tuple[Incident, ...]
    start: datetime
    now: datetime

    def incident(self, kind: IncidentKind | str) -> Incident:
        wanted = IncidentKind(kind)
        for incident in self.incidents:
            if incident.kind is wanted:
                return incident
        raise KeyError(f"no {kind} incident was generated")


def create_schema(
    url: str,
    *,
    partitioned_request_logs: bool = False,
    days: int = 30,
    now: datetime | None = None,
) -> None:
    """Create the six empty reference tables with their indexes.

    With ``partitioned_request_logs`` (PostgreSQL only), request_logs is range-partitioned by day,
    one ``request_logs_pYYYYMMDD`` partition per UTC day from ``now - days`` to a few days past
    ``now``, and no default partition.
    """
    target = parse_url(url)
    _check_partitioning(target, partitioned_request_logs)
    now_us = to_us(resolve_now(now))
    start_us = now_us - _check_positive("days", days) * DAY_US
    if target.dialect == "postgresql":
        with connect_postgres(target) as connection, connection.cursor() as cursor:
            refuse_existing(existing_tables_postgres(cursor))
            for table in REFERENCE_TABLES:
                partitioned = partitioned_request_logs and table == "request_logs"
                cursor.execute(create_table_sql(target.dialect, table, partitioned=partitioned))
                if partitioned:
                    create_partitions(cursor, partition_days(start_us, now_us))
                for statement in after_load_sql(target.dialect, table, partitioned=partitioned):
                    cursor.execute(statement)
        return
    connection = connect_sqlite(target)
    try:
        refuse_existing(existing_tables_sqlite(connection))
        connection.execute("BEGIN")
        for table in REFERENCE_TABLES:
            connection.execute(create_table_sql(target.dialect, table, partitioned=False))
            for statement in after_load_sql(target.dialect, table, partitioned=False):
                connection.execute(statement)
        connection.execute("COMMIT")
    finally:
        connection.close()


def seed_database(
    url: str,
    *,
    tokens: int,
    requests: int,
    days: int,
    seed: int = 42,
    now: datetime | None = None,
    progress: bool = False,
    reset: bool = False,
    partitioned_request_logs: bool = False,
) -> SeedSummary:
    """Create the reference schema and fill it: ``tokens`` revoked tokens, ``requests`` request logs.

    Error logs follow the 5xx responses; audit logs, jobs and API usage scale with ``requests``
    (1/50, 1/20, 1/10). Times lie in ``[now - days, now]``, token expiries also after ``now``.
    Refuses (SeedError, nothing changed) when a reference table holds rows, unless ``reset``:
    then the tables are dropped and recreated. Empty existing tables are recreated.
    """
    started = time.perf_counter()
    target = parse_url(url)
    _check_partitioning(target, partitioned_request_logs)
    plan = Plan.build(
        tokens=_check_count("tokens", tokens),
        requests=_check_count("requests", requests),
        days=_check_positive("days", days),
        seed=_check_count("seed", seed),
        now=_check_now(now),
    )
    if target.dialect == "postgresql":
        row_counts, observed = seed_postgres(
            target, plan, progress, reset, partitioned_request_logs
        )
    else:
        row_counts, observed = seed_sqlite(target, plan, progress, reset)
    return SeedSummary(
        row_counts=row_counts,
        elapsed_seconds=time.perf_counter() - started,
        incidents=plan.incidents(row_counts, observed),
        start=from_us(plan.start_us),
        now=from_us(plan.now_us),
    )


def _check_partitioning(target: Target, partitioned: bool) -> None:
    if partitioned and target.dialect != "postgresql":
        raise SeedError(
            "partitioned_request_logs (--partitioned-request-logs) needs PostgreSQL; "
            f"{target.description} is SQLite"
        )


def _check_now(now: datetime | None) -> datetime:
    if now is not None and now.tzinfo is None:
        raise SeedError(f"now must be timezone-aware, got {now.isoformat()}")
    return resolve_now(now)


def _check_count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SeedError(f"{name} must be a whole number >= 0, got {value!r}")
    return value


def _check_positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SeedError(f"{name} must be a whole number >= 1, got {value!r}")
    return value
