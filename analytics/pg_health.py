"""The application database's own health: one cheap snapshot of PostgreSQL's statistics views.

A snapshot is one round trip of catalog queries in one read-only transaction whose
``statement_timeout`` is set first (``SET LOCAL``, in the same message): ``pg_stat_activity``
(connections by state, the oldest open transaction, the longest ``idle in transaction``),
``pg_locks`` (sessions waiting for a lock), ``pg_stat_user_tables`` for the housekept tables
(dead tuples, the last (auto)vacuum and analyze, partitions summed through ``pg_inherits``),
``pg_database_size`` and ``max_connections``. Nothing in it takes a lock on a table: relations
are found by ``to_regclass`` and ``pg_inherits``, never opened. When the ``pg_stat_statements``
extension is installed, a second query reads its cumulative counters; the deltas since the
previous snapshot are computed by the caller (``statement_deltas``).

A role that may not read everything gets the rest, and ``missing`` says what it lacks in one
line: a housekept table it cannot find (dropped, misspelt, or in a search-path schema it may
not use) is named; without ``pg_read_all_stats`` the state and transaction times of other roles' sessions
are hidden (they are counted in ``connections_hidden``, which may include a background worker
running as a superuser, such as the logical replication launcher); ``pg_stat_statements`` installed but not
in ``shared_preload_libraries`` (or not readable) leaves the statements out.

On SQLite there are no such views: a snapshot holds the database file's size (the file plus its
``-wal`` file) and nothing else.

Plain Python: no Dagster, no DuckDB.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg

from housekeeping.database import AppDatabase, DatabaseError, timeout_ms
from housekeeping.errors import first_line
from housekeeping.sql import TableName, sql_string

# How long the snapshot's statements may run before PostgreSQL cancels them.
DEFAULT_STATEMENT_TIMEOUT = timedelta(seconds=5)
# The statements read from pg_stat_statements, by total execution time (the rest are the tail).
STATEMENT_LIMIT = 500


@dataclass(frozen=True)
class TableHealth:
    """One housekept table's vacuum statistics (``pg_stat_user_tables``, partitions summed)."""

    table_name: str
    live_tuples: int
    dead_tuples: int
    last_vacuum: datetime | None
    last_autovacuum: datetime | None
    last_analyze: datetime | None
    last_autoanalyze: datetime | None

    @property
    def dead_ratio(self) -> float | None:
        """Dead tuples per live tuple; None when the table has no live tuples."""
        return self.dead_tuples / self.live_tuples if self.live_tuples else None


@dataclass(frozen=True)
class StatementTotals:
    """One normalized statement's cumulative ``pg_stat_statements`` counters (ms)."""

    queryid: str
    query: str
    calls_total: int
    exec_ms_total: float
    max_exec_ms: float


@dataclass(frozen=True)
class StatementDelta:
    """A statement's calls and execution time since the previous snapshot (None: first seen)."""

    totals: StatementTotals
    calls: int | None
    exec_ms: float | None

    @property
    def mean_exec_ms(self) -> float | None:
        return self.exec_ms / self.calls if self.calls and self.exec_ms is not None else None


@dataclass(frozen=True)
class HealthSnapshot:
    """One snapshot. Counts are client backends of the whole server; times in seconds.

    On SQLite only ``taken_at``, ``engine`` and ``database_bytes`` are set.
    """

    taken_at: datetime
    engine: str
    database_bytes: int | None
    max_connections: int | None = None
    connections: int | None = None
    connections_active: int | None = None
    connections_idle: int | None = None
    connections_idle_in_transaction: int | None = None
    connections_other: int | None = None
    connections_hidden: int | None = None
    longest_transaction_s: float | None = None
    longest_idle_in_transaction_s: float | None = None
    lock_waiting_sessions: int | None = None
    tables: tuple[TableHealth, ...] = ()
    # None: pg_stat_statements is not installed or could not be read (see ``missing``).
    statements: tuple[StatementTotals, ...] | None = None
    missing: tuple[str, ...] = field(default=())

    @property
    def connections_used(self) -> float | None:
        """connections / max_connections (0-1)."""
        if self.connections is None or not self.max_connections:
            return None
        return self.connections / self.max_connections

    def missing_line(self) -> str | None:
        """What the role could not read, in one line; None when it read everything."""
        return "; ".join(self.missing) or None


