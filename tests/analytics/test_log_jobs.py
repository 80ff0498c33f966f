"""A job source read from log files (``analytics.sources.jobs`` of kind ``json_lines``)
publishes exactly the job hours a jobs table holding the same jobs publishes, reading every line
once across rotation, compression and copytruncate, with bad lines counted per file and reason.

Every test writes the same jobs into the reference jobs table and, as lifecycle lines in the
preset's shape (analytics/logs/generate.py), into real files; both go through the real refresh
(DuckDB, Parquet, the views file) and the published ``jobs_hourly`` rows are compared whole.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from analytics.config_check import check_analytics
from analytics.logs.generate import JOB_PRESET_NAMES, JobRun, job_lines, request_lines
from analytics.logs.manifest import LogSourceError
from analytics.logs.seed import write_log_files
from analytics.rollups.jobs import refresh_jobs
from analytics.rollups.requests import refresh_requests_from_log_files
from analytics.settings import parse_analytics_settings
from housekeeping.config import load_config
from housekeeping.database import AppDatabase
from housekeeping.demo.seed import seed_database
from tests.analytics.test_log_files import make_requests
from tests.support.analytics_data import (
    NOW,
    empty_reference_schema,
    insert_jobs,
    job,
    make_settings,
    make_store,
    publish,
    query,
    random_jobs,
)

H = timedelta(hours=1)
M = timedelta(minutes=1)
START = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)  # NOW is 12:30
END = START + 5 * H


def generated_jobs(count: int, seed: int) -> list[JobRun]:
    jobs = [
        # hand-made edges: a retried failure, a job waiting across hours, a stuck one, one
        # queued and started in the same millisecond, one finished in the current hour
        JobRun("f1", "email", "digest", "failed", START + M, START + 2 * M, START + 5 * M, 3),
        JobRun("w1", "webhooks", "deliver", "waiting", START + 90 * M),
        JobRun("d1", "webhooks", "deliver", "delayed", START + 95 * M),
        JobRun("s1", "reports", "monthly", "active", START + 59 * M, START + 60 * M),
        JobRun("z1", "email", "welcome", "completed", START + 7 * M, START + 7 * M, START + 8 * M),
        JobRun("c1", "reports", "weekly", "completed", START + 3 * H, START + 3 * H + M, NOW - M),
    ]
    for index, row in enumerate(random_jobs(count, seed, START, NOW, timedelta(milliseconds=1))):
        jobs.append(
            JobRun(
                f"{index}",
                row["queue"],
                row["name"],
                row["status"],
                row["created_at"],
                row["started_at"],
                row["finished_at"],
                row["attempts"],
            )
        )
    return jobs


def table_rows(jobs: list[JobRun]) -> list[dict]:
    return [
        job(j.queue, j.name, j.status, j.created, j.started, j.finished, j.attempts) for j in jobs
    ]


def log_text(preset: str, jobs: list[JobRun]) -> list[bytes]:
    """Every job's lines, in time order, each with its newline."""
    lines = sorted(pair for j in jobs for pair in job_lines(preset, j))
    return [(line + "\n").encode() for _, line in lines]


def append(path: Path, data: bytes | list[bytes]) -> None:
    with open(path, "ab") as handle:
        handle.write(data if isinstance(data, bytes) else b"".join(data))


def log_settings(tmp_path: Path, preset: str | None, **source):
    return parse_analytics_settings(
        {
            "root": str(tmp_path / "from_logs"),
            "database": str(tmp_path / "from_logs" / "rollups.duckdb"),
            "sources": {
                "jobs": {
                    "kind": "json_lines",
                    "path": str(tmp_path / "logs" / "jobs.log*"),
                    "format": preset,
                    "settle": "0s",
                    **source,
                }
            },
        }
    )


def jobs_hourly(settings) -> list[tuple]:
    """Every published job hour, whole (sketches included), in a fixed order."""
    with duckdb.connect(str(settings.database_path), read_only=True) as connection:
        return connection.execute("SELECT * FROM jobs_hourly ORDER BY hour, queue, name").fetchall()


def from_table(url: str, tmp_path: Path, jobs: list[JobRun]) -> list[tuple]:
    db = empty_reference_schema(url)
    insert_jobs(db, table_rows(jobs))
    settings = make_settings(tmp_path / "table")
    store = make_store(settings)
    refresh_jobs(db, store, settings, START, END, NOW)
    publish(store, settings)
    db.dispose()
    return jobs_hourly(settings)


def from_logs(settings, now: datetime = NOW) -> list[tuple]:
    store = make_store(settings)
    refresh_jobs(None, store, settings, START, END, now)
    publish(store, settings)
    return jobs_hourly(settings)


