"""PostgreSQL databases whose sessions start in a non-UTC time zone (``ALTER DATABASE ... SET
timezone``), as many production databases are configured, and tables of naive timestamps."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
import sqlalchemy as sa

from housekeeping.database import AppDatabase
from tests.conftest import with_search_path


@contextmanager
def database_in_time_zone(server_url: str, zone: str) -> Iterator[str]:
    """A fresh database whose every new session starts with ``TimeZone = zone``; its URL.

    A database of its own, so the setting never reaches tests running in parallel."""
    name = f"hk_tz_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        conn.execute(f"ALTER DATABASE \"{name}\" SET timezone = '{zone}'")
    try:
        yield _as_url(server_url, name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def _as_url(server_url: str, database: str) -> str:
    base, _, query = server_url.partition("?")
    base = base.rsplit("/", 1)[0] + "/" + database
    return f"{base}?{query}" if query else base


def fresh_schema(url: str) -> str:
    """A new, empty schema in the database of ``url``; the URL with it as search_path."""
    schema = f"hk_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return with_search_path(url, schema)


def session_time_zone(db: AppDatabase) -> str:
    with db.connect() as conn:
        return conn.execute(sa.text("SHOW timezone")).scalar_one()


def wall_clock(moment: datetime, zone: str) -> datetime:
    """``moment`` as the naive wall-clock value an application in ``zone`` would store."""
    return moment.astimezone(ZoneInfo(zone)).replace(tzinfo=None)


def stored_naive(db: AppDatabase, moment: datetime, zone: str = "UTC") -> datetime | str:
    """What a naive column holds for ``moment`` written as wall clock in ``zone``."""
    value = wall_clock(moment, zone)
    return value if db.is_postgres else value.strftime("%Y-%m-%d %H:%M:%S.%f")


def create_app_logs(
    db: AppDatabase,
    *,
    zone: str = "UTC",
    rows: int = 41,
    step: timedelta = timedelta(minutes=15),
    table: str = "app_logs",
    index: bool = True,
) -> int:
    """The issue's table: ``app_logs(id, ts timestamp without time zone, status, queue)``, ``rows``
    rows every ``step`` centred on now - 30 days, written as wall clock in ``zone``. ``table`` is
    SQL text (quoted or schema-qualified as the caller needs).

    Returns how many are truly older than 30 days (21 of the default 41: the centre row is at
    now - 30 days when inserted, so a cutoff taken later is past it).
    """
    id_column = (
        "id bigserial primary key" if db.is_postgres else "id INTEGER PRIMARY KEY AUTOINCREMENT"
    )
    naive = "timestamp without time zone" if db.is_postgres else "TIMESTAMP"
    centre = datetime.now(UTC) - timedelta(days=30)
    half = rows // 2
    moments = [centre + step * (index - half) for index in range(rows)]
    with db.engine.begin() as conn:
        conn.execute(
            sa.text(
                f"CREATE TABLE {table} ({id_column}, ts {naive}, status text, queue text, "
                "message text)"
            )
        )
        if index:
            name = "idx_" + "".join(c for c in table if c.isalnum() or c == "_") + "_ts"
            # PostgreSQL puts the index in its table's schema; SQLite wants it qualified instead.
            if not db.is_postgres and "." in table:
                name = f"{table.split('.')[0]}.{name}"
            conn.execute(sa.text(f"CREATE INDEX {name} ON {_unqualified(db, table)} (ts)"))
        conn.execute(
            sa.text(
                f"INSERT INTO {table} (ts, status, queue, message) "
                "VALUES (:ts, 'completed', 'default', :message)"
            ),
            [
                {"ts": stored_naive(db, moment, zone), "message": f"m{index}"}
                for index, moment in enumerate(moments)
            ],
        )
    return half + 1


def _unqualified(db: AppDatabase, table: str) -> str:
    """SQLite's CREATE INDEX names the table without its schema (the index's own carries it)."""
    return table if db.is_postgres else table.split(".")[-1]