def _snapshot_sql(tables: Sequence[TableName], statement_timeout: timedelta) -> str:
    # Literals, not bound parameters: one simple-protocol message carries both statements.
    names = (
        ", ".join(
            f"({sql_string(str(table))}, {sql_string(table.sql)}, "
            f"{sql_string(table.schema) if table.schema is not None else 'NULL'}, "
            f"{sql_string(table.name)})"
            for table in tables
        )
        or "(NULL, NULL, NULL, NULL)"
    )
    return f"""
SET LOCAL statement_timeout = {timeout_ms(statement_timeout)};
WITH activity AS (
    SELECT state, xact_start, state_change, pid = pg_backend_pid() AS own
    FROM pg_stat_activity
    -- another role's session shows no backend_type to a role without pg_read_all_stats: a
    -- session with a user is counted (hidden), background processes have none
    WHERE backend_type = 'client backend' OR (backend_type IS NULL AND usesysid IS NOT NULL)
),
configured(name, regclass, nspname, relname) AS (VALUES {names}),
-- A schema-qualified name is looked up in the catalog: to_regclass raises "permission denied
-- for schema" when the role lacks USAGE on it, which would cost the whole snapshot.
located AS MATERIALIZED (
    SELECT name, CASE WHEN nspname IS NULL THEN to_regclass(regclass)::oid
        ELSE (SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = configured.nspname AND c.relname = configured.relname) END AS relid
    FROM configured WHERE name IS NOT NULL
),
tree AS (
    WITH RECURSIVE members(name, relid) AS (
        SELECT name, relid FROM located WHERE relid IS NOT NULL
        UNION ALL
        SELECT members.name, i.inhrelid FROM members JOIN pg_inherits i ON i.inhparent = members.relid
    )
    SELECT * FROM members
),
table_health AS (
    SELECT tree.name AS table_name,
        coalesce(sum(s.n_live_tup), 0) AS live_tuples,
        coalesce(sum(s.n_dead_tup), 0) AS dead_tuples,
        max(s.last_vacuum) AS last_vacuum, max(s.last_autovacuum) AS last_autovacuum,
        max(s.last_analyze) AS last_analyze, max(s.last_autoanalyze) AS last_autoanalyze
    FROM tree LEFT JOIN pg_stat_user_tables s ON s.relid = tree.relid
    GROUP BY tree.name
)
SELECT json_build_object(
    'taken_at', now(),
    'database_bytes', pg_database_size(current_database()),
    'max_connections', current_setting('max_connections')::int,
    'role', current_user,
    'sees_all', pg_has_role('pg_read_all_stats', 'USAGE'),
    'connections', (SELECT count(*) FROM activity),
    'active', (SELECT count(*) FROM activity WHERE state = 'active'),
    'idle', (SELECT count(*) FROM activity WHERE state = 'idle'),
    'idle_in_transaction',
        (SELECT count(*) FROM activity WHERE state LIKE 'idle in transaction%'),
    'hidden', (SELECT count(*) FROM activity WHERE state IS NULL),
    'longest_transaction_s', (SELECT coalesce(extract(epoch FROM max(now() - xact_start)), 0)
        FROM activity WHERE NOT own),
    'longest_idle_in_transaction_s',
        (SELECT coalesce(extract(epoch FROM max(now() - state_change)), 0)
         FROM activity WHERE state LIKE 'idle in transaction%'),
    'lock_waiting', (SELECT count(DISTINCT pid) FROM pg_locks WHERE NOT granted),
    'statements_schema',
        (SELECT extnamespace::regnamespace::text FROM pg_extension
         WHERE extname = 'pg_stat_statements'),
    'tables', (SELECT coalesce(json_agg(table_health ORDER BY table_name), '[]') FROM table_health),
    'not_found', (SELECT json_agg(name ORDER BY name) FROM located WHERE relid IS NULL)
)
"""


def _statements_sql(schema: str) -> str:
    # ``schema`` is regnamespace's text: already quoted where it needs to be.
    return f"""
SELECT queryid::text, query, calls, total_exec_time, max_exec_time
FROM {schema}.pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND queryid IS NOT NULL
ORDER BY total_exec_time DESC
LIMIT {STATEMENT_LIMIT}
"""


def _instant(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value).astimezone(UTC) if value is not None else None


def _sqlite_snapshot(db: AppDatabase) -> HealthSnapshot:
    taken_at = db.clock()
    path = db.url.database
    if not path or path == ":memory:":
        return HealthSnapshot(taken_at, "sqlite", None, missing=("an in-memory database",))
    size = 0
    for name in (path, f"{path}-wal"):
        try:
            size += os.path.getsize(name)
        except FileNotFoundError:
            continue
    return HealthSnapshot(taken_at, "sqlite", size)


