"""Which bytes of which log file were read: the manifest that makes log ingestion exactly once.

A *stream* is one content, wherever it is: ``app.log``, renamed to ``app.log.1`` by rotation,
copied by copytruncate, compressed to ``app.log.1.gz``. Per stream the manifest keeps the offset
read so far (bytes of the uncompressed content, always just after a newline), where it was last
seen (path, device, inode, size, mtime) and what tells it from another stream beginning with the
same line (a start-up banner): the fingerprints (SHA-256, 32 hex digits) of its first line, of
its ``WINDOW_BYTES`` before the offset (``mark``) and of its first ``WINDOW_BYTES`` (``prefix``).
A file holds a stream when it starts with the same line, is at least as long as the offset and
has the same bytes before it (ingest.py, ``_plan``). So:

- growth: the file at the stream's device and inode still holds it; the bytes past the offset
  are read;
- truncation (copytruncate, or any rewrite): the file at that inode is shorter than the offset or
  differs before it: it is a new stream read from 0, even when its first line is the old one;
- rename: the same inode, read on from the offset;
- copy (copytruncate's ``app.log.1``): a new inode holding the stream: read on from the offset,
  or, while the original still holds it, only past what the original gives;
- compression: the ``.gz`` decompresses (``gunzip``) to content holding the stream: only what
  was not read is read; a ``.gz`` cut short or damaged gives its complete lines before the damage.

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
    # What tells this stream from another starting with the same line: the fingerprint of its
    # first line, of its bytes [offset - WINDOW_BYTES, offset) and of its first WINDOW_BYTES
    # (fewer when offset is smaller). Empty in a manifest written before they were kept.
    head: str = ""
    mark: str = ""
    prefix: str = ""


@dataclass
class Chunk:
    """One tick's staged rows: its sequence number, row count, time span (UTC ISO, or '')."""

    seq: int
    rows: int
    ts_min: str = ""
    ts_max: str = ""
    # The UTC hour (ISO) the tick ran in: its line counts belong to that hour.
    hour: str = ""
    # A job source's compaction (analytics/logs/jobs.py): ``compacted``, the chunk is the job
    # state of the chunks folded into it (hour ''); ``folded``, its rows are in a later
    # compacted chunk (its staged file is no longer read; its line counts still are).
    compacted: bool = False
    folded: bool = False


@dataclass
class Manifest:
    next_seq: int = 1
    streams: dict[str, StreamState] = field(default_factory=dict)
    chunks: list[Chunk] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": 2,
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
            {
                # a manifest of version 1 keyed its streams by their first line's fingerprint
                key: StreamState(**({"head": key} if len(key) == 32 else {}) | value)
                for key, value in data["streams"].items()
            },
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


WINDOW_BYTES = 4096


def mark(data: bytes) -> str:
    """The fingerprint of a window of content (``StreamState.mark`` and ``prefix``)."""
    return hashlib.sha256(data).hexdigest()[:32]


def read_window(path: Path, end: int) -> bytes:
    """Bytes ``[max(0, end - WINDOW_BYTES), end)`` of a plain file (fewer when it is shorter)."""
    with open(path, "rb") as handle:
        handle.seek(max(0, end - WINDOW_BYTES))
        return handle.read(min(end, WINDOW_BYTES))


@dataclass
class GzipContent:
    """What a .gz decompresses to, as far as it does.

    ``size``: uncompressed bytes decoded; ``complete``: every member ended with a valid trailer
    (else it is truncated or damaged from ``size`` on); ``lines_end``: the end of the readable
    lines (``size`` when complete: a last line without a newline is a line; else just after the
    last newline decoded); ``prefix``: its first ``WINDOW_BYTES``; ``windows``: per position
    asked for, the ``WINDOW_BYTES`` before it (absent when not decoded that far); ``last``: the
    ``WINDOW_BYTES`` before ``lines_end``.
    """

    size: int = 0
    complete: bool = False
    lines_end: int = 0
    prefix: bytes = b""
    windows: dict[int, bytes] = field(default_factory=dict)
    last: bytes = b""


def gunzip(
    source: Path, target: Path | None = None, skip: int = 0, at: tuple[int, ...] = ()
) -> GzipContent:
    """Decompress ``source`` (every gzip member) as far as it decodes, writing its readable lines
    past the first ``skip`` bytes to ``target`` (when given; without a partial last line when
    the file is cut short or damaged). Never raises for a damaged .gz (``complete`` is False);
    OSError when it cannot be read."""
    out = GzipContent()
    decoder = zlib.decompressobj(31)
    boundary = False  # a member ended and nothing of another one began yet
    failed = False
    tail = bytearray()  # the last WINDOW_BYTES decoded (from tail_start on) and the new chunk
    tail_start = 0
    with contextlib.ExitStack() as files:
        src = files.enter_context(open(source, "rb"))
        dst = files.enter_context(open(target, "wb")) if target is not None else None
        pending = b""
        while True:
            data, pending = pending or src.read(1 << 20), b""
            if not data:
                break
            if boundary:
                if not data.strip(b"\0"):
                    continue  # zero padding after the last member
                decoder, boundary = zlib.decompressobj(31), False
            saved = decoder.copy()
            try:
                chunk = decoder.decompress(data)
            except zlib.error:
                # damaged: again in small steps, keeping what decodes before the damage
                decoder, chunk, failed = saved, b"", True
                for step in range(0, len(data), 256):
                    try:
                        chunk += decoder.decompress(data[step : step + 256])
                    except zlib.error:
                        break
            if decoder.eof and not failed:
                boundary, pending = True, decoder.unused_data
            if not chunk:
                if failed:
                    break
                continue
            begin = out.size
            out.size += len(chunk)
            if len(out.prefix) < WINDOW_BYTES:
                out.prefix += chunk[: WINDOW_BYTES - len(out.prefix)]
            tail += chunk
            for position in at:
                if begin < position <= out.size:
                    low = max(0, position - WINDOW_BYTES) - tail_start
                    out.windows[position] = bytes(tail[low : position - tail_start])
            if dst is not None and out.size > skip:
                dst.write(chunk[max(0, skip - begin) :])
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                out.lines_end = begin + newline + 1
                low = max(0, out.lines_end - WINDOW_BYTES) - tail_start
                out.last = bytes(tail[low : out.lines_end - tail_start])
            cut = max(0, out.size - WINDOW_BYTES - tail_start)  # the next windows need no more
            del tail[:cut]
            tail_start += cut
            if failed:
                break
        out.complete = boundary and not failed
        if out.complete:
            out.lines_end = out.size
            out.last = bytes(tail[-WINDOW_BYTES:])
        elif dst is not None:
            dst.truncate(max(0, out.lines_end - skip))
        for position in at:
            if position == 0:
                out.windows[0] = b""
    return out
