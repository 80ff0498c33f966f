"""A log-file source (``kind: json_lines``) publishes the same request minutes as a table would,
counting every line exactly once while the files grow, rotate, get compressed and truncated, with
bad lines counted per file and reason and nothing personal staged.

Every test writes real files in the preset's shape (analytics/logs/generate.py), runs the real
refresh (DuckDB, Parquet, the views file) and compares with the requests it wrote: exact counts
per minute x route x method and status class, percentiles within the sketch's 1 %.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pytest
from click.testing import CliRunner

from analytics.alerts.metrics import MetricSource
from analytics.alerts.rules import load_rules
from analytics.config_check import check_analytics
from analytics.logs import ingest
from analytics.logs.generate import PRESET_NAMES, Request, error_line, other_line, request_lines
from analytics.logs.ingest import ingest_log_files, source_directory
from analytics.logs.manifest import LogSourceError
from analytics.logs.seed import _write_logs, write_log_files
from analytics.rollups.requests import refresh_requests
from analytics.settings import parse_analytics_settings
from analytics.sketch import PERCENTILES, RELATIVE_ACCURACY
from housekeeping.cli import main
from housekeeping.config import ConfigError, load_config
from housekeeping.database import AppDatabase
from housekeeping.demo.clock import to_us
from housekeeping.demo.live import DEMO_BURST_ROUTE
from housekeeping.demo.seed import seed_database
from housekeeping.demo.traffic import live_rows
from tests.support.analytics_data import make_settings, make_store, publish, query

START = datetime(2026, 11, 19, 10, tzinfo=UTC)
H = timedelta(hours=1)
ROUTES = ("/api/chat/messages", "/api/users/user-{n}?email=jane@example.com", "/health")
BAD_LINES = {
    "malformed_json": b'{"time": 1, "req": {"url": "/x"\n',
    "not_an_object": b"[1, 2, 3]\n",
    "invalid_encoding": b"\xff\xfe\x00binary blob\xc3\x28\n",
    "control_characters": b'{"a": "b\x1fc"}\n',
    "line_too_long": b'{"pad": "' + b"x" * (2 << 20) + b'"}\n',
}


def settings_for(tmp_path: Path, preset: str | None, **source):
    return parse_analytics_settings(
        {
            "root": str(tmp_path / "analytics"),
            "database": str(tmp_path / "analytics" / "rollups.duckdb"),
            "sources": {
                "request_logs": {
                    "kind": "json_lines",
                    "path": str(tmp_path / "logs" / "access.log*"),
                    "format": preset,
                    "settle": "0s",
                    **source,
                }
            },
        }
    )


def make_requests(count: int, seed: int, start: datetime = START, span: timedelta = 2 * H):
    rng = np.random.default_rng(seed)
    requests = []
    for index in range(count):
        millis = int(rng.uniform(0, span.total_seconds() * 1000))
        route = ROUTES[index % len(ROUTES)].format(n=int(rng.integers(100, 99999)))
        requests.append(
            Request(
                start + timedelta(milliseconds=millis),
                ("GET", "POST")[index % 2],
                route,
                int(rng.choice([200, 201, 302, 404, 429, 500, 503])),
                round(float(rng.lognormal(4.0, 0.8)), 3),
            )
        )
    return requests


def lines_of(preset: str, requests) -> bytes:
    text = []
    for request in requests:
        text.extend(request_lines(preset, request))
    return ("\n".join(text) + "\n").encode() if text else b""


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as handle:
        handle.write(data)


def published_route(url: str) -> str:
    path = url.split("?")[0]
    return "/api/users/:id" if path.startswith("/api/users/") else path


def expected_minutes(requests) -> Counter:
    counts = Counter()
    for r in requests:
        minute = r.ts.astimezone(UTC).replace(second=0, microsecond=0, tzinfo=None)
        key = (minute, published_route(r.url), r.method)
        counts[key + ("requests",)] += 1
        counts[key + (f"status_{r.status // 100}xx",)] += 1
        counts[key + ("status_429",)] += r.status == 429
    return +counts


def published_minutes(settings) -> Counter:
    rows = query(
        settings,
        "SELECT minute, route, method, requests, status_2xx, status_3xx, status_4xx, "
        "status_5xx, status_429 FROM requests_minute",
    )
    counts = Counter()
    for row in rows.itertuples(index=False):
        key = (row.minute.to_pydatetime(), row.route, row.method)
        for name in ("requests", "status_2xx", "status_3xx", "status_4xx", "status_5xx"):
            counts[key + (name,)] += int(getattr(row, name))
        counts[key + ("status_429",)] += int(row.status_429)
    return +counts


def refresh(store, settings, end=START + 3 * H):
    return refresh_requests(None, store, settings, START, end)


def assert_published_exactly(settings, store, requests) -> None:
    publish(store, settings)
    assert published_minutes(settings) == expected_minutes(requests)
    stats = query(
        settings,
        "SELECT * FROM request_stats(?::TIMESTAMP, ?::TIMESTAMP)",
        [START.replace(tzinfo=None), (START + 3 * H).replace(tzinfo=None)],
    ).set_index(["route"])
    by_route = {}
    for r in requests:
        by_route.setdefault(published_route(r.url), []).append(r.duration_ms)
    for route, values in by_route.items():
        for name, q in PERCENTILES.items():
            exact = float(np.quantile(values, q, method="linear"))
            published = stats.loc[route, f"latency_{name}_ms"]
            published = float(published.sum()) if hasattr(published, "sum") else published
            assert abs(published - exact) <= RELATIVE_ACCURACY * exact + 1e-9, (route, name)


def bad_line_counts(settings) -> dict:
    rows = query(
        settings,
        "SELECT reason, sum(lines)::BIGINT AS n FROM log_ingest_errors WHERE bad GROUP BY 1",
    )
    return dict(zip(rows.reason, rows.n, strict=True))


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_rotation_compression_and_copytruncate_count_every_line_once(tmp_path, preset):
    settings = settings_for(tmp_path, preset)
    store = make_store(settings)
    logs = tmp_path / "logs"
    logs.mkdir()
    live = logs / "access.log"
    requests = make_requests(2_400, seed=PRESET_NAMES.index(preset))
    batches = [requests[i : i + 300] for i in range(0, len(requests), 300)]

    # growth: a file written in pieces, a line cut in half between two ticks, bad lines
    append(live, other_line(preset, START).encode() + b"\n" + lines_of(preset, batches[0]))
    for data in BAD_LINES.values():
        append(live, data)
    refresh(store, settings)
    half = lines_of(preset, batches[1])
    cut = len(half) - 20
    append(live, half[:cut])
    refresh(store, settings)
    append(live, half[cut:])
    append(live, lines_of(preset, batches[2]))
    refresh(store, settings)

    # rename rotation: lines written before the rename but after the last tick land in .1
    append(live, lines_of(preset, batches[3]))
    os.rename(live, logs / "access.log.1")
    append(live, lines_of(preset, batches[4]))
    refresh(store, settings)

    # compression after rotation, with a tail written after the last tick (read from the .gz)
    append(logs / "access.log.1", lines_of(preset, batches[5][:100]))
    with (
        open(logs / "access.log.1", "rb") as plain,
        gzip.open(logs / "access.log.1.gz", "wb") as gz,
    ):
        shutil.copyfileobj(plain, gz)
    (logs / "access.log.1").unlink()
    refresh(store, settings)

    # copytruncate: the copy keeps the unread tail, the truncated file starts again
    append(live, lines_of(preset, batches[5][100:]))
    shutil.copyfile(live, logs / "access.log.2")
    with open(live, "r+b") as handle:
        handle.truncate(0)
    append(live, lines_of(preset, batches[6]))
    refresh(store, settings)
    # a line arriving late (its minute is an hour back) lands in its own minute
    append(live, lines_of(preset, batches[7]))
    result = refresh(store, settings)
    assert result.rows_read == len(requests)
    # nothing new: a tick reads nothing and the numbers stay
    assert ingest_log_files(source_directory(store.root), settings.sources.request_logs).seq is None

    assert_published_exactly(settings, store, requests)
    assert bad_line_counts(settings) == {reason: 1 for reason in BAD_LINES}
    files = query(settings, "SELECT DISTINCT file FROM log_ingest_errors WHERE bad")
    assert list(files.file) == [str(live)]


def test_nothing_personal_reaches_the_staged_rows_or_the_rollups(tmp_path):
    settings = settings_for(tmp_path, "reference")
    store = make_store(settings)
    (tmp_path / "logs").mkdir()
    requests = make_requests(300, seed=5)
    append(tmp_path / "logs" / "access.log", lines_of("reference", requests))
    refresh(store, settings)
    publish(store, settings)
    secrets = ("203.0.113.7", "user-48213", "jane.doe@example.com", "jane@example.com", "@")
    for path in (tmp_path / "analytics").rglob("*.parquet"):
        text = duckdb.sql(f"SELECT * FROM read_parquet('{path}')").fetchall()
        dumped = json.dumps(text, default=str)
        for secret in secrets:
            assert secret not in dumped, (path, secret)
    routes = set(query(settings, "SELECT DISTINCT route FROM requests_minute").route)
    assert routes == {"/api/chat/messages", "/api/users/:id", "/health"}


def test_a_field_mapping_with_epoch_seconds_and_text_durations(tmp_path):
    settings = settings_for(
        tmp_path,
        None,
        path=str(tmp_path / "logs" / "*.jsonl"),
        fields={
            "timestamp": "at",
            "timestamp_format": "epoch_s",
            "route": "http.path",
            "method": "http.verb",
            "status": "http.code",
            "duration": "took",
            "duration_unit": "s",
            "select": "http.code",
        },
    )
    store = make_store(settings)
    (tmp_path / "logs").mkdir()
    took = ["222ms", "1.2s", 0.5, "350us", "2m", "fast"]
    lines = [
        {"at": START.timestamp() + i, "http": {"path": "/a", "verb": "get", "code": 200}, "took": t}
        for i, t in enumerate(took)
    ]
    lines.append({"at": "yesterday", "http": {"path": "/a", "verb": "get", "code": 200}})
    lines.append({"http": {"path": "/a", "verb": "get", "code": 200}})
    (tmp_path / "logs" / "a.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    refresh(store, settings)
    publish(store, settings)
    row = query(settings, "SELECT * FROM requests_minute").iloc[0]
    assert row.requests == 6 and row.method == "GET"
    # 222 + 1200 + 500 + 0.35 + 120000 ms; "fast" has no duration
    assert row.latency_sum_ms == pytest.approx(121922.35)
    assert row.latency_min_ms == pytest.approx(0.35)
    assert bad_line_counts(settings) == {"bad_timestamp": 1, "missing_timestamp": 1}


def test_iso_timestamps_without_offset_are_read_in_the_source_timezone(tmp_path):
    settings = settings_for(tmp_path, "bunyan", timezone="Europe/Berlin")
    store = make_store(settings)
    (tmp_path / "logs").mkdir()
    line = {
        "time": "2026-11-19T11:30:00",
        "req": {"method": "GET", "url": "/a"},
        "res": {"statusCode": 200},
        "latency": 5,
    }
    (tmp_path / "logs" / "access.log").write_text(json.dumps(line) + "\n")
    refresh(store, settings)
    publish(store, settings)
    minutes = query(settings, "SELECT minute FROM requests_minute").minute
    assert list(minutes) == [datetime(2026, 11, 19, 10, 30)]


def test_a_crash_after_staging_but_before_the_manifest_reads_the_lines_once(tmp_path):
    settings = settings_for(tmp_path, "pino")
    store = make_store(settings)
    (tmp_path / "logs").mkdir()
    requests = make_requests(500, seed=8)
    append(tmp_path / "logs" / "access.log", lines_of("pino", requests))
    directory = source_directory(store.root)
    ingest_log_files(directory, settings.sources.request_logs)
    manifest = (directory / "manifest.json").read_bytes()
    # the crash: the next tick's files are on disk, its manifest is not
    append(tmp_path / "logs" / "access.log", lines_of("pino", requests[:50]))
    ingest_log_files(directory, settings.sources.request_logs)
    (directory / "manifest.json").write_bytes(manifest)
    refresh(store, settings)
    assert_published_exactly(settings, store, requests + requests[:50])


def test_an_unreadable_directory_or_file_is_one_line_naming_it_and_stages_nothing(tmp_path):
    settings = settings_for(tmp_path, "pino")
    store = make_store(settings)
    with pytest.raises(LogSourceError, match=r"logs is not a directory"):
        refresh(store, settings)
    (tmp_path / "logs").mkdir()
    path = tmp_path / "logs" / "access.log"
    append(path, lines_of("pino", make_requests(10, seed=1)))
    dangling = tmp_path / "logs" / "access.log.1"
    dangling.symlink_to(tmp_path / "gone")
    with pytest.raises(LogSourceError, match=rf"cannot read log file {dangling} \(a symbolic"):
        refresh(store, settings)
    assert not (source_directory(store.root) / "manifest.json").exists()
    dangling.unlink()
    path.chmod(0)
    try:
        if not os.access(path, os.R_OK):  # not as root, who reads any file
            with pytest.raises(LogSourceError, match=rf"cannot read log file {path}"):
                refresh(store, settings)
            assert not (source_directory(store.root) / "manifest.json").exists()
    finally:
        path.chmod(0o644)
    assert refresh(store, settings).rows_read == 10


@pytest.mark.parametrize(
    ("source", "fields", "key"),
    [
        ("request_logs", {"duration": "bad path!"}, "request_logs.fields.duration"),
        ("request_logs", {"error_name": "err..type"}, "request_logs.fields.error_name"),
        ("jobs", {"job_id": "job id"}, "jobs.fields.job_id"),
    ],
)
def test_a_bad_field_path_names_its_full_key_path(source, fields, key):
    with pytest.raises(ConfigError) as refused:
        parse_analytics_settings(
            {
                "sources": {
                    source: {
                        "kind": "json_lines",
                        "path": "/var/log/app/*.log",
                        "format": "pino",
                        "fields": fields,
                    }
                }
            }
        )

    (bad,) = fields.values()
    assert str(refused.value) == (
        f"config: analytics.sources.{key}: {bad!r} is not a dotted field path "
        "(letters, digits, _ - @ $, parts joined by '.')"
    )


def test_a_source_without_format_or_fields_is_a_one_line_error(tmp_path):
    with pytest.raises(Exception, match="set format .* or fields"):
        parse_analytics_settings(
            {"sources": {"request_logs": {"kind": "json_lines", "path": "/var/log/*.log"}}}
        )


def test_the_default_rule_alerts_when_over_one_percent_of_a_files_lines_are_bad(tmp_path):
    settings = settings_for(tmp_path, "pino")
    store = make_store(settings)
    (tmp_path / "logs").mkdir()
    good, bad = tmp_path / "logs" / "access.log", tmp_path / "logs" / "access.log.1"
    append(bad, lines_of("pino", make_requests(150, seed=2)) + b"{oops\n" * 3)  # 2 % bad
    append(good, lines_of("pino", make_requests(400, seed=3)) + b"{oops\n" * 2)  # 0.5 % bad
    now = datetime.now(UTC)
    refresh(store, settings)
    publish(store, settings)
    rule = next(rule for rule in load_rules().rules if rule.name == "log_bad_lines")
    with MetricSource(settings.database_path, rollup_root=settings.root_path) as metrics:
        values = metrics.values(rule, now + timedelta(minutes=1))
    assert values == {str(bad): pytest.approx(3 / 153), str(good): pytest.approx(2 / 402)}
    firing = {file for file, value in values.items() if value > rule.thresholds["warning"].value}
    assert firing == {str(bad)}


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_error_lines_per_hour_route_and_name_without_messages_and_the_spike_rule(tmp_path, preset):
    settings = settings_for(tmp_path, preset)
    store = make_store(settings)
    (tmp_path / "logs").mkdir()
    secret = "Message content is required for jane.doe@example.com"
    lines = [
        error_line(
            preset, START + timedelta(seconds=i), "/api/chat/messages", "ValidationError", secret
        )
        for i in range(12)
    ]
    lines += [
        error_line(
            preset, START + H + timedelta(seconds=i), "/api/users/user-7?x=1", "DbError", secret
        )
        for i in range(3)
    ]
    requests = make_requests(200, seed=11)
    append(tmp_path / "logs" / "access.log", ("\n".join(lines) + "\n").encode())
    append(tmp_path / "logs" / "access.log", lines_of(preset, requests))
    refresh(store, settings)
    publish(store, settings)

    errors = query(
        settings,
        "SELECT hour, route, error_name, sum(errors)::BIGINT AS n FROM log_errors_hourly "
        "GROUP BY ALL ORDER BY hour, route, error_name",
    )
    hour = START.replace(tzinfo=None)
    expected = [
        (hour, "/api/chat/messages", "ValidationError", 12),
        (hour + H, "/api/users/:id", "DbError", 3),
    ]
    # pino and winston log 5xx requests at error level: requests, never error lines too
    assert any(r.status >= 500 for r in requests)
    assert sorted(map(tuple, errors.itertuples(index=False))) == sorted(expected)
    # the requests are still counted once, the error lines are not requests
    assert int(query(settings, "SELECT sum(requests) AS n FROM requests_minute").n[0]) == 200
    for path in (tmp_path / "analytics").rglob("*.parquet"):
        dumped = json.dumps(
            duckdb.sql(f"SELECT * FROM read_parquet('{path}')").fetchall(), default=str
        )
        assert "Message content" not in dumped and "routes.js" not in dumped, path

    rule = next(rule for rule in load_rules().rules if rule.name == "log_error_spike")
    with MetricSource(settings.database_path, rollup_root=settings.root_path) as metrics:
        values = metrics.values(rule, START + H + timedelta(minutes=30))
    firing = {group for group, value in values.items() if value > rule.thresholds["high"].value}
    assert "/api/chat/messages ValidationError" in firing
    assert values["/api/users/:id DbError"] == 3 and "/api/users/:id DbError" not in firing


@pytest.mark.parametrize("preset", ["pino", "winston"])
def test_the_demos_error_burst_in_log_files_is_one_error_spike_not_one_per_route(tmp_path, preset):
    """pino-http and express-winston log every 5xx at error level: the demo's 2 h of live traffic
    with its 20-minute burst (``hk demo --log-files``) must give one spike, its cause on its
    route, not an "(unnamed)" error per route and name."""
    end = START + 2 * H
    incident = (
        "error-burst",
        DEMO_BURST_ROUTE,
        to_us(START + H),
        to_us(START + H + timedelta(minutes=20)),
    )
    tables = live_rows(np.random.default_rng(5), to_us(START), to_us(end), 300.0, [incident])
    rows = [row for table in ("request_logs", "error_logs") for row in tables[table].to_pylist()]
    _write_logs(tmp_path / "out", rows, [], end)
    settings = settings_for(tmp_path, preset, path=str(tmp_path / "out" / preset / "access.log*"))
    store = make_store(settings)
    refresh(store, settings)
    publish(store, settings)

    named = query(settings, "SELECT sum(errors)::BIGINT AS n FROM log_errors_hourly").n[0]
    assert named == tables["error_logs"].num_rows  # the error lines, not the 5xx requests too
    rule = next(rule for rule in load_rules().rules if rule.name == "log_error_spike")
    with MetricSource(settings.database_path, rollup_root=settings.root_path) as metrics:
        values = metrics.values(rule, end)
    firing = {group for group, value in values.items() if value > rule.thresholds["high"].value}
    assert firing == {f"{DEMO_BURST_ROUTE} DatabaseError"}


@pytest.mark.parametrize("preset", ["pino", "reference"])
def test_an_empty_route_or_error_name_is_shown_as_missing_like_an_absent_one(tmp_path, preset):
    settings = settings_for(tmp_path, preset)
    store = make_store(settings)
    (tmp_path / "logs").mkdir()
    requests = [Request(START + timedelta(seconds=i), "GET", "", 200, 5.0) for i in range(3)]
    errors = [error_line(preset, START + timedelta(seconds=9), "", "", "no route, no name")]
    append(tmp_path / "logs" / "access.log", lines_of(preset, requests))
    append(tmp_path / "logs" / "access.log", ("\n".join(errors) + "\n").encode())
    refresh(store, settings)
    publish(store, settings)

    minutes = query(
        settings, "SELECT route, sum(requests)::BIGINT AS n FROM requests_minute GROUP BY 1"
    )
    assert list(map(tuple, minutes.itertuples(index=False))) == [("(none)", 3)]
    named = query(settings, "SELECT route, error_name, errors FROM log_errors_hourly")
    assert list(map(tuple, named.itertuples(index=False))) == [("(none)", "(unnamed)", 1)]


def test_hk_seed_log_files_writes_the_same_traffic_as_the_tables(tmp_path, sqlite_url):
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    runner = CliRunner()
    missing = runner.invoke(main, ["seed", "--log-files", str(tmp_path / "logs")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    (tmp_path / "logs").mkdir()
    result = runner.invoke(
        main,
        ["seed", "--log-files", str(tmp_path / "logs"), "--requests", "4000", "--days", "2"],
    )
    assert result.exit_code == 0, result.output
    assert "pino/, winston/, reference/" in result.output
    again = runner.invoke(main, ["seed", "--log-files", str(tmp_path / "logs")])
    assert again.exit_code == 1 and "already holds access.log files" in again.output

    written = write_log_files(tmp_path / "fixed", requests=3000, days=2, seed=7, now=now)
    seed_database(sqlite_url, tokens=10, requests=3000, days=2, seed=7, now=now)
    db = AppDatabase(sqlite_url)
    table_settings = make_settings(tmp_path / "from_table")
    table_store = make_store(table_settings)
    start, end = now - timedelta(days=3), now + H
    start = start.replace(minute=0)
    refresh_requests(db, table_store, table_settings, start, end)
    publish(table_store, table_settings)
    expected = query(
        table_settings,
        "SELECT minute, route, method, requests, status_2xx, status_4xx, status_5xx "
        "FROM requests_minute ORDER BY ALL",
    )
    assert int(expected.requests.sum()) == written.requests == 3000
    for shape in ("pino", "winston", "reference"):
        settings = settings_for(
            tmp_path / shape, shape, path=str(tmp_path / "fixed" / shape / "access.log*")
        )
        store = make_store(settings)
        refresh_requests(None, store, settings, start, end)
        publish(store, settings)
        got = query(
            settings,
            "SELECT minute, route, method, requests, status_2xx, status_4xx, status_5xx "
            "FROM requests_minute ORDER BY ALL",
        )
        assert got.equals(expected), shape
        errors = query(settings, "SELECT sum(errors)::BIGINT AS n FROM log_errors_hourly").n[0]
        assert errors >= written.errors, shape  # every error log line (and 5xx pino/winston)


def test_a_damaged_gzip_is_counted_once_and_the_other_files_still_read(tmp_path):
    settings = settings_for(tmp_path, "bunyan")
    store = make_store(settings)
    (tmp_path / "logs").mkdir()
    requests = make_requests(300, seed=13)
    append(tmp_path / "logs" / "access.log", lines_of("bunyan", requests[:200]))
    whole = gzip.compress(lines_of("bunyan", requests[200:]))
    (tmp_path / "logs" / "access.log.1.gz").write_bytes(whole)
    (tmp_path / "logs" / "access.log.2.gz").write_bytes(whole[: len(whole) // 2])  # cut short
    (tmp_path / "logs" / "access.log.3.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    refresh(store, settings)
    refresh(store, settings)
    assert_published_exactly(settings, store, requests)
    assert bad_line_counts(settings) == {"damaged_gzip": 0}
    damaged = query(settings, "SELECT file FROM log_ingest_errors WHERE bad ORDER BY file").file
    assert list(damaged) == [str(tmp_path / "logs" / f"access.log.{n}.gz") for n in (2, 3)]


def test_config_check_counts_the_log_files_or_names_the_missing_directory(tmp_path):
    (tmp_path / "logs").mkdir()
    append(tmp_path / "logs" / "access.log", b"{}\n")
    append(tmp_path / "logs" / "access.log.1.gz", gzip.compress(b"{}\n"))

    def check(path: Path):
        config_file = tmp_path / "hk.yaml"
        source = {"kind": "json_lines", "path": str(path), "format": "pino"}
        config_file.write_text(json.dumps({"analytics": {"sources": {"request_logs": source}}}))
        return check_analytics(None, load_config(str(config_file)), str(config_file))

    found = check(tmp_path / "logs" / "access.log*")
    assert found.problems == []
    assert found.ok == [
        f"analytics.sources.request_logs: 2 log file(s) match {tmp_path}/logs/access.log*"
    ]
    assert found.warnings == []
    none_match = check(tmp_path / "logs" / "acess.log*")
    assert none_match.problems == []
    assert none_match.warnings == [
        f"analytics.sources.request_logs.path: no file matches {tmp_path}/logs/acess.log* yet "
        "(check the glob: a rollup would read nothing)"
    ]
    missing = check(tmp_path / "nowhere" / "*.log")
    assert missing.problems == [
        f"analytics.sources.request_logs.path: {tmp_path}/nowhere is not a directory "
        f"({tmp_path}/nowhere/*.log)"
    ]


def rotated_and_live(tmp_path, rotated_data: bytes, live_data: bytes):
    """A quiet rotated file (modified an hour before START) and the live file after it."""
    logs = tmp_path / "logs"
    logs.mkdir()
    rotated, live = logs / "access.log.1", logs / "access.log"
    append(rotated, rotated_data)
    append(live, live_data)
    hour_ago = START.timestamp() - 3600
    os.utime(rotated, (hour_ago, hour_ago))
    return rotated, live


def record_reads(monkeypatch, before_first_read=lambda: None) -> list[list[Path]]:
    """The files each staging read opens (``_stage``, wrapped), one list per read."""
    reads = []
    stage = ingest._stage

    def recorded(connection, slices, *rest):
        reads.append([piece.read for piece in slices])
        if len(reads) == 1:
            before_first_read()
        return stage(connection, slices, *rest)

    monkeypatch.setattr(ingest, "_stage", recorded)
    return reads


def test_rotated_files_read_in_place_are_read_again_from_copies_when_written_meanwhile(
    tmp_path, monkeypatch
):
    settings = settings_for(tmp_path, "pino")
    store = make_store(settings)
    requests = make_requests(700, seed=21)
    rotated, live = rotated_and_live(
        tmp_path, lines_of("pino", requests[:400]), lines_of("pino", requests[400:600])
    )
    # a process still holding the rotated file writes to it after the plan, before the read
    # ends: the read sees lines past the planned end
    reads = record_reads(monkeypatch, lambda: append(rotated, lines_of("pino", requests[600:])))
    refresh(store, settings)
    refresh(store, settings)  # a later tick must not read the lines written meanwhile again

    assert rotated in reads[0]  # read in place first
    assert len(reads) == 2 and rotated not in reads[1] and live not in reads[1]  # then copies
    assert_published_exactly(settings, store, requests)
    assert not list((source_directory(store.root) / "tmp").iterdir())


def test_settled_rotated_files_are_read_in_place_once(tmp_path, monkeypatch):
    settings = settings_for(tmp_path, "pino")
    store = make_store(settings)
    requests = make_requests(300, seed=22)
    # the rotated file's last line without a newline: read as a line all the same
    rotated, live = rotated_and_live(
        tmp_path,
        lines_of("pino", requests[:200]).rstrip(b"\n"),
        lines_of("pino", requests[200:]),
    )
    mtime = rotated.stat().st_mtime
    reads = record_reads(monkeypatch)
    refresh(store, settings)
    refresh(store, settings)
    assert len(reads) == 1 and rotated in reads[0] and live not in reads[0]
    assert rotated.stat().st_mtime == mtime  # only read
    assert_published_exactly(settings, store, requests)


def test_out_of_range_times_and_durations_are_counted_never_stop_the_rollup(tmp_path):
    """Numbers no log line means (NaN, infinities, 1e300, a year past 9999, before 1970): a
    time is a bad_timestamp line, a duration none (the request counts, not its latency)."""
    settings = settings_for(tmp_path, "pino")
    store = make_store(settings)
    (tmp_path / "logs").mkdir()
    at = int((START + timedelta(minutes=5)).timestamp() * 1000)

    def line(time, duration) -> bytes:
        req = '"req":{"method":"GET","url":"/a"},"res":{"statusCode":200}'
        return f'{{"level":30,"time":{time},{req},"responseTime":{duration}}}\n'.encode()

    durations = ["1e300", "NaN", "1e400", "-5", '"99999999999999999999s"', '"inf"', "12.5"]
    times = ["1e30", "-1e30", "NaN", "1e400", "-5", str(at * 1000), "9223372036854775807"]
    data = b"".join(line(at, d) for d in durations) + b"".join(line(t, 1) for t in times)
    append(tmp_path / "logs" / "access.log", data)
    refresh(store, settings)
    publish(store, settings)
    assert bad_line_counts(settings) == {"bad_timestamp": len(times)}
    minute = query(settings, "SELECT requests, latency_min_ms, latency_max_ms FROM requests_minute")
    assert minute.values.tolist() == [[len(durations), 12.5, 12.5]]


def test_crlf_line_ends_and_a_binary_blob_with_carriage_returns_never_stop_the_rollup(tmp_path):
    """Windows line ends (CRLF) are line ends; a blob holding CR bytes is counted as bad lines.
    Both stopped DuckDB's CSV reader ("state machine reached an invalid state")."""
    settings = settings_for(tmp_path, "pino")
    store = make_store(settings)
    (tmp_path / "logs").mkdir()
    requests = make_requests(40, seed=7)
    crlf = lines_of("pino", requests[:20]).replace(b"\n", b"\r\n")
    blob = b"\x8b\x1f\r\x00\xfe\r\r\xc3\x28garbage\r\x9c\n"
    append(tmp_path / "logs" / "access.log", crlf + blob + lines_of("pino", requests[20:]))
    refresh(store, settings)
    assert_published_exactly(settings, store, requests)
    bad = bad_line_counts(settings)
    assert set(bad) == {"invalid_encoding"} and bad["invalid_encoding"] >= 1


