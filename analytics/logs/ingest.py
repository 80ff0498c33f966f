"""Reading JSON-lines log files into staged request rows, exactly once (manifest.py).

One *tick* (``ingest_log_files``) takes the ingest lock, loads the manifest, finds for every file
of the source's glob the bytes not yet read (manifest.py says how rotation, compression and
copytruncate are recognised), and reads them all in one DuckDB query: DuckDB's CSV reader splits
the lines (one VARCHAR column, no quoting, gzip decompressed by DuckDB) and its JSON functions
parse each line once (``json_extract_string`` of the mapped paths). No Python runs per line. A
new or changed .gz is first decoded by ``gunzip`` (the manifest needs its size, completeness and
windows), the .gz files side by side in threads. New bytes of a plain file are copied under
tmp/ first, except a settled rotated file read whole: it is read in place, and when its
identity, size or mtime changed by the end of the read the tick is read again from copies
(``_stage_tick``). The tick writes two
Parquet files, the request rows (``staged/<seq>.parquet``: slice, outcome, ts, route, method,
status_code, duration_ms, error_name) and the line counts per file and reason
(``lines/<seq>.parquet``), then replaces the manifest: a crash before that leaves files the next
load deletes, so every line is staged exactly once.

Bad lines never stop a tick; each is counted under its file and one reason:

- ``malformed_json``: not JSON; ``not_an_object``: JSON but not an object (``[1,2]``, ``42``);
- ``invalid_encoding``: not UTF-8 (a binary blob); ``control_characters``: a raw control
  character a JSON line cannot hold; ``line_too_long``: longer than ``max_line_bytes``;
- ``missing_timestamp``, ``bad_timestamp``: a request line (per ``select``) without a usable one;
- ``damaged_gzip``: a ``.gz`` cut short or damaged (counted once per file, as the 1 line cut off
  at the damage, or 0 when none was or another file holds its content); its complete lines
  before the damage are decompressed to tmp/ and read as the other lines are.

The other outcomes are ``request`` and ``other`` (a line that is not a request: a start-up
message, a job log), and blank lines, which are not counted. Only the mapped fields are kept:
IP addresses, user ids, e-mails and messages in a line are never staged, and ``route`` loses its
query string and any path segment that is an e-mail, an IP address or an id (``route_sql``).
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from analytics.datasets import LOG_INGEST_ERRORS
from analytics.logs.formats import duration_ms_sql, json_path, timestamp_sql
from analytics.logs.manifest import (
    FINGERPRINT_BYTES,
    WINDOW_BYTES,
    Chunk,
    GzipContent,
    LogSourceError,
    Manifest,
    ManifestStore,
    StreamState,
    copy_range,
    fingerprint,
    first_line,
    gunzip,
    is_gzip,
    last_newline_end,
    mark,
    read_window,
)
from analytics.publish import RollupStore, hour_key
from analytics.rollups.engine import duckdb_session, floor_hour, replace_dataset_partition
from analytics.settings import JsonLinesSource, LogFilesSource
from housekeeping.sql import sql_string

STAGED_COLUMNS = (
    ("ts", "TIMESTAMP"),
    ("route", "VARCHAR"),
    ("method", "VARCHAR"),
    ("status_code", "INTEGER"),
    ("duration_ms", "DOUBLE"),
    ("error_name", "VARCHAR"),
)
LINE_COLUMNS = (
    ("hour", "TIMESTAMP"),
    ("file", "VARCHAR"),
    ("reason", "VARCHAR"),
    ("lines", "BIGINT"),
)
BAD_REASONS = (
    "malformed_json",
    "not_an_object",
    "invalid_encoding",
    "control_characters",
    "line_too_long",
    "missing_timestamp",
    "bad_timestamp",
    "damaged_gzip",
    "missing_job_id",
)
# A line is one CSV column: a delimiter no log line holds (a single control character would
# cut a line holding it). Not strict: a CR (CRLF line ends, a binary blob) is a line end, where
# the strict reader stops the whole read.
_NO_DELIMITER = "E'\\x1f\\x1e\\x1d\\x1c'"


def unparsed_outcome_sql() -> str:
    """SQL: the outcome of a line that is not JSON (``line``): ``blank``,
    ``control_characters`` (a control character other than tab, CR or LF) or
    ``malformed_json``."""
    return (
        "CASE WHEN line IS NULL OR trim(line) = '' THEN 'blank' "
        "WHEN regexp_matches(line, '[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f]') "
        "THEN 'control_characters' ELSE 'malformed_json' END"
    )


def line_outcome_sql(picked: str, outcome: str, timestamp: str, checks: str = "") -> str:
    """SQL: the outcome of a line (``line``, its parsed fields ``v``, its time ``ts`` in
    scope): ``unparsed_outcome_sql`` when it is not JSON; when ``picked`` (SQL: a line the
    source stages), the first of ``checks`` (``WHEN ... THEN 'reason'`` clauses) that holds,
    ``missing_timestamp`` when ``timestamp`` (the raw field) is NULL, ``bad_timestamp`` when
    ``ts`` is, else ``outcome`` (SQL); ``not_an_object`` for JSON that is no object; else
    ``other``. The request and the job source share it."""
    return f"""CASE
                WHEN v IS NULL THEN {unparsed_outcome_sql()}
                WHEN {picked} THEN
                    CASE {checks} WHEN {timestamp} IS NULL THEN 'missing_timestamp'
                    WHEN ts IS NULL THEN 'bad_timestamp'
                    ELSE {outcome} END
                WHEN NOT starts_with(ltrim(line), '{{') THEN 'not_an_object'
                ELSE 'other'
            END"""


# DuckDB's CSV reject types -> our reasons.
_REJECT_REASONS = {
    "INVALID ENCODING": "invalid_encoding",
    "LINE SIZE OVER MAXIMUM": "line_too_long",
    "TOO MANY COLUMNS": "control_characters",
}


@dataclass(frozen=True)
class Slice:
    """Bytes of one log file to read this tick: ``read`` is the file DuckDB opens (the log file
    itself, or a copy of its new bytes under tmp/), ``file`` the log file's path. ``identity``:
    (device, inode, size, mtime) when planned, for a plain file read in place (checked again
    after the read), else None."""

    read: Path
    file: Path
    identity: tuple[int, int, int, float] | None = None


@dataclass
class IngestResult:
    """What one tick read: files with new bytes, lines by outcome (``request``, ``other``, each
    bad reason), staged request rows, the staged chunk's UTC time span and seconds taken."""

    files_read: int = 0
    lines: dict[str, int] = field(default_factory=dict)
    rows_staged: int = 0
    seq: int | None = None
    seconds: float = 0.0

    @property
    def bad_lines(self) -> int:
        return sum(count for reason, count in self.lines.items() if reason in BAD_REASONS)


