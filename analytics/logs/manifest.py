"""Which bytes of which log file were read: the manifest that makes log ingestion exactly once.

A log file is known by the fingerprint of its first line (SHA-256 of its first complete line, at
most ``FINGERPRINT_BYTES``), not by its name: the same content is one *stream* whether it is
``app.log``, renamed to ``app.log.1`` by rotation or compressed to ``app.log.1.gz``. Per stream
the manifest keeps the offset read so far (bytes of the uncompressed content, always just after a
newline) and where it was last seen (path, device, inode, size, mtime). So:

- growth: the bytes past the offset are read;
- rename: the renamed file has the same fingerprint, reading goes on from the offset;
- compression: the ``.gz`` has the same fingerprint; its gzip trailer (ISIZE, the uncompressed
  size mod 2^32) equals the offset when everything was read, else the rest is decompressed;
- copytruncate: the copy keeps the fingerprint (its tail is read), the truncated file starts with
  a new first line, so it is a new stream read from 0.

The manifest is one JSON file replaced by rename after the staged rows of a tick are on disk;
staged files of a sequence number the manifest does not list are a crashed tick's and are deleted
on the next load, so a crash between the two writes re-reads the same bytes, once.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from analytics.publish import exclusive_lock
from housekeeping.errors import HkError

FINGERPRINT_BYTES = 4096
MANIFEST_NAME = "manifest.json"
LOCK_WAIT_SECONDS = 120.0


class LogSourceError(HkError):
    """A log file or directory cannot be read, or the manifest is damaged."""


@dataclass
class StreamState:
    """One stream (content identified by its first line): how far it was read, where it was."""

    offset: int = 0
    path: str = ""
    device: int = 0
    inode: int = 0
    size: int = 0
    mtime: float = 0.0
    compressed: bool = False
    # Everything read (a .gz whose trailer matched the offset): not opened again while the
    # file's identity, size and mtime are unchanged.
    complete: bool = False
    failed: str = ""


@dataclass
class Chunk:
    """One tick's staged rows: its sequence number, row count, time span (UTC ISO, or '')."""

    seq: int
    rows: int
    ts_min: str = ""
    ts_max: str = ""
    # The UTC hour (ISO) the tick ran in: its line counts belong to that hour.
    hour: str = ""


@dataclass
class Manifest:
    next_seq: int = 1
    streams: dict[str, StreamState] = field(default_factory=dict)
    chunks: list[Chunk] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": 1,
                "next_seq": self.next_seq,
                "streams": {key: asdict(state) for key, state in self.streams.items()},
                "chunks": [asdict(chunk) for chunk in self.chunks],
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        return cls(
            int(data["next_seq"]),
            {key: StreamState(**value) for key, value in data["streams"].items()},
            [Chunk(**value) for value in data["chunks"]],
        )