def test_a_gz_whose_one_line_has_no_newline_is_read_not_skipped_forever(tmp_path):
    """A rotated .gz is complete: a single line without its newline was never fingerprinted,
    so the file was skipped on every tick and its line lost."""
    settings = settings_for(tmp_path, "pino")
    store = make_store(settings)
    (tmp_path / "logs").mkdir()
    requests = make_requests(11, seed=3)
    append(
        tmp_path / "logs" / "access.log.1.gz", gzip.compress(lines_of("pino", requests[:1])[:-1])
    )
    append(tmp_path / "logs" / "access.log", lines_of("pino", requests[1:]))
    refresh(store, settings)
    refresh(store, settings)
    assert_published_exactly(settings, store, requests)


def test_a_rotated_plain_file_whose_one_line_has_no_newline_is_read_once(tmp_path):
    """A quiet rotated file holding one line without its newline had no first line to be known
    by: it was skipped on every tick and its line lost (unless it was gzipped later)."""
    settings = settings_for(tmp_path, "pino")
    store = make_store(settings)
    requests = make_requests(11, seed=5)
    rotated, _ = rotated_and_live(
        tmp_path, lines_of("pino", requests[:1])[:-1], lines_of("pino", requests[1:])
    )
    refresh(store, settings)
    refresh(store, settings)
    assert_published_exactly(settings, store, requests)
