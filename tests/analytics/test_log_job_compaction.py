"""Compaction of a job source's staged chunks (analytics/logs/jobs.py ``compact_job_chunks``)
changes nothing published: a month of job lines in rotated files, refreshed day by day, publishes
the same ``jobs_hourly`` rows and line counts with and without compaction (and the rows a jobs
table holding the same jobs publishes), while the staged files stay bounded; a compaction cut
short at any step loses and doubles no job.
"""

from __future__ import annotations

import gzip
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from analytics.logs.generate import JobRun, job_line, job_lines
from analytics.logs.jobs import compact_job_chunks, job_state_files
from analytics.rollups.jobs import refresh_jobs
from analytics.settings import parse_analytics_settings
from tests.analytics.test_log_jobs import (
    END,
    START,
    append,
    generated_jobs,
    jobs_hourly,
    log_settings,
    log_text,
    table_rows,
)
from tests.support.analytics_data import (
    NOW,
    empty_reference_schema,
    insert_jobs,
    make_settings,
    make_store,
    publish,
    query,
    random_jobs,
)

H = timedelta(hours=1)
DAY = timedelta(days=1)
DAYS = 30
MONTH = datetime(2026, 10, 21, tzinfo=UTC)  # NOW (2026-11-20 12:30) is in its 31st day
MONTH_END = datetime(2026, 11, 20, 13, tzinfo=UTC)  # the hour of NOW, whole


def month_of_jobs() -> list[JobRun]:
    """Jobs on every day of the month, and jobs whose lines fall days apart (in chunks a
    compaction folds and chunks staged after it): one waiting since day 0, one active (stuck)
    since day 1, one queued on day 2 and started and finished on days 19 and 20, one queued on
    day 5 and finished on day 29."""
    jobs = [
        JobRun("old-wait", "email", "digest", "waiting", MONTH + 3 * H),
        JobRun("old-stuck", "reports", "monthly", "active", MONTH + DAY, MONTH + DAY + H),
        JobRun(
            "long",
            "reports",
            "yearly",
            "completed",
            MONTH + 2 * DAY,
            MONTH + 19 * DAY,
            MONTH + 20 * DAY + 5 * H,
            2,
        ),
        JobRun("late", "email", "digest", "failed", MONTH + 5 * DAY, None, MONTH + 29 * DAY, 3),
    ]
    for day in range(DAYS + 1):
        first = MONTH + day * DAY + 6 * H
        rows = random_jobs(40, seed=100 + day, start=first, now=NOW, precision=H / 3600_000)
        jobs += [
            JobRun(
                f"d{day}-{index}",
                row["queue"],
                row["name"],
                row["status"],
                row["created_at"],
                row["started_at"],
                row["finished_at"],
                row["attempts"],
            )
            for index, row in enumerate(rows)
            if row["created_at"] < NOW
        ]
    return jobs


def rotate(logs: Path) -> None:
    """logrotate with compress: jobs.log.N.gz -> N+1, jobs.log -> jobs.log.1 -> .1.gz."""
    for path in sorted(logs.glob("jobs.log.*.gz"), key=lambda p: -int(p.name.split(".")[2])):
        number = int(path.name.split(".")[2])
        path.rename(logs / f"jobs.log.{number + 1}.gz")
    (logs / "jobs.log").rename(logs / "jobs.log.1")
    with open(logs / "jobs.log.1", "rb") as plain, gzip.open(logs / "jobs.log.1.gz", "wb") as gz:
        shutil.copyfileobj(plain, gz)
    (logs / "jobs.log.1").unlink()


def staged_count(settings) -> int:
    return len(list((settings.root_path / ".logs" / "jobs" / "staged").glob("*.parquet")))


