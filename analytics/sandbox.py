"""Read-only, sandboxed DuckDB connections to the published rollups.

Every reader of the published rollups goes through ``open_rollups``: ``hk query``, the alert
metrics and SQL rules, the daily summary, ``hk rollups status`` and the demo's report.

- The views file is attached ``READ_ONLY``. When it cannot be opened (another process holds it
  read-write, which DuckDB's file lock makes exclusive, or that session's write-ahead log lies
  beside it), the statements the last publish recorded in its manifest (publish.py) are run in the
  connection's own in-memory database instead: the same views over the same Parquet files. So an
  analyst's session, however it was opened, never stops an evaluation or a query.
- DuckDB's own settings then close the connection: ``allowed_directories`` is the rollup root and
  ``enable_external_access = false``, so no other file can be read or written, no database file
  attached, no extension installed or loaded, nothing fetched over the network; autoinstall and
  autoload of extensions are off; ``lock_configuration = true``, so no ``SET`` can undo any of it.
- ``allowed_directories`` lets DuckDB write where it may read (a ``COPY ... TO`` under the root
  would replace a published partition). So the SQL a user gives is parsed by DuckDB's own parser
  first and runs only when every statement is one that reads (``SELECT``, ``WITH``, ``FROM``,
  ``VALUES``, ``DESCRIBE``, ``SHOW``, ``SUMMARIZE``: DuckDB's SELECT statement type).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from analytics.datasets import all_datasets
from analytics.publish import PublishError, RollupStore
from housekeeping.errors import HkError, first_line
from housekeeping.sql import sql_string

# The name the views file is attached under (the connection then USEs it).
ATTACHED = "rollups"
# DuckDB's statement types that only read. EXPLAIN is left out: EXPLAIN ANALYZE runs its statement.
READING_STATEMENTS = frozenset({duckdb.StatementType.SELECT})


class QueryError(HkError):
    """A query on the published rollups failed or was refused; the message is one line."""


class QueryRefused(QueryError):
    """The SQL does something other than read the published rollups."""


class NotPublished(PublishError):
    """There is no published views file (and no manifest to build its views from)."""


def reading_statements(sql: str) -> list[duckdb.Statement]:
    """The statements of ``sql`` as DuckDB's parser splits them, each of a reading type.

    Raises QueryRefused for empty SQL or a statement of another type (``COPY``, ``ATTACH``,
    ``INSTALL``/``LOAD``, ``SET``, ``CREATE``, ``EXPORT``, ``PRAGMA``, ``EXPLAIN``, ...), naming
    the type; QueryError for SQL DuckDB cannot parse.
    """
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"not valid SQL: {first_line(exc)}") from None
    if not statements:
        raise QueryRefused("no SQL statement given")
    for statement in statements:
        if statement.type not in READING_STATEMENTS:
            # The decision is the parser's statement type; the first word only names it.
            keyword = statement.query.split(None, 1)[0].upper()
            raise QueryRefused(
                f"{keyword} refused ({statement.type.name} statement): the published rollups are "
                "read-only; only queries that read (SELECT, WITH, FROM, DESCRIBE, SHOW, "
                "SUMMARIZE) run"
            )
    return statements


def run_reading(
    connection: duckdb.DuckDBPyConnection, sql: str, parameters: Mapping[str, Any] | None = None
) -> duckdb.DuckDBPyConnection:
    """Run ``sql`` (reading statements only, see ``reading_statements``) and return the
    connection holding the last statement's result.

    ``parameters`` bind ``$name`` placeholders; a statement gets those it names. Raises
    QueryRefused for a statement that does not only read and for a file outside the published
    rollups (DuckDB's permission error, which names the file); any other ``duckdb.Error``
    (an unknown view, a bad cast) propagates as DuckDB raised it.
    """
    statements = reading_statements(sql)
    try:
        for statement in statements:
            bound = {name: parameters[name] for name in statement.named_parameters if parameters}
            connection.execute(statement, bound or None)
    except duckdb.PermissionException as exc:
        raise QueryRefused(f"refused: {first_line(exc)}") from None
    return connection


def open_rollups(store: RollupStore, *, timezone: str | None = None) -> duckdb.DuckDBPyConnection:
    """A sandboxed, read-only connection whose default catalog holds the published views.

    ``timezone`` sets DuckDB's ``TimeZone`` before the configuration is locked (the alert
    metrics compute in UTC). Raises NotPublished when neither the views file nor its manifest
    exists, PublishError when the file cannot be opened and has no manifest to fall back on, or
    when it was published for another rollup root than ``store.root``.
    """
    connection = duckdb.connect(
        ":memory:",
        config={"autoinstall_known_extensions": False, "autoload_known_extensions": False},
    )
    try:
        _load_views(connection, store)
        if timezone is not None:
            connection.execute(f"SET TimeZone = {sql_string(timezone)}")
        connection.execute(
            f"SET allowed_directories = [{sql_string(str(store.root).rstrip('/') + '/')}]"
        )
        connection.execute("SET enable_external_access = false")
        connection.execute("SET lock_configuration = true")
    except BaseException:
        connection.close()
        raise
    return connection


def _check_root(store: RollupStore) -> None:
    """Refuse a views file published for another rollup root: its views read Parquet files
    outside ``store.root``, which the sandbox would refuse one query at a time."""
    manifest = store.published_manifest()
    if manifest is None:
        return
    published, expected = Path(manifest.root).resolve(), store.root.resolve()
    if published != expected:
        raise PublishError(
            f"the views file {store.database} was published for the rollup root {published}, "
            f"not {expected} (analytics.root): re-publish the views (materialize any analytics "
            "asset, or let the freshness sensor tick) or point analytics.database at the views "
            "file of this root"
        )


def _load_views(connection: duckdb.DuckDBPyConnection, store: RollupStore) -> None:
    _check_root(store)
    if store.database.exists():
        try:
            connection.execute(
                f"ATTACH {sql_string(str(store.database))} AS {ATTACHED} (READ_ONLY)"
            )
            connection.execute(f"USE {ATTACHED}")
            return
        except duckdb.Error as exc:
            held = first_line(exc)
    else:
        held = None
    manifest = store.published_manifest()
    if manifest is None:
        if held is None:
            raise NotPublished(
                f"no published rollups at {store.database} (run the analytics assets once, or "
                "check analytics.database)"
            )
        raise PublishError(
            f"cannot open the published rollups {store.database} ({held}) and it has no "
            f"manifest {store.manifest_path.name} to build its views from"
        )
    # The views file cannot be opened (or is gone): the same views, built in memory.
    try:
        for statement in manifest.statements:
            connection.execute(statement)
    except duckdb.Error as exc:
        raise PublishError(
            f"building the published views from {store.manifest_path}: {first_line(exc)}"
        ) from None


def rollup_store(database: Path, root: Path | None = None) -> RollupStore:
    """The store of a views file: ``root`` if given, else the root its manifest records, else
    the views file's folder (the default layout keeps it inside the root)."""
    store = RollupStore(root or Path(database).parent, Path(database))
    if root is None and (manifest := store.published_manifest()) is not None:
        store = RollupStore(Path(manifest.root), Path(database))
    return store


def newest_published(store: RollupStore) -> dict[str, tuple[datetime, bool]]:
    """Per published dataset: the newest time in its rows (its date and time columns, naive UTC
    for timestamps) and whether those columns are all dates. A dataset without rows, or one the
    views file does not know yet, is left out; nothing published at all is an empty dict."""
    try:
        connection = open_rollups(store)
    except PublishError:
        return {}  # nothing published yet: the files say so
    newest = {}
    with connection:
        for dataset in all_datasets():
            columns = [c.name for c in dataset.columns if c.type in ("TIMESTAMP", "DATE")]
            if not columns:
                continue
            latest = ", ".join(f"max(CAST({name} AS TIMESTAMP))" for name in columns)
            expression = latest if len(columns) == 1 else f"greatest({latest})"
            try:
                [(value,)] = connection.execute(
                    f"SELECT {expression} FROM {dataset.name}"
                ).fetchall()
            except duckdb.Error:
                continue  # a dataset the views file does not know yet
            if value is not None:
                dates_only = all(c.type == "DATE" for c in dataset.columns if c.name in columns)
                newest[dataset.name] = (value, dates_only)
    return newest
