"""Jobs from JSON-lines log files: job lifecycle lines staged exactly once, then one row per job.

A job source of kind ``json_lines`` (``analytics.sources.jobs``) is read by the same ticks as
the request source (ingest.py: the manifest, rotation, compression, copytruncate, bad lines
counted per file and reason), with its own state under ``<root>/.logs/jobs`` so the two sources
never share a manifest, even when they read the same files. A tick stages one row per job line
(``job_lines_sql``: ts, job_id, queue, name, state, duration_ms, attempt); no Python runs per
line. The outcome of a line is ``job`` (a line ``select`` picks whose state is queued, started,
completed or failed), ``other`` (any other line, a progress line included), ``blank``, or a bad
reason: the request source's ones, and ``missing_job_id`` (a job line without its id).

``job_rows_sql`` turns the staged lines into the rows a jobs table would hold, one per job
(``queue`` and ``job_id``; a NULL queue is ``(none)``), for ``publish_job_hours``:

- ``status``: the state of the job's last line (ties: finished, then started, then queued):
  queued is ``waiting``, started ``active``, completed ``completed``, failed ``failed``;
- ``created_at``: its first line (its queued line, else its first start);
- ``started_at``: its last start, while the last line is not a queued one (a retry waiting
  again has not started); without a start line, a finished job's finish minus its
  ``duration``;
- ``finished_at``: its last line's time when that line is a completed or failed one;
- ``attempts``: the highest ``attempt`` its lines give, else its number of start lines;
- ``name``: the last one its lines give (``(none)`` without one).

``compact_job_chunks`` folds the staged chunks into one compacted state: one row per job of
mergeable aggregates (JOB_STATE_COLUMNS), so that its merge with the job's lines staged later
is what grouping all its lines gives (``job_state_sql``); ``job_rows_sql`` reads both.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from analytics.logs.formats import duration_ms_sql, timestamp_sql
from analytics.logs.ingest import LineShape, Slice, line_outcome_sql, parsed_lines_sql
from analytics.logs.job_formats import JOB_STATES
from analytics.logs.manifest import Chunk, Manifest, ManifestStore
from analytics.rollups.engine import duckdb_session, text_or_placeholder
from analytics.settings import JobsJsonLinesSource, JobsSource
from housekeeping.atomic import fsync_directory
from housekeeping.sql import sql_string

JOB_STAGED_COLUMNS = (
    ("ts", "TIMESTAMP"),
    ("job_id", "VARCHAR"),
    ("queue", "VARCHAR"),
    ("name", "VARCHAR"),
    ("state", "VARCHAR"),
    ("duration_ms", "DOUBLE"),
    ("attempt", "BIGINT"),
)
# The statuses job_rows_sql writes: the jobs table's defaults.
LOG_JOB_STATUSES = JobsSource()
_STATUS_OF_STATE = {
    "queued": LOG_JOB_STATUSES.waiting_statuses[0],
    "started": LOG_JOB_STATUSES.active_status,
    "completed": LOG_JOB_STATUSES.completed_status,
    "failed": LOG_JOB_STATUSES.failed_status,
}


def job_lines_sql(slices: list[Slice], source: JobsJsonLinesSource) -> str:
    """A SELECT of one row per line read: its slice, outcome and JOB_STAGED_COLUMNS (the state
    as one of JOB_STATES, NULL for a line that is not a lifecycle event)."""
    mapping = source.mapping
    keys = ["timestamp", "job_id", "name", "queue", "state", "duration", "attempt", "select"]
    parsed, value, selected = parsed_lines_sql(slices, source, mapping, keys)
    states = " ".join(
        f"WHEN {value('state')} IN ({', '.join(sql_string(v) for v in mapping.states(state))}) "
        f"THEN {sql_string(state)}"
        for state in JOB_STATES
        if mapping.states(state)
    )
    timestamp = timestamp_sql(value("timestamp"), mapping.timestamp_format, source.timezone)
    outcome = line_outcome_sql(
        "selected AND state IS NOT NULL",
        "'job'",
        value("timestamp"),
        f"WHEN {value('job_id')} IS NULL THEN 'missing_job_id'",
    )
    return f"""
        {parsed}, typed AS (
            SELECT *, {timestamp} AS ts, {selected} AS selected,
                CASE {states} END AS state
            FROM fields
        )
        SELECT
            slice,
            {outcome} AS outcome,
            ts,
            {value("job_id")} AS job_id,
            {value("queue")} AS queue,
            left({value("name")}, 200) AS name,
            state,
            {duration_ms_sql(value("duration"), mapping.duration_unit)} AS duration_ms,
            TRY_CAST(TRY_CAST({value("attempt")} AS DOUBLE) AS BIGINT) AS attempt
        FROM typed
    """


JOB_LINES = LineShape(job_lines_sql, JOB_STAGED_COLUMNS, ("job",))


# One row per job of some of its lines (a partial state), mergeable with another partial of
# the same job (``_MERGE``): each ``arg_max`` keeps the moment it was taken at, so the merge of
# partials picks what one aggregate over all the lines would. A compacted chunk holds these rows.
JOB_STATE_COLUMNS = (
    ("queue", "VARCHAR"),
    ("job_id", "VARCHAR"),
    ("name", "VARCHAR"),
    ("name_at", "TIMESTAMP"),
    ("first_at", "TIMESTAMP"),
    ("last_at", "TIMESTAMP"),
    ("last_state", "VARCHAR"),
    ("last_key", "BIGINT"),
    ("last_start", "TIMESTAMP"),
    ("starts", "BIGINT"),
    ("duration_ms", "DOUBLE"),
    ("duration_at", "TIMESTAMP"),
    ("attempt", "BIGINT"),
)
_FINISHED = "state IN ('completed', 'failed')"
# The last line of a job: the latest, ties broken finished, then started, then queued.
_RANK = "CASE {} WHEN 'queued' THEN 0 WHEN 'started' THEN 1 ELSE 2 END"
_LINE_KEY = f"epoch_us(ts) * 4 + {_RANK.format('state')}"
_MERGE = """
    arg_max(name, name_at) AS name, max(name_at) AS name_at,
    min(first_at) AS first_at, max(last_at) AS last_at,
    arg_max(last_state, last_key) AS last_state, max(last_key) AS last_key,
    max(last_start) AS last_start, sum(starts)::BIGINT AS starts,
    arg_max(duration_ms, duration_at) AS duration_ms, max(duration_at) AS duration_at,
    max(attempt) AS attempt
