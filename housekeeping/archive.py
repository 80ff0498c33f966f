"""A lossless archive of deleted rows: Parquet files per table and day, with a manifest.

The protocol that makes it lossless and duplicate-free across crashes:

1. the rows a batch deletes are written to ``<file>.parquet.pending`` and fsynced,
2. then the database transaction that deletes them commits,
3. then the file is renamed to ``<file>.parquet`` and entered in the day's ``_manifest.json``.

A crash before 2 leaves a pending file whose rows are still in the table; a crash after 2 leaves
one whose rows are gone. ``recover`` tells the two apart by looking the rows' primary keys up,
discarding the first kind (the rows will be archived again) and finishing the second.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import BinaryIO, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from housekeeping.atomic import (
    MANIFEST_NAME,
    DiskFull,
    ManifestStore,
    fsync_directory,
    is_disk_full,
    publish_manifest,
    replace_durably,
    write_durably,
)
from housekeeping.errors import HkError

PENDING_SUFFIX = ".parquet.pending"


# Files are read and hashed in pieces of this many bytes.
CHUNK = 1 << 20


class ArchiveError(HkError):
    """The archive root cannot be written or holds something unexpected."""


class ArchiveStore(Protocol):
    """Where archive files live. Local directories today; object storage can implement this."""

    def describe(self) -> str: ...

    def check_writable(self, *, create: bool = True) -> str: ...

    def write_durably(self, path: str, data: bytes) -> None: ...

    def replace_durably(self, path: str, data: bytes) -> None: ...

    def write_stream_durably(self, path: str, write: Callable[[BinaryIO], None]) -> str: ...

    def rename(self, source: str, target: str) -> None: ...

    def read_bytes(self, path: str) -> bytes: ...

    def sha256(self, path: str) -> tuple[int, str]: ...

    def remove(self, path: str) -> None: ...

    def list_files(self, prefix: str, suffix: str) -> list[str]: ...

    def size(self, path: str) -> int: ...


class LocalArchiveStore:
    """A directory on local disk; every write is fsynced along with its directory."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def describe(self) -> str:
        return str(self.root)

    def check_writable(self, *, create: bool = True) -> str:
        """Can the root be written (a probe file written and removed)? ``create``: make the
        root first (a run); else a missing root is judged by its nearest existing parent,
        and nothing is left behind (`hk config check`). Returns one line saying so;
        ArchiveError naming archive.root otherwise."""
        probe = self.root / f".hk-write-probe-{os.getpid()}"
        try:
            if create:
                self.root.mkdir(parents=True, exist_ok=True)
            elif not self.root.exists():
                parent = next(path for path in self.root.absolute().parents if path.exists())
                if not (parent.is_dir() and os.access(parent, os.W_OK | os.X_OK)):
                    raise PermissionError(errno.EACCES, f"{parent} cannot be written")
                return f"archive.root: {self.root} does not exist yet; the first run creates it"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise ArchiveError(
                f"archive.root: cannot write to {self.root} ({exc.strerror or exc})"
            ) from None
        return f"archive.root: {self.root} is writable"

    def _path(self, path: str) -> Path:
        return self.root / path

    def write_durably(self, path: str, data: bytes) -> None:
        """Write ``data`` to ``path`` (under the root) and fsync it; DiskFull naming
        archive.root when the root's device is full (the partial file removed)."""
        target = self._path(path)
        with self._full_is_named(path):
            self._make_dirs(target.parent)
            write_durably(target, lambda handle: handle.write(data))

    def replace_durably(self, path: str, data: bytes) -> None:
        """Replace ``path`` (under the root) with ``data`` atomically (a temporary beside it,
        fsynced, renamed); DiskFull naming archive.root as ``write_durably``."""
        target = self._path(path)
        with self._full_is_named(path):
            self._make_dirs(target.parent)
            replace_durably(target, lambda handle: handle.write(data))

    def write_stream_durably(self, path: str, write: Callable[[BinaryIO], None]) -> str:
        """Let ``write`` stream into the file, fsync it, and return its sha256."""
        target = self._path(path)
        with self._full_is_named(path):
            self._make_dirs(target.parent)
            write_durably(target, write)
        return self.sha256(path)[1]

    @contextlib.contextmanager
    def _full_is_named(self, path: str) -> Iterator[None]:
        try:
            yield
        except (DiskFull, OSError) as exc:
            if isinstance(exc, OSError) and not is_disk_full(exc):
                raise
            raise DiskFull(
                f"archive.root: {self.root} is full (writing {path}); the partial copy was "
                "removed and its source kept. Free space there or point archive.root at a "
                "bigger disk, then rerun"
            ) from None

    def size(self, path: str) -> int:
        return self._path(path).stat().st_size

    def rename(self, source: str, target: str) -> None:
        destination = self._path(target)
        os.replace(self._path(source), destination)
        fsync_directory(destination.parent)

    def read_bytes(self, path: str) -> bytes:
        return self._path(path).read_bytes()

    def sha256(self, path: str) -> tuple[int, str]:
        """(size in bytes, sha256 hex) of a stored file, streamed (never read whole)."""
        return file_sha256(self._path(path))

    def remove(self, path: str) -> None:
        target = self._path(path)
        target.unlink(missing_ok=True)
        fsync_directory(target.parent)

    def list_files(self, prefix: str, suffix: str) -> list[str]:
        base = self._path(prefix)
        if not base.exists():
            return []
        return sorted(
            str(found.relative_to(self.root))
            for found in base.rglob(f"*{suffix}")
            if found.is_file()
        )

    def _make_dirs(self, directory: Path) -> None:
        missing = []
        while not directory.exists():
            missing.append(directory)
            directory = directory.parent
        for created in reversed(missing):
            created.mkdir(exist_ok=True)
            fsync_directory(created.parent)