def line_counts(settings, where: str = "true") -> dict[str, int]:
    rows = query(
        settings,
        f"SELECT reason, sum(lines)::BIGINT AS n FROM log_ingest_errors WHERE {where} GROUP BY 1",
    )
    return dict(zip(rows.reason, rows.n, strict=True))


@pytest.mark.parametrize("preset", JOB_PRESET_NAMES)
def test_job_hours_from_log_files_equal_those_from_the_same_jobs_in_a_table(
    tmp_path, app_url, preset
):
    jobs = generated_jobs(1500, seed=JOB_PRESET_NAMES.index(preset))
    expected = from_table(app_url, tmp_path, jobs)
    settings = log_settings(tmp_path, preset)
    (tmp_path / "logs").mkdir()
    append(tmp_path / "logs" / "jobs.log", log_text(preset, jobs))

    published = from_logs(settings)

    assert len(expected) > 60
    assert published == expected
    # the ids, e-mails and user ids job lines carry are never staged
    for path in (tmp_path / "from_logs").rglob("*.parquet"):
        dumped = json.dumps(
            duckdb.sql(f"SELECT * FROM read_parquet('{path}')").fetchall(), default=str
        )
        assert "jane.doe@example.com" not in dumped and "user-48213" not in dumped, path
    # the retried failure and the stuck job as the table has them
    rows = {(row[0], row[1], row[2]): row for row in published}
    assert rows[(START.replace(tzinfo=None), "email", "digest")][6] >= 1  # retried
    assert rows[((START + 4 * H).replace(tzinfo=None), "reports", "monthly")][-1] >= 1  # stuck


def test_a_job_field_mapping_reads_another_shape(tmp_path, sqlite_url):
    jobs = generated_jobs(300, seed=11)
    expected = from_table(sqlite_url, tmp_path, jobs)
    settings = log_settings(
        tmp_path,
        None,
        fields={
            "timestamp": "at",
            "timestamp_format": "epoch_s",
            "job_id": "job.id",
            "name": "job.kind",
            "queue": "job.queue",
            "state": "event",
            "attempt": "job.try",
            "select": "job",
            "queued_states": ["enqueued"],
            "started_states": ["begin"],
            "completed_states": ["done"],
            "failed_states": ["error"],
        },
    )
    words = {"queued": "enqueued", "started": "begin", "completed": "done", "failed": "error"}
    lines = []
    for j in jobs:
        for moment, line in job_lines("winston", j):
            state = json.loads(line)["status"]
            lines.append(
                (
                    moment,
                    json.dumps(
                        {
                            "at": (moment - datetime(1970, 1, 1, tzinfo=UTC))
                            / timedelta(seconds=1),
                            "event": words[state],
                            "job": {"id": j.job_id, "kind": j.name, "queue": j.queue, "try": 1},
                        }
                    ),
                )
            )
        # the attempt the table holds, on the last line
        lines[-1] = (lines[-1][0], lines[-1][1].replace('"try": 1', f'"try": {j.attempts}'))
    (tmp_path / "logs").mkdir()
    append(tmp_path / "logs" / "jobs.log", [(text + "\n").encode() for _, text in sorted(lines)])

    assert from_logs(settings) == expected


def test_a_finish_line_without_its_start_line_is_placed_by_its_duration(tmp_path):
    settings = log_settings(tmp_path, "pino")
    run = JobRun("7", "email", "welcome", "completed", START, START + M, START + 3 * M)
    (tmp_path / "logs").mkdir()
    # only the completion line, with "totalDuration": "120.000s"
    append(tmp_path / "logs" / "jobs.log", log_text("pino", [run])[-1])

    [row] = from_logs(settings)

    assert row[:6] == (START.replace(tzinfo=None), "email", "welcome", 1, 1, 0)
    assert row[7] == 120_000.0  # duration_p95_ms


BAD_JOB_LINES = {
    "malformed_json": b'{"time": 1, "jobName": "x"\n',
    "not_an_object": b"[1, 2, 3]\n",
    "missing_job_id": b'{"time": 1763625600000, "jobName": "x", "phase": "started"}\n',
    "missing_timestamp": b'{"jobId": "9", "jobName": "x", "phase": "started"}\n',
    "bad_timestamp": b'{"time": "soon", "jobId": "9", "jobName": "x", "phase": "started"}\n',
    "invalid_encoding": b"\xff\xfe\x00binary blob\xc3\x28\n",
}


