"""One cleanup per table at a time, across processes and machines.

PostgreSQL: a session-level advisory lock keyed by the table name, held for the whole run.
SQLite (the demo): an exclusive file lock beside the database file.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from housekeeping.database import AppDatabase, DatabaseError, libpq_url
from housekeeping.errors import HkError
from housekeeping.sql import TableName

# The advisory lock key: our namespace in the high 32 bits, the table's OID in the low 32 bits.
# The OID (not the name) so that tables of the same name in other schemas do not collide.
LOCK_NAMESPACE = 0x686B  # "hk"


class AlreadyRunning(HkError):
    """Another cleanup of the same table holds its lock."""


@contextmanager
def table_lock(db: AppDatabase, table: TableName | str) -> Iterator[None]:
    """Hold the cleanup lock of ``table`` for the block; AlreadyRunning when another holds it."""
    table = TableName.of(table)
    if db.is_postgres:
        with _postgres_lock(db, table):
            yield
    else:
        with _file_lock(db, table):
            yield


@contextmanager
def _postgres_lock(db: AppDatabase, table: TableName) -> Iterator[None]:
    with psycopg.connect(libpq_url(db.url), autocommit=True, connect_timeout=10) as conn:
        oid = conn.execute("SELECT to_regclass(%s)::oid::bigint", (table.sql,)).fetchone()[0]
        if oid is None:
            raise DatabaseError(f"table {table!r} does not exist")
        key = (LOCK_NAMESPACE << 32) | oid
        if not conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
            holder = conn.execute(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = %s::oid "
                "AND objid = %s::oid AND objsubid = 1 AND granted LIMIT 1",
                (LOCK_NAMESPACE, oid),
            ).fetchone()
            who = f" (held by PostgreSQL backend pid {holder[0]})" if holder else ""
            raise AlreadyRunning(
                f"a cleanup of table {table!r} is already running{who}; this run deleted nothing"
            )
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


@contextmanager
def _file_lock(db: AppDatabase, table: TableName) -> Iterator[None]:
    database = db.url.database or ""
    if database in ("", ":memory:"):
        yield
        return
    path = Path(f"{database}.hk-lock-{table}")
    busy = f"a cleanup of table {table!r} is already running (lock file {path}); this run deleted nothing"
    with exclusive_flock(path, busy):
        yield


@contextmanager
def exclusive_flock(path: Path, busy: str) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` for the block: a lock file (created when missing) or a
    directory (locked itself, so no lock file is needed). AlreadyRunning(busy) when another
    process holds it."""
    flags = os.O_RDONLY if path.is_dir() else os.O_RDWR | os.O_CREAT
    handle = os.open(path, flags, 0o644)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AlreadyRunning(busy) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        os.close(handle)