def route_sql(text: str) -> str:
    """SQL: a URL as a route for the rollups, with nothing personal left in it.

    The query string and fragment go; a path segment that is an e-mail becomes ``:email``, an
    IPv4 address ``:ip``, and any other holding a digit (user-12345, 2025-10-20, a UUID) ``:id``,
    except an API version (``v1``). ``/api/v1/users/user-12?email=a@b.c`` -> ``/api/v1/users/:id``.
    """
    segment = (
        "CASE WHEN regexp_full_match(s, 'v[0-9]+') THEN s "
        "WHEN contains(s, '@') THEN ':email' "
        "WHEN regexp_full_match(s, '[0-9]{1,3}(\\.[0-9]{1,3}){3}') THEN ':ip' "
        "WHEN regexp_matches(s, '[0-9]') THEN ':id' ELSE s END"
    )
    path = f"split_part(split_part({text}, '?', 1), '#', 1)"
    return (
        f"CASE WHEN regexp_matches({text}, '[0-9@?#]') "
        f"THEN array_to_string(list_transform(string_split({path}, '/'), lambda s: {segment}), '/') "
        f"ELSE {text} END"
    )


def source_directory(root: Path, name: str = "request_logs") -> Path:
    """Where a log source keeps its manifest and staged rows: ``<analytics root>/.logs/<name>``."""
    return root / ".logs" / name


def log_files(source: LogFilesSource) -> list[Path]:
    """The regular files ``source.path`` matches, sorted; ``LogSourceError`` naming the
    directory or file when one cannot be read (a missing directory too)."""
    pattern = os.path.expanduser(source.path)
    folder = Path(pattern).parent
    while glob.has_magic(str(folder)):
        folder = folder.parent
    if not folder.is_dir():
        raise LogSourceError(
            f"{source.config_key}.path: {folder} is not a directory ({source.path})"
        )
    if not os.access(folder, os.R_OK | os.X_OK):
        raise LogSourceError(
            f"{source.config_key}.path: cannot read directory {folder} (permission denied)"
        )
    files = []
    for name in sorted(glob.glob(pattern)):
        path = Path(name)
        if path.is_symlink() and not path.exists():
            raise LogSourceError(f"cannot read log file {path} (a symbolic link to nothing)")
        if not path.is_file():
            continue
        if not os.access(path, os.R_OK):
            raise LogSourceError(f"cannot read log file {path} (permission denied)")
        files.append(path)
    return files