def test_bad_lines_are_counted_per_file_and_reason_and_never_stop_the_rollup(tmp_path, sqlite_url):
    jobs = generated_jobs(200, seed=4)
    expected = from_table(sqlite_url, tmp_path, jobs)
    settings = log_settings(tmp_path, "pino")
    (tmp_path / "logs").mkdir()
    path = tmp_path / "logs" / "jobs.log"
    text = log_text("pino", jobs)
    append(path, text[:100])
    for data in BAD_JOB_LINES.values():
        append(path, data)
    # a progress line is a job's line but no lifecycle event: other, not bad
    append(path, b'{"time": 1763625600000, "jobId": "1", "jobName": "x", "phase": "processing"}\n')
    append(path, text[100:])

    assert from_logs(settings) == expected
    assert line_counts(settings, "bad") == {reason: 1 for reason in BAD_JOB_LINES}
    assert line_counts(settings, "NOT bad") == {"job": len(text), "other": 1}
    files = query(settings, "SELECT DISTINCT file, source FROM log_ingest_errors")
    assert list(zip(files.file, files.source, strict=True)) == [(str(path), "jobs")]


def test_rotation_compression_and_copytruncate_read_every_job_line_once(tmp_path, sqlite_url):
    jobs = generated_jobs(1200, seed=9)
    expected = from_table(sqlite_url, tmp_path, jobs)
    settings = log_settings(tmp_path, "winston")
    store = make_store(settings)
    logs = tmp_path / "logs"
    logs.mkdir()
    live = logs / "jobs.log"
    text = log_text("winston", jobs)
    batches = [text[i : i + 400] for i in range(0, len(text), 400)]
    assert len(batches) >= 6

    def tick():
        refresh_jobs(None, store, settings, START, END, NOW)

    append(live, batches[0])
    cut = len(b"".join(batches[1])) - 30
    append(live, b"".join(batches[1])[:cut])  # a line cut in half between two ticks
    tick()
    append(live, b"".join(batches[1])[cut:])
    tick()
    # rename rotation, lines written before the rename but after the last tick in .1
    append(live, batches[2])
    os.rename(live, logs / "jobs.log.1")
    append(live, batches[3])
    tick()
    # compression after rotation, with a tail written after the last tick
    append(logs / "jobs.log.1", batches[4][:50])
    with open(logs / "jobs.log.1", "rb") as plain, gzip.open(logs / "jobs.log.1.gz", "wb") as gz:
        shutil.copyfileobj(plain, gz)
    (logs / "jobs.log.1").unlink()
    tick()
    # copytruncate: the copy keeps the unread tail, the truncated file starts again
    append(live, batches[4][50:])
    shutil.copyfile(live, logs / "jobs.log.2")
    with open(live, "r+b") as handle:
        handle.truncate(0)
    for batch in batches[5:]:
        append(live, batch)

    assert from_logs(settings) == expected
    assert line_counts(settings) == {"job": len(text)}


def test_line_counts_of_every_log_source_are_published_together(tmp_path):
    """One pino file holds requests and job lines; both sources read it, each counting the
    other's lines as other (a failed job's error-level line is an error to the request source),
    and the hour's log_ingest_errors partition keeps both."""
    source = {"kind": "json_lines", "path": str(tmp_path / "logs" / "app.log*"), "settle": "0s"}
    both = parse_analytics_settings(
        {
            "root": str(tmp_path / "from_logs"),
            "database": str(tmp_path / "from_logs" / "rollups.duckdb"),
            "sources": {
                "jobs": {**source, "format": "pino"},
                "request_logs": {**source, "format": "pino"},
            },
        }
    )
    store = make_store(both)
    jobs = generated_jobs(50, seed=2)
    requests = make_requests(80, seed=2, start=START)
    (tmp_path / "logs").mkdir()
    append(tmp_path / "logs" / "app.log", log_text("pino", jobs))
    append(
        tmp_path / "logs" / "app.log",
        [(line + "\n").encode() for r in requests for line in request_lines("pino", r)],
    )
    job_lines_written = len(log_text("pino", jobs))
    # a failed job's line is at pino's error level: an error line to the request source
    failed_lines = sum(b'"level":50' in line for line in log_text("pino", jobs))
    assert failed_lines > 0

    refresh_requests_from_log_files(store, both, START, END)
    refresh_jobs(None, store, both, START, END, NOW)
    publish(store, both)

    counts = query(
        both,
        "SELECT source, reason, sum(lines)::BIGINT FROM log_ingest_errors GROUP BY ALL "
        "ORDER BY source, reason",
    )
    assert list(counts.itertuples(index=False, name=None)) == [
        ("jobs", "job", job_lines_written),
        ("jobs", "other", len(requests)),
        ("request_logs", "error", failed_lines),
        ("request_logs", "other", job_lines_written - failed_lines),
        ("request_logs", "request", len(requests)),
    ]


