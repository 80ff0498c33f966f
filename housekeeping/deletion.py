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

A page walk runs ``batch.workers`` workers at once (threads, each with its own connections: the
driver releases the GIL while the server works), taking disjoint runs of pages from one shared
cursor; see ``delete_in_batches``.

On PostgreSQL, what costs time besides the deleting itself is sending rows back, so a batch only
asks for rows it needs: none without an archive (the server reports the count). An archived
range batch runs in REPEATABLE READ and reads its rows with a plain SELECT, then deletes them with
the same condition: one snapshot, so exactly the archived rows go (a row changed concurrently
makes the DELETE fail and the batch is retried), and far cheaper for the server than
``DELETE ... RETURNING *``. Rows stream out through COPY, decoded to Arrow as they arrive.

Rows another session has locked (``SELECT ... FOR UPDATE``, an UPDATE in flight) are skipped,
never waited for. Locking every row up front (``FOR UPDATE SKIP LOCKED``) would double the
server's work on every batch, so a batch first runs as above with a ``lock_timeout`` of 1 ms; a
batch that meets a lock rolls back and runs again as
``DELETE ... WHERE <batch> AND (tableoid, ctid) IN (SELECT ... FOR UPDATE SKIP LOCKED)``, in one
REPEATABLE READ snapshot with the batch's rows counted first: what it deletes (and archives, from
its ``RETURNING *``) is exactly what it could lock, and the rows it could not are counted as
``skipped_locked``. The walk moves past them; the next run picks them up. When that second try
waits longer than ``safety.lock_timeout`` the lock is on the table itself (``LOCK TABLE``,
``ALTER TABLE``): the walk ends there and the outcome says so (``locked_out``). SQLite has no row
locks: a write transaction of another connection holds the whole file, and a batch that waited
``lock_timeout`` for it (the busy timeout) ends the walk the same way.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import adbc_driver_postgresql.dbapi as adbc
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from housekeeping.archive import StagedFile, TableArchive
from housekeeping.column_time import column_value
from housekeeping.config import BatchConfig, SafetyConfig
from housekeeping.database import (
    LOCK_NOT_AVAILABLE,
    AppDatabase,
    DatabaseError,
    is_lock_not_available,
    libpq_url,
    timeout_ms,
)
from housekeeping.errors import first_line
from housekeeping.policy_kinds import DeleteStrategy
from housekeeping.sql import TableName, quote_identifier

# Transaction-local settings that carry a streamed batch's values (see SettingParams).
BATCH_SETTING_PREFIX = "housekeeping.batch_value_"
# What pg_export_snapshot() returns (e.g. 00000003-0000001B-1): checked before it is quoted.
_SNAPSHOT_ID = re.compile(r"[0-9A-Fa-f]+(-[0-9A-Fa-f]+)+")


@dataclass(frozen=True)
class DeleteTarget:
    """Rows of ``table`` whose ``cutoff_column`` is before ``cutoff`` and that match ``filters``.

    ``cutoff`` is an instant (aware). ``cutoff_zone`` says what the column holds: readings of a
    clock in that zone (a naive column), or instants (None: timestamp with time zone).
    """

    table: TableName
    primary_key: tuple[str, ...]
    cutoff_column: str
    cutoff: datetime
    filters: tuple[tuple[str, Any], ...] = ()
    cutoff_zone: str | None = field(kw_only=True)

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
    # The longest batch transaction, from its first statement to its COMMIT (row locks are held
    # that long); publishing the archive file afterwards holds none.
    max_batch_ms: float = 0.0
    duration_ms: float = 0.0
    stopped_early: bool = False
    batch_sizes: list[int] = field(default_factory=list)
    # Rows of the target that other sessions had locked: skipped, left for the next run.
    skipped_locked: int = 0
    # Set when a lock on the whole table (or SQLite file) was not granted within lock_timeout:
    # why, in one line. The walk ended there; the batches before it committed.
    locked_out: str | None = None


class BoundParams:
    """Collects bound values and renders placeholders in the driver's style."""

    def __init__(self, numeric: bool) -> None:
        self.numeric = numeric
        self.values: list[Any] = []

    def bind(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}" if self.numeric else f":p{len(self.values)}"

    def bind_as(self, value: Any, sql_type: str) -> str:
        return f"CAST({self.bind(value)} AS {sql_type})"

    @property
    def driver_values(self) -> list[Any]:
        """What to bind to the statement's placeholders."""
        return self.values

    def as_driver_params(self) -> Any:
        if self.numeric:
            return self.values
        return {f"p{index}": value for index, value in enumerate(self.values, start=1)}


class SettingParams(BoundParams):
    """Values for a statement that cannot take bind parameters (PostgreSQL's COPY).

    Each value is bound to ``set_config`` as a transaction-local setting, and the statement reads
    it back in a scalar subquery, which PostgreSQL evaluates once (an InitPlan), not per row.
    """

    def __init__(self) -> None:
        super().__init__(numeric=True)

    def bind(self, value: Any) -> str:
        return self.bind_as(value, _sql_type(value))

    def bind_as(self, value: Any, sql_type: str) -> str:
        self.values.append(value)
        name = f"{BATCH_SETTING_PREFIX}{len(self.values)}"
        return f"(SELECT CAST(current_setting('{name}') AS {sql_type}))"

    @property
    def driver_values(self) -> list[Any]:
        return []  # the values travel as settings (see _PostgresSession.apply_settings)

    def settings(self) -> list[tuple[str, str]]:
        return [
            (f"{BATCH_SETTING_PREFIX}{index}", _setting_text(value))
            for index, value in enumerate(self.values, start=1)
        ]


def _sql_type(value: Any) -> str:
    if isinstance(value, datetime):
        return "timestamptz" if value.tzinfo is not None else "timestamp"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "bigint"
    if isinstance(value, str):
        return "text"
    raise TypeError(f"no SQL type for a streamed batch value of type {type(value).__name__}")