@dataclass
class _File:
    """A log file this tick: its stat, its first line's fingerprint and, for a .gz, what it
    decompresses to (``gunzip``, windows at every stream's offset)."""

    path: Path
    stat: os.stat_result
    head: str
    gz: GzipContent | None = None

    @property
    def length(self) -> int:
        """Bytes of content (decoded ones for a .gz)."""
        return self.gz.size if self.gz is not None else self.stat.st_size

    def window(self, end: int) -> bytes | None:
        """Content ``[end - WINDOW_BYTES, end)`` (None when it is shorter than ``end``)."""
        if end > self.length:
            return None
        if self.gz is not None:
            return self.gz.windows.get(end)
        return read_window(self.path, end)


def _continues(file: _File, state: StreamState) -> bool:
    """Whether ``file`` holds ``state``'s stream up to its offset (same first line, at least
    that long, the same bytes before the offset)."""
    if file.head != state.head or file.length < state.offset:
        return False
    if not state.mark:
        return True  # kept before marks were: the first line alone tells
    window = file.window(state.offset)
    return window is not None and mark(window) == state.mark


def _prefix_of(file: _File, state: StreamState) -> bool:
    """Whether ``file`` is a shorter copy of ``state``'s stream (a .gz cut short, a copy still
    being made): the same first ``WINDOW_BYTES`` (or, for a .gz cut short within them, the same
    first line)."""
    if file.head != state.head or file.length >= state.offset or not state.prefix:
        return False
    size = min(state.offset, WINDOW_BYTES)
    if file.length >= size:
        window = file.gz.prefix[:size] if file.gz is not None else read_window(file.path, size)
        return mark(window) == state.prefix
    return file.gz is not None and not file.gz.complete


def _start(file: _File) -> bytes:
    """A file's first ``WINDOW_BYTES`` of content (all of it when shorter)."""
    if file.gz is not None:
        return file.gz.prefix
    return read_window(file.path, min(file.length, WINDOW_BYTES))


def _same_start(file: _File, other: _File) -> bool:
    """Whether two files new this tick are copies of one content: the same first
    ``WINDOW_BYTES``, the same whole content when shorter, or one a .gz cut short whose content
    begins the other's."""
    if file.head != other.head:
        return False
    mine, theirs = _start(file), _start(other)
    size = min(len(mine), len(theirs))
    if mine[:size] != theirs[:size]:
        return False
    cut = [f for f in (file, other) if f.gz is not None and not f.gz.complete]
    return size == WINDOW_BYTES or len(mine) == len(theirs) or any(f.length <= size for f in cut)


def _gz_head(content: GzipContent) -> bytes | None:
    """A .gz's first line (as ``first_line``) from its decoded prefix; None without one."""
    end = content.prefix.find(b"\n")
    if end >= 0:
        return content.prefix[: end + 1]
    if len(content.prefix) >= FINGERPRINT_BYTES or (content.prefix and content.complete):
        return content.prefix
    return None


