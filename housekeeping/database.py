"""The application database: connections, the database clock, and the live schema.

SQLAlchemy Core serves both SQLite (the demo) and PostgreSQL (production). A bare
``postgresql://`` URL maps to psycopg 3 here; the batch deleter additionally talks to PostgreSQL
through ADBC so deleted rows arrive as Arrow without a per-row Python loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from housekeeping.column_time import column_instant, column_value
from housekeeping.config_types import format_duration
from housekeeping.errors import HkError, first_line
from housekeeping.sql import TableName, quote_identifier


class DatabaseError(HkError):
    """The application database is unreachable or refused an operation."""


class LockNotAvailable(DatabaseError):
    """A lock was not granted within ``safety.lock_timeout``: another session holds the table
    (PostgreSQL: e.g. ``LOCK TABLE ... IN ACCESS EXCLUSIVE MODE``, an ``ALTER TABLE``) or, on
    SQLite, the whole database file (another connection's write transaction)."""


# PostgreSQL's SQLSTATE for lock_not_available: a lock_timeout or NOWAIT gave up.
LOCK_NOT_AVAILABLE = "55P03"
# SQLite's result codes (and their extended forms) for a database file another connection holds.
_SQLITE_LOCK_ERRORS = ("SQLITE_BUSY", "SQLITE_LOCKED")


def is_lock_not_available(error: BaseException) -> bool:
    """Whether a driver error (psycopg, ADBC, sqlite3; bare or wrapped by SQLAlchemy) means a
    lock was not granted in time, as opposed to any other failure."""
    if isinstance(error, DBAPIError) and error.orig is not None:
        error = error.orig
    if getattr(error, "sqlstate", None) == LOCK_NOT_AVAILABLE:
        return True
    return str(getattr(error, "sqlite_errorname", "")).startswith(_SQLITE_LOCK_ERRORS)


def redact_url(url: str | URL) -> str:
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except ArgumentError:
        return "<unparseable database URL>"
    return parsed.render_as_string(hide_password=True)


def make_engine(
    url: URL,
    *,
    connect_args: dict[str, Any] | None = None,
    create_sqlite_directory: bool = False,
    pool_pre_ping: bool = False,
) -> sa.Engine:
    """The one place an SQLAlchemy engine is made, for the application and the state databases.

    A bare ``postgresql://`` URL gets psycopg 3 (SQLAlchemy's default driver would be psycopg2,
    which we do not install); an explicit driver is kept. ``create_sqlite_directory`` creates the
    parent folder of a SQLite file, for the product's own state files (``var/...``); the
    application database is never created. Raises nothing itself: connecting may fail later.
    """
    if url.get_backend_name() == "postgresql" and url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    is_sqlite_file = url.get_backend_name() == "sqlite" and url.database not in (
        None,
        "",
        ":memory:",
    )
    if create_sqlite_directory and is_sqlite_file:
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    return sa.create_engine(url, connect_args=connect_args or {}, pool_pre_ping=pool_pre_ping)


def open_own_database(
    url: str,
    metadata: sa.MetaData,
    *,
    key: str,
    what: str,
    error: type[HkError],
    sqlite_connect_args: dict[str, Any] | None = None,
    on_sqlite_connect: Callable[[Any, Any], None] | None = None,
) -> sa.Engine:
    """An engine on one of the product's own databases (the state database, the alert
    database), with ``metadata``'s tables created.

    ``key`` is the config key the URL came from and ``what`` the database's name in messages:
    a URL that is not one, or a database that cannot be reached or written, raises ``error``
    naming both in one line, the password hidden. On SQLite, ``sqlite_connect_args`` go to the
    driver and ``on_sqlite_connect`` runs on each new connection (pragmas).
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise error(f"{key}: not a SQLAlchemy URL: {redact_url(url)}") from None
    sqlite = parsed.get_backend_name() == "sqlite"
    engine = make_engine(
        parsed,
        connect_args=(sqlite_connect_args or {}) if sqlite else {},
        create_sqlite_directory=True,
    )
    if on_sqlite_connect is not None and sqlite:
        sa.event.listen(engine, "connect", on_sqlite_connect)
    try:
        metadata.create_all(engine)
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        engine.dispose()
        cause = getattr(exc, "orig", None) or exc
        raise error(
            f"{key}: cannot open the {what} {redact_url(engine.url)}: {first_line(cause)}"
        ) from None
    return engine


def add_missing_columns(engine: sa.Engine, table: sa.Table, names: Sequence[str]) -> None:
    """Brings an existing ``table`` up to the columns ``names`` this version added to it
    (``ALTER TABLE ... ADD COLUMN`` with the column's definition; existing rows get its default).

    Another process may add the same column at the same moment (a sensor and a run starting
    together); its column is as good as ours.
    """

    def columns() -> set[str]:
        with engine.connect() as conn:
            return {column["name"] for column in sa.inspect(conn).get_columns(table.name)}

    present = columns()
    for name in names:
        if name in present:
            continue
        definition = sa.schema.CreateColumn(table.c[name]).compile(dialect=engine.dialect)
        try:
            with engine.begin() as conn:
                conn.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN {definition}"))
        except DBAPIError:
            if name not in columns():
                raise


def timeout_ms(value: timedelta) -> int:
    """A timeout in whole milliseconds for PostgreSQL settings; never 0, which means 'none'."""
    return max(1, int(value.total_seconds() * 1000))


def libpq_url(url: URL) -> str:
    """The URL without a SQLAlchemy driver suffix, as libpq (psycopg, ADBC) expects it."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    type_name: str
    is_timestamp: bool
    # PostgreSQL's timestamp with time zone: instants. Every other timestamp (timestamp without
    # time zone, date, any SQLite one) holds wall-clock readings (see column_time).
    holds_instants: bool = False

    def reading_zone(self, configured: str) -> str | None:
        """The zone this column's values are readings of: ``configured`` for a naive column,
        None for a column of instants."""
        return None if self.holds_instants else configured


class RelationKind(StrEnum):
    """What a name in the database is: only tables are housekept; rollups read any of these."""

    TABLE = "table"
    PARTITIONED_TABLE = "partitioned table"
    VIEW = "view"
    MATERIALIZED_VIEW = "materialized view"
    FOREIGN_TABLE = "foreign table"


# pg_class.relkind of the relations rows can be read from.
_PG_RELATION_KINDS = {
    "r": RelationKind.TABLE,
    "p": RelationKind.PARTITIONED_TABLE,
    "v": RelationKind.VIEW,
    "m": RelationKind.MATERIALIZED_VIEW,
    "f": RelationKind.FOREIGN_TABLE,
}


@dataclass(frozen=True)
class TableInfo:
    name: TableName
    columns: dict[str, ColumnInfo]
    primary_key: tuple[str, ...]
    indexed_leading_columns: frozenset[str] = field(default_factory=frozenset)
    kind: RelationKind = RelationKind.TABLE

    @property
    def is_partitioned(self) -> bool:
        return self.kind is RelationKind.PARTITIONED_TABLE


_TIMESTAMP_TYPES = (sa.DateTime, sa.Date)


def _holds_instants(column_type: sa.types.TypeEngine, type_name: str) -> bool:
    if isinstance(column_type, sa.DateTime) and column_type.timezone:
        return True
    upper = type_name.upper()
    return "WITH TIME ZONE" in upper or upper == "TIMESTAMPTZ"


def _is_timestamp(column_type: sa.types.TypeEngine, type_name: str) -> bool:
    if isinstance(column_type, _TIMESTAMP_TYPES):
        return True
    upper = type_name.upper()
    return "TIMESTAMP" in upper or "DATETIME" in upper or upper == "DATE"


class AppDatabase:
    """One application database, addressed by a SQLAlchemy URL.

    ``lock_timeout`` (None: the server's setting) bounds how long any statement of this handle
    waits for a lock: PostgreSQL's ``lock_timeout`` for every session, SQLite's busy timeout.
    """

    def __init__(self, url: str, *, lock_timeout: timedelta | None = None) -> None:
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise DatabaseError("DATABASE_URL is not a valid SQLAlchemy URL") from None
        backend = parsed.get_backend_name()
        if backend == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        elif backend != "sqlite":
            raise DatabaseError(
                f"unsupported database {backend!r} in DATABASE_URL: use postgresql:// or sqlite:///"
            )
        self.url = parsed
        self.dialect = backend
        self.lock_timeout = lock_timeout
        connect_args: dict[str, Any]
        if backend == "postgresql":
            connect_args = {"connect_timeout": 10}
            if lock_timeout is not None:
                # Added to the URL's own libpq options (a search_path, say), not replacing them.
                options = parsed.query.get("options") or ()
                options = [options] if isinstance(options, str) else list(options)
                options.append(f"-c lock_timeout={timeout_ms(lock_timeout)}ms")
                connect_args["options"] = " ".join(options)
        else:
            seconds = lock_timeout.total_seconds() if lock_timeout is not None else 30
            connect_args = {"timeout": seconds}
        self.engine = make_engine(parsed, connect_args=connect_args, pool_pre_ping=True)

    def with_lock_timeout(self, lock_timeout: timedelta) -> AppDatabase:
        """Another handle on the same database whose statements wait at most ``lock_timeout``
        for a lock (see the class); dispose it when done. An in-memory SQLite database exists
        only in its own connections, so it is ``self``."""
        if not self.is_postgres and self.url.database in (None, "", ":memory:"):
            return self
        return AppDatabase(
            self.url.render_as_string(hide_password=False), lock_timeout=lock_timeout
        )

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    def describe(self) -> str:
        return redact_url(self.url)

    def dispose(self) -> None:
        self.engine.dispose()

    def connect(self) -> sa.Connection:
        try:
            return self.engine.connect()
        except DBAPIError as exc:
            raise DatabaseError(
                f"cannot connect to the application database {self.describe()}: "
                f"{first_line(exc.orig)}"
            ) from None

    def clock(self) -> datetime:
        """The database server's current time, in UTC: every cutoff is computed from it."""
        with self.connect() as conn:
            if self.is_postgres:
                value = conn.execute(sa.text("SELECT now()")).scalar_one()
                return value.astimezone(UTC)
            text = conn.execute(sa.text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")).scalar_one()
            return datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)

    def bind_timestamp(self, value: datetime) -> datetime | str:
        """An instant as a column of the product's own tables compares it (timestamptz on
        PostgreSQL, UTC text on SQLite). Application columns: ``column_time.column_value``."""
        if self.is_postgres:
            return value
        return column_value(value, "UTC", text=True)

    def read_timestamp(self, value: datetime | str | None) -> datetime | None:
        """An instant read back from such a column (naive values are UTC), None for NULL."""
        if value is None or (isinstance(value, datetime) and value.tzinfo is not None):
            return value
        return column_instant(value, "UTC")

    def table_names(self) -> list[str]:
        with self.connect() as conn:
            return sa.inspect(conn).get_table_names()

    def relation_kind(self, table: TableName | str) -> RelationKind | None:
        """What ``table`` is (exactly that spelling; search path when unqualified), or None when
        there is no table or view of that name."""
        table = TableName.of(table)
        with self.connect() as conn:
            if self.is_postgres:
                relkind = conn.execute(
                    sa.text("SELECT relkind FROM pg_class WHERE oid = to_regclass(:name)"),
                    {"name": table.sql},
                ).scalar()
                return _PG_RELATION_KINDS.get(relkind) if relkind is not None else None
            schema = table.schema or "main"
            schemas = [row[1] for row in conn.exec_driver_sql("PRAGMA database_list")]
            if schema not in schemas:
                return None
            # = compares exactly: SQLite would resolve 'Request_Logs' to request_logs, but the
            # archive, the lock file and the history name the table as written.
            kind = conn.execute(
                sa.text(
                    f"SELECT type FROM {quote_identifier(schema)}.sqlite_master "
                    "WHERE name = :name AND type IN ('table', 'view')"
                ),
                {"name": table.name},
            ).scalar()
            return RelationKind(kind) if kind is not None else None

    def relation_names(self) -> list[TableName]:
        """Every table and view a config could name (for "did you mean"): unqualified when that
        spelling finds it (search path, SQLite's main), else qualified."""
        with self.connect() as conn:
            if self.is_postgres:
                rows = conn.execute(
                    sa.text(
                        "SELECT n.nspname, c.relname, pg_table_is_visible(c.oid) FROM pg_class c "
                        "JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND NOT c.relispartition "
                        "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
                        "AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1, 2 LIMIT 10000"
                    )
                ).all()
                return [
                    TableName(name, None if visible else schema) for schema, name, visible in rows
                ]
            names = []
            for row in conn.exec_driver_sql("PRAGMA database_list").all():
                schema = row[1]
                for (name,) in conn.execute(
                    sa.text(
                        f"SELECT name FROM {quote_identifier(schema)}.sqlite_master "
                        "WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
                    )
                ):
                    names.append(TableName(name, None if schema == "main" else schema))
            return names

    def table_info(self, table: TableName | str) -> TableInfo | None:
        """The live shape of a table or view, or None when none has exactly that name."""
        table = TableName.of(table)
        kind = self.relation_kind(table)
        if kind is None:
            return None
        with self.connect() as conn:
            inspector = sa.inspect(conn)
            columns = {}
            for column in inspector.get_columns(table.name, schema=table.schema):
                type_name = str(column["type"])
                is_timestamp = _is_timestamp(column["type"], type_name)
                columns[column["name"]] = ColumnInfo(
                    column["name"],
                    type_name,
                    is_timestamp,
                    holds_instants=(
                        self.is_postgres
                        and is_timestamp
                        and _holds_instants(column["type"], type_name)
                    ),
                )
            primary_key: tuple[str, ...] = ()
            leading: set[str] = set()
            if kind in (RelationKind.TABLE, RelationKind.PARTITIONED_TABLE):
                constraint = inspector.get_pk_constraint(table.name, schema=table.schema)
                primary_key = tuple(constraint.get("constrained_columns") or ())
                leading = {
                    index["column_names"][0]
                    for index in inspector.get_indexes(table.name, schema=table.schema)
                    if index.get("column_names") and index["column_names"][0]
                }
            if primary_key:
                leading.add(primary_key[0])
        return TableInfo(table, columns, primary_key, frozenset(leading), kind)

    def lock_not_granted(self, table: TableName | str, lock_timeout: timedelta) -> str:
        """Why a statement on ``table`` gave up after ``lock_timeout`` (``safety.lock_timeout``),
        naming the sessions that hold the table where PostgreSQL can tell."""
        waited = f"safety.lock_timeout ({format_duration(lock_timeout)})"
        if not self.is_postgres:
            return (
                f"the SQLite database {self.url.database} (table {table!r}) stayed locked by "
                f"another connection's write transaction for longer than {waited}"
            )
        try:
            holders = self.lock_holders(table)
        except (HkError, sa.exc.SQLAlchemyError):
            holders = []  # the message matters more than naming the holder
        held_by = "".join(
            f"; held by PostgreSQL backend pid {pid} ({mode})" for pid, mode in holders
        )
        return f"table {table!r} stayed locked by another session for longer than {waited}{held_by}"

    def lock_holders(self, table: TableName | str) -> list[tuple[int, str]]:
        """(backend pid, lock mode) of other PostgreSQL sessions holding a lock on ``table`` that
        blocks deleting from it (SHARE or stronger); empty on SQLite, whose locks have no owner
        to name. For error messages: the holder may be gone by the time it is read."""
        if not self.is_postgres:
            return []
        with self.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT pid, mode FROM pg_locks WHERE locktype = 'relation' AND granted "
                    "AND relation = to_regclass(:name) AND pid <> pg_backend_pid() "
                    "AND mode IN ('ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', "
                    "'AccessExclusiveLock') ORDER BY pid"
                ),
                {"name": TableName.of(table).sql},
            ).all()
        return [(int(pid), str(mode)) for pid, mode in rows]

    def can_delete_from(self, table: TableName) -> bool:
        if not self.is_postgres:
            return True
        with self.connect() as conn:
            return bool(
                conn.execute(
                    sa.text("SELECT has_table_privilege(to_regclass(:name), 'DELETE')"),
                    {"name": table.sql},
                ).scalar()
            )
