"""The application database: connections, the database clock, and the live schema.

SQLAlchemy Core serves both SQLite (the demo) and PostgreSQL (production). A bare
``postgresql://`` URL maps to psycopg 3 here; the batch deleter additionally talks to PostgreSQL
through ADBC so deleted rows arrive as Arrow without a per-row Python loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from housekeeping.errors import HkError, first_line
from housekeeping.sql import quote_identifier

SQLITE_TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


class DatabaseError(HkError):
    """The application database is unreachable or refused an operation."""


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


def libpq_url(url: URL) -> str:
    """The URL without a SQLAlchemy driver suffix, as libpq (psycopg, ADBC) expects it."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    type_name: str
    is_timestamp: bool


@dataclass(frozen=True)
class TableInfo:
    name: str
    columns: dict[str, ColumnInfo]
    primary_key: tuple[str, ...]
    indexed_leading_columns: frozenset[str] = field(default_factory=frozenset)
    is_partitioned: bool = False


_TIMESTAMP_TYPES = (sa.DateTime, sa.Date)


def _is_timestamp(column_type: sa.types.TypeEngine, type_name: str) -> bool:
    if isinstance(column_type, _TIMESTAMP_TYPES):
        return True
    upper = type_name.upper()
    return "TIMESTAMP" in upper or "DATETIME" in upper or upper == "DATE"


class AppDatabase:
    """One application database, addressed by a SQLAlchemy URL."""

    def __init__(self, url: str) -> None:
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
        connect_args = {"connect_timeout": 10} if backend == "postgresql" else {"timeout": 30}
        self.engine = make_engine(parsed, connect_args=connect_args, pool_pre_ping=True)

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
        """A timestamp as this database compares it: SQLite stores UTC text."""
        if self.is_postgres:
            return value
        return value.astimezone(UTC).strftime(SQLITE_TIMESTAMP_FORMAT)

    def read_timestamp(self, value: datetime | str | None) -> datetime | None:
        if value is None or isinstance(value, datetime):
            return value
        parsed = datetime.fromisoformat(value)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

    def table_names(self) -> list[str]:
        with self.connect() as conn:
            return sa.inspect(conn).get_table_names()

    def table_info(self, table: str) -> TableInfo | None:
        """The live shape of a table, or None when it does not exist."""
        with self.connect() as conn:
            inspector = sa.inspect(conn)
            if not inspector.has_table(table):
                return None
            columns = {}
            for column in inspector.get_columns(table):
                type_name = str(column["type"])
                columns[column["name"]] = ColumnInfo(
                    column["name"], type_name, _is_timestamp(column["type"], type_name)
                )
            primary_key = tuple(inspector.get_pk_constraint(table).get("constrained_columns") or ())
            leading = {
                index["column_names"][0]
                for index in inspector.get_indexes(table)
                if index.get("column_names") and index["column_names"][0]
            }
            if primary_key:
                leading.add(primary_key[0])
            partitioned = False
            if self.is_postgres:
                partitioned = bool(
                    conn.execute(
                        sa.text(
                            "SELECT c.relkind = 'p' FROM pg_class c "
                            "WHERE c.oid = to_regclass(:name)"
                        ),
                        {"name": quote_identifier(table)},
                    ).scalar()
                )
        return TableInfo(table, columns, primary_key, frozenset(leading), partitioned)

    def can_delete_from(self, table: str) -> bool:
        if not self.is_postgres:
            return True
        with self.connect() as conn:
            return bool(
                conn.execute(
                    sa.text("SELECT has_table_privilege(to_regclass(:name), 'DELETE')"),
                    {"name": quote_identifier(table)},
                ).scalar()
            )
