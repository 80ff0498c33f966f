"""Retention for log files (policies of ``kind: files``): compress rotated files, archive then
delete old ones, never touch a file that may still be written.

One run, in this order: check the directory (and the archive root), take the directory's lock,
finish what a crashed run left (a ``.gz.tmp``, a file beside its complete ``.gz``, archive
copies), list the matching files, plan, refuse a suspiciously large delete, then compress and
expire. Which file is in which step:

- **active**: the newest file (by modification time) of its *stream*, the files that are one log
  rotated (``app.log``, ``app.log.1``, ``app.log.2.gz``; ``app-2026-11-30.log``): the one being
  written, kept whatever its age;
- **within grace**: modified less than ``grace`` ago: a writer may still hold it;
- **expiring**: older than ``retention``: copied into the archive (``archive: true``, see
  file_archive.py) and deleted once the copy is listed in the manifest;
- **to compress**: a plain file older than ``compress_after``: gzipped to ``<name>.gz`` (written
  as ``<name>.gz.tmp``, fsynced, renamed with the file's mtime), then the original is deleted.

Ages come from this machine's clock and the files' modification times. A file that changed
between being read and being deleted (size, mtime or inode) is left in place and counted as
``skipped_changed``. A file whose ``.gz`` exists but differs from it is a conflict: neither is
touched, and the run says so.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import gzip
import hashlib
import os
import re
import stat
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from housekeeping.archive import ArchiveStore
from housekeeping.atomic import DiskFull, fsync_directory, replace_durably
from housekeeping.config import ConfigError, HousekeepingConfig
from housekeeping.config_types import format_duration
from housekeeping.file_archive import CHUNK, FileArchive, file_sha256
from housekeeping.history import PolicyRun, RunHistory, RunStatus
from housekeeping.locking import exclusive_flock
from housekeeping.policies import RunOptions, SafetyRefusal, archive_store, failure_recorded
from housekeeping.policy_kinds import FilesPolicy

GZ = ".gz"
TMP = ".gz.tmp"
# gzip's own default (and logrotate's): on JSON lines level 9 costs about twice the time for a
# few percent less.
COMPRESS_LEVEL = 6
# hk_policy_runs.table_name holds at most this many characters.
TARGET_WIDTH = 128
# Unreadable files named in a run's summary line and metadata (all are counted).
NAMED_UNREADABLE = 10

# A rotation's marks in a file name, stripped to find the stream: a date (2026-11-30, 20261130,
# with an hour) after '-', '_' or '.', or a number after '.' (app.log.1, app.1.log). Not a number
# after '-': worker-1.log and worker-2.log are two writers, not one log rotated.
_ROTATION_MARK = re.compile(
    r"(?:[-_.]?\d{4}-?\d{2}-?\d{2}(?:[T_-]?\d{2}(?:-?\d{2}){0,2})?|\.\d{1,6})(?=\.|$)"
)


def stream_of(name: str, pattern: re.Pattern[str] | None = None) -> str:
    """The stream a log file belongs to: by ``pattern`` (its group ``stream``, else its first
    group) when given and matching; else the name without ``.gz`` and its rotation dates and
    numbers: ``app.log.2.gz``, ``app.log-20261130`` and ``app.log`` are all ``app.log``;
    ``app-2026-11-30.log`` is ``app.log``. A name the pattern does not match is its own stream."""
    base = name.removesuffix(GZ)
    if pattern is not None:
        match = pattern.search(base)
        if match is None:
            return base
        return match.group("stream") if "stream" in pattern.groupindex else match.group(1)
    return _ROTATION_MARK.sub("", base) or base


@dataclass(frozen=True)
class LogFile:
    """A matching regular file as listed: sizes in bytes, mtime in ns since the epoch, ``mode``
    its permission bits, ``uid``/``gid`` its owner (given to its .gz)."""

    path: Path
    size: int
    mtime_ns: int
    inode: int
    device: int
    stream: str
    mode: int = 0o644
    uid: int = -1
    gid: int = -1

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def compressed(self) -> bool:
        return self.name.endswith(GZ)

    def age(self, now: datetime) -> timedelta:
        return now - datetime.fromtimestamp(self.mtime_ns / 1e9, UTC)

    def in_future(self, now: datetime) -> bool:
        """Is its modification time after ``now`` (a clock ahead of this host's)?"""
        return self.age(now) < timedelta(0)

    def matches(self, info: os.stat_result) -> bool:
        """Is ``info`` (an lstat or fstat) the file as listed (same inode, size and mtime)?"""
        return (info.st_ino, info.st_dev, info.st_size, info.st_mtime_ns) == (
            self.inode,
            self.device,
            self.size,
            self.mtime_ns,
        )

    def unchanged(self) -> bool:
        """Is the file still the one listed (same inode, size and mtime)?"""
        try:
            return self.matches(self.path.lstat())
        except FileNotFoundError:
            return False

    def open_listed(self) -> BinaryIO | None:
        """The file opened for reading if it is still the one listed, else None (gone,
        replaced under its name, by a symlink too, which is never followed, or written to
        since): what is read is what was planned. PermissionError when it cannot be read."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # a symlink now stands under its name
                return None
            raise
        handle = os.fdopen(fd, "rb")
        if not self.matches(os.fstat(handle.fileno())):
            handle.close()
            return None
        return handle


def _ours(name: str) -> bool:
    """Our own in-progress files, never policy files whatever the glob."""
    return name.endswith(TMP)


def covers(policy: FilesPolicy, name: str) -> bool:
    """Does the policy cover this file name? Its glob, or its glob once ``.gz`` is removed (a
    file the policy compressed stays the policy's)."""
    if _ours(name):
        return False
    return fnmatch.fnmatchcase(name, policy.glob) or (
        name.endswith(GZ) and fnmatch.fnmatchcase(name.removesuffix(GZ), policy.glob)
    )


def list_files(directory: Path, policy: FilesPolicy) -> list[LogFile]:
    """The regular files (no symlinks, no subdirectories) of ``directory`` the policy covers,
    sorted by name."""
    pattern = re.compile(policy.stream_pattern) if policy.stream_pattern else None
    found = []
    with os.scandir(directory) as entries:
        for entry in entries:
            if not covers(policy, entry.name):
                continue
            info = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode):
                continue
            found.append(
                LogFile(
                    path=Path(entry.path),
                    size=info.st_size,
                    mtime_ns=info.st_mtime_ns,
                    inode=info.st_ino,
                    device=info.st_dev,
                    stream=stream_of(entry.name, pattern),
                    mode=stat.S_IMODE(info.st_mode),
                    uid=info.st_uid,
                    gid=info.st_gid,
                )
            )
    return sorted(found, key=lambda item: item.name)


@dataclass
class FilePlan:
    """What a run does with each listed file (each file in exactly one list)."""

    active: list[LogFile] = field(default_factory=list)
    within_grace: list[LogFile] = field(default_factory=list)
    to_compress: list[LogFile] = field(default_factory=list)
    expiring: list[LogFile] = field(default_factory=list)
    kept: list[LogFile] = field(default_factory=list)


def plan_files(files: list[LogFile], policy: FilesPolicy, now: datetime) -> FilePlan:
    """Sort ``files`` into the plan's lists by stream, age and the policy's durations (``now``:
    an aware instant, compared with the files' modification times)."""
    newest: dict[str, LogFile] = {}
    for item in files:
        if item.in_future(now):
            # Within grace whatever its age; the newest of the others is the one being written
            # (a copy from a host whose clock is ahead must not unprotect it).
            continue
        current = newest.get(item.stream)
        if current is None or (item.mtime_ns, item.name) > (current.mtime_ns, current.name):
            newest[item.stream] = item
    plan = FilePlan()
    for item in files:
        age = item.age(now)
        if newest.get(item.stream) is item:
            plan.active.append(item)
        elif age < policy.grace:
            plan.within_grace.append(item)
        elif age > policy.retention:
            plan.expiring.append(item)
        elif (
            policy.compress_after is not None
            and not item.compressed
            and age > policy.compress_after
        ):
            plan.to_compress.append(item)
        else:
            plan.kept.append(item)
    return plan


@dataclass
class FilesResult:
    """What one run of a files policy did (a dry run: would do); sizes in bytes."""

    policy: str
    directory: str
    glob: str
    dry_run: bool
    archive: bool = False
    matched_files: int = 0
    matched_bytes: int = 0
    to_compress: int = 0
    to_compress_bytes: int = 0
    expected_deleted: int = 0
    expected_deleted_bytes: int = 0
    compressed: int = 0
    # Bytes the compressed files took before and take now, as .gz.
    compressed_bytes_before: int = 0
    compressed_bytes_after: int = 0
    archived: int = 0
    archived_bytes: int = 0
    deleted: int = 0
    deleted_bytes: int = 0
    skipped_active: int = 0
    skipped_grace: int = 0
    skipped_changed: int = 0
    # Files that had to be read (to compress or archive them) and could not be: left alone.
    unreadable: int = 0
    unreadable_files: list[str] = field(default_factory=list)
    conflicts: int = 0
    recovered: int = 0
    duration_ms: float = 0.0
    stopped_early: bool = False
    exceeds_delete_fraction: bool = False
    # The max_delete_fraction that applied (the policy's, else safety's), for the dry run's line.
    max_delete_fraction: float = 1.0

    @property
    def bytes_freed(self) -> int:
        return self.deleted_bytes + self.compressed_bytes_before - self.compressed_bytes_after

    @property
    def remaining_expired(self) -> int:
        return 0 if self.dry_run else max(0, self.expected_deleted - self.deleted)

    def add_unreadable(self, path: Path) -> None:
        """Count ``path`` as unreadable (left alone), once."""
        if path.name not in self.unreadable_files:
            self.unreadable += 1
            self.unreadable_files.append(path.name)

    def unreadable_named(self) -> str:
        """The unreadable files by name (``some_names``), '' when none."""
        return some_names(self.unreadable_files)

    def summary_line(self) -> str:
        """One line: what the run did (or would do), with counts and bytes."""
        where = f"{self.directory}/{self.glob}"
        if self.dry_run:
            return (
                (
                    f"{self.policy}: would compress {self.to_compress:,} files "
                    f"({_size(self.to_compress_bytes)}) and "
                    f"{'archive and delete' if self.archive else 'delete'} "
                    f"{self.expected_deleted:,} ({_size(self.expected_deleted_bytes)}) of "
                    f"{self.matched_files:,} files in {where}; skipped {self.skipped_active} active, "
                    f"{self.skipped_grace} within grace"
                )
                + self._unreadable_clause()
                + self._refusal_clause()
            )
        line = (
            f"{self.policy}: compressed {self.compressed:,}, archived {self.archived:,}, deleted "
            f"{self.deleted:,} of {self.matched_files:,} files in {where}, freed "
            f"{_size(self.bytes_freed)} in {self.duration_ms:,.0f} ms; skipped "
            f"{self.skipped_active} active, {self.skipped_grace} within grace"
        )
        if self.skipped_changed:
            line += f", {self.skipped_changed} changed while read"
        line += self._unreadable_clause()
        if self.conflicts:
            line += f"; {self.conflicts} files beside a different .gz left alone"
        if self.stopped_early:
            line += ", stopped early on request"
        return line

    def _refusal_clause(self) -> str:
        """What the run would do that the dry run did not: refuse (SafetyRefusal), as it deletes
        more than max_delete_fraction of the matching files."""
        if not self.exceeds_delete_fraction:
            return ""
        fraction = self.expected_deleted / self.matched_files
        return (
            f"; a real run would refuse: {fraction:.0%} of the files is above "
            f"max_delete_fraction {self.max_delete_fraction:.0%} (policies.{self.policy}."
            "max_delete_fraction or safety.max_delete_fraction; or run with allow_large_delete)"
        )

    def _unreadable_clause(self) -> str:
        if not self.unreadable:
            return ""
        return f", {self.unreadable} unreadable (permission denied: {self.unreadable_named()})"

    def metadata(self) -> dict[str, Any]:
        """What the Dagster UI shows and plots across runs (numbers, and the unreadable files'
        names; never file contents)."""
        values = asdict(self)
        values["unreadable_files"] = self.unreadable_named()
        values["bytes_freed"] = self.bytes_freed
        values["remaining_expired"] = self.remaining_expired
        values["kind"] = "files"
        return values


def some_names(names: list[str]) -> str:
    """``names`` joined, the first NAMED_UNREADABLE (10) of them and how many more."""
    more = len(names) - NAMED_UNREADABLE
    return ", ".join(names[:NAMED_UNREADABLE]) + (f" and {more} more" if more > 0 else "")


def _size(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:,} {unit}" if unit == "B" else f"{count:,.1f} {unit}"
        count /= 1024
    return f"{count} B"  # pragma: no cover


def check_directory(
    name: str,
    policy: FilesPolicy,
    *,
    writable: bool,
    archive_root: str | os.PathLike[str] | None = None,
) -> Path:
    """The policy's directory as a Path, after checking it exists, is a directory, can be listed
    (really listed: permission bits, ACLs and capabilities all have their say), (``writable``)
    written, and is not ``archive_root`` nor inside it (a policy there would compress or delete
    the archive's own files; an archive root *inside* the directory is fine, as only the
    directory's own files are listed, never a subdirectory's). ConfigError naming
    ``policies.<name>.directory`` otherwise; nothing is changed."""
    key = f"policies.{name}.directory"
    directory = Path(policy.directory)
    if not directory.exists():
        raise ConfigError(f"{key}: {directory} does not exist")
    if not directory.is_dir():
        raise ConfigError(f"{key}: {directory} is not a directory")
    if not os.access(directory, os.R_OK | os.X_OK):
        raise ConfigError(f"{key}: {directory} cannot be listed (no read permission)")
    try:
        with os.scandir(directory):
            pass
    except OSError as exc:
        raise ConfigError(f"{key}: {directory} cannot be listed ({exc.strerror or exc})") from None
    if archive_root is not None:
        root, real = Path(archive_root).resolve(), directory.resolve()
        if real == root or root in real.parents:
            raise ConfigError(
                f"{key}: {directory} is inside archive.root ({root}); a files policy there "
                "would compress or delete the archive's own files. Point it at the log "
                "directory, or archive.root elsewhere"
            )
    if writable and not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{key}: {directory} is not writable, so no file in it can be compressed or deleted"
        )
    return directory


