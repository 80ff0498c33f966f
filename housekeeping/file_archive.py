"""A lossless archive of deleted log files: copies per policy and day, with a manifest.

Layout, beside the table archive (archive.py) under the same ``archive.root``::

    <root>/files=<policy>/date=<YYYY-MM-DD>/<file name>        the file, byte for byte
    <root>/files=<policy>/date=<YYYY-MM-DD>/_manifest.json     per file: source name, bytes,
                                                               sha256, mtime, run id

(``files=<policy>``, not ``<policy>``: a table archive is ``<root>/<table>``, and a table may well
be called ``files`` or share a policy's name.)

``date=`` is the UTC day of the file's modification time (the day its last line was written), so
a re-run after a crash puts a file where the crashed run did. The protocol that makes the archive
lossless and duplicate-free across crashes:

1. the file is copied to ``<name>.pending`` in the archive and fsynced (its sha256 checked
   against the bytes read),
2. the copy is renamed to its final name,
3. it is entered in the day's manifest (written to a temporary file, fsynced, renamed),
4. only then is the source deleted (file_retention.py).

A crash before 2 leaves a pending copy whose source still exists: ``recover`` discards it and the
file is copied again. A crash after 2 leaves a copy the manifest does not list: ``recover`` enters
it. A crash after 3 leaves the source, which ``archive`` finds already listed (same source name,
size and sha256) and does not copy twice.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from housekeeping.archive import CHUNK, ArchiveError, ArchiveStore, file_sha256, read_manifest
from housekeeping.atomic import MANIFEST_NAME, TEMPORARY_SUFFIX, publish_manifest

PENDING_SUFFIX = ".pending"
# A stored name taken by another file of the same name (a numbered rotation reuses names): the
# copy is stored as ``<name>~<sha256 prefix>``, a name that depends only on its content.
COLLISION_MARK = "~"
# The archive's own files in a day folder: a log file of one of these names is stored marked.
_OWN_NAMES = (MANIFEST_NAME, f"{MANIFEST_NAME}{TEMPORARY_SUFFIX}")

__all__ = ["CHUNK", "FileArchive", "file_sha256"]


@dataclass(frozen=True)
class ArchivedLogFile:
    """One manifest entry: ``file`` is the stored name, ``source`` the name it had."""

    file: str
    source: str
    bytes: int
    sha256: str
    mtime: str
    run_id: str
    archived_at: str


@dataclass(frozen=True)
class FileRecovery:
    """What ``recover`` did: pending copies discarded, copies entered in their manifest, and
    pending copies kept because their source is gone (reported, never deleted)."""

    discarded: int = 0
    repaired: int = 0
    orphaned: int = 0


def _own_name(name: str) -> bool:
    """Is ``name`` one of the archive's own files in a day folder (the manifest, its temporary,
    a pending copy)? A log file of such a name is stored as ``<name>~<sha256 prefix>``."""
    return name in _OWN_NAMES or name.endswith(PENDING_SUFFIX)


def _source_of(stored: str) -> str:
    """The source name of a stored name: without its ``~<sha256 prefix>`` mark, if it has one
    (``app~1.log`` is its own name)."""
    base, mark, tail = stored.rpartition(COLLISION_MARK)
    return base if mark and re.fullmatch(r"[0-9a-f]{16}", tail) else stored


def _day(mtime_ns: int) -> str:
    return datetime.fromtimestamp(mtime_ns / 1e9, UTC).date().isoformat()


class FileArchive:
    """The archive of one files policy: ``<root>/files=<policy>/date=<day>/``."""

    def __init__(self, store: ArchiveStore, policy: str, directory: str) -> None:
        self.store = store
        self.policy = policy
        self.directory = directory
        self.prefix = f"files={policy}"

    def archive(
        self,
        source: Path,
        mtime_ns: int,
        *,
        run_id: str,
        now: datetime,
        opened: BinaryIO | None = None,
    ) -> ArchivedLogFile:
        """Copy ``source`` (read from ``opened`` when given: the file the caller checked, at its
        start; else opened by name) into the archive and list it in its day's manifest, durably;
        returns its entry. A file listed already (same source name, size and sha256: a crashed
        run got that far) is not stored again. Raises ArchiveError when the copy reads back
        different, FileNotFoundError (nothing stored) when ``source`` is gone."""
        day_dir = f"{self.prefix}/date={_day(mtime_ns)}"
        pending = f"{day_dir}/{source.name}{PENDING_SUFFIX}"
        read = hashlib.sha256()
        size = 0
        # Opened before the pending copy is created: a file gone meanwhile leaves nothing behind.
        original = opened if opened is not None else open(source, "rb")  # noqa: SIM115

        def copy(handle: BinaryIO) -> None:
            nonlocal size
            for chunk in iter(lambda: original.read(CHUNK), b""):
                read.update(chunk)
                size += len(chunk)
                handle.write(chunk)

        try:
            written = self.store.write_stream_durably(pending, copy)
        finally:
            if opened is None:
                original.close()
        if written != read.hexdigest():
            self.store.remove(pending)
            raise ArchiveError(
                f"archive copy of {source} reads back different from the file (sha256 "
                f"{written} != {read.hexdigest()}); the file was kept"
            )
        manifest = self.manifest(day_dir)
        for entry in manifest["files"]:
            if (entry["source"], entry["sha256"], entry["bytes"]) == (source.name, written, size):
                self.store.remove(pending)
                return ArchivedLogFile(**entry)
        taken = {entry["file"] for entry in manifest["files"]}
        stored = source.name
        if stored in taken or _own_name(stored) or self._exists(f"{day_dir}/{stored}"):
            stored = f"{source.name}{COLLISION_MARK}{written[:16]}"
        entry = ArchivedLogFile(
            file=stored,
            source=source.name,
            bytes=size,
            sha256=written,
            mtime=datetime.fromtimestamp(mtime_ns / 1e9, UTC).isoformat(),
            run_id=run_id,
            archived_at=now.astimezone(UTC).isoformat(),
        )
        self.store.rename(pending, f"{day_dir}/{stored}")
        self._add_to_manifest(day_dir, [entry])
        return entry

    def recover(self, source_exists: Callable[[str], bool]) -> FileRecovery:
        """Finish what a crashed run left: discard pending copies whose source (by name) still
        exists, enter published copies their manifest does not list. A pending copy without its
        source is kept and counted as orphaned (it may be the only copy)."""
        discarded = orphaned = repaired = 0
        for pending in self.store.list_files(self.prefix, PENDING_SUFFIX):
            if source_exists(pending.rsplit("/", 1)[1].removesuffix(PENDING_SUFFIX)):
                self.store.remove(pending)
                discarded += 1
            else:
                orphaned += 1
        for day_dir, manifest in self.manifests().items():
            listed = {entry["file"] for entry in manifest["files"]}
            missing = []
            for path in self.store.list_files(day_dir, ""):
                name = path.rsplit("/", 1)[1]
                if name in listed or _own_name(name):
                    continue
                size, sha256 = self.store.sha256(path)
                # The mtime is not known any more; the day folder still gives its day.
                missing.append(
                    ArchivedLogFile(
                        file=name,
                        source=_source_of(name),
                        bytes=size,
                        sha256=sha256,
                        mtime=day_dir.rsplit("date=", 1)[1],
                        run_id="recovered",
                        archived_at=datetime.now(UTC).isoformat(),
                    )
                )
            if missing:
                self._add_to_manifest(day_dir, missing)
                repaired += len(missing)
        return FileRecovery(discarded, repaired, orphaned)

    def manifest(self, day_dir: str) -> dict:
        """A day's manifest (empty when there is none yet); ArchiveError when it is corrupt."""
        return read_manifest(
            self.store, day_dir, {"policy": self.policy, "directory": self.directory, "bytes": 0}
        )

    def manifests(self) -> dict[str, dict]:
        """Every day folder of this policy with its manifest (folders without one included)."""
        days = {path.rsplit("/", 1)[0] for path in self.store.list_files(self.prefix, "")}
        return {day: self.manifest(day) for day in sorted(days)}

    def entries(self) -> list[tuple[str, ArchivedLogFile]]:
        """Every listed file as (stored path, entry), its checksum verified: ArchiveError on a
        mismatch (for tests, audits and restores)."""
        found = []
        for day_dir, manifest in self.manifests().items():
            for item in manifest["files"]:
                entry = ArchivedLogFile(**item)
                path = f"{day_dir}/{entry.file}"
                if self.store.sha256(path)[1] != entry.sha256:
                    raise ArchiveError(f"checksum mismatch for {path}")
                found.append((path, entry))
        return found

    def _exists(self, path: str) -> bool:
        try:
            self.store.size(path)
        except FileNotFoundError:
            return False
        return True

    def _add_to_manifest(self, day_dir: str, entries: list[ArchivedLogFile]) -> None:
        manifest = self.manifest(day_dir)
        known = {item["file"] for item in manifest["files"]}
        manifest["files"].extend(asdict(entry) for entry in entries if entry.file not in known)
        manifest["bytes"] = sum(item["bytes"] for item in manifest["files"])
        manifest["policy"] = self.policy
        manifest["directory"] = self.directory
        publish_manifest(self.store, day_dir, manifest)