def take_snapshot(
    db: AppDatabase,
    tables: Sequence[TableName] = (),
    *,
    statement_timeout: timedelta = DEFAULT_STATEMENT_TIMEOUT,
) -> HealthSnapshot:
    """One health snapshot of ``db``; ``tables`` are the housekept tables to report.

    PostgreSQL: one round trip (see the module), plus one for ``pg_stat_statements`` when the
    extension is installed. The transaction is rolled back: nothing is written. SQLite: the file
    size. Raises ``DatabaseError`` (one line) when the database cannot be reached or the
    statement timeout cancels the snapshot.
    """
    if not db.is_postgres:
        return _sqlite_snapshot(db)
    with db.connect() as pooled:  # DatabaseError (one line) when unreachable
        connection = pooled.connection.driver_connection
        try:
            cursor = connection.execute(_snapshot_sql(tables, statement_timeout))
            cursor.nextset()  # past SET's empty result
            [(found,)] = cursor.fetchall()
        except psycopg.Error as exc:
            connection.rollback()
            raise DatabaseError(f"health snapshot of {db.describe()}: {first_line(exc)}") from None
        statements, missing = None, []
        if not found["sees_all"]:
            missing.append(
                f"role {found['role']} lacks pg_read_all_stats: the state and transaction "
                f"times of other roles' sessions are hidden ({found['hidden']} session(s))"
            )
        if found["not_found"]:
            missing.append(
                f"housekept table(s) {', '.join(found['not_found'])} not found by role "
                f"{found['role']}"
            )
        if found["statements_schema"] is not None:
            try:
                rows = connection.execute(_statements_sql(found["statements_schema"])).fetchall()
                statements = tuple(
                    StatementTotals(queryid, query, int(calls), float(total), float(slowest))
                    for queryid, query, calls, total, slowest in rows
                )
            except psycopg.Error as exc:  # not preloaded, or no right to read it
                missing.append(f"pg_stat_statements: {first_line(exc)}")
        connection.rollback()
    active, idle, in_transaction = found["active"], found["idle"], found["idle_in_transaction"]
    return HealthSnapshot(
        taken_at=_instant(found["taken_at"]),
        engine="postgresql",
        database_bytes=int(found["database_bytes"]),
        max_connections=int(found["max_connections"]),
        connections=int(found["connections"]),
        connections_active=active,
        connections_idle=idle,
        connections_idle_in_transaction=in_transaction,
        connections_other=found["connections"] - active - idle - in_transaction - found["hidden"],
        connections_hidden=found["hidden"],
        longest_transaction_s=float(found["longest_transaction_s"]),
        longest_idle_in_transaction_s=float(found["longest_idle_in_transaction_s"]),
        lock_waiting_sessions=int(found["lock_waiting"]),
        tables=tuple(
            TableHealth(
                row["table_name"],
                int(row["live_tuples"]),
                int(row["dead_tuples"]),
                _instant(row["last_vacuum"]),
                _instant(row["last_autovacuum"]),
                _instant(row["last_analyze"]),
                _instant(row["last_autoanalyze"]),
            )
            for row in found["tables"]
        ),
        statements=statements,
        missing=tuple(missing),
    )


def statement_deltas(
    current: Sequence[StatementTotals], previous: Mapping[str, tuple[int, float]]
) -> list[StatementDelta]:
    """Each statement's calls and time since the previous snapshot.

    ``previous`` maps a queryid to its (calls_total, exec_ms_total) at the previous snapshot. A
    statement not in it has no delta yet (None); one whose counters went down was reset since
    (``pg_stat_statements_reset``), so its totals are the delta.
    """
    deltas = []
    for totals in current:
        before = previous.get(totals.queryid)
        if before is None:
            deltas.append(StatementDelta(totals, None, None))
        elif totals.calls_total < before[0]:
            deltas.append(StatementDelta(totals, totals.calls_total, totals.exec_ms_total))
        else:
            deltas.append(
                StatementDelta(
                    totals,
                    totals.calls_total - before[0],
                    max(0.0, totals.exec_ms_total - before[1]),
                )
            )
    return deltas


def snapshot_summary(snapshot: HealthSnapshot) -> str:
    """One line for a log or the sensor's tick."""
    if snapshot.engine != "postgresql":
        return f"sqlite file {snapshot.database_bytes} bytes"
    text = (
        f"{snapshot.connections}/{snapshot.max_connections} connections, longest transaction "
        f"{snapshot.longest_transaction_s:.0f} s, {snapshot.lock_waiting_sessions} waiting on "
        f"locks, {len(snapshot.tables)} table(s)"
    )
    if snapshot.statements is not None:
        text += f", {len(snapshot.statements)} statement(s)"
    if snapshot.missing:
        text += f" (missing: {snapshot.missing_line()})"
    return text
