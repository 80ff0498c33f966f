"""The published rollups: Parquet partitions behind a small DuckDB file of views.

DuckDB lets one process open a database file for writing and then locks every other process out,
read-only openers included. So nothing published is ever written in place:

- each dataset is a folder of Parquet files, one per partition (``<root>/<dataset>/<key>.parquet``),
  each written to a private temporary file, fsynced and moved over the old one with
  ``os.replace``: a reader sees the old file or the new one, never a half-written one;
- every folder holds an empty ``_schema.parquet``, so a view over a dataset with no partitions yet
  still works (and returns no rows);
- the DuckDB file analysts open (``analytics.database``) holds only views, macros and the small
  budget table; it is built in a private file, checkpointed, closed and renamed over the old one,
  and only when its content changes. Publishing never opens the file at the published path:
  anyone may hold it, even read-write (the DuckDB command line's default), which DuckDB's file
  lock makes exclusive. What was published is recorded beside it in a manifest
  (``.<name>.views.json``: the version, the file's identity, the root and the statements), so
  "unchanged" is answered without opening the file, and a reader that cannot open the file
  (analytics/sandbox.py) builds the same views from the manifest in memory.

Writers of one dataset take a lock file (``<root>/.locks/<dataset>.lock``) around read-modify-write,
so the freshness sensor and a partition run never interleave.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from housekeeping.atomic import fsync_directory
from housekeeping.errors import HkError, first_line
from housekeeping.sql import sql_string

META_TABLE = "_analytics_meta"
SCHEMA_FILE = "_schema.parquet"
LOCK_WAIT_SECONDS = 120.0
# The partition key of an hourly dataset's file: ``requests_minute/2026-05-01T13.parquet``.
HOUR_FILE_FORMAT = "%Y-%m-%dT%H"


class PublishError(HkError):
    """The published location cannot be written, or holds something we did not publish."""


def hour_key(hour: datetime, key_format: str = HOUR_FILE_FORMAT) -> str:
    """The name of the UTC hour of ``hour`` (an aware datetime): its file key, ``2026-05-01T13``.

    Another ``key_format`` names it otherwise: the Dagster partition key uses Dagster's own
    hourly format (analytics/defs/partitions.py), whose colon a file name should not carry.
    """
    return hour.astimezone(UTC).strftime(key_format)


@contextmanager
def exclusive_lock(
    path: Path, wait_seconds: float, error: Callable[[], Exception]
) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created) across processes; raises ``error()``
    when another process held it for ``wait_seconds``."""
    with open(path, "a+") as handle:
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise error() from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class RollupStore:
    """The Parquet datasets under ``root`` and the views file at ``database``."""

    def __init__(self, root: Path, database: Path) -> None:
        self.root = Path(root)
        self.database = Path(database)

    def dataset_path(self, dataset: str) -> Path:
        return self.root / dataset

    def dataset_glob(self, dataset: str) -> str:
        return str(self.dataset_path(dataset) / "*.parquet")

    def partition_path(self, dataset: str, key: str) -> Path:
        return self.dataset_path(dataset) / f"{key}.parquet"

    def partition_keys(self, dataset: str) -> list[str]:
        folder = self.dataset_path(dataset)
        if not folder.is_dir():
            return []
        return sorted(path.stem for path in folder.glob("*.parquet") if path.name != SCHEMA_FILE)

    def prepare(self, datasets: dict[str, Sequence[tuple[str, str]]]) -> None:
        """Create the dataset folders, each with its empty schema file.

        ``datasets`` maps a dataset to its (column, DuckDB type) pairs.
        """
        try:
            missing = {}
            for dataset, columns in datasets.items():
                folder = self.dataset_path(dataset)
                folder.mkdir(parents=True, exist_ok=True)
                schema_file = folder / SCHEMA_FILE
                names = [name for name, _ in columns]
                if not schema_file.exists() or pq.read_schema(schema_file).names != names:
                    missing[dataset] = columns
            if not missing:
                return
            with duckdb.connect() as connection:
                for dataset, columns in missing.items():
                    select = ", ".join(f"NULL::{kind} AS {name}" for name, kind in columns)
                    self.replace_partition(
                        connection,
                        dataset,
                        SCHEMA_FILE.removesuffix(".parquet"),
                        f"SELECT {select} LIMIT 0",
                    )
        except OSError as exc:
            raise PublishError(f"analytics.root: cannot write under {self.root}: {exc}") from None

    @contextmanager
    def writing(self, dataset: str, wait_seconds: float = LOCK_WAIT_SECONDS) -> Iterator[None]:
        """Exclusive right to rewrite ``dataset``'s partitions (across processes)."""
        locks = self.root / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(
            locks / f"{dataset}.lock",
            wait_seconds,
            lambda: PublishError(
                f"another process has been writing {dataset} for over "
                f"{wait_seconds:.0f} s (lock {locks / f'{dataset}.lock'})"
            ),
        ):
            yield

    def replace_partition(
        self, connection: duckdb.DuckDBPyConnection, dataset: str, key: str, select: str
    ) -> int:
        """Write ``select``'s rows as partition ``key`` of ``dataset``; return the row count."""
        final = self.partition_path(dataset, key)
        temporary = final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")
        try:
            connection.execute(
                f"COPY ({select}) TO {sql_string(str(temporary))} "
                "(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 122880)"
            )
            with open(temporary, "rb") as handle:
                os.fsync(handle.fileno())
            rows = pq.read_metadata(temporary).num_rows
            os.replace(temporary, final)
            fsync_directory(final.parent)
        finally:
            temporary.unlink(missing_ok=True)
        return rows

    def existing_partition(self, dataset: str, key: str) -> Path | None:
        path = self.partition_path(dataset, key)
        return path if path.exists() else None

    # ----------------------------------------------------------------------------------------
    # The views file

    @property
    def manifest_path(self) -> Path:
        """Where the manifest of the published views file lives: beside it, hidden."""
        return self.database.with_name(f".{self.database.name}.views.json")

    def published_manifest(self) -> ViewsManifest | None:
        """What the last publish recorded; None when there is none (or it cannot be read)."""
        try:
            data = json.loads(self.manifest_path.read_text())
            return ViewsManifest(
                version=str(data["version"]),
                identity=(int(data["identity"][0]), int(data["identity"][1])),
                root=str(data["root"]),
                statements=tuple(str(statement) for statement in data["statements"]),
            )
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            # A missing or garbled manifest only costs a check of the file (and a republish).
            return None

    def _refuse_unless_published(self) -> None:
        """Raise unless the file at the published path is a views file we published.

        Only for a file the manifest does not name (published before manifests, or put there by
        someone else): one that is not a DuckDB database, or one without our meta table, is
        refused rather than overwritten, since it may be somebody's data. When another process
        holds the file read-write (DuckDB then refuses even read-only openers), a private copy
        of it is inspected instead.
        """
        foreign = PublishError(
            f"analytics.database: {self.database} is a DuckDB database that was not "
            f"published by the analytics pipeline (it has no {META_TABLE} table); move "
            "it away or point analytics.database elsewhere"
        )
        try:
            _inspect_views_file(self.database)
            return
        except _NotOurs:
            raise foreign from None
        except duckdb.Error:
            pass  # held by another process, or not a database: look at a copy
        with tempfile.TemporaryDirectory(dir=self.database.parent, prefix=".inspect-") as folder:
            copy = Path(folder) / self.database.name
            try:
                shutil.copyfile(self.database, copy)
                _inspect_views_file(copy)
            except duckdb.Error as exc:
                raise PublishError(
                    f"analytics.database: {self.database} is not a readable DuckDB database "
                    f"({first_line(exc)}); move it away or point analytics.database elsewhere"
                ) from None
            except _NotOurs:
                raise foreign from None

    def publish_views(self, statements: Sequence[str]) -> bool:
        """Make the views file hold exactly ``statements``; False when it already did.

        The new file is built beside the old one and renamed over it; the old file is never
        opened (see the module docstring). Raises PublishError for a file at the published path
        that we did not publish, or when the folder cannot be written.
        """
        version = hashlib.sha256("\n;\n".join(statements).encode()).hexdigest()
        manifest = self.published_manifest()
        identity = _identity(self.database)
        if identity is not None and manifest is not None and manifest.identity == identity:
            if manifest.version == version:
                return False
        elif identity is not None:
            self._refuse_unless_published()
        self.database.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.database.with_name(f".{self.database.name}.{uuid.uuid4().hex}.tmp")
        try:
            connection = duckdb.connect(str(temporary))
            try:
                for statement in statements:
                    connection.execute(statement)
                connection.execute(
                    f"CREATE TABLE {META_TABLE} AS SELECT ? AS version, now() AS published_at",
                    [version],
                )
                connection.execute("CHECKPOINT")
            finally:
                connection.close()
            with open(temporary, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(temporary, self.database)
            # A write-ahead log at the published path belongs to a session on the file just
            # replaced (a read-write session writes it by path): beside the new file, DuckDB
            # would refuse to open it ("WAL does not match database file"). The session keeps
            # its own open handle.
            Path(f"{self.database}.wal").unlink(missing_ok=True)
            fsync_directory(self.database.parent)
            new_identity = _identity(self.database)
            assert new_identity is not None  # just renamed into place
            self._write_manifest(
                ViewsManifest(version, new_identity, str(self.root), tuple(statements))
            )
        except duckdb.Error as exc:
            raise PublishError(f"building the views file: {first_line(exc)}") from None
        except OSError as exc:
            raise PublishError(
                f"analytics.database: cannot write {self.database}: {exc.strerror or exc}"
            ) from None
        finally:
            temporary.unlink(missing_ok=True)
            Path(f"{temporary}.wal").unlink(missing_ok=True)
        return True

    def _write_manifest(self, manifest: ViewsManifest) -> None:
        final = self.manifest_path
        temporary = final.with_name(f"{final.name}.{uuid.uuid4().hex}.tmp")
        try:
            temporary.write_text(
                json.dumps(
                    {
                        "version": manifest.version,
                        "identity": list(manifest.identity),
                        "root": manifest.root,
                        "statements": list(manifest.statements),
                    }
                )
            )
            os.replace(temporary, final)
        finally:
            temporary.unlink(missing_ok=True)


@dataclass(frozen=True)
class ViewsManifest:
    """What a publish of the views file recorded beside it.

    ``identity`` is the published file's (device, inode): a file at the path with another
    identity was put there by someone else (or by a publish that died before its manifest).
    ``statements`` are the views file's statements, in order, for readers that cannot open it.
    """

    version: str
    identity: tuple[int, int]
    root: str
    statements: tuple[str, ...]


class _NotOurs(Exception):
    pass


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


def _inspect_views_file(path: Path) -> None:
    """Raise duckdb.Error when ``path`` cannot be opened, _NotOurs without our meta table."""
    connection = duckdb.connect(str(path), read_only=True)
    try:
        found = connection.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [META_TABLE]
        ).fetchone()[0]
    finally:
        connection.close()
    if not found:
        raise _NotOurs