def _plan(
    manifest: Manifest,
    store: ManifestStore,
    source: JsonLinesSource,
    now: float,
    in_place: bool = True,
) -> tuple[list[Slice], dict[str, StreamState], list[tuple[str, str, int]]]:
    """The slices to read, the stream states once they are read, and damaged files (path,
    reason, lines lost). ``in_place``: a settled rotated plain file read from its start is read
    where it is (no copy; ``_stage_tick`` checks after the read that it did not change), else
    every plain slice is a copy of its new bytes.

    Which stream a file holds: first the stream last seen at its device and inode, when the file
    still holds it (``_continues``: not truncated below the offset, the same bytes before it);
    else (renamed, copied, compressed, or truncated and written again) a stream with the same
    first line whose bytes before its offset the file holds (the longest); when another file
    holds that stream already this file is a copy of it, read only past what that file gives;
    a file that is a shorter copy of a stream (``_prefix_of``) adds nothing; any other file is a
    new stream read from its start. Plain files are matched before .gz files, so a .gz made
    beside its plain file is a copy.
    """
    settle = source.settle.total_seconds()
    streams = manifest.streams
    by_identity = {(s.device, s.inode): s for s in streams.values() if s.complete}
    hosts = {(s.device, s.inode): key for key, s in streams.items() if s.head and s.inode}
    offsets = tuple(sorted({s.offset for s in streams.values() if s.head}))
    damaged: list[tuple[str, str, int]] = []
    states: dict[str, StreamState] = {}
    files: list[_File] = []
    unterminated: list[tuple[Path, os.stat_result]] = []  # plain files without a complete line
    # The .gz files are decoded side by side (zlib inflates without holding the GIL). Not
    # written out: a plain copy for DuckDB cost more CPU than its own inflate saves.
    decoding: list[tuple[Path, os.stat_result, Future[GzipContent]]] = []
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as workers:
        for path in log_files(source):
            stat = path.stat()
            try:
                if not is_gzip(path):
                    head = first_line(path)
                    if head is None:
                        unterminated.append((path, stat))
                    else:
                        files.append(_File(path, stat, fingerprint(head)))
                    continue
            except OSError as exc:
                raise LogSourceError(f"cannot read log file {path} ({exc.strerror})") from None
            known = by_identity.get((stat.st_dev, stat.st_ino))
            if known is not None and (known.size, known.mtime) == (stat.st_size, stat.st_mtime):
                continue  # a .gz read to its end (or as far as it decodes), unchanged since
            decoding.append((path, stat, workers.submit(gunzip, path, at=offsets)))
        for path, stat, future in decoding:
            try:
                content = future.result()
            except OSError as exc:
                raise LogSourceError(f"cannot read log file {path} ({exc.strerror})") from None
            settled = now - stat.st_mtime >= settle
            if not content.complete and not settled:
                continue  # may still be being written; the next tick reads it
            head = _gz_head(content)
            if head is not None:
                files.append(_File(path, stat, fingerprint(head), content))
            elif not content.complete:
                # Not a line decodes: remembered by identity, counted once while unchanged.
                damaged.append((str(path), "damaged_gzip", int(content.size > 0)))
                states[f"damaged:{stat.st_dev}:{stat.st_ino}"] = StreamState(
                    path=str(path),
                    device=stat.st_dev,
                    inode=stat.st_ino,
                    size=stat.st_size,
                    mtime=stat.st_mtime,
                    compressed=True,
                    complete=True,
                    failed="damaged_gzip",
                )

    # The file written last may be in the middle of a line even when quiet for a while.
    newest = max(
        [f.stat.st_mtime for f in files] + [stat.st_mtime for _, stat in unterminated],
        default=0.0,
    )
    for path, stat in unterminated:
        # A rotated, quiet plain file whose one line has no newline: that line is its first.
        if now - stat.st_mtime >= settle and stat.st_mtime < newest and stat.st_size > 0:
            try:
                with open(path, "rb") as handle:
                    head = handle.read(FINGERPRINT_BYTES)
            except OSError as exc:
                raise LogSourceError(f"cannot read log file {path} ({exc.strerror})") from None
            files.append(_File(path, stat, fingerprint(head)))
    files.sort(key=lambda f: (f.gz is not None, str(f.path)))

    # Which stream each file holds: (file, key, offset to read from, the key it copies).
    held: list[tuple[_File, str, int, str | None]] = []
    claimed: dict[str, _File] = {}
    displaced: set[str] = set()
    unmatched: list[_File] = []
    by_head: dict[str, list[str]] = {}
    for key, state in streams.items():
        if state.head:
            by_head.setdefault(state.head, []).append(key)
    for file in files:
        key = hosts.get((file.stat.st_dev, file.stat.st_ino))
        if key is not None and _continues(file, streams[key]):
            offset = streams[key].offset
            # a stream read further that this file holds too (a .gz cut short, since completed)
            if not any(
                offset < streams[k].offset <= file.length and _continues(file, streams[k])
                for k in by_head.get(file.head, [])
            ):
                held.append((file, key, offset, None))
                claimed[key] = file
                continue
        if key is not None:
            displaced.add(key)  # truncated, written over or holding more: not that stream
        unmatched.append(file)
    fresh = 0
    new: list[tuple[_File, str]] = []  # files found to be new streams this tick
    for file in unmatched:
        keys = by_head.get(file.head, [])
        going = [k for k in keys if _continues(file, streams[k])]
        if going:
            key = max(going, key=lambda k: (streams[k].offset, k not in claimed))
            if key not in claimed:
                held.append((file, key, streams[key].offset, None))
                claimed[key] = file
                continue
            copies = key
        else:
            copies = next((k for k in keys if _prefix_of(file, streams[k])), None)
            if copies is None:
                copies = next((k for f, k in new if _same_start(file, f)), None)
        new_key = f"{manifest.next_seq}.{fresh}"
        fresh += 1
        held.append((file, new_key, 0, copies))
        claimed[new_key] = file
        new.append((file, new_key))

    slices: list[Slice] = []
    for file, key, offset, copies in held:
        stat = file.stat
        state = StreamState(
            offset=offset,
            path=str(file.path),
            device=stat.st_dev,
            inode=stat.st_ino,
            size=stat.st_size,
            mtime=stat.st_mtime,
            compressed=file.gz is not None,
            head=file.head,
        )
        if key in streams:  # held on: its marks stand until it is read further
            state.mark, state.prefix = streams[key].mark, streams[key].prefix
        if copies is not None:
            # A copy of a stream another file holds (or a shorter copy): read only past the
            # bytes the stream has (the other file is read to its end first: it sorts first).
            source_state = states[copies] if copies in states else streams[copies]
            if file.gz is not None:
                end = file.gz.lines_end
            elif file.length < source_state.offset:
                end = last_newline_end(file.path, 0, file.length)
            else:
                end = file.length
            state.offset = min(source_state.offset, end)
            if state.offset == source_state.offset:
                state.mark, state.prefix = source_state.mark, source_state.prefix
            else:
                state.mark = state.prefix = ""  # not read: filled in below
        target = store.tmp / f"{len(slices):06d}.jsonl"
        settled = now - stat.st_mtime >= settle
        if file.gz is None:
            end = last_newline_end(file.path, state.offset, stat.st_size)
            rotated = settled and stat.st_mtime < newest
            no_newline = end < stat.st_size and rotated
            if no_newline:
                # a rotated, quiet file's last line, written without a newline
                end = stat.st_size
            if in_place and rotated and state.offset == 0 and end > 0:
                # all of it, unlikely to change: read in place (DuckDB reads a last line
                # without a newline as a line)
                identity = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime)
                slices.append(Slice(file.path, file.path, identity))
            elif end > state.offset:
                copy_range(file.path, target, state.offset, end)
                if no_newline:
                    with open(target, "ab") as handle:
                        handle.write(b"\n")
                slices.append(Slice(target, file.path))
            if end != state.offset or not state.mark:
                state.offset = end
                state.mark = mark(read_window(file.path, end))
                state.prefix = mark(read_window(file.path, min(end, WINDOW_BYTES)))
        else:
            content = file.gz
            end = content.lines_end
            state.complete = True
            if not content.complete:
                state.failed = "damaged_gzip"
                # the cut-off line lost (unless another file holds this content)
                lost = int(content.size > end and copies is None)
                damaged.append((str(file.path), "damaged_gzip", lost))
            if end > state.offset:
                if state.offset == 0 and content.complete:
                    slices.append(Slice(file.path, file.path))  # DuckDB decompresses it
                else:
                    try:
                        gunzip(file.path, target, state.offset)
                    except OSError as exc:
                        raise LogSourceError(
                            f"cannot read log file {file.path} ({exc.strerror})"
                        ) from None
                    slices.append(Slice(target, file.path))
            if end != state.offset or not state.mark:
                state.offset = end
                state.mark = mark(content.last)
                state.prefix = mark(content.prefix[: min(end, WINDOW_BYTES)])
        states[key] = state
    for key in displaced - set(states):
        # its file now holds other content: known by its first line and marks only
        states[key] = replace(streams[key], device=0, inode=0)
    return slices, states, damaged


