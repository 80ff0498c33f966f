"""Writing the generated rows: connections, refusing a populated database, and the loaders.

PostgreSQL is loaded with ``COPY`` (CSV rendered by Arrow) in one transaction, SQLite with
``executemany`` in one transaction, so a failed seed leaves the database as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from tqdm import tqdm

from housekeeping.database import libpq_url, redact_url
from housekeeping.demo.plan import Observed, Plan
from housekeeping.demo.schema import (
    REFERENCE_TABLES,
    after_load_sql,
    column_names,
    create_partitions,
    create_table_sql,
    partition_days,
)
from housekeeping.demo.traffic import generate
from housekeeping.errors import HkError, first_line
from housekeeping.sql import quote_identifier


class SeedError(HkError):
    """The generator cannot seed this: a bad knob or URL, or tables that already hold rows."""


@dataclass(frozen=True)
class Target:
    """Where to seed: the dialect, the address to connect to, and a description safe to print."""

    dialect: str  # postgresql or sqlite
    address: str  # libpq URL, or SQLite file path
    description: str  # safe to print


def parse_url(url: str) -> Target:
    """A SQLAlchemy URL -> Target. SeedError for anything but PostgreSQL or a SQLite file."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise SeedError(
            "the database URL is not a valid URL (expected postgresql:// or sqlite:///path)"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        return Target("postgresql", libpq_url(parsed), redact_url(parsed))
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise SeedError("the demo data needs a SQLite file: use sqlite:///path/to/app.db")
        return Target("sqlite", parsed.database, redact_url(parsed))
    raise SeedError(
        f"unsupported database URL scheme {parsed.drivername!r}: use postgresql:// or sqlite:///path"
    )


def connect_postgres(target: Target) -> psycopg.Connection:
    """A psycopg connection to ``target``; SeedError (password-free) when it fails."""
    try:
        return psycopg.connect(target.address, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise SeedError(f"cannot connect to {target.description}: {first_line(exc)}") from None


def connect_sqlite(target: Target):
    """A sqlite3 connection in autocommit mode (transactions opened explicitly)."""
    import sqlite3

    try:
        # isolation_level=None: transactions are opened explicitly, DDL included.
        return sqlite3.connect(target.address, isolation_level=None, timeout=30)
    except sqlite3.Error as exc:
        raise SeedError(f"cannot open {target.description}: {first_line(exc)}") from None


def existing_tables_postgres(cursor: psycopg.Cursor) -> list[str]:
    """The reference tables that already exist, in schema order."""
    return [
        table
        for table in REFERENCE_TABLES
        if cursor.execute("SELECT to_regclass(%s)", (quote_identifier(table),)).fetchone()[0]
    ]


def existing_tables_sqlite(connection) -> list[str]:
    """The reference tables that already exist, in schema order."""
    rows = connection.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN "
        f"({', '.join('?' for _ in REFERENCE_TABLES)})",
        REFERENCE_TABLES,
    ).fetchall()
    present = {row[0] for row in rows}
    return [table for table in REFERENCE_TABLES if table in present]


def _has_rows(execute: Callable[[str], Any], table: str) -> bool:
    return bool(execute(f"SELECT EXISTS (SELECT 1 FROM {quote_identifier(table)})").fetchone()[0])


def _refuse_populated(execute: Callable[[str], Any], existing: list[str]) -> None:
    for table in existing:
        if _has_rows(execute, table):
            raise SeedError(
                f"table {table} already holds rows; hk seed --reset drops and recreates the demo "
                "tables"
            )


def refuse_existing(existing: list[str]) -> None:
    """SeedError when any reference table exists (create_schema never drops)."""
    if existing:
        raise SeedError(
            f"table {existing[0]} already exists; hk seed --reset drops and recreates the demo "
            "tables"
        )


def _progress_bar(table: str, total: int, enabled: bool) -> tqdm:
    return tqdm(
        total=total, desc=f"{table:<14}", unit=" rows", unit_scale=True, disable=not enabled
    )