def existing_partition_files(
    store: RollupStore, dataset: str, keys: Sequence[str]
) -> list[Path] | None:
    """The published files among ``dataset``'s partitions ``keys``, in the order of ``keys``.

    For readers that need a few partitions only (the alert metrics read the hours of one window)
    without knowing how the files are laid out. None when ``dataset`` was never published (it has
    no folder); an empty list when none of ``keys`` is published.
    """
    if not store.dataset_path(dataset).is_dir():
        return None
    return [path for key in keys if (path := store.existing_partition(dataset, key)) is not None]


@dataclass(frozen=True)
class PublishedSpan:
    """What a dataset's folder holds: its partition keys and the gaps between them.

    ``kind`` is read from the keys themselves: ``hourly`` (UTC hour keys), ``daily`` (dates), or
    ``other`` (a dataset rewritten whole); ``missing`` are the keys absent between the first and
    the newest (hours or days).
    """

    dataset: str
    kind: str
    keys: tuple[str, ...]
    missing: tuple[str, ...]


def published_span(store: RollupStore, dataset: str) -> PublishedSpan:
    """The published partitions of ``dataset`` (from its folder; nothing is opened)."""
    keys = tuple(store.partition_keys(dataset))
    hours = _parsed(keys, lambda key: datetime.strptime(key, HOUR_FILE_FORMAT).replace(tzinfo=UTC))
    if hours:
        expected = _every(hours[0], hours[-1], timedelta(hours=1))
        missing = tuple(hour_key(hour) for hour in expected if hour not in set(hours))
        return PublishedSpan(dataset, "hourly", keys, missing)
    days = _parsed(keys, date.fromisoformat)
    if days:
        expected = _every(days[0], days[-1], timedelta(days=1))
        missing = tuple(day.isoformat() for day in expected if day not in set(days))
        return PublishedSpan(dataset, "daily", keys, missing)
    return PublishedSpan(dataset, "other", keys, ())


def _parsed(keys: Sequence[str], parse) -> list:
    """Every key parsed, in order; [] when there is none or one does not parse."""
    try:
        return sorted(parse(key) for key in keys)
    except ValueError:
        return []


def _every(first, last, step: timedelta) -> list:
    values, value = [], first
    while value <= last:
        values.append(value)
        value += step
    return values