def directory_lock(directory: Path) -> AbstractContextManager[None]:
    """An exclusive lock on ``directory`` itself (no lock file among the logs) for a run;
    AlreadyRunning when another run holds it."""
    return exclusive_flock(
        directory, f"a files policy run on {directory} is already running; this run changed nothing"
    )


def gzip_sha256(path: Path) -> tuple[int, str] | None:
    """(size, sha256) of a gzip file's decompressed content; None when it is not a complete,
    valid gzip file (gzip checks its CRC and length)."""
    digest = hashlib.sha256()
    size = 0
    try:
        with gzip.open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(CHUNK), b""):
                digest.update(chunk)
                size += len(chunk)
    except PermissionError:
        raise
    except (OSError, EOFError, gzip.BadGzipFile):
        return None
    return size, digest.hexdigest()


def compress(item: LogFile) -> int | None:
    """Gzip ``item`` to ``<name>.gz`` beside it, crash-safe (atomic.replace_durably): write
    ``<name>.gz.tmp`` with the file's mode (and owner, where this process may give it), fsync,
    give it the file's mtime, rename, fsync the directory, then delete the original. Returns
    the .gz's size; None (nothing changed) when the file changed while it was read, is gone or
    was replaced (a symlink under its name is never followed), a ``<name>.gz`` appeared
    meanwhile, or a symlink stands at ``<name>.gz.tmp`` (never written through). An original removed by someone else after the rename leaves the .gz, which
    holds all it had. Raises PermissionError (nothing written) when the file cannot be read,
    DiskFull naming it when its device fills up (no .gz nor .gz.tmp left, the file intact)."""
    source = item.path
    temporary = source.with_name(source.name + TMP)
    final = source.with_name(source.name + GZ)
    original = item.open_listed()
    if original is None:
        return None

    def write(raw: BinaryIO) -> None:
        with gzip.GzipFile(
            filename=source.name,
            mode="wb",
            fileobj=raw,
            mtime=item.mtime_ns // 1_000_000_000,
            compresslevel=COMPRESS_LEVEL,
        ) as packed:
            for chunk in iter(lambda: original.read(CHUNK), b""):
                packed.write(chunk)
        with contextlib.suppress(PermissionError):  # only root gives a file away
            os.fchown(raw.fileno(), item.uid, item.gid)
        os.fchmod(raw.fileno(), item.mode)

    def ready(written: Path) -> bool:
        if not item.unchanged() or os.path.lexists(final):
            return False
        os.utime(written, ns=(item.mtime_ns, item.mtime_ns), follow_symlinks=False)
        return True

    with original:
        try:
            published = replace_durably(final, write, temporary=temporary, ready=ready)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # a symlink stands where our temporary goes
                return None
            raise
        except DiskFull:
            raise DiskFull(
                f"{source}: disk full while compressing it to {final.name} (no space left on "
                f"its device); no .gz was left and the file is as it was. Free space in "
                f"{source.parent}, then rerun"
            ) from None
    if not published:
        return None
    if not item.unchanged():
        if not os.path.lexists(source):
            # Removed meanwhile (logrotate): the .gz now holds the only copy of its lines.
            return final.stat().st_size
        # Written to between the check and the rename: the .gz misses the new lines.
        final.unlink()
        fsync_directory(source.parent)
        return None
    with contextlib.suppress(FileNotFoundError):  # removed meanwhile: the .gz holds it all
        _unlink(source)
    return final.stat().st_size