def run_month(tmp_path: Path, jobs: list[JobRun], compact_after: int | None):
    """Day by day: the day's lines appended (rotated every 4 days), the day's hours refreshed
    and published; then the whole month refreshed. Returns the settings, the published rows
    after the daily refreshes and after the month's, and the largest staged file count."""
    settings = log_settings(tmp_path, "pino", compact_after_chunks=compact_after)
    store = make_store(settings)
    logs = tmp_path / "logs"
    logs.mkdir(parents=True)
    lines = sorted(pair for j in jobs for pair in job_lines("pino", j))
    most = 0
    for day in range(DAYS + 1):
        low, high = MONTH + day * DAY, MONTH + (day + 1) * DAY
        append(logs / "jobs.log", [(text + "\n").encode() for m, text in lines if low <= m < high])
        refresh_jobs(None, store, settings, low, min(high, MONTH_END), NOW)
        publish(store, settings)
        most = max(most, staged_count(settings))
        if day % 4 == 3:
            rotate(logs)
    daily = jobs_hourly(settings)
    refresh_jobs(None, store, settings, MONTH, MONTH_END, NOW)
    publish(store, settings)
    return settings, daily, jobs_hourly(settings), most


def test_a_month_of_job_lines_publishes_the_same_rows_with_and_without_compaction(
    tmp_path, sqlite_url
):
    jobs = month_of_jobs()
    plain, plain_daily, plain_month, plain_most = run_month(tmp_path / "plain", jobs, None)
    packed, packed_daily, packed_month, packed_most = run_month(tmp_path / "packed", jobs, 4)

    assert len(plain_month) > 500
    assert packed_daily == plain_daily
    assert packed_month == plain_month
    lines = (
        "SELECT source, regexp_replace(file, '.*/', ''), reason, bad, sum(lines) "
        "FROM log_ingest_errors GROUP BY ALL"
    )
    assert sorted(query(packed, lines).values.tolist()) == sorted(
        query(plain, lines).values.tolist()
    )
    # the same jobs in a jobs table publish the same month
    db = empty_reference_schema(sqlite_url)
    insert_jobs(db, table_rows(jobs))
    table = make_settings(tmp_path / "table")
    store = make_store(table)
    refresh_jobs(db, store, table, MONTH, MONTH_END, NOW)
    publish(store, table)
    db.dispose()
    assert jobs_hourly(table) == plain_month
    # the long-waiting and the stuck job of the month's first days are still counted
    rows = {(row[0], row[1], row[2]): row for row in packed_month}
    last = datetime(2026, 11, 20, 12)
    assert rows[(last, "email", "digest")][-2] >= 1  # backlog
    assert rows[(last, "reports", "monthly")][-1] >= 1  # stuck
    # without compaction every tick's chunk stays; with it, at most 2 x 4 chunks and 2 states
    assert plain_most == DAYS + 1
    assert packed_most <= 2 * 4 + 2
    files, compacted = job_state_files(packed.root_path / ".logs" / "jobs")
    assert compacted is not None and len(files) < 4


def compacted_settings(tmp_path: Path):
    return log_settings(tmp_path, "winston", compact_after_chunks=None)


def refreshed(settings) -> list[tuple]:
    store = make_store(settings)
    refresh_jobs(None, store, settings, START, END, NOW)
    publish(store, settings)
    return jobs_hourly(settings)