def parsed_lines_sql(
    slices: list[Slice], source: LogFilesSource, mapping: Any, keys: list[str]
) -> tuple[str, Callable[[str], str], str]:
    """The start of a line SELECT over ``slices``: ``WITH raw AS (slice, line), fields AS
    (slice, line, v)``, where ``v`` holds the values (JSON scalar text) of the paths ``mapping``
    gives ``keys`` (each line parsed once; NULL for a line that is not JSON); ``value(key)``,
    the SQL of one key's value (NULL when not mapped); and the SQL of "the mapping's ``select``
    picks this line" (``select`` present, equal to ``select_value`` when that is set)."""
    paths: list[str] = []
    for key in keys:
        path = getattr(mapping, key)
        if path is not None and path not in paths:
            paths.append(path)
    path_list = ", ".join(json_path(path) for path in paths)
    files = ", ".join(sql_string(str(s.read)) for s in slices)

    def value(key: str) -> str:
        path = getattr(mapping, key)
        return f"v[{paths.index(path) + 1}]" if path is not None else "NULL"

    selected = f"{value('select')} IS NOT NULL"
    if mapping.select_value is not None:
        selected += f" AND {value('select')} = {sql_string(mapping.select_value)}"
    parsed = f"""WITH raw AS (
            SELECT file_index AS slice, line
            FROM read_csv([{files}], columns = {{'line': 'VARCHAR'}}, header = false,
                delim = {_NO_DELIMITER}, quote = '', escape = '', new_line = '\\n',
                strict_mode = false, auto_detect = false, ignore_errors = true,
                store_rejects = true, max_line_size = {source.max_line_bytes})
        ), fields AS (
            -- one parse a line; TRY: NULL for a line that is not JSON
            SELECT slice, line, TRY(json_extract_string(line, [{path_list}])) AS v FROM raw
        )"""
    return parsed, value, f"coalesce({selected}, false)"