def _unlink(path: Path) -> None:
    path.unlink()
    fsync_directory(path.parent)


@dataclass(frozen=True)
class CompressionRecovery:
    """What ``recover_compression`` did: leftover .gz.tmp removed, originals removed beside
    their complete .gz, conflicts (an original beside a different .gz) and unreadable pairs
    left alone."""

    temporaries_removed: int = 0
    originals_removed: int = 0
    conflicts: list[str] = field(default_factory=list)
    # The originals removed (a dry run: that would be), by name.
    removed: list[str] = field(default_factory=list)
    # Originals (or their .gz) that could not be read to compare them, by name.
    unreadable: list[str] = field(default_factory=list)


def _regular(path: Path) -> bool:
    """Is ``path`` a regular file itself (not a symlink to one)?"""
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except FileNotFoundError:
        return False


def recover_compression(
    directory: Path, policy: FilesPolicy, *, dry_run: bool = False
) -> CompressionRecovery:
    """Finish or undo compressions a crashed run left: a ``<name>.gz.tmp`` whose original still
    exists is removed (the file is compressed again); an original beside a ``.gz`` whose content
    has the original's size and sha256 is removed; beside a different ``.gz`` both stay (a
    conflict, reported); a pair that cannot be read stays (``unreadable``). Symlinks are never
    followed nor removed. ``dry_run``: only says what it would remove (its ``removed`` names)."""
    removed_tmp = removed_originals = 0
    conflicts, removed, unreadable = [], [], []
    names = set(os.listdir(directory))
    for name in sorted(names):
        if name.endswith(TMP) and covers(policy, name.removesuffix(TMP)):
            if name.removesuffix(TMP) in names and _regular(directory / name):
                if not dry_run:
                    _unlink(directory / name)
                removed_tmp += 1
            continue
        if name.endswith(GZ) or not covers(policy, name) or name + GZ not in names:
            continue
        original, packed = directory / name, directory / (name + GZ)
        if not (_regular(original) and _regular(packed)):
            continue
        try:
            same = gzip_sha256(packed) == file_sha256(original)
        except PermissionError:
            unreadable.append(name)
            continue
        if same:
            if not dry_run:
                _unlink(original)
            removed_originals += 1
            removed.append(name)
        else:
            conflicts.append(name)
    return CompressionRecovery(removed_tmp, removed_originals, conflicts, removed, unreadable)


