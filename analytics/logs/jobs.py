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
"""

from __future__ import annotations

from pathlib import Path

from analytics.logs.formats import duration_ms_sql, timestamp_sql
from analytics.logs.ingest import LineShape, Slice, parsed_lines_sql, unparsed_outcome_sql
from analytics.logs.job_formats import JOB_STATES
from analytics.rollups.engine import text_or_placeholder
from analytics.settings import JobsJsonLinesSource, JobsSource
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
    return f"""
        {parsed}, typed AS (
            SELECT *, {timestamp} AS ts, {selected} AS selected,
                CASE {states} END AS state
            FROM fields
        )
        SELECT
            slice,
            CASE
                WHEN v IS NULL THEN {unparsed_outcome_sql()}
                WHEN selected AND state IS NOT NULL THEN
                    CASE WHEN {value("job_id")} IS NULL THEN 'missing_job_id'
                    WHEN {value("timestamp")} IS NULL THEN 'missing_timestamp'
                    WHEN ts IS NULL THEN 'bad_timestamp'
                    ELSE 'job' END
                WHEN NOT starts_with(ltrim(line), '{{') THEN 'not_an_object'
                ELSE 'other'
            END AS outcome,
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


def job_rows_sql(files: list[Path]) -> str:
    """A SELECT of one row per job from the staged job lines in ``files``: queue, name, status,
    created_at, started_at, finished_at (naive UTC), attempts, as the jobs table's rows are read
    (the rules are in the module's docstring)."""
    if not files:
        return (
            "SELECT NULL::VARCHAR AS queue, NULL::VARCHAR AS name, NULL::VARCHAR AS status, "
            "NULL::TIMESTAMP AS created_at, NULL::TIMESTAMP AS started_at, "
            "NULL::TIMESTAMP AS finished_at, NULL::BIGINT AS attempts WHERE false"
        )
    paths = "[" + ", ".join(sql_string(str(path)) for path in files) + "]"
    rank = "CASE state WHEN 'queued' THEN 0 WHEN 'started' THEN 1 ELSE 2 END"
    status = " ".join(
        f"WHEN {sql_string(state)} THEN {sql_string(value)}"
        for state, value in _STATUS_OF_STATE.items()
    )
    return f"""
        WITH per_job AS (
            SELECT
                {text_or_placeholder("queue")} AS queue,
                job_id,
                arg_max(name, ts) FILTER (WHERE name IS NOT NULL) AS name,
                min(ts) AS first_at,
                max(ts) AS last_at,
                arg_max(state, epoch_us(ts) * 4 + {rank}) AS last_state,
                max(ts) FILTER (WHERE state = 'started') AS last_start,
                count(*) FILTER (WHERE state = 'started') AS starts,
                arg_max(duration_ms, ts) FILTER (WHERE state IN ('completed', 'failed'))
                    AS duration_ms,
                max(attempt) AS attempt
            FROM read_parquet({paths}) WHERE outcome = 'job'
            GROUP BY ALL
        ), placed AS (
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
