"""Jobs per hour x queue x name: outcomes, durations, and backlog/stuck snapshots.

Per UTC hour ``[h, h + 1 h)``:

- ``created``: jobs whose ``created_at`` falls in the hour;
- ``completed`` / ``failed``: jobs that finished in the hour with that status; ``retried``: of
  those, the ones that needed more than one attempt;
- ``duration_avg_ms`` / ``duration_p95_ms`` (exact, ``percentile_cont`` like the sketches) and a
  mergeable ``duration_sketch`` of finish minus start, over the jobs finished in the hour;
- ``backlog``: jobs waiting at the end of the hour (or now, for the current hour): created by
  then and not yet started, or still in a waiting status;
- ``stuck``: jobs active at that moment that started more than ``analytics.stuck_after`` before.

Snapshots are reconstructed from the timestamps. Job retention deletes finished jobs (after 24 h /
7 d), so a re-run of a past hour reads the jobs it archived back (``cleaned_up.py``), and an hour
whose recount is lower than published keeps its published rows: for ``created``, ``completed``
and ``failed`` always, for the ``backlog`` and ``stuck`` snapshots once the hour ended more than
``analytics.late_row_grace`` ago (before that, the published snapshot may be one of "now" taken
while the hour was still running, which the end-of-hour snapshot rightly replaces).

NULLs: a job without ``created_at`` is in no hour (``rows_without_timestamp``); without
``started_at`` it has not started (waiting: in the backlog while its status is a waiting one; no
duration); without ``finished_at`` it has not finished (not completed or failed in any hour);
a NULL ``status`` is never completed, failed, waiting or active (its timestamps alone place it
in the snapshots); NULL ``attempts`` is not a retry; a NULL queue or name is ``(none)``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import duckdb

from analytics.datasets import JOBS_HOURLY
from analytics.extract import (
    ColumnKind,
    Source,
    TimeRange,
    check_source,
    rows_without,
)
from analytics.logs.ingest import (
    ingest_log_files,
    publish_line_counts,
    source_directory,
)
from analytics.logs.jobs import (
    JOB_LINES,
    LOG_JOB_STATUSES,
    compact_job_chunks,
    job_rows_sql,
    job_state_files,
)
from analytics.publish import RollupStore
from analytics.rollups.cleaned_up import Cleanup, load_with_archive, stream_with_archive
from analytics.rollups.engine import (
    HOUR,
    RollupResult,
    check_range,
    duckdb_session,
    hour_keys,
    keep_published_where_lower,
    preview_rows,
    replace_hour_partitions,
    text_or_placeholder,
    timestamp_literal,
)
from analytics.settings import AnalyticsSettings, JobsJsonLinesSource, JobsSource
from analytics.sketch import bucket_sql, sketch_sql
from housekeeping.config import HousekeepingConfig
from housekeeping.database import AppDatabase
from housekeeping.sql import sql_string


def jobs_source(settings: AnalyticsSettings) -> Source:
    """The jobs table and columns ``analytics.sources.jobs`` maps."""
    return Source.from_config(
        settings.sources.jobs,
        "analytics.sources.jobs",
        {
            "queue": ColumnKind.TEXT,
            "name": ColumnKind.TEXT,
            "status": ColumnKind.TEXT,
            "created_at": ColumnKind.TIMESTAMP,
            "started_at": ColumnKind.TIMESTAMP,
            "finished_at": ColumnKind.TIMESTAMP,
            "attempts": ColumnKind.INTEGER,
        },
    )


def _in(values: list[str]) -> str:
    return ", ".join(sql_string(value) for value in values) or "NULL"


def refresh_jobs(
    db: AppDatabase,
    store: RollupStore,
    settings: AnalyticsSettings,
    start: datetime,
    end: datetime,
    now: datetime,
    *,
    config: HousekeepingConfig | None = None,
    check: bool = True,
) -> RollupResult:
    """Recompute the hours of ``[start, end)`` (whole hours) and replace their files.

    ``now`` (aware) is the moment of the current hour's snapshots. With ``config``, the jobs its
    policies archived are read back. A ``json_lines`` source is read from its log files instead
    (``refresh_jobs_from_log_files``; ``db`` and ``config`` are not used). Raises
    ``SourceError`` (mapping, archive) or ``DatabaseError``; ``ValueError`` for a range that is
    not whole hours.
    """
    check_range(start, end, HOUR)
    if isinstance(settings.sources.jobs, JobsJsonLinesSource):
        return refresh_jobs_from_log_files(store, settings, start, end, now)
    started = time.perf_counter()
    source = jobs_source(settings)
    if check:
        source = check_source(db, source)
    jobs = settings.sources.jobs
    # Every job that existed before the range ends: its events or its snapshot may fall inside.
    live = [TimeRange("created_at", None, end)]
    # Archived jobs are finished; one that finished before the range touches none of its hours.
    archive_where = [*live, TimeRange("finished_at", start, None)]
    aliases = ["queue", "name", "status", "created_at", "started_at", "finished_at", "attempts"]
    source, stream, archived = stream_with_archive(
        db, config, source, aliases, live, archive_where, streams=settings.extract_workers
    )
    with duckdb_session(store.root / ".tmp") as connection:
        from_archive = load_with_archive(
            connection,
            stream,
            source,
            f"""
                CREATE TEMP TABLE src AS SELECT
                    {text_or_placeholder("queue")} AS queue,
                    {text_or_placeholder("name")} AS name,
                    CAST(status AS VARCHAR) AS status,
                    CAST(CAST(created_at AS TIMESTAMPTZ) AS TIMESTAMP) AS created_at,
                    CAST(CAST(started_at AS TIMESTAMPTZ) AS TIMESTAMP) AS started_at,
                    CAST(CAST(finished_at AS TIMESTAMPTZ) AS TIMESTAMP) AS finished_at,
                    CAST(attempts AS BIGINT) AS attempts
                FROM source_rows
                """,
            archived,
            archive_where,
        )
        rows_read, kept, partitions, rows_written, preview = publish_job_hours(
            connection, store, settings, jobs, start, end, now
        )
    return RollupResult(
        JOBS_HOURLY.name,
        start,
        end,
        tuple(partitions),
        rows_read,
        rows_written,
        time.perf_counter() - started,
        preview,
        rows_from_archive=from_archive,
        kept_from_published=kept,
        kept_reason=(
            f"{kept} hour(s) had fewer jobs in {source.table} than published; kept the "
            f"published hours: {Cleanup.of(config, source.table).kept_why()}"
            if kept
            else ""
        ),
        rows_without_timestamp=rows_without(db, source, "created_at"),
    )


def refresh_jobs_from_log_files(
    store: RollupStore,
    settings: AnalyticsSettings,
    start: datetime,
    end: datetime,
    now: datetime,
) -> RollupResult:
    """The hours of ``[start, end)`` from a ``json_lines`` job source (analytics/logs/jobs.py).

    First one ingest tick stages the job lines not read before (exactly once, under
    ``<root>/.logs/jobs``; bad lines counted in ``log_ingest_errors``, whose partition of the
    tick's hour is republished with every log source's counts); then every staged job line
    becomes one row per job (``job_rows_sql``), published as a jobs table's rows are
    (``publish_job_hours``). Once ``compact_after_chunks`` chunks are staged they are folded
    into one compacted job state (``compact_job_chunks``): a refresh reads the chunks staged
    since and, of the compacted state, the jobs not finished before ``start``. ``now`` (aware, the database's clock) is the moment of the current
    hour's snapshots; the tick runs on this machine's clock, the one the files' mtimes are on.
    ``rows_without_timestamp`` counts this tick's job lines without a usable timestamp. Raises ``LogSourceError`` for an unreadable directory or file (nothing staged).
    """
    started = time.perf_counter()
    directory = source_directory(store.root, "jobs")
    # The files' mtimes are this machine's: the tick runs on its clock, not the database's.
    tick_at = datetime.now(UTC)
    ingested = ingest_log_files(directory, settings.sources.jobs, tick_at, JOB_LINES)
    if ingested.seq is not None:
        publish_line_counts(store, tick_at)
    compact_job_chunks(directory, settings.sources.jobs.compact_after_chunks)
    files, compacted = job_state_files(directory)
    with duckdb_session(store.root / ".tmp") as connection:
        # Jobs that finished before the range touch none of its hours (as for the archive):
        # those of the compacted state are left out unread.
        rows = job_rows_sql(files, compacted, finished_since=start)
        connection.execute(
            f"CREATE TEMP TABLE src AS SELECT * FROM ({rows}) "
            f"WHERE created_at < {timestamp_literal(end)} AND (finished_at IS NULL "
            f"OR finished_at >= {timestamp_literal(start)})"
        )
        rows_read, _, partitions, rows_written, preview = publish_job_hours(
            connection,
            store,
            settings,
            LOG_JOB_STATUSES,
            start,
            end,
            now,
            # Staged lines are never deleted, so the recount is complete: a lower number is a
            # correction (a job's earlier line read late moves it), not rows retention removed.
            keep_lower=False,
        )
    return RollupResult(
        JOBS_HOURLY.name,
        start,
        end,
        tuple(partitions),
        rows_read,
        rows_written,
        time.perf_counter() - started,
        preview,
        rows_without_timestamp=ingested.lines.get("missing_timestamp", 0)
        + ingested.lines.get("bad_timestamp", 0),
    )


def publish_job_hours(
    connection: duckdb.DuckDBPyConnection,
    store: RollupStore,
    settings: AnalyticsSettings,
    statuses: JobsSource,
    start: datetime,
    end: datetime,
    now: datetime,
    *,
    keep_lower: bool = True,
) -> tuple[int, int, list[str], int, list]:
    """From the temp table ``src`` (one row per job: queue, name, status, created_at, started_at,
    finished_at as naive UTC, attempts) to the published ``jobs_hourly`` hours of ``[start,
    end)``, the table and the log-file source alike.

    ``statuses`` names the completed, failed, waiting and active values of ``src.status``;
    ``now`` (aware) is the moment of the current hour's snapshots. ``keep_lower``: an hour whose
    recount is lower than published keeps its published rows (module docstring). Returns the
    jobs read, the hours kept from published, the partitions and rows written, a preview.
    """
    stuck_seconds = int(settings.stuck_after.total_seconds())
    duration = "date_diff('millisecond', started_at, finished_at)"
    snapshot_at = f"least(h.hour + INTERVAL 1 HOUR, {timestamp_literal(now.astimezone(UTC))})"
    low, high = timestamp_literal(start), timestamp_literal(end)
    finished = f"status IN ({_in([statuses.completed_status, statuses.failed_status])})"
    connection.execute(
        f"""
        CREATE TEMP TABLE rollup AS
        WITH hours AS (
            SELECT CAST(range AS TIMESTAMP) AS hour
            FROM range({low}, {high}, INTERVAL 1 HOUR)
        ),
        created AS (
            SELECT date_trunc('hour', created_at) AS hour, queue, name, count(*) AS created
            FROM src WHERE created_at >= {low} AND created_at < {high} GROUP BY ALL
        ),
        done AS (
            SELECT date_trunc('hour', finished_at) AS hour, queue, name,
                count_if(status = {sql_string(statuses.completed_status)}) AS completed,
                count_if(status = {sql_string(statuses.failed_status)}) AS failed,
                count_if(attempts > 1) AS retried,
                avg({duration}) FILTER (WHERE started_at IS NOT NULL) AS duration_avg_ms,
                quantile_cont({duration}, 0.95) FILTER (WHERE started_at IS NOT NULL)
                    AS duration_p95_ms,
                list({bucket_sql(duration)}) FILTER (WHERE started_at IS NOT NULL)
                    AS buckets
            FROM src
            WHERE finished_at >= {low} AND finished_at < {high} AND {finished}
            GROUP BY ALL
        ),
        snapshots AS (
            SELECT h.hour, s.queue, s.name,
                count_if(
                    coalesce(s.started_at, s.finished_at) > {snapshot_at}
                    OR (coalesce(s.started_at, s.finished_at) IS NULL
                        AND s.status IN ({_in(statuses.waiting_statuses)}))
                ) AS backlog,
                count_if(
                    s.started_at < {snapshot_at} - INTERVAL {stuck_seconds} SECOND
                    AND (s.finished_at > {snapshot_at}
                         OR (s.finished_at IS NULL
                             AND s.status = {sql_string(statuses.active_status)}))
                ) AS stuck
            FROM hours h JOIN src s ON s.created_at <= {snapshot_at}
            WHERE s.finished_at IS NULL OR s.finished_at > {snapshot_at}
            GROUP BY ALL
        ),
        keys AS (
            SELECT hour, queue, name FROM created
            UNION SELECT hour, queue, name FROM done
            UNION SELECT hour, queue, name FROM snapshots WHERE backlog > 0 OR stuck > 0
        )
        SELECT {JOBS_HOURLY.select_list()} FROM (
            SELECT k.hour, k.queue, k.name,
                coalesce(c.created, 0) AS created,
                coalesce(d.completed, 0) AS completed,
                coalesce(d.failed, 0) AS failed,
                coalesce(d.retried, 0) AS retried,
                d.duration_avg_ms, CAST(d.duration_p95_ms AS DOUBLE) AS duration_p95_ms,
                {sketch_sql("d.buckets")} AS duration_sketch,
                coalesce(s.backlog, 0) AS backlog,
                coalesce(s.stuck, 0) AS stuck
            FROM keys k
            LEFT JOIN created c USING (hour, queue, name)
            LEFT JOIN done d USING (hour, queue, name)
            LEFT JOIN snapshots s USING (hour, queue, name)
        )
        """
    )
    rows_read = connection.execute("SELECT count(*) FROM src").fetchone()[0]
    final = timestamp_literal(now.astimezone(UTC) - settings.late_row_grace)
    snapshot_final = f"unit + INTERVAL 1 HOUR <= {final}"
    kept = 0
    if keep_lower:
        kept = keep_published_where_lower(
            connection,
            store,
            JOBS_HOURLY,
            hour_keys(start, end),
            "hour",
            f"hour >= {low} AND hour < {high}",
            {
                "created": "TRUE",
                "completed": "TRUE",
                "failed": "TRUE",
                "backlog": snapshot_final,
                "stuck": snapshot_final,
            },
        )
    partitions, rows_written = replace_hour_partitions(
        connection, store, JOBS_HOURLY, "hour", start, end
    )
    preview = preview_rows(connection, "rollup", "created DESC, queue, name")
    return int(rows_read), kept, partitions, rows_written, preview