def run_file_policy(
    config: HousekeepingConfig,
    name: str,
    *,
    options: RunOptions | None = None,
    run_id: str | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    log: Callable[[str], None] = lambda message: None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    store: ArchiveStore | None = None,
) -> FilesResult:
    """Run the files policy ``name`` end to end (a dry run changes nothing, recovery included).

    A file that must be read (to compress or archive it) and cannot be (permission denied)
    is left alone, counted and named (``unreadable``, ``unreadable_files``); the run goes on.

    Raises, compressing and deleting nothing: ConfigError (unknown policy, a directory that is
    missing, not a directory, cannot be listed, is not writable, or is inside archive.root),
    ArchiveError (archive root not writable), AlreadyRunning (another run holds the directory),
    SafetyRefusal (more than ``max_delete_fraction`` of the matching files would be deleted,
    without ``allow_large_delete``). Raises mid-run, leaving what is done done and the file at
    hand as it was: DiskFull (the log directory's device, naming the file; or archive.root's).
    """
    started = time.perf_counter()
    options = options or RunOptions()
    policy = config.file_policy(name)
    directory = check_directory(
        name, policy, writable=not options.dry_run, archive_root=config.archive.root
    )
    result = FilesResult(name, str(directory), policy.glob, options.dry_run, policy.archive)
    archive = None
    if policy.archive and not options.dry_run:
        store = store or archive_store(config)
        store.check_writable()
        archive = FileArchive(store, name, str(directory.resolve()))
    run_id = run_id or uuid.uuid4().hex[:12]
    with directory_lock(directory):
        # A dry run plans what recovery would leave, changing nothing.
        left_alone = _recover(directory, policy, archive, result, log, dry_run=options.dry_run)
        files = [item for item in list_files(directory, policy) if item.name not in left_alone]
        now = clock()
        future = [item.name for item in files if item.in_future(now)]
        if future:
            log(
                f"{name}: {len(future)} files are modified in the future by this host's clock "
                f"(e.g. {', '.join(future[:3])}); left alone until their time has passed"
            )
        plan = plan_files(files, policy, now)
        result.matched_files = len(files)
        result.matched_bytes = sum(item.size for item in files)
        result.skipped_active = len(plan.active)
        result.skipped_grace = len(plan.within_grace)
        result.to_compress = len(plan.to_compress)
        result.to_compress_bytes = sum(item.size for item in plan.to_compress)
        result.expected_deleted = len(plan.expiring)
        result.expected_deleted_bytes = sum(item.size for item in plan.expiring)
        limit = config.delete_fraction_limit(policy)
        fraction = len(plan.expiring) / len(files) if files else 0.0
        result.exceeds_delete_fraction = fraction > limit
        result.max_delete_fraction = limit
        if not files:
            log(f"{name}: no file in {directory} matches {policy.glob!r}")
        if options.dry_run:
            to_read = plan.to_compress + (plan.expiring if policy.archive else [])
            for item in to_read:
                if not _readable(item):
                    result.add_unreadable(item.path)
            result.duration_ms = (time.perf_counter() - started) * 1000
            log(result.summary_line())
            return result
        if result.exceeds_delete_fraction and not options.allow_large_delete:
            raise SafetyRefusal(
                f"{name}: this run would delete {len(plan.expiring):,} of {len(files):,} files "
                f"matching {policy.glob!r} in {directory} ({fraction:.0%}), above the limit of "
                f"{limit:.0%} (policies.{name}.max_delete_fraction or "
                "safety.max_delete_fraction); nothing was compressed or deleted. Check "
                "retention, or rerun with allow_large_delete."
            )
        for item in plan.to_compress:
            if should_stop():
                result.stopped_early = True
                break
            try:
                packed = compress(item)
            except PermissionError:
                result.add_unreadable(item.path)
                continue
            if packed is None:
                result.skipped_changed += 1
                continue
            result.compressed += 1
            result.compressed_bytes_before += item.size
            result.compressed_bytes_after += packed
        for item in plan.expiring:
            if result.stopped_early or should_stop():
                result.stopped_early = True
                break
            _expire(item, archive, run_id, now, result)
    result.duration_ms = (time.perf_counter() - started) * 1000
    log(result.summary_line())
    return result