def read_manifest(store: ManifestStore, directory: str, empty: dict) -> dict:
    """The ``_manifest.json`` of an archive folder (a copy of ``empty`` when there is none
    yet); ArchiveError naming it when it is not JSON."""
    path = f"{directory}/{MANIFEST_NAME}"
    try:
        return json.loads(store.read_bytes(path))
    except FileNotFoundError:
        return dict(empty, files=[])
    except json.JSONDecodeError as exc:
        raise ArchiveError(f"archive manifest {path} is corrupt: {exc}") from None


def file_sha256(path: Path) -> tuple[int, str]:
    """(size in bytes, sha256 hex) of a local file, read in CHUNK (1 MiB) pieces."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


@dataclass(frozen=True)
class ArchivedFile:
    file: str
    rows: int
    bytes: int
    sha256: str
    run_id: str
    archived_at: str
    min_cutoff: str | None
    max_cutoff: str | None


@dataclass(frozen=True)
class StagedFile:
    pending_path: str
    final_path: str
    entry: ArchivedFile


@dataclass(frozen=True)
class RecoveryResult:
    completed: int = 0
    discarded: int = 0
    rows_completed: int = 0


PARTITION_MARKER = "-partition-"


def partition_file_name(run_id: str, partition: str) -> str:
    return f"{run_id}{PARTITION_MARKER}{partition}"


def partition_of(path: str) -> str | None:
    name = path.rsplit("/", 1)[-1].removesuffix(PENDING_SUFFIX).removesuffix(".parquet")
    return name.split(PARTITION_MARKER, 1)[1] if PARTITION_MARKER in name else None


def archive_day_dir(table: str, day: date) -> str:
    return f"{table}/date={day.isoformat()}"


class TableArchive:
    """The archive of one table: ``<root>/<table>/date=<YYYY-MM-DD>/<run>-<seq>.parquet``."""

    def __init__(self, store: ArchiveStore, table: str, cutoff_column: str) -> None:
        self.store = store
        self.table = table
        self.cutoff_column = cutoff_column

    def stage(self, rows: pa.Table, *, run_id: str, sequence: int, now: datetime) -> StagedFile:
        """Write the rows a batch is deleting, durably, before the batch commits."""
        rows = parquet_writable(rows)
        sink = pa.BufferOutputStream()
        # No dictionary: token hashes, ids and timestamps rarely repeat, so building one per
        # column costs time and saves nothing.
        pq.write_table(rows, sink, compression="zstd", use_dictionary=False)
        data = sink.getvalue().to_pybytes()
        name = f"{run_id}-{sequence:06d}.parquet"
        directory = archive_day_dir(self.table, now.astimezone(UTC).date())
        minimum, maximum = _cutoff_range(rows, self.cutoff_column)
        entry = ArchivedFile(
            file=name,
            rows=rows.num_rows,
            bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            run_id=run_id,
            archived_at=now.astimezone(UTC).isoformat(),
            min_cutoff=minimum,
            max_cutoff=maximum,
        )
        pending = f"{directory}/{name[: -len('.parquet')]}{PENDING_SUFFIX}"
        self.store.write_durably(pending, data)
        return StagedFile(pending, f"{directory}/{name}", entry)

    def stage_stream(
        self, batches: pa.RecordBatchReader, *, name: str, run_id: str, now: datetime
    ) -> StagedFile:
        """Like ``stage`` for data too big for memory (a whole partition), batch by batch."""
        directory = archive_day_dir(self.table, now.astimezone(UTC).date())
        pending = f"{directory}/{name}{PENDING_SUFFIX}"
        rows = 0
        low = high = None

        def write(handle: BinaryIO) -> None:
            nonlocal rows, low, high
            schema = parquet_writable_schema(batches.schema)
            with pq.ParquetWriter(handle, schema, compression="zstd") as writer:
                for batch in batches:
                    if batch.num_rows == 0:
                        continue
                    batch = parquet_writable(batch)
                    writer.write_batch(batch)
                    rows += batch.num_rows
                    batch_low, batch_high = _cutoff_range(
                        pa.Table.from_batches([batch]), self.cutoff_column
                    )
                    low = batch_low if low is None or (batch_low and batch_low < low) else low
                    high = (
                        batch_high if high is None or (batch_high and batch_high > high) else high
                    )

        sha256 = self.store.write_stream_durably(pending, write)
        entry = ArchivedFile(
            file=f"{name}.parquet",
            rows=rows,
            bytes=self.store.size(pending),
            sha256=sha256,
            run_id=run_id,
            archived_at=now.astimezone(UTC).isoformat(),
            min_cutoff=low,
            max_cutoff=high,
        )
        return StagedFile(pending, f"{directory}/{name}.parquet", entry)

    def commit(self, staged: StagedFile, *, list_in_manifest: bool = True) -> None:
        """After the delete committed: publish the file and enter it in the manifest (or, with
        ``list_in_manifest=False``, leave that to ``list_in_manifests``: a crash in between
        leaves a published file recovery lists)."""
        self.store.rename(staged.pending_path, staged.final_path)
        if list_in_manifest:
            self.list_in_manifests([staged])

    def list_in_manifests(self, published: list[StagedFile]) -> None:
        """Enter published files in their day's manifest: one rewrite per day directory."""
        by_directory: dict[str, list[ArchivedFile]] = {}
        for staged in published:
            by_directory.setdefault(staged.final_path.rsplit("/", 1)[0], []).append(staged.entry)
        for directory, entries in by_directory.items():
            self._add_to_manifest(directory, entries)

    def discard(self, staged: StagedFile) -> None:
        self.store.remove(staged.pending_path)

    def recover(
        self,
        rows_still_in_table: Callable[[pa.Table], bool],
        partition_still_exists: Callable[[str], bool] | None = None,
    ) -> RecoveryResult:
        """Finish or discard what a crashed run left behind, then repair the manifests."""
        completed = discarded = rows_completed = 0
        for pending in self.store.list_files(self.table, PENDING_SUFFIX):
            partition = partition_of(pending)
            if partition is not None and partition_still_exists is not None:
                # A whole partition: it is dropped in the transaction, so it existing means the
                # drop never committed.
                if partition_still_exists(partition):
                    self.store.remove(pending)
                    discarded += 1
                else:
                    self.store.rename(pending, pending[: -len(PENDING_SUFFIX)] + ".parquet")
                    completed += 1
                continue
            data = self.store.read_bytes(pending)
            try:
                rows = pq.read_table(pa.BufferReader(data))
            except (pa.ArrowInvalid, OSError):
                # A torn write: the transaction only commits after the fsync, so it never did.
                self.store.remove(pending)
                discarded += 1
                continue
            if rows.num_rows == 0 or rows_still_in_table(rows):
                self.store.remove(pending)
                discarded += 1
                continue
            final = pending[: -len(PENDING_SUFFIX)] + ".parquet"
            self.store.rename(pending, final)
            completed += 1
            rows_completed += rows.num_rows
        self._repair_manifests()
        return RecoveryResult(completed, discarded, rows_completed)

    def manifest(self, directory: str) -> dict:
        """A day's manifest (empty when there is none yet); ArchiveError when it is corrupt."""
        return read_manifest(self.store, directory, {"table": self.table, "rows": 0})

    def manifests(self) -> dict[str, dict]:
        directories = {
            path.rsplit("/", 1)[0] for path in self.store.list_files(self.table, ".parquet")
        } | {path.rsplit("/", 1)[0] for path in self.store.list_files(self.table, MANIFEST_NAME)}
        return {directory: self.manifest(directory) for directory in sorted(directories)}

    def read_all(self) -> pa.Table | None:
        """Every archived row of this table (for tests, audits and restores)."""
        tables = []
        for directory, manifest in self.manifests().items():
            for entry in manifest["files"]:
                data = self.store.read_bytes(f"{directory}/{entry['file']}")
                if hashlib.sha256(data).hexdigest() != entry["sha256"]:
                    raise ArchiveError(f"checksum mismatch for {directory}/{entry['file']}")
                tables.append(pq.read_table(pa.BufferReader(data)))
        if not tables:
            return None
        return pa.concat_tables(tables, promote_options="permissive")

    def _add_to_manifest(self, directory: str, entries: list[ArchivedFile]) -> None:
        manifest = self.manifest(directory)
        known = {item["file"] for item in manifest["files"]}
        manifest["files"].extend(asdict(entry) for entry in entries if entry.file not in known)
        manifest["rows"] = sum(item["rows"] for item in manifest["files"])
        manifest["table"] = self.table
        manifest["cutoff_column"] = self.cutoff_column
        publish_manifest(self.store, directory, manifest)

    def _repair_manifests(self) -> None:
        """Enter published files a crash left out of their manifest (renamed, not yet listed)."""
        for directory, manifest in self.manifests().items():
            listed = {item["file"] for item in manifest["files"]}
            missing = []
            for path in self.store.list_files(directory, ".parquet"):
                name = path.rsplit("/", 1)[1]
                if name in listed:
                    continue
                data = self.store.read_bytes(path)
                rows = pq.read_table(pa.BufferReader(data))
                minimum, maximum = _cutoff_range(rows, self.cutoff_column)
                missing.append(
                    ArchivedFile(
                        file=name,
                        rows=rows.num_rows,
                        bytes=len(data),
                        sha256=hashlib.sha256(data).hexdigest(),
                        run_id=(
                            name.split(PARTITION_MARKER)[0]
                            if PARTITION_MARKER in name
                            else name.removesuffix(".parquet").rsplit("-", 1)[0]
                        ),
                        archived_at=datetime.now(UTC).isoformat(),
                        min_cutoff=minimum,
                        max_cutoff=maximum,
                    )
                )
            if missing:
                self._add_to_manifest(directory, missing)


