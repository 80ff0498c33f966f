"""Durable, all-or-nothing writes of local files: the one way the table archive, the file
archive and the compression of log files put a file on disk.

``write_durably`` creates a file, lets the caller fill it, fsyncs it and its directory;
``replace_durably`` does that to a temporary beside the target and renames it over the target
(so a reader sees the old file or the whole new one, never a torn one); ``publish_manifest``
writes an archive day's ``_manifest.json`` through an ``ArchiveStore`` that way.

A write that runs out of space (ENOSPC, or EDQUOT for a quota) removes what it wrote and raises
``DiskFull`` naming the path; any other failure also removes the partial file and re-raises.
Nothing is ever written through a symlink: files are created with ``O_NOFOLLOW``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Protocol, TypeVar

from housekeeping.errors import HkError

MANIFEST_NAME = "_manifest.json"
# What a temporary is called beside its target unless the caller names it.
TEMPORARY_SUFFIX = ".tmp"
_FULL = (errno.ENOSPC, errno.EDQUOT)

T = TypeVar("T")


class DiskFull(HkError):
    """A write ran out of space or quota; what it wrote was removed, nothing else changed."""


def is_disk_full(error: BaseException) -> bool:
    """Is ``error`` a "no space left" (ENOSPC) or "quota exceeded" (EDQUOT) OSError?"""
    return isinstance(error, OSError) and error.errno in _FULL


def fsync_directory(directory: Path) -> None:
    """Make the directory's entries (a file created, renamed or removed in it) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, write: Callable[[BinaryIO], T], *, exclusive: bool = False) -> T:
    """Create ``path`` (``exclusive``: FileExistsError when anything, a symlink included, is
    there; else truncate a regular file), let ``write`` fill it, flush and fsync it and its
    directory; returns what ``write`` returned. Never follows a symlink at ``path`` (OSError
    ELOOP). On any failure the partial file is removed; running out of space raises DiskFull
    naming ``path``."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(path, flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            value = write(handle)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        if is_disk_full(exc):
            raise DiskFull(
                f"{path}: no space left on its device; the partial file was removed"
            ) from None
        raise
    fsync_directory(path.parent)
    return value


def _rename(source: Path, target: Path) -> None:
    os.replace(source, target)


def replace_durably(
    path: Path,
    write: Callable[[BinaryIO], object],
    *,
    temporary: Path | None = None,
    ready: Callable[[Path], bool] = lambda written: True,
) -> bool:
    """Write ``temporary`` (default ``<path>.tmp``; a leftover one is overwritten, a symlink
    there refused, see ``write_durably``) with ``write``, then, when ``ready(temporary)`` agrees (the caller's last check: is the
    source unchanged, is ``path`` still free?), rename it over ``path`` and fsync the directory.
    Returns True when ``path`` was replaced; False (the temporary removed, ``path`` untouched)
    when ``ready`` said no. DiskFull as ``write_durably``."""
    temporary = temporary or path.with_name(path.name + TEMPORARY_SUFFIX)
    write_durably(temporary, write)
    try:
        publish = ready(temporary)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if not publish:
        temporary.unlink(missing_ok=True)
        fsync_directory(temporary.parent)
        return False
    _rename(temporary, path)
    fsync_directory(path.parent)
    return True


class ManifestStore(Protocol):
    """What ``publish_manifest`` (and archive.read_manifest) need of an archive store."""

    def replace_durably(self, path: str, data: bytes) -> None: ...

    def read_bytes(self, path: str) -> bytes: ...


def publish_manifest(store: ManifestStore, directory: str, manifest: dict) -> None:
    """Write ``manifest`` as the folder's ``_manifest.json``, atomically and durably (a crash
    leaves the old manifest or the new one, and at most a ``_manifest.json.tmp``)."""
    data = json.dumps(manifest, indent=1).encode()
    store.replace_durably(f"{directory}/{MANIFEST_NAME}", data)
