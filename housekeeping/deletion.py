"""The batched deleter: short transactions, each archived durably before it commits.

Three ways to walk a table, chosen per run:

- ``page_ranges`` (PostgreSQL) walks the table's pages in ranges (a TID range scan) and deletes
  the expired rows in each: the same sequential read a single big DELETE does, cut into short
  transactions. Best when many rows expire.

- ``primary_key_ranges`` walks the primary key in ranges of N keys and deletes the expired rows
  inside each range. Every row is visited once, in physical-ish order, so it costs about one pass
  over the table however the expired rows are scattered: best when many rows expire.
- ``cutoff_index`` walks the cutoff column's index upwards from where the previous batch stopped
  (keyset, never from the start: re-reading dead index entries is what makes the familiar
  ``DELETE ... WHERE id IN (SELECT id ... LIMIT n)`` quadratic). Best when few rows expire.

Batch sizes adapt so each transaction lasts about ``batch.target_duration``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import adbc_driver_postgresql.dbapi as adbc
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from housekeeping.archive import TableArchive
from housekeeping.config import BatchConfig, DeleteStrategy, SafetyConfig
from housekeeping.database import AppDatabase, DatabaseError, libpq_url, quote_identifier


@dataclass(frozen=True)
class DeleteTarget:
    """Rows of ``table`` whose ``cutoff_column`` is before ``cutoff`` and that match ``filters``."""

    table: str
    primary_key: tuple[str, ...]
    cutoff_column: str
    cutoff: datetime
    filters: tuple[tuple[str, Any], ...] = ()

    def describe(self) -> str:
        conditions = [f"{self.cutoff_column} < {self.cutoff.isoformat()}"]
        conditions += [f"{column} = {value!r}" for column, value in self.filters]
        return f"{self.table} where " + " and ".join(conditions)


@dataclass
class DeleteOutcome:
    strategy: DeleteStrategy
    deleted: int = 0
    batches: int = 0
    archived_rows: int = 0
    archive_files: int = 0
    max_batch_ms: float = 0.0
    duration_ms: float = 0.0
    stopped_early: bool = False
    batch_sizes: list[int] = field(default_factory=list)


class BoundParams:
    """Collects bound values and renders placeholders in the driver's style."""

    def __init__(self, numeric: bool) -> None:
        self.numeric = numeric
        self.values: list[Any] = []

    def bind(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}" if self.numeric else f":p{len(self.values)}"

    def as_driver_params(self) -> Any:
        if self.numeric:
            return self.values
        return {f"p{index}": value for index, value in enumerate(self.values, start=1)}


class _BatchSession(Protocol):
    numeric_params: bool

    def begin(self, safety: SafetyConfig) -> None: ...

    def query(self, sql: str, params: BoundParams) -> pa.Table: ...

    def execute(self, sql: str, params: BoundParams) -> int: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def close(self) -> None: ...


class _PostgresSession:
    """ADBC: deleted rows come back as Arrow straight from the wire (COPY-speed, no row loop)."""

    numeric_params = True

    def __init__(self, db: AppDatabase) -> None:
        try:
            self.conn = adbc.connect(libpq_url(db.url))
        except adbc.Error as exc:
            raise DatabaseError(
                f"cannot connect to the application database {db.describe()}: {exc}"
            ) from None
        self.cursor = self.conn.cursor()

    def begin(self, safety: SafetyConfig) -> None:
        # SET LOCAL semantics: the timeouts end with the transaction.
        lock_ms = int(safety.lock_timeout.total_seconds() * 1000)
        statement_ms = int(safety.statement_timeout.total_seconds() * 1000)
        self.cursor.execute(
            "SELECT set_config('lock_timeout', $1, true), set_config('statement_timeout', $2, true)",
            parameters=[f"{lock_ms}ms", f"{statement_ms}ms"],
        )
        self.cursor.fetchall()

    def query(self, sql: str, params: BoundParams) -> pa.Table:
        self.cursor.execute(sql, parameters=params.values or None)
        return self.cursor.fetch_arrow_table()

    def execute(self, sql: str, params: BoundParams) -> int:
        # ADBC reports no row count for DML; count the RETURNING rows server-side instead.
        self.cursor.execute(
            f"WITH deleted AS ({sql} RETURNING 1) SELECT count(*) FROM deleted",
            parameters=params.values or None,
        )
        return int(self.cursor.fetchone()[0])

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        # Best effort: the connection may be gone, and the error that got us here matters more.
        with contextlib.suppress(Exception):
            self.conn.rollback()

    def close(self) -> None:
        self.cursor.close()
        self.conn.close()