def _setting_text(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class _BatchSession(Protocol):
    numeric_params: bool

    def begin(self) -> None: ...

    def begin_skipping_locks(self) -> None: ...

    def export_snapshot(self, params: BoundParams | None = None) -> str: ...

    def import_snapshot(self, snapshot: str) -> None: ...

    def apply_settings(self, params: SettingParams) -> None: ...

    def query(self, sql: str, params: BoundParams) -> pa.Table: ...

    def stream(self, sql: str) -> pa.Table: ...

    def execute(self, sql: str, params: BoundParams) -> int: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def close(self) -> None: ...


def _setting_calls(params: BoundParams | None) -> tuple[list[str], list[str]]:
    """The ``set_config`` calls (transaction-local) and their bound values that carry a
    SettingParams' values; nothing for other params."""
    settings = params.settings() if isinstance(params, SettingParams) else []
    calls = [
        f"set_config(${2 * index + 1}, ${2 * index + 2}, true)" for index in range(len(settings))
    ]
    return calls, [item for pair in settings for item in pair]


class _PostgresSession:
    """ADBC: rows come back as Arrow straight from the wire (COPY-speed, no row loop)."""

    numeric_params = True

    def __init__(
        self,
        db: AppDatabase,
        safety: SafetyConfig,
        *,
        durable_commits: bool,
        repeatable_read: bool,
    ) -> None:
        try:
            self.conn = adbc.connect(libpq_url(db.url))
        except adbc.Error as exc:
            raise DatabaseError(
                f"cannot connect to the application database {db.describe()}: {first_line(exc)}"
            ) from None
        self.cursor = self.conn.cursor()
        # DML goes through its own cursor: executemany reports the row count without RETURNING.
        self.dml_cursor = self.conn.cursor()
        self.lock_timeout_ms = timeout_ms(safety.lock_timeout)
        self.repeatable_read = repeatable_read
        # For the whole session, which only runs batch transactions: every statement of every
        # batch gets them, without a round trip per batch. ``None`` keeps the server's setting.
        settings = {
            # A batch's first try never waits on a locked row; its second try, which skips
            # locked rows, waits up to safety.lock_timeout for the table (begin_skipping_locks).
            "lock_timeout": f"{FIRST_TRY_LOCK_TIMEOUT_MS}ms",
            "statement_timeout": f"{timeout_ms(safety.statement_timeout)}ms",
            # Without an archive nothing waits on a batch's COMMIT being durable: should the
            # server crash right after one, its rows come back and the next run deletes them.
            # An archived batch is published only after its COMMIT, which must be durable.
            "synchronous_commit": None if durable_commits else "off",
            "default_transaction_isolation": "repeatable read" if repeatable_read else None,
        }
        calls = ", ".join(
            f"set_config('{name}', coalesce(${index}, current_setting('{name}')), false)"
            for index, name in enumerate(settings, start=1)
        )
        try:
            self.cursor.execute(f"SELECT {calls}", parameters=list(settings.values()))
            self.cursor.fetchall()
            self.conn.commit()
        except BaseException:
            self.close()
            raise

    def begin(self) -> None:
        """ADBC opens the transaction with its first statement."""

    def begin_skipping_locks(self) -> None:
        """The transaction of a batch's second try: one snapshot for counting and deleting, and
        the full lock_timeout (only a table-level lock can make it wait)."""
        self.cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        self.cursor.execute(f"SET LOCAL lock_timeout = '{self.lock_timeout_ms}ms'")

    def export_snapshot(self, params: BoundParams | None = None) -> str:
        """The id of this (REPEATABLE READ) transaction's snapshot, for ``import_snapshot`` on
        another session while this transaction stays open; with ``params`` (SettingParams) their
        settings are applied in the same round trip."""
        calls, values = _setting_calls(params)
        self.cursor.execute(
            f"SELECT {', '.join(['pg_export_snapshot()', *calls])}", parameters=values or None
        )
        snapshot = self.cursor.fetchone()[0]
        return str(snapshot)

    def import_snapshot(self, snapshot: str) -> None:
        """Start a transaction that sees exactly what ``snapshot`` (exported by a transaction
        still open on another session) sees; the session must be REPEATABLE READ already
        (``repeatable_read=True``), which saves a round trip per batch."""
        if not self.repeatable_read:
            raise DatabaseError("importing a snapshot needs a REPEATABLE READ batch session")
        if not _SNAPSHOT_ID.fullmatch(snapshot):
            raise DatabaseError(f"not a PostgreSQL snapshot id: {snapshot!r}")
        self.cursor.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")

    def apply_settings(self, params: SettingParams) -> None:
        calls, values = _setting_calls(params)
        if not calls:
            return
        self.cursor.execute(f"SELECT {', '.join(calls)}", parameters=values)
        self.cursor.fetchall()

    def query(self, sql: str, params: BoundParams) -> pa.Table:
        self.cursor.execute(sql, parameters=params.driver_values or None)
        return self.cursor.fetch_arrow_table()

    def stream(self, sql: str) -> pa.Table:
        # Without bind parameters ADBC runs the statement as COPY ... TO STDOUT, so rows are
        # decoded as they arrive instead of after the server has sent the last one.
        self.cursor.execute(sql)
        return self.cursor.fetch_arrow_table()

    def execute(self, sql: str, params: BoundParams) -> int:
        values = params.driver_values
        self.dml_cursor.executemany(sql, [values] if values else None)
        return self.dml_cursor.rowcount

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        # Best effort: the connection may be gone, and the error that got us here matters more.
        with contextlib.suppress(Exception):
            self.conn.rollback()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.dml_cursor.close()
            self.cursor.close()
        self.conn.close()


class _SqlAlchemySession:
    numeric_params = False

    def __init__(self, db: AppDatabase) -> None:
        self.conn = db.connect()
        self.transaction: sa.RootTransaction | None = None

    def begin(self) -> None:
        self.transaction = self.conn.begin()

    def begin_skipping_locks(self) -> None:
        raise NotImplementedError("SQLite has no row locks to skip")

    def export_snapshot(self, params: BoundParams | None = None) -> str:
        raise NotImplementedError("exporting a snapshot needs PostgreSQL")

    def import_snapshot(self, snapshot: str) -> None:
        raise NotImplementedError("importing a snapshot needs PostgreSQL")

    def apply_settings(self, params: SettingParams) -> None:
        raise NotImplementedError("streaming a batch needs PostgreSQL")

    def query(self, sql: str, params: BoundParams) -> pa.Table:
        result = self.conn.execute(sa.text(sql), params.as_driver_params())
        names = list(result.keys())
        rows = result.fetchall()
        return pa.table({name: [row[index] for row in rows] for index, name in enumerate(names)})

    def stream(self, sql: str) -> pa.Table:
        raise NotImplementedError("streaming a batch needs PostgreSQL")

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


def open_batch_session(
    db: AppDatabase,
    safety: SafetyConfig,
    *,
    durable_commits: bool = True,
    repeatable_read: bool = False,
) -> _BatchSession:
    if db.is_postgres:
        return _PostgresSession(
            db, safety, durable_commits=durable_commits, repeatable_read=repeatable_read
        )
    return _SqlAlchemySession(db)


def _key_sql(columns: Sequence[str]) -> str:
    quoted = ", ".join(quote_identifier(column) for column in columns)
    return f"({quoted})" if len(columns) > 1 else quoted


def _key_values(params: BoundParams, values: Sequence[Any]) -> str:
    rendered = ", ".join(params.bind(value) for value in values)
    return f"({rendered})" if len(values) > 1 else rendered


def cutoff_condition(db: AppDatabase, target: DeleteTarget, params: BoundParams) -> str:
    """``cutoff_column < <the cutoff in the column's own terms>``: the one predicate the count, the
    dry run, every delete, the remaining count and the delete-fraction guard use.

    A naive column meets the cutoff's wall-clock reading in ``cutoff_zone`` as a plain
    ``timestamp`` and a timestamptz column the instant, so the session's ``TimeZone`` never enters
    the comparison (see column_time); the column stays bare, so its index serves.
    """
    column = quote_identifier(target.cutoff_column)
    value = column_value(target.cutoff, target.cutoff_zone, text=not db.is_postgres)
    if not db.is_postgres:
        return f"{column} < {params.bind(value)}"
    sql_type = "timestamptz" if target.cutoff_zone is None else "timestamp"
    return f"{column} < {params.bind_as(value, sql_type)}"


def target_conditions(db: AppDatabase, target: DeleteTarget, params: BoundParams) -> list[str]:
    """Every condition a row of ``target`` meets: the cutoff predicate and the filters."""
    conditions = [cutoff_condition(db, target, params)]
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


def _page_layout(db: AppDatabase, table: TableName) -> tuple[int, float]:
    """The table's size in pages now, and about how many rows a page holds."""
    with db.connect() as conn:
        pages, estimated_rows = conn.execute(
            sa.text(
                "SELECT pg_relation_size(to_regclass(:name)) "
                "/ current_setting('block_size')::int, reltuples "
                "FROM pg_class WHERE oid = to_regclass(:name)"
            ),
            {"name": table.sql},
        ).one()
        if estimated_rows is None or estimated_rows <= 0:
            estimated_rows = conn.execute(sa.text(f"SELECT count(*) FROM {table.sql}")).scalar_one()
    return int(pages), max(1.0, float(estimated_rows) / max(1, int(pages)))


class _Walk:
    """Where the next batch starts: each strategy's batch condition and how it moves on."""

    def __init__(self, db: AppDatabase, target: DeleteTarget) -> None:
        self.db = db
        self.target = target
        self.table = target.table.sql
        self.key = _key_sql(target.primary_key)
        self.select_key = self.key.strip("()")
        self.cutoff_column = quote_identifier(target.cutoff_column)

    def where(
        self, session: _BatchSession, params: BoundParams, size: int, *, skip_locked: bool = False
    ) -> str:
        """The condition of the next batch of about ``size`` rows (the same until advanced).

        ``skip_locked``: for a batch that will leave locked rows behind, so the walk must move
        past them without meeting them again.
        """
        raise NotImplementedError

    def claim(self, size: int) -> bool:
        """Reserve the next batch of about ``size`` rows; False when nothing is left to walk
        (only a walk shared by several workers can run out before its own last batch)."""
        return True

    def advance(self, rows: pa.Table | None, seen: int, size: int) -> bool:
        """Move past the batch just run, which met ``seen`` rows (deleted or skipped as locked)
        and returned ``rows``; True when the walk is complete."""
        raise NotImplementedError


class _PageCursor:
    """The pages of a table not yet handed to a batch, shared by the workers of one run.

    Each batch takes the next run of pages under a lock, so batches of different workers cover
    disjoint pages and every page is taken once; the batch that reaches the table's size (as
    read when the run began) takes the rest of the table, pages added since included.
    """

    def __init__(self, total_pages: int, rows_per_page: float) -> None:
        self.total_pages = total_pages
        self.rows_per_page = rows_per_page
        self.next_page: int | None = 0  # None: every page has been taken
        self.lock = threading.Lock()

    def take(self, pages: int) -> tuple[int, int | None] | None:
        """``(first page, end page)`` of the next ``pages`` pages (end None: to the table's end),
        or None when nothing is left."""
        with self.lock:
            if self.next_page is None:
                return None
            lower, end = self.next_page, self.next_page + max(1, pages)
            upper = end if end < self.total_pages else None
            self.next_page = upper
            return lower, upper


class _PageWalk(_Walk):
    def __init__(
        self, db: AppDatabase, target: DeleteTarget, cursor: _PageCursor | None = None
    ) -> None:
        super().__init__(db, target)
        if not db.is_postgres:
            raise ValueError("the page_ranges strategy needs PostgreSQL")
        self.cursor = cursor or _PageCursor(*_page_layout(db, target.table))
        self.pages: tuple[int, int | None] | None = None

    def claim(self, size: int) -> bool:
        if self.pages is None:
            self.pages = self.cursor.take(int(size / self.cursor.rows_per_page))
        return self.pages is not None

    def where(
        self, session: _BatchSession, params: BoundParams, size: int, *, skip_locked: bool = False
    ) -> str:
        assert self.pages is not None, "claim pages before building a batch"
        lower, upper = self.pages
        conditions = target_conditions(self.db, self.target, params)
        conditions.append(f"ctid >= {params.bind_as(f'({lower},0)', 'tid')}")
        if upper is not None:
            conditions.append(f"ctid < {params.bind_as(f'({upper},0)', 'tid')}")
        return " AND ".join(conditions)

    def advance(self, rows: pa.Table | None, seen: int, size: int) -> bool:
        last = self.pages is None or self.pages[1] is None
        self.pages = None
        return last


class _KeyWalk(_Walk):
    def __init__(self, db: AppDatabase, target: DeleteTarget) -> None:
        super().__init__(db, target)
        self.lower_key: tuple[Any, ...] | None = None
        self.upper_key: tuple[Any, ...] | None = None

    def where(
        self, session: _BatchSession, params: BoundParams, size: int, *, skip_locked: bool = False
    ) -> str:
        key, select_key, table = self.key, self.select_key, self.table
        probe = BoundParams(session.numeric_params)
        where = f"WHERE {key} > {_key_values(probe, self.lower_key)} " if self.lower_key else ""
        self.upper_key = _first_row(
            session.query(
                f"SELECT {select_key} FROM {table} {where}ORDER BY {select_key} "
                f"LIMIT 1 OFFSET {int(size) - 1}",
                probe,
            ),
            self.target.primary_key,
        )
        conditions = target_conditions(self.db, self.target, params)
        if self.lower_key is not None:
            conditions.append(f"{key} > {_key_values(params, self.lower_key)}")
        if self.upper_key is not None:
            conditions.append(f"{key} <= {_key_values(params, self.upper_key)}")
        return " AND ".join(conditions)

    def advance(self, rows: pa.Table | None, seen: int, size: int) -> bool:
        self.lower_key = self.upper_key
        return self.upper_key is None


class _CutoffWalk(_Walk):
    """Keyset on the cutoff column: ``cutoff >= lower`` re-reads ties at the boundary, which the
    previous batch deleted, unless it left locked rows behind (then ``cutoff > lower``)."""

    def __init__(self, db: AppDatabase, target: DeleteTarget) -> None:
        super().__init__(db, target)
        self.lower_cutoff: Any = None
        self.lower_inclusive = True
        # A batch that skips locked rows covers a range of cutoff values ending here (None: the
        # rest of the target), every tie included, so the next batch starts after all of them.
        self.skipping_locks = False
        self.upper_cutoff: Any = None

    def _conditions(self, params: BoundParams) -> list[str]:
        conditions = target_conditions(self.db, self.target, params)
        if self.lower_cutoff is not None:
            operator = ">=" if self.lower_inclusive else ">"
            conditions.append(f"{self.cutoff_column} {operator} {params.bind(self.lower_cutoff)}")
        return conditions

    def where(
        self, session: _BatchSession, params: BoundParams, size: int, *, skip_locked: bool = False
    ) -> str:
        self.skipping_locks = skip_locked
        if not skip_locked:
            return (
                f"{self.key} IN (SELECT {self.select_key} FROM {self.table} "
                f"WHERE {' AND '.join(self._conditions(params))} "
                f"ORDER BY {self.cutoff_column} LIMIT {int(size)})"
            )
        probe = BoundParams(session.numeric_params)
        nth = _first_row(
            session.query(
                f"SELECT {self.cutoff_column} FROM {self.table} "
                f"WHERE {' AND '.join(self._conditions(probe))} "
                f"ORDER BY {self.cutoff_column} LIMIT 1 OFFSET {int(size) - 1}",
                probe,
            ),
            (self.target.cutoff_column,),
        )
        self.upper_cutoff = nth[0] if nth is not None else None
        conditions = self._conditions(params)
        if self.upper_cutoff is not None:
            conditions.append(f"{self.cutoff_column} <= {params.bind(self.upper_cutoff)}")
        return " AND ".join(conditions)

    def advance(self, rows: pa.Table | None, seen: int, size: int) -> bool:
        if self.skipping_locks:
            if self.upper_cutoff is None:
                return True
            self.lower_cutoff, self.lower_inclusive = self.upper_cutoff, False
            return False
        if rows is not None and seen:
            self.lower_cutoff = pc.max(rows.column(self.target.cutoff_column)).as_py()
            self.lower_inclusive = True
        return seen < size


_WALKS: dict[DeleteStrategy, type[_Walk]] = {
    DeleteStrategy.PAGE_RANGES: _PageWalk,
    DeleteStrategy.PRIMARY_KEY_RANGES: _KeyWalk,
    DeleteStrategy.CUTOFF_INDEX: _CutoffWalk,
}

# A REPEATABLE READ batch whose rows changed under it fails; it is simply run again.
SERIALIZATION_FAILURE = "40001"
BATCH_ATTEMPTS = 3
# The lock_timeout of a batch's first try: PostgreSQL's smallest (0 would mean "wait forever").
FIRST_TRY_LOCK_TIMEOUT_MS = 1
# How a batch's second try names the rows it could lock: unique also across partitions.
_ROW_ID = "tableoid, ctid"


@dataclass(frozen=True)
class _Method:
    """How a run's batches read and delete their rows (see the module docstring)."""

    # what DELETE ... RETURNING brings back, if anything
    returning: str | None
    # a snapshot batch: read the rows (COPY) in one session's REPEATABLE READ transaction, stage
    # them, then DELETE them in another session that imported the read's snapshot
    select_first: bool
    # values as transaction-local settings, so rows can come back through COPY
    streaming: bool
    # sessions per worker: a reader and a deleter for snapshot batches (while one batch
    # deletes, the next one is read and staged), else one
    lanes: int
    # deleted rows go to the archive, so every batch must bring them back
    archive: bool
    strategy: DeleteStrategy

    @classmethod
    def choose(
        cls,
        db: AppDatabase,
        target: DeleteTarget,
        strategy: DeleteStrategy,
        archive: TableArchive | None,
        walk: _Walk,
    ) -> _Method:
        # Batches of a range walk cover disjoint rows, so two can be in flight and a SELECT and
        # a DELETE with the same condition meet the same rows. Two cutoff-index batches could
        # reach for the same rows (ties at the boundary), and LIMIT picks among ties freely.
        range_walk = strategy in (DeleteStrategy.PAGE_RANGES, DeleteStrategy.PRIMARY_KEY_RANGES)
        select_first = archive is not None and db.is_postgres and range_walk
        if archive is not None:
            returning: str | None = "*"
        elif strategy is DeleteStrategy.CUTOFF_INDEX:
            returning = walk.cutoff_column  # where the next batch starts
        else:
            returning = None
        # Filter values (job statuses, queue names) meet columns of any type (enums, varchar),
        # and keys can be of any type: those keep ordinary bind parameters.
        streaming = (
            (returning is not None or select_first)
            and db.is_postgres
            and not target.filters
            and strategy is not DeleteStrategy.PRIMARY_KEY_RANGES
        )
        return cls(
            returning,
            select_first,
            streaming,
            lanes=2 if select_first else 1,
            archive=archive is not None,
            strategy=strategy,
        )


class _AbandonedBatch(Exception):
    """Another batch failed first, so this one was rolled back instead of committed."""


class _TableLocked(Exception):
    """A batch waited lock_timeout for a lock on the table (not a row) and rolled back."""


def _run_with_retries(batch: _Batch, walk: _Walk, method: _Method) -> None:
    """Runs the batch up to its COMMIT: again, skipping locked rows, when its first try met a
    lock; again when its snapshot went stale; raises ``_TableLocked`` when even the try that
    skips locked rows waited ``lock_timeout``. Every failed try is rolled back."""
    stale_snapshots = 0
    while True:
        batch.started = time.perf_counter()
        batch.session.begin()
        try:
            _run_batch(batch, walk, method)
            return
        except adbc.Error as exc:
            batch.session.rollback()
            if exc.sqlstate == LOCK_NOT_AVAILABLE:
                if batch.skip_locked:
                    raise _TableLocked from None
                batch.skip_locked = True
                continue
            stale_snapshots += 1
            if exc.sqlstate != SERIALIZATION_FAILURE or stale_snapshots >= BATCH_ATTEMPTS:
                raise
        except sa.exc.DBAPIError as exc:
            batch.session.rollback()
            if is_lock_not_available(exc):  # SQLite: another connection holds the file
                raise _TableLocked from None
            raise
        except BaseException:
            batch.session.rollback()
            raise


@dataclass
class _Batch:
    session: _BatchSession
    sequence: int
    size: int
    started: float = 0.0  # perf_counter before its first statement
    deleted: int = 0
    # the second try: rows other sessions hold are skipped (see the module docstring)
    skip_locked: bool = False
    seen: int = 0  # rows of the target the batch met: deleted + skipped_locked
    skipped_locked: int = 0
    rows: pa.Table | None = None
    committed: float = 0.0  # perf_counter once COMMIT returned
    # perf_counter once the part of the transaction that grows with the batch's size ended (a
    # snapshot batch's DELETE); 0: at COMMIT. A COMMIT's WAL flush costs the same for any size,
    # so a batch shrunk for it would only make more commits.
    sized: float = 0.0
    archived: bool = False
    # A snapshot batch (see the module docstring): its condition and values, the snapshot its
    # rows were read in, and their file, staged before the DELETE.
    where: str | None = None
    params: BoundParams | None = None
    snapshot: str | None = None
    staged: StagedFile | None = None
    # Its skip-locked try waited lock_timeout for the table: the walk ends (locked_out).
    table_locked: bool = False

    @property
    def transaction_seconds(self) -> float:
        return self.committed - self.started

    @property
    def sizing_seconds(self) -> float:
        """What the next batch's size is fitted to (``batch.target_duration``)."""
        return (self.sized or self.committed) - self.started


def _run_batch(batch: _Batch, walk: _Walk, method: _Method) -> None:
    """The batch's statements, up to (not including) its COMMIT."""
    if batch.skip_locked:
        _run_batch_skipping_locked(batch, walk, method)
        return
    session = batch.session
    params = SettingParams() if method.streaming else BoundParams(session.numeric_params)
    where = walk.where(session, params, batch.size)
    if isinstance(params, SettingParams):
        session.apply_settings(params)
    delete = f"DELETE FROM {walk.table} WHERE {where}"
    if method.returning is None:
        batch.deleted = session.execute(delete, params)
    else:
        returning = f"{delete} RETURNING {method.returning}"
        batch.rows = (
            session.stream(returning) if method.streaming else session.query(returning, params)
        )
        batch.deleted = batch.rows.num_rows
    batch.seen = batch.deleted


def _run_batch_skipping_locked(batch: _Batch, walk: _Walk, method: _Method) -> None:
    """A batch's second try, after its first met a lock: deletes (and returns, when archiving)
    exactly the rows it could lock; counts the rest as skipped."""
    session = batch.session
    session.begin_skipping_locks()
    if batch.where is not None:
        # A snapshot batch read its rows already: the same condition, the walk has moved on.
        where, params = batch.where, batch.params
    else:
        params = SettingParams() if method.streaming else BoundParams(session.numeric_params)
        where = walk.where(session, params, batch.size, skip_locked=True)
    if isinstance(params, SettingParams):
        session.apply_settings(params)
    table = walk.table
    seen = session.query(f"SELECT count(*) FROM {table} WHERE {where}", params)
    batch.seen = int(seen.column(0)[0].as_py())
    delete = (
        f"DELETE FROM {table} WHERE {where} AND ({_ROW_ID}) IN "
        f"(SELECT {_ROW_ID} FROM {table} WHERE {where} FOR UPDATE SKIP LOCKED)"
    )
    if method.archive:
        returning = f"{delete} RETURNING *"
        batch.rows = (
            session.stream(returning) if method.streaming else session.query(returning, params)
        )
        batch.deleted = batch.rows.num_rows
    else:
        batch.deleted = session.execute(delete, params)
    # The same snapshot counted and deleted, so the difference is what others held.
    batch.skipped_locked = batch.seen - batch.deleted


def _read_snapshot_batch(
    batch: _Batch, reader: _BatchSession, walk: _Walk, method: _Method
) -> None:
    """A snapshot batch's read: in ``reader``'s REPEATABLE READ transaction, export its snapshot
    and read the batch's rows (COPY). The transaction stays open until the deleting session has
    imported the snapshot. A lock on the table (not granted within the first try's 1 ms) rolls
    the read back and marks the batch for the skip-locked path instead."""
    params = SettingParams() if method.streaming else BoundParams(reader.numeric_params)
    try:
        batch.where = walk.where(reader, params, batch.size)
        batch.params = params
        batch.snapshot = reader.export_snapshot(params)
        select = f"SELECT * FROM {walk.table} WHERE {batch.where}"
        batch.rows = reader.stream(select) if method.streaming else reader.query(select, params)
    except adbc.Error as exc:
        reader.rollback()
        if exc.sqlstate != LOCK_NOT_AVAILABLE:
            raise
        batch.skip_locked, batch.snapshot, batch.rows = True, None, None
    except BaseException:
        reader.rollback()
        raise


@dataclass(frozen=True)
class _SnapshotRun:
    """What every snapshot batch of one worker shares (see ``_start_snapshot_batch``)."""

    walk: _Walk
    method: _Method
    archive: TableArchive
    publisher: _ArchivePublisher | None
    run_id: str
    failed: threading.Event


def _delete_snapshot_batch(batch: _Batch, run: _SnapshotRun) -> None:
    """A snapshot batch's write: its session has imported the read's snapshot and the rows are
    staged durably; DELETE with the read's condition, which in that snapshot meets exactly the
    rows read, then commit and publish. A row changed (serialization failure) or locked (the
    first try's 1 ms lock_timeout) since the read rolls the DELETE back, discards the staged
    file and runs the batch again on the skip-locked path (``_run_batch_skipping_locked``)."""
    walk, failed = run.walk, run.failed
    session = batch.session
    try:
        if failed.is_set():
            raise _AbandonedBatch
        if isinstance(batch.params, SettingParams):
            session.apply_settings(batch.params)
        batch.deleted = session.execute(
            f"DELETE FROM {walk.table} WHERE {batch.where}", batch.params
        )
        batch.sized = time.perf_counter()
        if batch.deleted != batch.seen:
            raise DatabaseError(
                f"batch {batch.sequence} of {walk.target.describe()} read {batch.seen} rows but "
                f"deleted {batch.deleted} in the same snapshot; rolled back"
            )
    except adbc.Error as exc:
        session.rollback()
        if exc.sqlstate not in (LOCK_NOT_AVAILABLE, SERIALIZATION_FAILURE):
            failed.set()
            raise
        _fall_back_to_skipping_locks(batch, run)
        return
    except BaseException:
        failed.set()
        session.rollback()
        raise
    _finish_batch(batch, run.archive, run.publisher, run.run_id, failed)


def _fall_back_to_skipping_locks(batch: _Batch, run: _SnapshotRun) -> None:
    """Run a snapshot batch whose rows changed or were locked again, skipping locked rows; its
    staged file (rows still in the table) is discarded first."""
    archive, failed = run.archive, run.failed
    try:
        if batch.staged is not None:
            archive.discard(batch.staged)
            batch.staged = None
        batch.skip_locked, batch.deleted = True, 0
        _run_with_retries(batch, run.walk, run.method)
    except _TableLocked:
        batch.table_locked = True
        return
    except BaseException:
        failed.set()
        raise
    _finish_batch(batch, archive, run.publisher, run.run_id, failed)


class _ArchivePublisher:
    """Publishing for the batches of every worker: each batch renames its own file, and the
    day's manifest is rewritten by one batch at a time, for every file published since the last
    rewrite (a group commit: with many batches one rewrite per batch, each fsynced, would cost
    more than the batches). ``commit`` returns once the batch's file is listed."""

    def __init__(self, archive: TableArchive) -> None:
        self.archive = archive
        self.lock = threading.Lock()
        self.unlisted: list[StagedFile] = []
        self.unlisted_lock = threading.Lock()

    def commit(self, staged: StagedFile) -> None:
        self.archive.commit(staged, list_in_manifest=False)
        with self.unlisted_lock:
            self.unlisted.append(staged)
        with self.lock:
            with self.unlisted_lock:
                published, self.unlisted = self.unlisted, []
            if published:  # else a batch that held the lock before listed this one too
                try:
                    self.archive.list_in_manifests(published)
                except BaseException:
                    with self.unlisted_lock:
                        self.unlisted[:0] = published
                    raise


def _finish_batch(
    batch: _Batch,
    archive: TableArchive | None,
    publisher: _ArchivePublisher | None,
    run_id: str,
    failed: threading.Event,
) -> None:
    """The archive protocol for one batch: stage durably, then commit, then publish."""
    session, staged = batch.session, batch.staged
    try:
        if failed.is_set():
            raise _AbandonedBatch
        if staged is None and archive is not None and batch.rows is not None and batch.deleted:
            staged = archive.stage(
                batch.rows, run_id=run_id, sequence=batch.sequence, now=datetime.now(UTC)
            )
    except BaseException:
        failed.set()
        session.rollback()
        raise
    batch.rows = None  # on disk now: free the memory before the next batch arrives
    try:
        # If COMMIT itself fails its outcome is unknown: the pending file stays, and the next
        # run's recovery looks the rows up to finish or discard it.
        session.commit()
        batch.committed = time.perf_counter()
        if staged is not None:
            (publisher or archive).commit(staged)
            batch.archived = True
    except BaseException:
        failed.set()
        raise


class _Sequences:
    """Numbers for the batches of one run, unique across its workers (archive file names)."""

    def __init__(self, first: int) -> None:
        self.next = first
        self.lock = threading.Lock()

    def take(self) -> int:
        with self.lock:
            self.next += 1
            return self.next - 1


class _SharedStop:
    """``should_stop`` asked by every worker between its batches, one at a time; once it said
    yes, or a worker failed or was locked out, every worker stops after its batch in flight."""

    def __init__(self, should_stop: Callable[[], bool]) -> None:
        self.should_stop = should_stop
        self.stopped = threading.Event()
        self.lock = threading.Lock()

    def __call__(self) -> bool:
        with self.lock:
            if not self.stopped.is_set() and self.should_stop():
                self.stopped.set()
        return self.stopped.is_set()


def worker_count(db: AppDatabase, strategy: DeleteStrategy, workers: int) -> int:
    """How many workers delete at once: ``batch.workers`` for a page walk on PostgreSQL, one
    otherwise (SQLite has one writer; key and cutoff-index walks are sequential by nature)."""
    if db.is_postgres and strategy is DeleteStrategy.PAGE_RANGES:
        return workers
    return 1


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
) -> DeleteOutcome:
    """Delete every row matching ``target`` in short transactions; returns what was done.

    A page walk on PostgreSQL runs ``batch.workers`` workers at once, each on its own
    connection(s), taking disjoint runs of pages from one shared cursor (``_PageCursor``); every
    other walk runs one. Every worker's connections are opened before any batch starts (a
    connection that cannot be opened fails the run before anything is deleted). Each worker
    sizes its own batches to ``batch.target_duration`` (the write transaction's length).

    ``should_stop`` is asked between batches (by one worker at a time): the batches in flight
    always finish (commit and are archived), so a stopped run leaves nothing half-done and the
    next run carries on.

    Rows other sessions have locked are skipped and counted (``skipped_locked``), never waited
    for. A lock on the whole table not granted within ``safety.lock_timeout`` ends the walk like
    a stop: the waiting batch rolls back, the ones before it (and every other worker's batch in
    flight) finish, and ``locked_out`` says why. Another error in one worker rolls back that
    worker's batches not yet committed, lets the other workers finish their batch in flight, and
    is raised.

    Archiving a range walk on PostgreSQL, each batch is a snapshot batch (see the module
    docstring) and each worker overlaps two: while one batch's DELETE runs and commits on the
    worker's deleting connection, the next batch is read and its Parquet file written on the
    reading one. Every batch keeps its own stage -> commit -> publish order, and publishing (the
    day's manifest) is one batch at a time.
    """
    if strategy is DeleteStrategy.AUTO:
        raise ValueError("resolve the AUTO strategy before deleting (see choose_strategy)")
    workers = worker_count(db, strategy, batch.workers)
    first_walk = _WALKS[strategy](db, target)
    walks = [first_walk]
    if workers > 1:
        assert isinstance(first_walk, _PageWalk)
        walks += [_PageWalk(db, target, first_walk.cursor) for _ in range(workers - 1)]
    method = _Method.choose(db, target, strategy, archive, first_walk)
    publisher = _ArchivePublisher(archive) if archive is not None else None
    sequences = _Sequences(first_sequence)
    started = time.perf_counter()
    sessions = _open_sessions(db, safety, method, workers)
    try:
        if workers == 1:
            outcome = _delete_walk(
                db, target, first_walk, method, batch, safety, archive, publisher, run_id,
                sequences, should_stop, sessions[0],
            )  # fmt: skip
            outcome.duration_ms = (time.perf_counter() - started) * 1000
            return outcome
        stop = _SharedStop(should_stop)
        outcomes: list[DeleteOutcome] = []
        errors: list[BaseException] = []

        def work(walk: _Walk, own: list[_BatchSession]) -> None:
            try:
                outcome = _delete_walk(
                    db, target, walk, method, batch, safety, archive, publisher, run_id,
                    sequences, stop, own,
                )  # fmt: skip
            except BaseException as exc:
                errors.append(exc)  # list.append is atomic; the first error is the cause
                stop.stopped.set()
                return
            outcomes.append(outcome)
            if outcome.locked_out is not None:
                stop.stopped.set()

        threads = [
            threading.Thread(target=work, args=(walk, own), name=f"hk-delete-{index}")
            for index, (walk, own) in enumerate(zip(walks, sessions, strict=True))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for own in sessions:
            for session in own:
                session.close()
    if errors:
        raise errors[0]
    merged = _merged(strategy, outcomes)
    # Stopped on request: not when a worker's lock-out (reported as such) stopped the others.
    merged.stopped_early = merged.locked_out is None and stop.stopped.is_set()
    merged.duration_ms = (time.perf_counter() - started) * 1000
    return merged


def _open_sessions(
    db: AppDatabase, safety: SafetyConfig, method: _Method, workers: int
) -> list[list[_BatchSession]]:
    """Every worker's sessions (``method.lanes`` each), opened at once before any batch runs;
    on any failure the ones opened are closed and the error is raised."""

    def open_one(_: int) -> _BatchSession:
        return open_batch_session(
            db,
            safety,
            durable_commits=method.archive,
            repeatable_read=method.select_first,
        )

    count = workers * method.lanes
    opened: list[_BatchSession] = []
    errors: list[BaseException] = []
    if count == 1:
        opened.append(open_one(0))
    else:
        with ThreadPoolExecutor(max_workers=min(count, 8)) as pool:
            for future in [pool.submit(open_one, index) for index in range(count)]:
                try:
                    opened.append(future.result())
                except BaseException as exc:
                    errors.append(exc)
    if errors:
        for session in opened:
            session.close()
        if isinstance(errors[0], DatabaseError) and count > 1:
            raise DatabaseError(
                f"{errors[0]} (a run opens {count} connections at once: batch.workers {workers}"
                f" x {method.lanes}; lower batch.workers or raise the connection limit)"
            ) from None
        raise errors[0]
    return [opened[index : index + method.lanes] for index in range(0, count, method.lanes)]


def _merged(strategy: DeleteStrategy, outcomes: Sequence[DeleteOutcome]) -> DeleteOutcome:
    """One run's outcome from its workers' outcomes."""
    merged = DeleteOutcome(strategy=strategy)
    for outcome in outcomes:
        merged.deleted += outcome.deleted
        merged.batches += outcome.batches
        merged.archived_rows += outcome.archived_rows
        merged.archive_files += outcome.archive_files
        merged.max_batch_ms = max(merged.max_batch_ms, outcome.max_batch_ms)
        merged.batch_sizes += outcome.batch_sizes
        merged.skipped_locked += outcome.skipped_locked
        merged.locked_out = merged.locked_out or outcome.locked_out
    return merged


def _delete_walk(
    db: AppDatabase,
    target: DeleteTarget,
    walk: _Walk,
    method: _Method,
    batch: BatchConfig,
    safety: SafetyConfig,
    archive: TableArchive | None,
    publisher: _ArchivePublisher | None,
    run_id: str,
    sequences: _Sequences,
    should_stop: Callable[[], bool],
    sessions: list[_BatchSession],
) -> DeleteOutcome:
    """One worker: batches along ``walk`` until it is done, stopped or locked out.

    ``sessions``: one, or for snapshot batches a reader and a deleter (``_Method.lanes``).
    """
    outcome = DeleteOutcome(strategy=method.strategy)
    failed = threading.Event()
    # Batches started and not yet recorded: at most one, or two for snapshot batches (one
    # deleting while the next is read).
    in_flight: deque[tuple[_Batch, Future[None] | None]] = deque()
    size = planned_size = batch.initial_size
    planned = 0
    deleter = sessions[-1]

    def settle(future: Future[None]) -> None:
        """Wait for a batch; if it failed, raise the error that started the failure."""
        error = future.exception()
        if error is None:
            return
        if isinstance(error, _AbandonedBatch):
            for _, other in in_flight:
                if other is not None and not isinstance(other.exception(), _AbandonedBatch):
                    other.result()
        raise error

    def record(item: tuple[_Batch, Future[None] | None]) -> None:
        nonlocal size
        done, future = item
        if future is not None:
            settle(future)
        if done.table_locked:
            outcome.locked_out = db.lock_not_granted(target.table, safety.lock_timeout)
            return
        elapsed = done.transaction_seconds
        outcome.batches += 1
        outcome.deleted += done.deleted
        outcome.skipped_locked += done.skipped_locked
        outcome.batch_sizes.append(done.size)
        outcome.max_batch_ms = max(outcome.max_batch_ms, elapsed * 1000)
        if done.archived:
            outcome.archived_rows += done.deleted
            outcome.archive_files += 1
        if elapsed > 0:
            size = _next_size(done.size, done.sizing_seconds, batch)

    def record_all() -> None:
        while in_flight:
            record(in_flight.popleft())

    worker = None
    try:
        if method.select_first:
            # Named after the worker, so a log line (or a test) can tell whose batch it was.
            prefix = f"{threading.current_thread().name}-archive"
            worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=prefix)
        while outcome.locked_out is None:
            while in_flight and (in_flight[0][1] is None or in_flight[0][1].done()):
                record(in_flight.popleft())
            if outcome.locked_out is not None or (planned and should_stop()):
                outcome.stopped_early = outcome.locked_out is None
                break
            # At most 1.5x the previous batch, also when the last measured batch is an older one.
            planned_size = size = min(size, int(planned_size * 1.5))
            if not walk.claim(size):
                break  # other workers took the rest of the table
            current = _Batch(deleter, sequences.take(), size)
            planned += 1
            if worker is not None:
                assert archive is not None
                run = _SnapshotRun(walk, method, archive, publisher, run_id, failed)
                done = _start_snapshot_batch(
                    current, sessions[0], run, worker, in_flight, record_all, outcome
                )
            else:
                try:
                    _run_with_retries(current, walk, method)
                except _TableLocked:
                    outcome.locked_out = db.lock_not_granted(target.table, safety.lock_timeout)
                    break
                done = walk.advance(current.rows, current.seen, size)
                if archive is None:
                    current.rows = None
                _finish_batch(current, archive, publisher, run_id, failed)
                in_flight.append((current, None))
            if done:
                break
        record_all()
    except BaseException:
        # Batches not yet committed roll back; one already committing finishes its publish.
        failed.set()
        raise
    finally:
        if worker is not None:
            worker.shutdown(wait=True)
    return outcome