def test_a_job_source_needs_a_preset_or_the_fields_that_place_a_job(tmp_path):
    with pytest.raises(Exception, match=r"analytics.sources.jobs.*set format \(pino, winston\)"):
        parse_analytics_settings({"sources": {"jobs": {"kind": "json_lines", "path": "/x/*"}}})
    with pytest.raises(Exception, match=r"fields: set job_id, name, state"):
        parse_analytics_settings(
            {
                "sources": {
                    "jobs": {
                        "kind": "json_lines",
                        "path": "/x/*",
                        "fields": {"timestamp": "t", "select": "job"},
                    }
                }
            }
        )
    with pytest.raises(Exception, match=r"analytics.sources.jobs.format: Input should be"):
        parse_analytics_settings(
            {"sources": {"jobs": {"kind": "json_lines", "path": "/x/*", "format": "bunyan"}}}
        )
    with pytest.raises(Exception, match=r"analytics.sources.jobs: kind: expected table or json"):
        parse_analytics_settings({"sources": {"jobs": {"kind": "csv"}}})
    # the table kind is still the default and still accepted by name
    settings = parse_analytics_settings({"sources": {"jobs": {"kind": "table", "table": "jobs"}}})
    assert settings.sources.jobs.table.name == "jobs"


def test_an_unreadable_job_log_directory_is_one_line_naming_it_and_stages_nothing(tmp_path):
    settings = log_settings(tmp_path, "pino")
    store = make_store(settings)
    with pytest.raises(LogSourceError, match=r"^analytics.sources.jobs.path: .*logs is not a dir"):
        refresh_jobs(None, store, settings, START, END, NOW)
    assert not (store.root / ".logs" / "jobs" / "manifest.json").exists()


def test_config_check_counts_the_job_log_files_and_does_not_ask_for_a_jobs_table(
    tmp_path, sqlite_url
):
    db = empty_reference_schema(sqlite_url)
    with db.engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE jobs")
    (tmp_path / "logs").mkdir()
    append(tmp_path / "logs" / "jobs.log", b"{}\n")
    config_file = tmp_path / "hk.yaml"

    def check(path: Path):
        source = {"kind": "json_lines", "path": str(path), "format": "winston"}
        config_file.write_text(json.dumps({"analytics": {"sources": {"jobs": source}}}))
        return check_analytics(db, load_config(str(config_file)), str(config_file))

    found = check(tmp_path / "logs" / "jobs.log*")
    assert found.problems == []
    assert f"analytics.sources.jobs: 1 log file(s) match {tmp_path}/logs/jobs.log*" in found.ok
    assert not [line for line in found.ok if "sources.jobs.table" in line]
    missing = check(tmp_path / "nowhere" / "jobs.log*")
    assert missing.problems == [
        f"analytics.sources.jobs.path: {tmp_path}/nowhere is not a directory "
        f"({tmp_path}/nowhere/jobs.log*)"
    ]
    db.dispose()


def test_hk_seed_log_files_writes_the_jobs_of_the_table_as_job_logs(tmp_path, sqlite_url):
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    written = write_log_files(tmp_path / "fixed", requests=3000, days=2, seed=7, now=now)
    seed_database(sqlite_url, tokens=10, requests=3000, days=2, seed=7, now=now)
    db = AppDatabase(sqlite_url)
    start, end = (now - timedelta(days=3)).replace(minute=0), now + H
    counters = "hour, queue, name, created, completed, failed, retried, backlog, stuck"
    table_settings = make_settings(tmp_path / "from_table")
    table_store = make_store(table_settings)
    refresh_jobs(db, table_store, table_settings, start, end, now)
    publish(table_store, table_settings)
    db.dispose()
    expected = query(table_settings, f"SELECT {counters} FROM jobs_hourly ORDER BY ALL")
    assert int(expected.created.sum()) == written.jobs > 0
    for shape in JOB_PRESET_NAMES:
        settings = log_settings(
            tmp_path / shape, shape, path=str(tmp_path / "fixed" / shape / "jobs.log*")
        )
        store = make_store(settings)
        refresh_jobs(None, store, settings, start, end, now)
        publish(store, settings)
        got = query(settings, f"SELECT {counters} FROM jobs_hourly ORDER BY ALL")
        # the lines' times are whole milliseconds: counts are exact, durations are not compared
        assert got.equals(expected), shape
    files = sorted(path.name for path in (tmp_path / "fixed" / "pino").glob("jobs.log*"))
    assert files == ["jobs.log", "jobs.log.1", "jobs.log.2.gz"]