def _lines_sql(slices: list[Slice], source: JsonLinesSource) -> str:
    """A SELECT of one row per line read: its slice, outcome and mapped fields (STAGED_COLUMNS).

    Each line is parsed once (``json_extract_string`` of every mapped path); the outcome is
    ``request`` (a line ``select`` picks), ``error`` (a line whose ``level`` is one of
    ``error_levels``, not a request), ``other``, ``blank`` or a bad reason. ``error_name`` is
    set on every error-level line (a request logged at error level is both).
    """
    mapping = source.mapping
    keys = ["timestamp", "route", "method", "status", "duration", "select", "error_name", "level"]
    parsed, value, selected = parsed_lines_sql(slices, source, mapping, keys)
    if mapping.level is not None and mapping.error_levels:
        levels = ", ".join(sql_string(level) for level in mapping.error_levels)
        is_error = f"coalesce({value('level')} IN ({levels}), false)"
    else:
        is_error = "false"
    timestamp = timestamp_sql(value("timestamp"), mapping.timestamp_format, source.timezone)
    outcome = line_outcome_sql(
        "selected OR is_error",
        "CASE WHEN selected THEN 'request' ELSE 'error' END",
        value("timestamp"),
    )
    return f"""
        {parsed}, typed AS (
            SELECT *, {timestamp} AS ts, {selected} AS selected, {is_error} AS is_error
            FROM fields
        )
        SELECT
            slice,
            {outcome} AS outcome,
            ts,
            {route_sql(value("route"))} AS route,
            upper({value("method")}) AS method,
            TRY_CAST(TRY_CAST({value("status")} AS DOUBLE) AS INTEGER) AS status_code,
            {duration_ms_sql(value("duration"), mapping.duration_unit)} AS duration_ms,
            CASE WHEN is_error THEN coalesce(left({value("error_name")}, 100), '(unnamed)')
            END AS error_name
        FROM typed
    """


@dataclass(frozen=True)
class LineShape:
    """What a source stages of its lines: ``sql(slices, source)``, the SELECT of one row per
    line (``slice``, ``outcome``, then ``columns``), and the outcomes kept as staged rows."""

    sql: Callable[[list[Slice], Any], str]
    columns: tuple[tuple[str, str], ...]
    outcomes: tuple[str, ...]


REQUEST_LINES = LineShape(_lines_sql, STAGED_COLUMNS, ("request", "error"))


def _stage(
    connection: duckdb.DuckDBPyConnection,
    slices: list[Slice],
    source: JsonLinesSource,
    target: Path,
    shape: LineShape = REQUEST_LINES,
) -> list[tuple[str, str]]:
    """Write the slices' lines to ``target`` (Parquet, STAGED_COLUMNS plus slice and outcome);
    a .gz DuckDB cannot decompress is left out and returned as damaged (the others are read
    again without it). Without slices the file holds no rows."""
    damaged: list[tuple[str, str, int]] = []
    while slices:
        try:
            connection.execute(
                f"COPY ({shape.sql(slices, source)}) TO {sql_string(str(target))} "
                # v2 pages: delta-encoded times, about 8x smaller and cheaper to write
                "(FORMAT parquet, COMPRESSION zstd, PARQUET_VERSION v2)"
            )
            return damaged
        except duckdb.Error:
            bad = next(
                (s for s in slices if is_gzip(s.read) and not _gzip_readable(connection, s)),
                None,
            )
            if bad is None:
                raise
            damaged.append((str(bad.file), "damaged_gzip", 0))
            slices.remove(bad)
    columns = ", ".join(f"NULL::{kind} AS {name}" for name, kind in shape.columns)
    connection.execute(
        f"COPY (SELECT NULL::BIGINT AS slice, NULL::VARCHAR AS outcome, {columns} WHERE false) "
        f"TO {sql_string(str(target))} (FORMAT parquet)"
    )
    return damaged


def _gzip_readable(connection: duckdb.DuckDBPyConnection, piece: Slice) -> bool:
    try:
        connection.execute(
            f"SELECT count(*) FROM read_csv({sql_string(str(piece.read))}, "
            f"columns = {{'line': 'VARCHAR'}}, header = false, delim = {_NO_DELIMITER}, "
            "quote = '', escape = '', strict_mode = false, auto_detect = false, "
            "ignore_errors = true)"
        ).fetchone()
        return True
    except duckdb.Error:
        return False


@dataclass
class _Tick:
    """One tick's reading, staged (rows and line counts on disk) but not yet in the manifest."""

    slices: list[Slice]
    states: dict[str, StreamState]
    damaged: list[tuple[str, str, int]]
    lines: dict[str, int]
    rows: int = 0
    low: datetime | None = None
    high: datetime | None = None
    # A file read in place changed during the read: staged rows are not to be used.
    changed: bool = False


def _unchanged(piece: Slice) -> bool:
    """Whether a slice read in place is still the file it was when planned."""
    try:
        stat = piece.file.stat()
    except OSError:
        return False
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime) == piece.identity