class _SqlAlchemySession:
    numeric_params = False

    def __init__(self, db: AppDatabase) -> None:
        self.conn = db.connect()
        self.transaction: sa.RootTransaction | None = None

    def begin(self, safety: SafetyConfig) -> None:
        self.transaction = self.conn.begin()

    def query(self, sql: str, params: BoundParams) -> pa.Table:
        result = self.conn.execute(sa.text(sql), params.as_driver_params())
        names = list(result.keys())
        rows = result.fetchall()
        return pa.table({name: [row[index] for row in rows] for index, name in enumerate(names)})

    def execute(self, sql: str, params: BoundParams) -> int:
        return self.conn.execute(sa.text(sql), params.as_driver_params()).rowcount

    def commit(self) -> None:
        assert self.transaction is not None
        self.transaction.commit()

    def rollback(self) -> None:
        if self.transaction is not None and self.transaction.is_active:
            with contextlib.suppress(Exception):
                self.transaction.rollback()

    def close(self) -> None:
        self.conn.close()


def open_batch_session(db: AppDatabase) -> _BatchSession:
    return _PostgresSession(db) if db.is_postgres else _SqlAlchemySession(db)


def _key_sql(columns: Sequence[str]) -> str:
    quoted = ", ".join(quote_identifier(column) for column in columns)
    return f"({quoted})" if len(columns) > 1 else quoted


def _key_values(params: BoundParams, values: Sequence[Any]) -> str:
    rendered = ", ".join(params.bind(value) for value in values)
    return f"({rendered})" if len(values) > 1 else rendered


def target_conditions(db: AppDatabase, target: DeleteTarget, params: BoundParams) -> list[str]:
    conditions = [
        f"{quote_identifier(target.cutoff_column)} < {params.bind(db.bind_timestamp(target.cutoff))}"
    ]
    for column, value in target.filters:
        if value is None:
            conditions.append(f"{quote_identifier(column)} IS NULL")
        else:
            conditions.append(f"{quote_identifier(column)} = {params.bind(value)}")
    return conditions


def _next_size(size: int, elapsed_s: float, config: BatchConfig) -> int:
    target = config.target_duration.total_seconds()
    # Grow gently (a batch must never overshoot the lock-time budget), shrink fast.
    factor = min(1.5, max(0.25, target / max(elapsed_s, 1e-4)))
    return max(config.min_size, min(config.max_size, int(size * factor)))


def _first_row(table: pa.Table, columns: Sequence[str]) -> tuple[Any, ...] | None:
    if table.num_rows == 0:
        return None
    return tuple(table.column(column)[0].as_py() for column in columns)


def _page_layout(db: AppDatabase, table: str) -> tuple[int, float]:
    """The table's size in pages now, and about how many rows a page holds."""
    with db.connect() as conn:
        pages, estimated_rows = conn.execute(
            sa.text(
                "SELECT pg_relation_size(to_regclass(:name)) "
                "/ current_setting('block_size')::int, reltuples "
                "FROM pg_class WHERE oid = to_regclass(:name)"
            ),
            {"name": quote_identifier(table)},
        ).one()
        if estimated_rows is None or estimated_rows <= 0:
            estimated_rows = conn.execute(
                sa.text(f"SELECT count(*) FROM {quote_identifier(table)}")
            ).scalar_one()
    return int(pages), max(1.0, float(estimated_rows) / max(1, int(pages)))