def _recover(
    directory: Path,
    policy: FilesPolicy,
    archive: FileArchive | None,
    result: FilesResult,
    log: Callable[[str], None],
    *,
    dry_run: bool,
) -> set[str]:
    """Finish what a crashed run left (compression, then archive); the names a run leaves
    alone: conflicts, and (``dry_run``, which changes nothing) the originals it would remove."""
    compression = recover_compression(directory, policy, dry_run=dry_run)
    result.conflicts = len(compression.conflicts)
    for name in compression.unreadable:
        result.add_unreadable(directory / name)
    pairs = compression.conflicts + compression.unreadable
    left_alone = set(pairs) | {name + GZ for name in pairs}
    if dry_run:
        return left_alone | set(compression.removed)
    result.recovered += compression.temporaries_removed + compression.originals_removed
    if archive is not None:
        recovery = archive.recover(lambda source: (directory / source).exists())
        result.recovered += recovery.discarded + recovery.repaired
        if recovery.orphaned:
            log(
                f"{result.policy}: {recovery.orphaned} pending archive copies have no source "
                "file any more; kept in the archive as *.pending for a person to look at"
            )
    if result.recovered:
        log(f"{result.policy}: finished or undid {result.recovered} steps a crashed run left")
    for name in compression.conflicts:
        log(
            f"{result.policy}: {directory / name} and its .gz differ; neither is touched "
            "until one is removed"
        )
    return left_alone