def test_a_compaction_cut_short_at_any_step_loses_and_doubles_no_job(tmp_path):
    jobs = generated_jobs(600, seed=21)
    text = log_text("winston", jobs)
    settings = compacted_settings(tmp_path)
    directory = settings.root_path / ".logs" / "jobs"
    (tmp_path / "logs").mkdir()
    thirds = [text[: len(text) // 3], text[len(text) // 3 : 2 * len(text) // 3]]
    for part in thirds:
        append(tmp_path / "logs" / "jobs.log", part)
        refreshed(settings)
    append(tmp_path / "logs" / "jobs.log", text[2 * len(text) // 3 :])
    expected = refreshed(settings)
    assert len(expected) > 30
    before = tmp_path / "before"
    shutil.copytree(directory, before)

    # 1. cut short after the compacted file was renamed into place, before the manifest was
    # replaced: the old manifest, the file it does not list, a half-written draft in tmp/
    seq = compact_job_chunks(directory, 2)
    assert seq is not None
    shutil.copy(before / "manifest.json", directory / "manifest.json")
    (directory / "tmp" / f"{seq + 1:010d}.compacted.parquet").write_bytes(b"PAR1 cut")
    files, compacted = job_state_files(directory)
    assert [f.name for f in files] == [f"{n:010d}.parquet" for n in (1, 2, 3)]
    assert compacted is None
    assert refreshed(settings) == expected
    assert not (directory / "staged" / f"{seq:010d}.parquet").exists()
    assert not list((directory / "tmp").iterdir())

    # 2. cut short after the manifest was replaced: the folded chunks' files are still there
    # (a refresh may be reading them) and are never read again
    seq = compact_job_chunks(directory, 2)
    files, compacted = job_state_files(directory)
    assert files == [] and compacted == directory / "staged" / f"{seq:010d}.parquet"
    assert len(list((directory / "staged").glob("*.parquet"))) == 4
    assert refreshed(settings) == expected

    # 3. the next lines, then the next compaction: it folds the state and the new chunk and
    # deletes the files the previous one folded
    late = [JobRun("late-1", "email", "digest", "waiting", START + 2 * H)]
    append(tmp_path / "logs" / "jobs.log", log_text("winston", late))
    with_late = refreshed(settings)
    assert with_late != expected
    assert compact_job_chunks(directory, 2) is None  # one chunk since: not yet
    append(tmp_path / "logs" / "jobs.log", b'{"not": "a job"}\n')
    refreshed(settings)
    last = compact_job_chunks(directory, 2)
    assert sorted(p.name for p in (directory / "staged").glob("*.parquet")) == sorted(
        [
            f"{seq:010d}.parquet",
            f"{seq + 1:010d}.parquet",
            f"{seq + 2:010d}.parquet",
            f"{last:010d}.parquet",
        ]
    )
    assert refreshed(settings) == with_late
    # the compacted state holds each job once
    _, compacted = job_state_files(directory)
    [(count, distinct)] = duckdb.sql(
        f"SELECT count(*), count(DISTINCT (queue, job_id)) FROM read_parquet('{compacted}')"
    ).fetchall()
    assert count == distinct == len(jobs) + 1


def test_compact_after_chunks_is_at_least_two(tmp_path):
    for bad in (0, 1):
        with pytest.raises(
            Exception, match=r"analytics.sources.jobs.compact_after_chunks: Input should be"
        ):
            parse_analytics_settings(
                {
                    "sources": {
                        "jobs": {
                            "kind": "json_lines",
                            "path": "/x/*",
                            "format": "pino",
                            "compact_after_chunks": bad,
                        }
                    }
                }
            )


def test_a_job_retried_after_its_failure_was_compacted_keeps_its_first_line(tmp_path):
    """A job that failed before the refreshed hours is left out of the compacted state read,
    unless lines staged since (its retry) name it: then it is the whole job, as without."""
    run = JobRun("r1", "email", "digest", "failed", START, START + H / 60, START + H / 30)
    retry = JobRun("r1", "email", "digest", "completed", START + 3 * H, None, START + 4 * H, 2)
    first = [job_line("pino", run, m, s) for m, s in [(START, "queued"), (run.finished, "failed")]]
    again = [job_line("pino", retry, START + 3 * H, "queued")]
    again.append(job_line("pino", retry, START + 4 * H, "completed", 1000.0))
    published = []
    for compact_after in (None, 2):
        settings = log_settings(tmp_path / str(compact_after), "pino", compact_after_chunks=None)
        directory = settings.root_path / ".logs" / "jobs"
        logs = tmp_path / str(compact_after) / "logs"
        logs.mkdir(parents=True)
        store = make_store(settings)
        append(logs / "jobs.log", [(line + "\n").encode() for line in first])
        refresh_jobs(None, store, settings, START, START + H, NOW)
        append(logs / "jobs.log", [b"{}\n"])
        refresh_jobs(None, store, settings, START, START + H, NOW)
        if compact_after:
            assert compact_job_chunks(directory, compact_after) is not None
        append(logs / "jobs.log", [(line + "\n").encode() for line in again])
        refresh_jobs(None, store, settings, START + 3 * H, END, NOW)
        publish(store, settings)
        published.append(jobs_hourly(settings))

    assert published[1] == published[0]
    # created in the first hour (not published again), completed on its second attempt
    assert [row[3:7] for row in published[0]] == [(1, 0, 1, 0), (0, 1, 0, 1)]