def _stage_tick(
    manifest: Manifest,
    store: ManifestStore,
    source: JsonLinesSource,
    now: datetime,
    seq: int,
    in_place: bool,
    shape: LineShape = REQUEST_LINES,
) -> _Tick | None:
    """Plan (``_plan``) and stage the tick ``seq``: its rows (``staged/<seq>.parquet``) and line
    counts (``lines/<seq>.parquet``, filed under ``now``'s UTC hour). None when there is nothing
    to read and no stream moved. ``changed`` when a file read in place was written, replaced or
    removed between the plan and the end of the read (its device, inode, size or mtime differ):
    the caller plans again with ``in_place=False``, reading copies."""
    slices, states, damaged = _plan(manifest, store, source, now.timestamp(), in_place)
    if (
        not slices
        and not damaged
        and all(manifest.streams.get(key) == state for key, state in states.items())
    ):
        return None
    tick = _Tick(slices, states, damaged, {})
    hour = floor_hour(now).replace(tzinfo=None)
    with duckdb_session(store.directory / "tmp") as connection:
        # Row order is whatever the parallel readers give (lines of a file stay near each
        # other, so each row group's ts range stays narrow for the readers' pruning).
        connection.execute("SET preserve_insertion_order = false")
        staged = store.staged_file(seq)
        damaged += _stage(connection, slices, source, staged, shape)
        if not all(_unchanged(piece) for piece in slices if piece.identity is not None):
            tick.changed = True
            return tick
        # The staged rows name their slice by its place in the list read (file_index).
        names = [(i, str(s.read), str(s.file)) for i, s in enumerate(slices)] or [(0, "", "")]
        connection.execute(
            "CREATE TEMP TABLE slice_files (slice BIGINT, path VARCHAR, file VARCHAR)"
        )
        connection.executemany("INSERT INTO slice_files VALUES (?, ?, ?)", names)
        rejects = (
            "SELECT f.file, e.error_type FROM reject_errors e "
            "JOIN reject_scans s USING (scan_id, file_id) JOIN slice_files f "
            "ON f.path = s.file_path"
            if slices
            else "SELECT NULL::VARCHAR AS file, NULL::VARCHAR AS error_type WHERE false"
        )
        reject_case = " ".join(
            f"WHEN {sql_string(kind)} THEN {sql_string(reason)}"
            for kind, reason in _REJECT_REASONS.items()
        )
        connection.execute("CREATE TEMP TABLE damaged (file VARCHAR, reason VARCHAR, lines BIGINT)")
        if damaged:
            connection.executemany("INSERT INTO damaged VALUES (?, ?, ?)", damaged)
        connection.execute(
            f"""
            CREATE TEMP TABLE line_counts AS
            SELECT {sql_string(hour.isoformat(sep=" "))}::TIMESTAMP AS hour, file, reason,
                sum(lines)::BIGINT AS lines
            FROM (
                SELECT f.file, p.outcome AS reason, count(*) AS lines
                FROM read_parquet({sql_string(str(staged))}) p
                JOIN slice_files f ON f.slice = p.slice
                WHERE p.outcome <> 'blank' GROUP BY ALL
                UNION ALL
                SELECT file, CASE error_type {reject_case} ELSE 'malformed_json' END, count(*)
                FROM ({rejects}) GROUP BY ALL
                UNION ALL
                SELECT file, reason, lines FROM damaged
            ) GROUP BY ALL
            """
        )
        connection.execute(
            f"COPY (SELECT * FROM line_counts ORDER BY file, reason) "
            f"TO {sql_string(str(store.lines_file(seq)))} (FORMAT parquet)"
        )
        rows, tick.low, tick.high = connection.execute(
            f"SELECT count(*), min(ts), max(ts) FROM read_parquet({sql_string(str(staged))}) "
            f"WHERE outcome IN ({', '.join(sql_string(o) for o in shape.outcomes)})"
        ).fetchone()
        tick.rows = int(rows)
        tick.lines = dict(
            connection.execute(
                "SELECT reason, sum(lines)::BIGINT FROM line_counts GROUP BY ALL"
            ).fetchall()
        )
    return tick


def _remove_copies(store: ManifestStore, slices: list[Slice]) -> None:
    for piece in slices:
        if piece.read.parent == store.tmp:
            piece.read.unlink(missing_ok=True)