def _expire(
    item: LogFile, archive: FileArchive | None, run_id: str, now: datetime, result: FilesResult
) -> None:
    """Archive (when configured) then delete one expiring file; a file that is gone, was
    replaced under its name or changed meanwhile is left as it is (``skipped_changed``)."""
    if archive is not None:
        try:
            opened = item.open_listed()
        except PermissionError:
            result.add_unreadable(item.path)
            return
        if opened is None:
            result.skipped_changed += 1
            return
        with opened:
            archive.archive(item.path, item.mtime_ns, run_id=run_id, now=now, opened=opened)
        result.archived += 1
        result.archived_bytes += item.size
    if not item.unchanged():
        result.skipped_changed += 1
        return
    try:
        _unlink(item.path)
    except FileNotFoundError:  # removed by someone else meanwhile
        result.skipped_changed += 1
        return
    result.deleted += 1
    result.deleted_bytes += item.size


def _readable(item: LogFile) -> bool:
    """Can ``item`` be opened for reading (a dry run's look ahead; a file gone meanwhile
    counts as readable: the run will skip it as changed)?"""
    try:
        opened = item.open_listed()
    except PermissionError:
        return False
    if opened is not None:
        opened.close()
    return True


def history_target(policy: FilesPolicy) -> str:
    """What the run history records as the policy's table: ``<directory>/<glob>``, its end
    kept when longer than the column."""
    target = f"{policy.directory.rstrip('/')}/{policy.glob}"
    return target if len(target) <= TARGET_WIDTH else "…" + target[-(TARGET_WIDTH - 1) :]