def seed_postgres(
    target: Target, plan: Plan, progress: bool, reset: bool, partitioned: bool
) -> tuple[dict[str, int], Observed]:
    """Drop (with ``reset``), create and fill every table in one transaction; rows per table."""
    row_counts: dict[str, int] = {}
    # One transaction: a failed seed leaves the database as it was, and COPY FREEZE is allowed
    # into tables created in the same transaction.
    with connect_postgres(target) as connection, connection.cursor() as cursor:
        existing = existing_tables_postgres(cursor)
        if not reset:
            _refuse_populated(cursor.execute, existing)
        for table in existing:
            cursor.execute(f"DROP TABLE {quote_identifier(table)}")
        # The generated timestamps are UTC without a zone suffix.
        cursor.execute("SET LOCAL TimeZone = 'UTC'")
        cursor.execute("SET LOCAL maintenance_work_mem = '256MB'")
        for table in REFERENCE_TABLES:
            is_partitioned = partitioned and table == "request_logs"
            cursor.execute(create_table_sql(target.dialect, table, partitioned=is_partitioned))
            if is_partitioned:
                create_partitions(cursor, partition_days(plan.start_us, plan.now_us))

        def load(table: str, batches: Iterator[pa.Table], total: int) -> None:
            is_partitioned = partitioned and table == "request_logs"
            options = "FORMAT csv" if is_partitioned else "FORMAT csv, FREEZE"
            statement = sql.SQL("COPY {} ({}) FROM STDIN ({})").format(
                sql.Identifier(table),
                sql.SQL(", ").join(sql.Identifier(name) for name in column_names(table)),
                sql.SQL(options),
            )
            csv_options = pa_csv.WriteOptions(include_header=False)
            rows = 0
            with (
                _progress_bar(table, total, progress) as bar,
                cursor.copy(statement, writer=QueuedLibpqWriter(cursor)) as copy,
            ):
                for batch in batches:
                    sink = pa.BufferOutputStream()
                    pa_csv.write_csv(batch, sink, csv_options)
                    copy.write(memoryview(sink.getvalue()))
                    rows += batch.num_rows
                    bar.update(batch.num_rows)
            row_counts[table] = rows
            if rows:
                cursor.execute(
                    f"ALTER TABLE {quote_identifier(table)} ALTER COLUMN {quote_identifier('id')} "
                    f"RESTART WITH {rows + 1}"
                )
            for statement_text in after_load_sql(target.dialect, table, partitioned=is_partitioned):
                cursor.execute(statement_text)
            cursor.execute(f"ANALYZE {quote_identifier(table)}")

        observed = generate(plan, load)
    return {table: row_counts[table] for table in REFERENCE_TABLES}, observed


def seed_sqlite(
    target: Target, plan: Plan, progress: bool, reset: bool
) -> tuple[dict[str, int], Observed]:
    """Drop (with ``reset``), create and fill every table in one transaction; rows per table."""
    row_counts: dict[str, int] = {}
    connection = connect_sqlite(target)
    try:
        existing = existing_tables_sqlite(connection)
        if not reset:
            _refuse_populated(connection.execute, existing)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("BEGIN IMMEDIATE")
        try:
            for table in existing:
                connection.execute(f"DROP TABLE {quote_identifier(table)}")
            for table in REFERENCE_TABLES:
                connection.execute(create_table_sql(target.dialect, table, partitioned=False))

            def load(table: str, batches: Iterator[pa.Table], total: int) -> None:
                names = column_names(table)
                statement = (
                    f"INSERT INTO {quote_identifier(table)} "
                    f"({', '.join(quote_identifier(name) for name in names)}) "
                    f"VALUES ({', '.join('?' for _ in names)})"
                )
                rows = 0
                with _progress_bar(table, total, progress) as bar:
                    for batch in batches:
                        connection.executemany(statement, _sqlite_rows(batch))
                        rows += batch.num_rows
                        bar.update(batch.num_rows)
                row_counts[table] = rows
                for statement_text in after_load_sql(target.dialect, table, partitioned=False):
                    connection.execute(statement_text)

            observed = generate(plan, load)
            connection.execute("ANALYZE")
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
    finally:
        connection.close()
    return {table: row_counts[table] for table in REFERENCE_TABLES}, observed


def _sqlite_rows(batch: pa.Table) -> list[tuple]:
    columns = []
    for column in batch.columns:
        if pa.types.is_timestamp(column.type):
            # Arrow renders microsecond timestamps as 'YYYY-MM-DD HH:MM:SS.ffffff', always six
            # fractional digits: the text of housekeeping.column_time.SQLITE_TIMESTAMP_FORMAT.
            column = column.cast(pa.string())
        columns.append(column.to_pylist())
    return list(zip(*columns, strict=True))