def delete_in_batches(
    db: AppDatabase,
    target: DeleteTarget,
    *,
    strategy: DeleteStrategy,
    batch: BatchConfig,
    safety: SafetyConfig,
    archive: TableArchive | None = None,
    run_id: str = "run",
    first_sequence: int = 0,
    should_stop: Callable[[], bool] = lambda: False,
    on_batch: Callable[[DeleteOutcome], None] = lambda outcome: None,
) -> DeleteOutcome:
    """Delete every row matching ``target`` in short transactions; returns what was done.

    ``should_stop`` is asked between batches: the batch in flight always finishes (commits and is
    archived), so a stopped run leaves nothing half-done and the next run carries on.
    """
    if strategy is DeleteStrategy.AUTO:
        raise ValueError("resolve the AUTO strategy before deleting (see choose_strategy)")
    outcome = DeleteOutcome(strategy=strategy)
    session = open_batch_session(db)
    started = time.perf_counter()
    size = batch.initial_size
    table = quote_identifier(target.table)
    key = _key_sql(target.primary_key)
    cutoff_column = quote_identifier(target.cutoff_column)
    select_key = key.strip("()")
    # Rows travel back only when they are archived, or when the walk needs the last cutoff seen.
    if archive is not None:
        returning: str | None = "*"
    elif strategy is DeleteStrategy.CUTOFF_INDEX:
        returning = cutoff_column
    else:
        returning = None
    lower_page = 0
    if strategy is DeleteStrategy.PAGE_RANGES:
        if not db.is_postgres:
            raise ValueError("the page_ranges strategy needs PostgreSQL")
        total_pages, rows_per_page = _page_layout(db, target.table)
    lower_key: tuple[Any, ...] | None = None
    lower_cutoff: Any = None
    try:
        while True:
            if outcome.batches and should_stop():
                outcome.stopped_early = True
                break
            batch_started = time.perf_counter()
            session.begin(safety)
            params = BoundParams(session.numeric_params)
            conditions = target_conditions(db, target, params)
            if strategy is DeleteStrategy.PAGE_RANGES:
                pages = max(1, int(size / rows_per_page))
                upper_page = lower_page + pages if lower_page + pages < total_pages else None
                conditions.append(f"ctid >= {params.bind(f'({lower_page},0)')}::tid")
                if upper_page is not None:
                    conditions.append(f"ctid < {params.bind(f'({upper_page},0)')}::tid")
                sql = f"DELETE FROM {table} WHERE {' AND '.join(conditions)}"
            elif strategy is DeleteStrategy.PRIMARY_KEY_RANGES:
                probe = BoundParams(session.numeric_params)
                where = f"WHERE {key} > {_key_values(probe, lower_key)} " if lower_key else ""
                upper_key = _first_row(
                    session.query(
                        f"SELECT {select_key} FROM {table} {where}ORDER BY {select_key} "
                        f"LIMIT 1 OFFSET {int(size) - 1}",
                        probe,
                    ),
                    target.primary_key,
                )
                if lower_key is not None:
                    conditions.append(f"{key} > {_key_values(params, lower_key)}")
                if upper_key is not None:
                    conditions.append(f"{key} <= {_key_values(params, upper_key)}")
                sql = f"DELETE FROM {table} WHERE {' AND '.join(conditions)}"
            else:
                if lower_cutoff is not None:
                    conditions.append(f"{cutoff_column} >= {params.bind(lower_cutoff)}")
                sql = (
                    f"DELETE FROM {table} WHERE {key} IN (SELECT {select_key} FROM {table} "
                    f"WHERE {' AND '.join(conditions)} ORDER BY {cutoff_column} LIMIT {int(size)})"
                )
            rows: pa.Table | None = None
            staged = None
            try:
                if returning is None:
                    deleted = session.execute(sql, params)
                else:
                    rows = session.query(f"{sql} RETURNING {returning}", params)
                    deleted = rows.num_rows
                if archive is not None and rows is not None and deleted:
                    staged = archive.stage(
                        rows,
                        run_id=run_id,
                        sequence=first_sequence + outcome.batches,
                        now=datetime.now(UTC),
                    )
            except BaseException:
                session.rollback()
                if archive is not None and staged is not None:
                    archive.discard(staged)
                raise
            # If COMMIT itself fails its outcome is unknown: the pending file stays, and the next
            # run's recovery looks the rows up to finish or discard it.
            session.commit()
            if archive is not None and staged is not None:
                archive.commit(staged)
                outcome.archived_rows += deleted
                outcome.archive_files += 1
            elapsed = time.perf_counter() - batch_started
            outcome.batches += 1
            outcome.deleted += deleted
            outcome.batch_sizes.append(size)
            outcome.max_batch_ms = max(outcome.max_batch_ms, elapsed * 1000)
            on_batch(outcome)
            if strategy is DeleteStrategy.PAGE_RANGES:
                done = upper_page is None
                lower_page = upper_page or 0
            elif strategy is DeleteStrategy.PRIMARY_KEY_RANGES:
                done = upper_key is None
                lower_key = upper_key
            else:
                done = deleted < size
                if rows is not None and deleted:
                    lower_cutoff = pc.max(rows.column(target.cutoff_column)).as_py()
            size = _next_size(size, elapsed, batch)
            if done:
                break
    finally:
        session.close()
        outcome.duration_ms = (time.perf_counter() - started) * 1000
    return outcome