class ManifestStore:
    """The manifest file and the staged files of one log source, under ``directory``.

    Layout: ``manifest.json``, ``staged/<seq>.parquet`` (rows), ``lines/<seq>.parquet`` (line
    counts per file and reason), ``tmp/`` (byte slices of a tick in flight), ``ingest.lock``.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.staged = directory / "staged"
        self.lines = directory / "lines"
        self.tmp = directory / "tmp"

    def staged_file(self, seq: int) -> Path:
        return self.staged / f"{seq:010d}.parquet"

    def lines_file(self, seq: int) -> Path:
        return self.lines / f"{seq:010d}.parquet"

    @contextlib.contextmanager
    def locked(self, wait_seconds: float = LOCK_WAIT_SECONDS) -> Iterator[None]:
        """One ingesting process at a time (the freshness sensor and a partition run may meet)."""
        for folder in (self.directory, self.staged, self.lines, self.tmp):
            folder.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(
            self.directory / "ingest.lock",
            wait_seconds,
            lambda: LogSourceError(
                f"{self.directory}: another process has been reading these log files for over "
                f"{wait_seconds:.0f} s"
            ),
        ):
            yield

    def load(self) -> Manifest:
        """The manifest (empty when none yet); staged files it does not list are deleted."""
        path = self.directory / MANIFEST_NAME
        manifest = Manifest()
        if path.exists():
            try:
                manifest = Manifest.from_json(path.read_text())
            except (ValueError, KeyError, TypeError) as exc:
                raise LogSourceError(f"{path}: damaged log manifest ({exc})") from None
        for folder in (self.staged, self.lines):
            for file in folder.glob("*.parquet*"):
                stem = file.name.split(".")[0]
                if not stem.isdigit() or int(stem) >= manifest.next_seq:
                    file.unlink(missing_ok=True)
        for file in self.tmp.glob("*"):
            file.unlink(missing_ok=True)
        return manifest

    def save(self, manifest: Manifest) -> None:
        """Replace the manifest atomically (written, fsynced, renamed, directory fsynced)."""
        path = self.directory / MANIFEST_NAME
        draft = path.with_name(f"{MANIFEST_NAME}.{os.getpid()}.tmp")
        with open(draft, "w") as handle:
            handle.write(manifest.to_json())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(draft, path)
        descriptor = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def is_gzip(path: Path) -> bool:
    return path.name.endswith(".gz")


def first_line(path: Path) -> bytes | None:
    """The first complete line (at most FINGERPRINT_BYTES; a longer first line counts by its
    first FINGERPRINT_BYTES) of the file's content; None while it has no complete line yet. A
    ``.gz`` is complete: its content without a newline is its first line (None when empty).

    Raises OSError (unreadable) or EOFError/zlib.error/gzip.BadGzipFile (a damaged .gz).
    """
    if is_gzip(path):
        with gzip.open(path, "rb") as handle:
            head = handle.read(FINGERPRINT_BYTES)
    else:
        with open(path, "rb") as handle:
            head = handle.read(FINGERPRINT_BYTES)
    end = head.find(b"\n")
    if end >= 0:
        return head[: end + 1]
    return head if len(head) >= FINGERPRINT_BYTES or (head and is_gzip(path)) else None


def fingerprint(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()[:32]


def gzip_isize(path: Path) -> int:
    """The uncompressed size mod 2^32 a gzip file's trailer records (its last 4 bytes)."""
    with open(path, "rb") as handle:
        handle.seek(-4, os.SEEK_END)
        return int.from_bytes(handle.read(4), "little")


def last_newline_end(path: Path, start: int, size: int) -> int:
    """The position just after the last newline in ``[start, size)`` of a plain file; ``start``
    when there is none (a line still being written)."""
    block = 1 << 16
    with open(path, "rb") as handle:
        position = size
        while position > start:
            low = max(start, position - block)
            handle.seek(low)
            data = handle.read(position - low)
            found = data.rfind(b"\n")
            if found >= 0:
                return low + found + 1
            position = low
    return start


def copy_range(source: Path, target: Path, start: int, end: int) -> None:
    """Bytes ``[start, end)`` of ``source`` into a new file ``target`` (kernel-side copy)."""
    with open(source, "rb") as src, open(target, "wb") as dst:
        remaining = end - start
        offset = start
        while remaining > 0:
            try:
                copied = os.copy_file_range(src.fileno(), dst.fileno(), remaining, offset)
            except OSError:
                src.seek(offset)
                data = src.read(min(remaining, 1 << 24))
                dst.write(data)
                copied = len(data)
            if copied == 0:
                break
            offset += copied
            remaining -= copied


def gunzip_from(source: Path, target: Path, skip: int) -> int:
    """Decompress ``source`` into ``target`` leaving out its first ``skip`` bytes; returns the
    uncompressed size. Raises EOFError, zlib.error or gzip.BadGzipFile for a damaged file."""
    total = 0
    with gzip.open(source, "rb") as src, open(target, "wb") as dst:
        while True:
            data = src.read(1 << 22)
            if not data:
                break
            begin = total
            total += len(data)
            if total > skip:
                dst.write(data[max(0, skip - begin) :])
    return total


GZIP_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)