"""


# On disk, a compacted state leaves out what its other columns give (most jobs' name and
# duration were given by their last line; last_key always follows from last_at and last_state):
# half its bytes. _compacted_sql puts them back.
_SHRUNK = (
    "SELECT * REPLACE (nullif(name_at, last_at) AS name_at, "
    "nullif(duration_at, last_at) AS duration_at, NULL::BIGINT AS last_key) FROM ({})"
)


def _compacted_sql(path: Path) -> str:
    """The rows (JOB_STATE_COLUMNS) of the compacted state written at ``path``."""
    return f"""
        SELECT * REPLACE (
            CASE WHEN name IS NOT NULL THEN coalesce(name_at, last_at) END AS name_at,
            CASE WHEN duration_ms IS NOT NULL THEN coalesce(duration_at, last_at) END
                AS duration_at,
            coalesce(last_key, epoch_us(last_at) * 4 + {_RANK.format("last_state")}) AS last_key
        ) FROM read_parquet({sql_string(str(path))})
    """


def _paths(files: list[Path]) -> str:
    return "[" + ", ".join(sql_string(str(path)) for path in files) + "]"


def _empty_state() -> str:
    return (
        "SELECT "
        + ", ".join(f"NULL::{kind} AS {name}" for name, kind in JOB_STATE_COLUMNS)
        + (" WHERE false")
    )


def _line_state_sql(files: list[Path]) -> str:
    """The partial state (JOB_STATE_COLUMNS) of every job from the staged lines in ``files``."""
    if not files:
        return _empty_state()
    return f"""
        SELECT
            {text_or_placeholder("queue")} AS queue,
            job_id,
            arg_max(name, ts) FILTER (WHERE name IS NOT NULL) AS name,
            max(ts) FILTER (WHERE name IS NOT NULL) AS name_at,
            min(ts) AS first_at,
            max(ts) AS last_at,
            arg_max(state, {_LINE_KEY}) AS last_state,
            max({_LINE_KEY}) AS last_key,
            max(ts) FILTER (WHERE state = 'started') AS last_start,
            count(*) FILTER (WHERE state = 'started') AS starts,
            arg_max(duration_ms, ts) FILTER (WHERE {_FINISHED}) AS duration_ms,
            max(ts) FILTER (WHERE {_FINISHED} AND duration_ms IS NOT NULL) AS duration_at,
            max(attempt) AS attempt
        FROM read_parquet({_paths(files)}) WHERE outcome = 'job'
        GROUP BY ALL
    """


def job_state_sql(files: list[Path], compacted: Path | None = None) -> str:
    """A SELECT of one row per job (JOB_STATE_COLUMNS, naive UTC times) from the staged lines in
    ``files`` and the compacted state ``compacted`` (a Parquet file of these rows): the state
    one aggregate over all the lines the compacted state folded and those in ``files`` gives."""
    if compacted is None:
        return _line_state_sql(files)
    return f"""
        SELECT queue, job_id, {_MERGE} FROM (
            {_line_state_sql(files)}
            UNION ALL BY NAME
            SELECT * FROM ({_compacted_sql(compacted)})
        ) GROUP BY queue, job_id
    """


def job_rows_sql(
    files: list[Path], compacted: Path | None = None, finished_since: datetime | None = None
) -> str:
    """A SELECT of one row per job from the staged job lines in ``files`` and the compacted
    state ``compacted`` (``job_state_sql``): queue, name, status, created_at, started_at,
    finished_at (naive UTC), attempts, as the jobs table's rows are read (the rules are in the
    module's docstring). With ``finished_since`` (aware), a job of the compacted state that
    finished before it and has no line in ``files`` is left out unread (a refresh of hours from
    ``finished_since`` on needs none of them); every other job is as without it."""
    if not files and compacted is None:
        return (
            "SELECT NULL::VARCHAR AS queue, NULL::VARCHAR AS name, NULL::VARCHAR AS status, "
            "NULL::TIMESTAMP AS created_at, NULL::TIMESTAMP AS started_at, "
            "NULL::TIMESTAMP AS finished_at, NULL::BIGINT AS attempts WHERE false"
        )
    state = job_state_sql(files, compacted)
    if compacted is not None and finished_since is not None:
        since = sql_string(finished_since.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" "))
        state = f"""
            WITH lines AS ({_line_state_sql(files)})
            SELECT queue, job_id, {_MERGE} FROM (
                SELECT * FROM lines
                UNION ALL BY NAME
                SELECT * FROM ({_compacted_sql(compacted)})
                WHERE last_state NOT IN ('completed', 'failed')
                    OR last_at >= {since}::TIMESTAMP
                    OR (queue, job_id) IN (SELECT queue, job_id FROM lines)
            ) GROUP BY queue, job_id
        """
    status = " ".join(
        f"WHEN {sql_string(state)} THEN {sql_string(value)}"
        for state, value in _STATUS_OF_STATE.items()
    )
    return f"""
        WITH per_job AS ({state}), placed AS (
            SELECT *,
                CASE WHEN last_state IN ('completed', 'failed') THEN last_at END AS finished_at
            FROM per_job
        ), started AS (
            SELECT *,
                CASE WHEN last_state = 'queued' THEN NULL
                WHEN last_start IS NOT NULL THEN last_start
                ELSE finished_at - to_microseconds(CAST(round(duration_ms * 1000) AS BIGINT))
                END AS started_at
            FROM placed
        )
        SELECT
            queue,
            {text_or_placeholder("name")} AS name,
            CASE last_state {status} END AS status,
            least(first_at, started_at) AS created_at,
            started_at,
            finished_at,
            coalesce(attempt, nullif(starts, 0)) AS attempts
        FROM started
    """


def job_state_files(directory: Path) -> tuple[list[Path], Path | None]:
    """What a refresh of the job source under ``directory`` reads: the staged line files of the
    chunks not folded yet, and the compacted state (None before the first compaction)."""
    path = directory / "manifest.json"
    if not path.exists():
        return [], None
    store = ManifestStore(directory)
    manifest = Manifest.from_json(path.read_text())
    live = [chunk for chunk in manifest.chunks if not chunk.folded]
    lines = [store.staged_file(c.seq) for c in live if c.rows and not c.compacted]
    compacted = [store.staged_file(c.seq) for c in live if c.compacted]
    return lines, (compacted[-1] if compacted else None)


def compact_job_chunks(directory: Path, after: int | None) -> int | None:
    """Fold the job source's staged chunks into one compacted state when ``after`` or more
    chunks are not folded yet (``after`` None: never); returns the compacted chunk's sequence
    number, or None when nothing was folded.

    The state (``job_state_sql`` of the chunks' lines and the previous compacted state: one
    row per job) is written under ``tmp/``, fsynced and renamed to ``staged/<seq>.parquet``;
    then the manifest (replaced atomically) lists it and marks the chunks it folded. A crash
    before that leaves a file the next load deletes (nothing folded); after it, the folded
    chunks' files are listed as folded and never read again. Their files are deleted by the
    next compaction, not this one: a refresh that listed them just before may still be reading
    them. Takes the source's ingest lock; raises ``LogSourceError`` when another process holds
    it too long, ``duckdb.Error`` when a staged file cannot be read.
    """
    if after is None:
        return None
    store = ManifestStore(directory)
    with store.locked():
        manifest = store.load()
        for chunk in manifest.chunks:
            if chunk.folded:
                store.staged_file(chunk.seq).unlink(missing_ok=True)
        live = [chunk for chunk in manifest.chunks if not chunk.folded]
        lines = [chunk for chunk in live if not chunk.compacted]
        if len(lines) < after:
            return None
        previous = [chunk for chunk in live if chunk.compacted]
        files = [store.staged_file(chunk.seq) for chunk in lines if chunk.rows]
        compacted = store.staged_file(previous[-1].seq) if previous else None
        seq = manifest.next_seq
        draft = store.tmp / f"{seq:010d}.compacted.parquet"
        with duckdb_session(store.tmp) as connection:
            connection.execute(
                f"COPY ({_SHRUNK.format(job_state_sql(files, compacted))} ORDER BY last_at) "
                f"TO {sql_string(str(draft))} (FORMAT parquet, COMPRESSION zstd)"
            )
            jobs, low, high = connection.execute(
                f"SELECT count(*), min(first_at), max(last_at) "
                f"FROM read_parquet({sql_string(str(draft))})"
            ).fetchone()
        with open(draft, "rb") as written:
            os.fsync(written.fileno())
        os.replace(draft, store.staged_file(seq))
        fsync_directory(store.staged)
        for chunk in live:
            chunk.folded = True
        manifest.chunks.append(
            Chunk(
                seq,
                int(jobs),
                low.isoformat() if low else "",
                high.isoformat() if high else "",
                compacted=True,
            )
        )
        manifest.next_seq = seq + 1
        store.save(manifest)
    return seq