def ingest_log_files(
    directory: Path,
    source: LogFilesSource,
    now: datetime | None = None,
    shape: LineShape = REQUEST_LINES,
) -> IngestResult:
    """Stage the lines of ``source``'s files not staged before; one tick, exactly once.

    ``directory``: the source's state (``source_directory``). ``now`` (default: the clock) is
    the tick's instant: a file modified within ``source.settle`` of it may still be written, and
    its line counts are filed under its UTC hour. ``shape``: what is staged (the request lines;
    analytics/logs/jobs.py stages job lines). Settled rotated plain files are read in place;
    when one changes during the read, the tick is read again from copies. Raises
    ``LogSourceError`` for a directory or file that cannot be read (nothing is written then);
    bad lines are counted, never raised.
    """
    started = time.perf_counter()
    now = (now or datetime.now(UTC)).astimezone(UTC)
    store = ManifestStore(directory)
    result = IngestResult()
    with store.locked():
        manifest = store.load()
        seq = manifest.next_seq
        tick = _stage_tick(manifest, store, source, now, seq, in_place=True, shape=shape)
        if tick is not None and tick.changed:
            _remove_copies(store, tick.slices)
            tick = _stage_tick(manifest, store, source, now, seq, in_place=False, shape=shape)
        if tick is None:
            result.seconds = time.perf_counter() - started
            return result
        for key, state in tick.states.items():
            manifest.streams[key] = state
        for path, reason, _ in tick.damaged:
            for state in tick.states.values():
                if state.path == path:
                    state.complete, state.failed = True, reason
        manifest.chunks.append(
            Chunk(
                seq,
                tick.rows,
                tick.low.isoformat() if tick.low else "",
                tick.high.isoformat() if tick.high else "",
                floor_hour(now).replace(tzinfo=None).isoformat(),
            )
        )
        manifest.next_seq = seq + 1
        store.save(manifest)
        _remove_copies(store, tick.slices)
    result.files_read = len({s.file for s in tick.slices})
    result.lines = tick.lines
    result.rows_staged = tick.rows
    result.seq = seq
    result.seconds = time.perf_counter() - started
    return result


def staged_files(directory: Path, start: datetime, end: datetime) -> list[Path]:
    """The staged row files that can hold rows of ``[start, end)`` (by each chunk's span)."""
    store = ManifestStore(directory)
    path = directory / "manifest.json"
    if not path.exists():
        return []
    manifest = Manifest.from_json(path.read_text())
    low, high = start.astimezone(UTC).replace(tzinfo=None), end.astimezone(UTC).replace(tzinfo=None)
    files = []
    for chunk in manifest.chunks:
        if not chunk.rows:
            continue
        if (
            datetime.fromisoformat(chunk.ts_max) < low
            or datetime.fromisoformat(chunk.ts_min) >= high
        ):
            continue
        files.append(store.staged_file(chunk.seq))
    return files


def line_count_files(directory: Path) -> list[Path]:
    """Every tick's line counts (``lines/<seq>.parquet``) the manifest lists."""
    path = directory / "manifest.json"
    if not path.exists():
        return []
    store = ManifestStore(directory)
    manifest = Manifest.from_json(path.read_text())
    return [store.lines_file(chunk.seq) for chunk in manifest.chunks]


def log_source_directories(root: Path) -> list[Path]:
    """Every log source's state directory under the analytics ``root`` (request_logs, jobs)."""
    return sorted(path.parent for path in (root / ".logs").glob("*/manifest.json"))


def publish_line_counts(store: RollupStore, hour: datetime) -> str | None:
    """Publish the ``log_ingest_errors`` partition of the UTC ``hour``: every tick of that hour
    of every log source (``log_source_directories``) summed per source, file and reason;
    returns its key, or None when no tick ran in the hour."""
    wanted = floor_hour(hour).replace(tzinfo=None).isoformat()
    files: list[tuple[str, Path]] = []
    for directory in log_source_directories(store.root):
        manifest = Manifest.from_json((directory / "manifest.json").read_text())
        files += [
            (directory.name, ManifestStore(directory).lines_file(chunk.seq))
            for chunk in manifest.chunks
            if chunk.hour == wanted
        ]
    if not files:
        return None
    key = hour_key(floor_hour(hour))
    parts = " UNION ALL ".join(
        f"SELECT {sql_string(name)} AS source, * FROM read_parquet({sql_string(str(file))})"
        for name, file in files
    )
    bad = ", ".join(sql_string(reason) for reason in BAD_REASONS)
    with duckdb_session(store.root / ".tmp") as connection:
        connection.execute(
            f"CREATE TEMP TABLE counts AS SELECT {LOG_INGEST_ERRORS.select_list()} FROM ("
            f"SELECT hour, file, reason, sum(lines) AS lines, reason IN ({bad}) AS bad, source "
            f"FROM ({parts}) GROUP BY ALL)"
        )
        replace_dataset_partition(
            connection, store, LOG_INGEST_ERRORS, key, "counts", "source, file, reason"
        )
    return key