# PostgreSQL's interval arrives as Arrow's month_day_nano_interval, which Parquet cannot store;
# it is archived as this struct, losslessly (months and days are not fixed lengths of time).
INTERVAL_STRUCT = pa.struct(
    [("months", pa.int32()), ("days", pa.int32()), ("nanoseconds", pa.int64())]
)


def parquet_writable_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` with every interval column as INTERVAL_STRUCT (what ``parquet_writable``
    makes of its data)."""
    return pa.schema(
        [
            field.with_type(INTERVAL_STRUCT) if pa.types.is_interval(field.type) else field
            for field in schema
        ],
        metadata=schema.metadata,
    )


def parquet_writable(rows: pa.Table | pa.RecordBatch) -> pa.Table | pa.RecordBatch:
    """``rows`` with every interval column (PostgreSQL ``interval``) rewritten as INTERVAL_STRUCT
    {months, days, nanoseconds}, so Parquet can store it; other columns are returned as they are.
    """
    if not any(pa.types.is_interval(field.type) for field in rows.schema):
        return rows
    columns = []
    for field, column in zip(rows.schema, rows.columns, strict=True):
        if pa.types.is_interval(field.type):
            column = pa.array(
                [
                    None
                    if value is None
                    else {
                        "months": value.months,
                        "days": value.days,
                        "nanoseconds": value.nanoseconds,
                    }
                    for value in column.to_pylist()
                ],
                type=INTERVAL_STRUCT,
            )
        columns.append(column)
    schema = parquet_writable_schema(rows.schema)
    if isinstance(rows, pa.RecordBatch):
        return pa.RecordBatch.from_arrays(columns, schema=schema)
    return pa.Table.from_arrays(columns, schema=schema)


def _cutoff_range(rows: pa.Table, column: str) -> tuple[str | None, str | None]:
    if column not in rows.column_names or rows.num_rows == 0:
        return None, None
    import pyarrow.compute as pc

    bounds = pc.min_max(rows.column(column))
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    return (
        low.isoformat() if hasattr(low, "isoformat") else low,
        high.isoformat() if hasattr(high, "isoformat") else high,
    )