def run_and_record_files(
    history: RunHistory,
    config: HousekeepingConfig,
    name: str,
    *,
    dagster_run_id: str | None = None,
    **run_options: Any,
) -> FilesResult:
    """``run_file_policy`` plus one history row per real run (dry runs are not history), as
    table policies: files deleted are ``deleted``, files archived ``archived_rows``. Failures
    are recorded as failed runs, then re-raised."""
    target = history_target(config.file_policy(name))
    with failure_recorded(history, name, target, dagster_run_id) as started:
        result = run_file_policy(config, name, **run_options)
    if not result.dry_run:
        history.record(
            PolicyRun(
                policy=name,
                table_name=target,
                status=RunStatus.STOPPED if result.stopped_early else RunStatus.SUCCESS,
                started_at=started,
                finished_at=datetime.now(UTC),
                deleted=result.deleted,
                expected_deleted=result.expected_deleted,
                remaining_expired=result.remaining_expired,
                archived_rows=result.archived,
                duration_ms=result.duration_ms,
                dagster_run_id=dagster_run_id,
            )
        )
    return result


@dataclass(frozen=True)
class PolicyCheck:
    """What `hk config check` says of a files policy: ``line`` (the directory is usable, what
    matches, what happens), ``matched`` files, and the ``unreadable`` ones by name."""

    line: str
    matched: int
    unreadable: list[str]


def describe_policy_check(
    name: str, policy: FilesPolicy, archive_root: str | os.PathLike[str] | None = None
) -> PolicyCheck:
    """For `hk config check`: the directory checked as a real run checks it (ConfigError from
    check_directory), its matching files listed and each opened for reading (nothing is read
    nor changed), so files a run would have to skip as unreadable are named beforehand."""
    directory = check_directory(name, policy, writable=True, archive_root=archive_root)
    files = list_files(directory, policy)
    streams = len({item.stream for item in files})
    compress = policy.compress_after
    action = f"compress after {format_duration(compress)}, " if compress else ""
    line = (
        f"{name}: {len(files)} files matching {policy.glob!r} in {directory} ({streams} "
        f"streams); {action}{'archive and ' if policy.archive else ''}delete after "
        f"{format_duration(policy.retention)}"
    )
    unreadable = [item.name for item in files if not _readable(item)]
    return PolicyCheck(line, len(files), unreadable)