def _start_snapshot_batch(
    current: _Batch,
    reader: _BatchSession,
    run: _SnapshotRun,
    worker: ThreadPoolExecutor,
    in_flight: deque[tuple[_Batch, Future[None] | None]],
    record_all: Callable[[], None],
    outcome: DeleteOutcome,
) -> bool:
    """Read and stage ``current`` (this thread) while the previous batch deletes (``worker``);
    then hand it to the deleter once that one is recorded. True when the walk is complete."""
    walk, method, archive, run_id = run.walk, run.method, run.archive, run.run_id
    deleter = current.session
    _read_snapshot_batch(current, reader, walk, method)
    if current.skip_locked:
        # The read met a lock on the table: the previous batch finishes first, then this one
        # runs on the skip-locked path right here (before the walk moves on), waiting up to
        # lock_timeout for the table.
        record_all()
        if outcome.locked_out is not None:
            return True
        _fall_back_to_skipping_locks(current, run)
        in_flight.append((current, None))
        return walk.advance(None, current.seen, current.size)
    done = walk.advance(None, current.seen, current.size)
    try:
        if current.rows is not None:
            current.seen = current.rows.num_rows
            if current.seen:
                current.staged = archive.stage(
                    current.rows, run_id=run_id, sequence=current.sequence, now=datetime.now(UTC)
                )
            current.rows = None  # on disk now: free the memory before the next batch arrives
        # The deleter holds one batch at a time: the previous one must be done (and recorded).
        record_all()
    except BaseException:
        reader.rollback()
        raise
    if outcome.locked_out is not None:
        # The previous batch found the table locked: the walk ends; these rows stay for the
        # next run.
        reader.rollback()
        if current.staged is not None:
            archive.discard(current.staged)
        return True
    if not current.seen:  # nothing expired in these pages: nothing to delete or commit
        reader.commit()
        in_flight.append((current, None))
        return done
    current.started = time.perf_counter()
    try:
        deleter.import_snapshot(current.snapshot or "")
    except BaseException:
        deleter.rollback()
        reader.rollback()
        raise
    # The deleter's transaction holds the snapshot now: the read's may end.
    reader.commit()
    in_flight.append((current, worker.submit(_delete_snapshot_batch, current, run)))
    return done
