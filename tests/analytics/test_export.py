"""`hk export`: a published dataset as CSV, JSON lines or Parquet, batch by batch."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import stat
import subprocess
import sys
import threading
from datetime import timedelta

import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from analytics.datasets import REQUESTS_MINUTE
from analytics.export import ExportError, export_dataset, export_to_file
from analytics.publish import RollupStore
from housekeeping.cli import main
from tests.support.alert_support import T0, Minute, analytics_settings_at, publish_minutes
from tests.support.analytics_data import query

MINUTES = [
    Minute(T0 + timedelta(minutes=offset), route=route, requests=10 + offset, latency_ms=40.0)
    for offset in range(180)  # three hour files
    for route in ("/a", "/b")
]


@pytest.fixture
def published(tmp_path):
    settings = analytics_settings_at(tmp_path)
    publish_minutes(settings, MINUTES)
    return settings, RollupStore(settings.root_path, settings.database_path)


@pytest.fixture
def config(published, tmp_path):
    """A config file whose analytics section names the published rollups."""
    settings, _ = published
    path = tmp_path / "hk.yaml"
    analytics = {"root": str(settings.root_path), "database": str(settings.database_path)}
    path.write_text(yaml.safe_dump({"analytics": analytics}))
    return path


def test_csv_json_and_parquet_hold_every_published_row(published):
    settings, store = published
    expected = query(settings, "SELECT minute, route, requests FROM requests_minute")

    text = io.BytesIO()
    assert export_dataset(store, "requests_minute", "csv", text) == len(MINUTES)
    rows = list(csv.DictReader(io.StringIO(text.getvalue().decode())))
    assert len(rows) == len(MINUTES)
    assert sum(int(row["requests"]) for row in rows) == expected.requests.sum()
    assert json.loads(rows[0]["latency_sketch"])[0]["count"] > 0  # nested: JSON text

    lines = io.BytesIO()
    export_dataset(store, "requests_minute", "json", lines)
    objects = [json.loads(line) for line in lines.getvalue().decode().splitlines()]
    assert len(objects) == len(MINUTES)
    assert {(o["minute"], o["route"], o["requests"]) for o in objects} == {
        (m.isoformat(), r, q) for m, r, q in expected.itertuples(index=False)
    }

    table = io.BytesIO()
    export_dataset(store, "requests_minute", "parquet", table)
    exported = pq.read_table(io.BytesIO(table.getvalue()))
    assert exported.num_rows == len(MINUTES)
    assert exported.column_names == [column.name for column in REQUESTS_MINUTE.columns]
    assert sum(exported.column("requests").to_pylist()) == expected.requests.sum()


def test_since_keeps_the_newest_rows_and_the_export_streams_in_batches(published, tmp_path):
    _, store = published
    now = T0 + timedelta(minutes=180)
    path = tmp_path / "recent.parquet"
    rows = export_to_file(
        store,
        "requests_minute",
        "parquet",
        path,
        since=timedelta(minutes=30),
        now=lambda: now,
        batch_rows=16,
    )
    assert rows == 30 * 2
    exported = pq.ParquetFile(path)
    assert exported.metadata.num_rows == 60
    # One row group per batch written: the rows never had to be in memory at once.
    assert exported.metadata.num_row_groups > 1
    minutes = exported.read().column("minute").to_pylist()
    assert min(minutes) == (now - timedelta(minutes=30)).replace(tzinfo=None)


def test_bad_inputs_are_one_line_and_write_nothing(published, tmp_path):
    settings, store = published
    with pytest.raises(ExportError, match=r"unknown dataset 'requests' \(.*published datasets: "):
        export_dataset(store, "requests", "csv", io.BytesIO())
    with pytest.raises(ExportError, match="unknown format 'xml'"):
        export_dataset(store, "requests_minute", "xml", io.BytesIO())
    with pytest.raises(ExportError, match="--output: cannot write"):
        export_to_file(store, "requests_minute", "csv", tmp_path / "missing" / "out.csv")
    assert not (tmp_path / "missing").exists()


def test_a_typo_gets_a_did_you_mean_and_a_far_since_is_one_line(published, tmp_path):
    _, store = published
    with pytest.raises(
        ExportError,
        match=r"unknown dataset 'requests_minut' \(did you mean "
        r"'requests_minute'\? published datasets: ",
    ):
        export_dataset(store, "requests_minut", "csv", io.BytesIO())
    with pytest.raises(ExportError, match=r"unknown dataset 'zzz' \(published datasets: "):
        export_dataset(store, "zzz", "csv", io.BytesIO())
    output = tmp_path / "out.csv"
    with pytest.raises(ExportError, match="--since: 99,999,999 days back is before the year 1"):
        export_to_file(store, "requests_minute", "csv", output, since=timedelta(days=99_999_999))
    assert not output.exists() and not (tmp_path / ".out.csv.partial").exists()
    runner = CliRunner()
    for since in ("99999999d", "9999999999999d"):
        result = runner.invoke(main, ["export", "requests_minute", "--since", since])
        assert result.exit_code in (1, 2), result.output
        assert "unexpected error" not in result.output and "--since" in result.output


def test_hk_export_writes_a_file_or_standard_output(config, tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        main, ["export", "requests_minute", "--format", "json", "--config", str(config)]
    )
    assert result.exit_code == 0
    assert len(result.stdout.splitlines()) == len(MINUTES)

    output = tmp_path / "out.csv"
    result = runner.invoke(
        main,
        [
            "export",
            "requests_minute",
            "--since",
            "7d",
            "--output",
            str(output),
            "--config",
            str(config),
        ],
    )
    assert result.exit_code == 0
    assert output.read_text().count("\n") >= 1  # a header at least (T0 may be long ago)

    result = runner.invoke(main, ["export", "nope", "--config", str(config)])
    assert result.exit_code == 1 and "unknown dataset 'nope'" in result.output
    result = runner.invoke(main, ["export", "requests_minute", "--since", "soon"])
    assert result.exit_code == 2 and "--since" in result.output


def run_hk_export(config, fmt: str, stdout) -> subprocess.CompletedProcess:
    """`hk export requests_minute --format FMT` in its own process, standard output ``stdout``."""
    return subprocess.run(
        [sys.executable, "-m", "housekeeping.cli", "export", "requests_minute"]
        + ["--format", fmt, "--config", str(config)],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
        timeout=120,
    )


def test_a_reader_that_stops_early_ends_the_export_quietly(config):
    # `hk export ... | head -0`: the pipe's reading end is closed before anything is written.
    read, write = os.pipe()
    os.close(read)
    with os.fdopen(write, "wb") as stdout:
        done = run_hk_export(config, "json", stdout)
    assert done.stderr == ""
    assert done.returncode == 1


def test_an_output_that_is_a_pipe_is_written_into_not_replaced(published, tmp_path):
    _, store = published
    fifo = tmp_path / "rows.fifo"  # as /dev/stdout or /dev/null: not a file to rename over
    os.mkfifo(fifo)
    received = []

    def read_all():
        with open(fifo, "rb") as reader:
            received.append(reader.read())

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    rows = export_to_file(store, "requests_minute", "json", fifo)
    reader.join(timeout=30)
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert rows == len(MINUTES) and len(received[0].decode().splitlines()) == len(MINUTES)
    assert not list(tmp_path.glob(".*.partial"))


def test_parquet_is_not_printed_on_a_terminal(config):
    terminal, other_end = pty.openpty()
    try:
        done = run_hk_export(config, "parquet", other_end)
    finally:
        os.close(other_end)
        os.close(terminal)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "Error: --format parquet is binary: give --output FILE, or pipe standard output to a "
        "file or program, rather than print it on a terminal"
    )
