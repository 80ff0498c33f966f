"""Retention for log files (``kind: files``): config errors, compression, archive then delete,
dry run, the delete-fraction guard, history, and crashes at every step."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
import yaml
from click.testing import CliRunner

from housekeeping import atomic, file_retention
from housekeeping import file_archive as file_archive_module
from housekeeping.archive import ArchiveError, LocalArchiveStore
from housekeeping.cli import main
from housekeeping.config import ConfigError, load_config, parse_config
from housekeeping.database import AppDatabase
from housekeeping.definitions import build_definitions
from housekeeping.defs.assets import policy_asset_key
from housekeeping.file_archive import FileArchive
from housekeeping.file_retention import (
    check_directory,
    recover_compression,
    run_and_record_files,
    run_file_policy,
    stream_of,
)
from housekeeping.history import RunHistory, RunStatus
from housekeeping.locking import AlreadyRunning
from housekeeping.policies import RunOptions, SafetyRefusal
from tests.housekeeping.test_archive_recovery import Crash, crash_on_call

DAY = 86400


def files_policy(tmp_path: Path, **overrides) -> dict:
    """The files policy the tests run, over ``tmp_path/logs``; a None override removes a key."""
    policy = {
        "kind": "files",
        "directory": str(tmp_path / "logs"),
        "glob": "app*.log*",
        "compress_after": "1d",
        "retention": "30d",
        "archive": True,
        "max_delete_fraction": 0.9,
        **overrides,
    }
    return {key: value for key, value in policy.items() if value is not None}


def files_config(tmp_path: Path, **overrides):
    """A config with one files policy ``app_logs`` over ``tmp_path/logs``."""
    policy = files_policy(tmp_path, **overrides)
    return parse_config(
        {
            "archive": {"root": str(tmp_path / "archive")},
            "state_database_url": f"sqlite:///{tmp_path / 'state.db'}",
            "policies": {"app_logs": policy},
        }
    )


def log_file(directory: Path, name: str, age_days: float, text: str | None = None) -> Path:
    """A file ``name`` in ``directory`` last modified ``age_days`` ago."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    content = text if text is not None else f'{{"msg": "line of {name}"}}\n' * 200
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(content.encode()))
    else:
        path.write_text(content)
    moment = time.time() - age_days * DAY
    os.utime(path, (moment, moment))
    return path


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file of ``directory`` by name with its content, decompressed when gzipped."""
    found = {}
    for path in sorted(directory.iterdir()):
        data = path.read_bytes()
        found[path.name] = gzip.decompress(data) if path.name.endswith(".gz") else data
    return found


def archived(tmp_path: Path) -> dict[str, bytes]:
    """Every archived file by its source name, checksums verified; fails on a duplicate."""
    archive = FileArchive(LocalArchiveStore(tmp_path / "archive"), "app_logs", "")
    found: dict[str, bytes] = {}
    for path, entry in archive.entries():
        assert entry.source not in found, f"{entry.source} was archived twice"
        found[entry.source] = (tmp_path / "archive" / path).read_bytes()
    return found


@pytest.fixture
def logs(tmp_path):
    """``make_logs``'s directory."""
    return make_logs(tmp_path)


def make_logs(tmp_path: Path) -> Path:
    """``tmp_path/logs`` with one stream rotated daily: today's file (active), one written 5
    minutes ago (within grace), plain ones of 2 and 10 days (to compress), a .gz of 20 days
    (kept), and three of 40-60 days (expiring), plus a file the glob does not match."""
    directory = tmp_path / "logs"
    log_file(directory, "app.log", 0.001)
    log_file(directory, "app.log.1", 5 / 1440)
    log_file(directory, "app.log.2", 2)
    log_file(directory, "app.log.3", 10)
    log_file(directory, "app.log.4.gz", 20)
    log_file(directory, "app.log.5.gz", 40)
    log_file(directory, "app.log.6", 50)
    log_file(directory, "app.log.7.gz", 60)
    log_file(directory, "other.txt", 90)
    return directory


# --- config ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"directory": None}, "policies.app_logs.directory: kind 'files' needs 'directory'"),
        ({"glob": None}, "policies.app_logs.glob: kind 'files' needs 'glob'"),
        ({"glob": "logs/app*.log"}, "policies.app_logs.glob: expected a file-name pattern"),
        ({"retention": None}, "policies.app_logs.retention: kind 'files' needs 'retention'"),
        ({"retention": "0d"}, "policies.app_logs.retention: must be greater than 0"),
        ({"retention": "-3d"}, "policies.app_logs.retention: expected a duration"),
        ({"compress_after": "0s"}, "policies.app_logs.compress_after: must be greater than 0"),
        ({"grace": "0m"}, "policies.app_logs.grace: must be greater than 0"),
        ({"grace": 10}, "policies.app_logs.grace: 10 has no unit"),
        (
            {"compress_after": "40d"},
            "policies.app_logs: 'compress_after' (40d) must be shorter than 'retention' (30d)",
        ),
        ({"archive": None}, "policies.app_logs.archive: kind 'files' needs 'archive': true"),
        ({"table": "logs"}, "policies.app_logs.table: 'table' is for the table kinds"),
        ({"cutoff_column": "ts"}, "policies.app_logs.cutoff_column: 'cutoff_column' is for"),
        (
            {"status_column": "s"},
            "policies.app_logs.status_column: 'status_column' is for kind 'jobs'",
        ),
        ({"stream_pattern": "app"}, "policies.app_logs.stream_pattern: needs a group"),
        ({"stream_pattern": "(app"}, "policies.app_logs.stream_pattern: not a valid regular"),
        ({"max_delete_fraction": 0}, "policies.app_logs.max_delete_fraction"),
    ],
)
def test_a_bad_files_policy_is_refused_naming_its_key(tmp_path, overrides, message):
    with pytest.raises(ConfigError) as refused:
        files_config(tmp_path, **overrides)
    assert message in str(refused.value)


def test_a_files_key_in_a_table_policy_names_the_files_kind():
    with pytest.raises(ConfigError) as refused:
        parse_config(
            {
                "policies": {
                    "requests": {
                        "kind": "age",
                        "table": "request_logs",
                        "cutoff_column": "ts",
                        "retention": "30d",
                        "glob": "*.log",
                    }
                }
            }
        )
    assert "policies.requests.glob: 'glob' is for kind 'files'" in str(refused.value)


def test_files_policies_are_kept_apart_from_the_table_policies(tmp_path):
    config = parse_config(
        {
            "policies": {
                "requests": {
                    "kind": "age",
                    "table": "request_logs",
                    "cutoff_column": "ts",
                    "retention": "30d",
                },
                "app_logs": {
                    "kind": "files",
                    "directory": str(tmp_path),
                    "glob": "*.log",
                    "retention": "30d",
                    "archive": False,
                },
            }
        }
    )
    assert list(config.policies) == ["requests"]
    assert list(config.file_policies) == ["app_logs"]
    assert list(config.every_policy()) == ["requests", "app_logs"]
    assert config.file_policy("app_logs").grace == timedelta(minutes=10)
    with pytest.raises(ConfigError, match="'requests' is a table policy"):
        config.file_policy("requests")
    with pytest.raises(ConfigError, match="'app_logs' is of kind 'files'"):
        config.policy("app_logs")


def test_a_missing_or_unusable_directory_is_one_error_naming_the_key(tmp_path):
    missing = files_config(tmp_path)
    with pytest.raises(ConfigError, match=r"policies\.app_logs\.directory: .* does not exist"):
        run_file_policy(missing, "app_logs")
    (tmp_path / "logs").write_text("a file, not a directory")
    with pytest.raises(ConfigError, match=r"policies\.app_logs\.directory: .* is not a directory"):
        run_file_policy(missing, "app_logs")
    assert not (tmp_path / "archive").exists()  # no side effect


def test_an_unreadable_directory_is_one_error_naming_the_key(tmp_path, logs, monkeypatch):
    before = snapshot(logs)
    # As a user without read permission (the tests may run as root, who reads everything).
    monkeypatch.setattr(os, "access", lambda path, mode: not mode & os.R_OK)
    with pytest.raises(ConfigError, match=r"policies\.app_logs\.directory: .* cannot be listed"):
        run_file_policy(files_config(tmp_path), "app_logs")
    assert snapshot(logs) == before


def test_check_directory_refuses_a_read_only_directory_for_a_real_run(tmp_path, monkeypatch):
    (tmp_path / "logs").mkdir()
    policy = files_config(tmp_path).file_policy("app_logs")
    monkeypatch.setattr(os, "access", lambda path, mode: not mode & os.W_OK)
    with pytest.raises(ConfigError, match=r"policies\.app_logs\.directory: .* is not writable"):
        check_directory("app_logs", policy, writable=True)
    assert check_directory("app_logs", policy, writable=False) == tmp_path / "logs"


def test_a_glob_matching_nothing_is_reported_not_an_error(tmp_path):
    (tmp_path / "logs").mkdir()
    log_file(tmp_path / "logs", "other.txt", 90)
    lines = []

    result = run_file_policy(files_config(tmp_path), "app_logs", log=lines.append)

    assert (result.matched_files, result.deleted, result.compressed) == (0, 0, 0)
    assert any("no file in" in line and "'app*.log*'" in line for line in lines)
    assert snapshot(tmp_path / "logs").keys() == {"other.txt"}


# --- streams and planning ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "stream"),
    [
        ("app.log", "app.log"),
        ("app.log.1", "app.log"),
        ("app.log.12.gz", "app.log"),
        ("app.log-20261130.gz", "app.log"),
        ("app-2026-11-30.log", "app.log"),
        ("app-2026-11-30-13.log.gz", "app.log"),
        ("app.3.log", "app.log"),
        ("worker-2.log", "worker-2.log"),
    ],
)
def test_a_rotated_file_belongs_to_the_stream_of_its_name_without_dates_and_numbers(name, stream):
    assert stream_of(name) == stream


def test_each_stream_keeps_its_newest_file_whatever_its_age(tmp_path):
    directory = tmp_path / "logs"
    log_file(directory, "app-2026-09-01.log", 60)
    log_file(directory, "app-2026-09-02.log", 59)  # newest of app: kept though 59 days old
    log_file(directory, "app-worker-1.log", 70)  # its own stream: kept
    config = files_config(tmp_path, glob="app-*.log*", archive=False)

    result = run_file_policy(config, "app_logs", options=RunOptions(allow_large_delete=True))

    assert (result.deleted, result.skipped_active) == (1, 2)
    assert sorted(snapshot(directory)) == ["app-2026-09-02.log", "app-worker-1.log"]


def test_a_stream_pattern_decides_which_files_are_one_stream(tmp_path):
    directory = tmp_path / "logs"
    log_file(directory, "app-web-2026-09-01.log", 60)
    log_file(directory, "app-web-2026-09-02.log", 59)
    log_file(directory, "app-jobs-2026-09-01.log", 61)
    config = files_config(
        tmp_path, glob="app-*.log", archive=False, stream_pattern=r"^app-(?P<stream>[a-z]+)-"
    )

    result = run_file_policy(config, "app_logs", options=RunOptions(allow_large_delete=True))

    assert result.deleted == 1
    assert sorted(snapshot(directory)) == ["app-jobs-2026-09-01.log", "app-web-2026-09-02.log"]


# --- compression -------------------------------------------------------------------------------


def test_compression_gzips_rotated_files_keeping_content_and_mtime(tmp_path):
    directory = tmp_path / "logs"
    log_file(directory, "app.log", 0.001)
    log_file(directory, "app.log.1", 5 / 1440)
    rotated = log_file(directory, "app.log.2", 2)
    content, mtime = rotated.read_bytes(), rotated.stat().st_mtime_ns
    before = snapshot(directory)

    result = run_file_policy(files_config(tmp_path), "app_logs")

    assert sorted(os.listdir(directory)) == ["app.log", "app.log.1", "app.log.2.gz"]
    packed = directory / "app.log.2.gz"
    assert gzip.decompress(packed.read_bytes()) == content
    assert packed.stat().st_mtime_ns == mtime
    expected = {name: data for name, data in before.items() if name != "app.log.2"}
    assert snapshot(directory) == {**expected, "app.log.2.gz": before["app.log.2"]}
    assert (result.compressed, result.skipped_active, result.skipped_grace) == (1, 1, 1)
    assert result.compressed_bytes_before == len(content)
    assert result.bytes_freed == len(content) - packed.stat().st_size > 0


def test_a_file_within_grace_or_newest_of_its_stream_is_never_compressed(tmp_path):
    directory = tmp_path / "logs"
    log_file(directory, "app.log", 0.001)
    log_file(directory, "app.log.1", 5 / 1440)  # older than compress_after, within grace
    log_file(directory, "app.log.2", 20 / 1440)
    log_file(directory, "app-audit.log", 5)  # its own stream, old but the newest of it
    before = snapshot(directory)

    result = run_file_policy(files_config(tmp_path, compress_after="1m"), "app_logs")

    assert sorted(os.listdir(directory)) == [
        "app-audit.log",
        "app.log",
        "app.log.1",
        "app.log.2.gz",
    ]
    assert (result.compressed, result.skipped_grace, result.skipped_active) == (1, 1, 2)
    assert snapshot(directory)["app.log.1"] == before["app.log.1"]


def test_a_run_stopped_on_request_is_recorded_as_stopped_and_the_next_run_carries_on(
    tmp_path, original
):
    config = files_config(tmp_path)
    asked = []
    history = RunHistory.from_config(config)
    try:
        stopped = run_and_record_files(
            history, config, "app_logs", should_stop=lambda: len(asked.append(1) or asked) > 3
        )
        carried_on = run_and_record_files(history, config, "app_logs")
        runs = history.recent("app_logs")
    finally:
        history.dispose()

    assert stopped.stopped_early
    assert (stopped.compressed, stopped.deleted) == (2, 1)
    assert (carried_on.compressed, carried_on.deleted) == (0, 2)
    assert [run.status for run in runs] == [RunStatus.SUCCESS, RunStatus.STOPPED]
    assert_nothing_lost_or_doubled(tmp_path, original)


def test_a_second_run_compresses_nothing_again(tmp_path, logs):
    config = files_config(tmp_path, archive=False, retention="400d")
    first = run_file_policy(config, "app_logs")
    after_first = snapshot(logs)

    second = run_file_policy(config, "app_logs")

    assert first.compressed == 3  # app.log.2, .3 and .6; .gz files are never recompressed
    assert second.compressed == 0
    assert snapshot(logs) == after_first


def test_a_leftover_temporary_is_removed_and_the_file_compressed_again(tmp_path):
    directory = tmp_path / "logs"
    log_file(directory, "app.log", 0.001)
    rotated = log_file(directory, "app.log.1", 2)
    (directory / "app.log.1.gz.tmp").write_bytes(b"\x1f\x8b torn")
    content = rotated.read_bytes()

    result = run_file_policy(files_config(tmp_path), "app_logs")

    assert sorted(os.listdir(directory)) == ["app.log", "app.log.1.gz"]
    assert gzip.decompress((directory / "app.log.1.gz").read_bytes()) == content
    assert (result.recovered, result.compressed) == (1, 1)


def test_an_original_beside_its_complete_gz_is_removed_and_a_different_gz_is_left_alone(tmp_path):
    directory = tmp_path / "logs"
    log_file(directory, "app.log", 0.001)
    same = log_file(directory, "app.log.1", 3)
    (directory / "app.log.1.gz").write_bytes(gzip.compress(same.read_bytes()))
    other = log_file(directory, "app.log.2", 3)
    (directory / "app.log.2.gz").write_bytes(gzip.compress(b"something else\n"))
    policy = files_config(tmp_path).file_policy("app_logs")

    recovery = recover_compression(directory, policy)

    assert (recovery.originals_removed, recovery.conflicts) == (1, ["app.log.2"])
    assert sorted(os.listdir(directory)) == ["app.log", "app.log.1.gz", "app.log.2", "app.log.2.gz"]
    assert other.exists()


def test_a_conflict_is_reported_and_neither_file_touched_by_a_run(tmp_path):
    directory = tmp_path / "logs"
    log_file(directory, "app.log", 0.001)
    log_file(directory, "app.log.2", 50)
    log_file(directory, "app.log.2.gz", 50, text="something else\n")
    before = snapshot(directory)

    result = run_file_policy(files_config(tmp_path), "app_logs")

    assert (result.conflicts, result.deleted) == (1, 0)
    assert snapshot(directory) == before


def test_a_file_written_to_while_being_compressed_is_left_as_it_is(tmp_path, monkeypatch):
    directory = tmp_path / "logs"
    log_file(directory, "app.log", 0.001)
    rotated = log_file(directory, "app.log.1", 2)
    real_fsync = os.fsync

    def append_then_fsync(fd):
        with open(rotated, "a") as handle:
            handle.write("a late line\n")
        real_fsync(fd)

    monkeypatch.setattr(file_retention.os, "fsync", append_then_fsync)
    result = run_file_policy(files_config(tmp_path), "app_logs")

    assert (result.compressed, result.skipped_changed) == (0, 1)
    assert sorted(os.listdir(directory)) == ["app.log", "app.log.1"]
    assert rotated.read_text().endswith("a late line\n")


# --- archive then delete -----------------------------------------------------------------------

# What the `logs` fixture leaves after one complete run: the active file and the one within grace
# untouched, the rotated plain ones gzipped, the .gz of 20 days kept, the rest archived.
REMAINING = ["app.log", "app.log.1", "app.log.2.gz", "app.log.3.gz", "app.log.4.gz", "other.txt"]
EXPIRING = ["app.log.5.gz", "app.log.6", "app.log.7.gz"]


@dataclass(frozen=True)
class Original:
    """The `logs` fixture's files by name: their content (decompressed) and their bytes."""

    content: dict[str, bytes]
    raw: dict[str, bytes]


@pytest.fixture
def original(logs) -> Original:
    return Original(snapshot(logs), {path.name: path.read_bytes() for path in logs.iterdir()})


def assert_nothing_lost_or_doubled(tmp_path, original: Original):
    """The directory holds exactly REMAINING (content unchanged, decompressed), the archive
    exactly EXPIRING (byte for byte, once each), and nothing is left half done."""
    logs = tmp_path / "logs"
    assert sorted(os.listdir(logs)) == REMAINING
    now = snapshot(logs)
    for name in REMAINING:
        before = original.content.get(name) or original.content[name.removesuffix(".gz")]
        assert now[name] == before, f"{name} changed"
    stored = archived(tmp_path)
    assert sorted(stored) == EXPIRING
    for name in EXPIRING:
        assert stored[name] == original.raw[name], f"{name} archived differently"
    assert not list((tmp_path / "archive").rglob("*.pending"))
    assert not list(logs.glob("*.tmp"))


def test_expiring_files_are_archived_with_checksums_then_deleted(tmp_path, original):
    result = run_file_policy(files_config(tmp_path), "app_logs")

    assert_nothing_lost_or_doubled(tmp_path, original)
    assert (result.matched_files, result.expected_deleted) == (8, 3)
    assert (result.archived, result.deleted, result.compressed) == (3, 3, 2)
    assert (result.skipped_active, result.skipped_grace, result.remaining_expired) == (1, 1, 0)
    assert result.deleted_bytes == sum(len(original.raw[name]) for name in EXPIRING)
    manifests = list((tmp_path / "archive" / "files=app_logs").glob("date=*/_manifest.json"))
    assert len(manifests) == 3  # one day folder per file: its mtime's day
    for entry in archived_entries(tmp_path):
        data = original.raw[entry.source]
        assert (entry.bytes, entry.sha256) == (len(data), hashlib.sha256(data).hexdigest())


def archived_paths(tmp_path):
    """(stored path, entry) of every archived file, checksums verified."""
    return FileArchive(LocalArchiveStore(tmp_path / "archive"), "app_logs", "").entries()


def archived_entries(tmp_path):
    return [entry for _, entry in archived_paths(tmp_path)]


def test_without_archive_expiring_files_are_deleted_and_nothing_is_stored(tmp_path, original):
    result = run_file_policy(files_config(tmp_path, archive=False), "app_logs")

    assert sorted(os.listdir(tmp_path / "logs")) == REMAINING
    assert (result.archived, result.deleted) == (0, 3)
    assert not (tmp_path / "archive").exists()


def test_a_dry_run_reports_counts_and_bytes_and_changes_nothing(tmp_path, logs, original):
    stats = {path.name: path.stat().st_mtime_ns for path in logs.iterdir()}

    lines = []
    result = run_file_policy(
        files_config(tmp_path), "app_logs", options=RunOptions(dry_run=True), log=lines.append
    )

    assert lines == [result.summary_line()]  # said once (the asset logs through `log`)
    assert snapshot(logs) == original.content
    assert {path.name: path.stat().st_mtime_ns for path in logs.iterdir()} == stats
    assert not (tmp_path / "archive").exists()
    assert (result.to_compress, result.expected_deleted, result.deleted) == (2, 3, 0)
    assert result.to_compress_bytes == len(original.raw["app.log.2"]) + len(
        original.raw["app.log.3"]
    )
    assert result.expected_deleted_bytes == sum(len(original.raw[n]) for n in EXPIRING)
    assert "would compress 2 files" in result.summary_line()
    assert "archive and delete 3" in result.summary_line()


def test_a_delete_above_max_delete_fraction_is_refused_naming_the_numbers(tmp_path, original):
    config = files_config(tmp_path, max_delete_fraction=0.25)

    with pytest.raises(SafetyRefusal) as refused:
        run_file_policy(config, "app_logs")

    assert "would delete 3 of 8 files" in str(refused.value)
    assert "policies.app_logs.max_delete_fraction" in str(refused.value)
    assert snapshot(tmp_path / "logs") == original.content
    result = run_file_policy(config, "app_logs", options=RunOptions(allow_large_delete=True))
    assert result.deleted == 3


def test_a_dry_run_says_when_max_delete_fraction_would_refuse_the_run(tmp_path, original):
    lines = []
    dry = run_file_policy(
        files_config(tmp_path, max_delete_fraction=0.25),
        "app_logs",
        options=RunOptions(dry_run=True),
        log=lines.append,
    )

    assert dry.exceeds_delete_fraction and dry.expected_deleted == 3
    assert lines == [dry.summary_line()]
    assert (
        "; a real run would refuse: 38% of the files is above max_delete_fraction 25%" in (lines[0])
    )
    assert snapshot(tmp_path / "logs") == original.content
    within = run_file_policy(files_config(tmp_path), "app_logs", options=RunOptions(dry_run=True))
    assert "refuse" not in within.summary_line()


def test_runs_are_recorded_in_the_history_like_table_policies(tmp_path, original):
    config = files_config(tmp_path)
    history = RunHistory.from_config(config)
    try:
        run_and_record_files(history, config, "app_logs", options=RunOptions(dry_run=True))
        run_and_record_files(history, config, "app_logs", dagster_run_id="run-1")
        refusing = files_config(tmp_path, max_delete_fraction=0.1)
        log_file(tmp_path / "logs", "app.log.9", 99)
        log_file(tmp_path / "logs", "app.log.8", 98)
        with pytest.raises(SafetyRefusal):
            run_and_record_files(history, refusing, "app_logs")
        runs = history.recent("app_logs")
    finally:
        history.dispose()

    assert [run.status for run in runs] == [RunStatus.FAILED, RunStatus.SUCCESS]
    assert "SafetyRefusal" in runs[0].error
    success = runs[1]
    assert (success.deleted, success.expected_deleted, success.archived_rows) == (3, 3, 3)
    assert success.table_name == f"{tmp_path / 'logs'}/app*.log*"
    assert success.dagster_run_id == "run-1"


def test_an_archive_root_that_cannot_be_written_is_refused_before_any_change(tmp_path, original):
    (tmp_path / "archive").write_text("a file where the archive root should be")

    with pytest.raises(ArchiveError, match="archive.root: cannot write to"):
        run_file_policy(files_config(tmp_path), "app_logs")

    assert snapshot(tmp_path / "logs") == original.content


def test_a_second_run_on_the_same_directory_is_refused_while_one_holds_it(tmp_path, logs):
    with file_retention.directory_lock(logs), pytest.raises(AlreadyRunning):
        run_file_policy(files_config(tmp_path), "app_logs")


def test_two_files_of_the_same_name_and_day_are_both_archived(tmp_path):
    logs = tmp_path / "logs"
    first = log_file(logs, "app.log.1", 40, text="first day\n")
    archive = FileArchive(LocalArchiveStore(tmp_path / "archive"), "app_logs", str(logs))
    mtime = first.stat().st_mtime_ns
    now = file_retention.datetime.now(file_retention.UTC)
    archive.archive(first, mtime, run_id="a", now=now)
    first.write_text("the next rotation, same name\n")
    archive.archive(first, mtime, run_id="b", now=now)
    archive.archive(first, mtime, run_id="c", now=now)  # again: listed already

    entries = archived_entries(tmp_path)
    assert sorted(entry.source for entry in entries) == ["app.log.1", "app.log.1"]
    assert len({entry.file for entry in entries}) == 2
    assert [entry.run_id for entry in entries] == ["a", "b"]


# --- crashes -----------------------------------------------------------------------------------


CRASH_POINTS = {
    # compressing: the .gz.tmp written and fsynced, not yet renamed
    "compress_before_rename": (atomic, "_rename", 1),
    # compressing: the .gz in place, the original not yet deleted
    "compress_before_unlink": (file_retention, "_unlink", 1),
    # archiving the second expiring file: copied to .pending, not yet published
    "archive_after_copy": (LocalArchiveStore, "rename", 1),
    # archiving the second expiring file: published, not yet in the manifest
    "archive_before_manifest": (file_archive_module.FileArchive, "_add_to_manifest", 1),
    # the second expiring file listed in the manifest, not yet deleted (two compressions and
    # one expiring file deleted before)
    "after_manifest_before_delete": (file_retention, "_unlink", 3),
    # everything done, the history row not yet written
    "before_history": (RunHistory, "record", 0),
}


@pytest.mark.parametrize("crash_point", sorted(CRASH_POINTS))
def test_a_crash_at_any_step_then_a_rerun_loses_nothing_and_stores_nothing_twice(
    tmp_path, original, monkeypatch, crash_point
):
    config = files_config(tmp_path)
    history = RunHistory.from_config(config)
    owner, name, after_calls = CRASH_POINTS[crash_point]
    try:
        with monkeypatch.context() as patch:
            crash_on_call(patch, owner, name, after_calls)
            with pytest.raises(Crash):
                run_and_record_files(history, config, "app_logs")

        rerun = run_and_record_files(history, config, "app_logs")
    finally:
        history.dispose()

    assert_nothing_lost_or_doubled(tmp_path, original)
    assert rerun.remaining_expired == 0


KILLED_RUN = """
import os, signal, sys
from pathlib import Path
from housekeeping import file_archive
from housekeeping.file_retention import run_file_policy
from tests.housekeeping.test_file_retention import files_config

real = file_archive.FileArchive._add_to_manifest
calls = []

def killed_on_second_manifest(self, *args):
    calls.append(1)
    if len(calls) == 2:
        print("killing", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, *args)

file_archive.FileArchive._add_to_manifest = killed_on_second_manifest
run_file_policy(files_config(Path(sys.argv[1])), "app_logs")
print("finished", flush=True)
"""


def test_killing_the_run_between_archive_steps_then_rerunning_loses_nothing(tmp_path, original):
    import signal
    import subprocess
    import sys

    child = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=60,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert "killing" in child.stdout
    # The kill left the second file published in the archive and not listed, its source kept.
    assert len(os.listdir(tmp_path / "logs")) > len(REMAINING)

    result = run_file_policy(files_config(tmp_path), "app_logs")

    assert result.recovered >= 1
    assert_nothing_lost_or_doubled(tmp_path, original)


# --- Dagster, hk -------------------------------------------------------------------------------


def write_files_config(tmp_path, **policy_overrides) -> str:
    """hk.yaml with a table policy and the files policy ``app_logs`` (scheduled daily)."""
    policy = files_policy(tmp_path, schedule="30 2 * * *", **policy_overrides)
    config = {
        "state_database_url": f"sqlite:///{tmp_path / 'state.db'}",
        "archive": {"root": str(tmp_path / "archive")},
        "policies": {
            "revoked_tokens": {
                "kind": "expired",
                "table": "revoked_tokens",
                "cutoff_column": "expires_at",
            },
            "app_logs": policy,
        },
        "dagster_runs": {"enabled": False},
    }
    path = tmp_path / "hk.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def files_definitions(tmp_path, monkeypatch) -> dg.Definitions:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'app.db'}")
    config_file = write_files_config(tmp_path)
    return build_definitions(load_config(config_file), config_file)


def test_a_files_policy_is_an_asset_with_its_schedule_job_and_health_checks(tmp_path, monkeypatch):
    defs = files_definitions(tmp_path, monkeypatch)

    asset = defs.resolve_assets_def(policy_asset_key("app_logs"))
    # Dagster never runs two cleanups of one directory at once: a pool per directory.
    assert asset.op.pool.startswith("hk_files_") and asset.op.pool.endswith("_logs")
    assert "/" not in asset.op.pool and "-" not in asset.op.pool
    assert defs.resolve_schedule_def("app_logs_schedule").cron_schedule == "30 2 * * *"
    assert defs.resolve_job_def("app_logs_job")
    checks = {
        key.name
        for key in defs.resolve_asset_graph().asset_check_keys
        if key.asset_key == policy_asset_key("app_logs")
    }
    assert checks == {"health", "deletes_progress", "readable"}
    assert defs.resolve_assets_def(policy_asset_key("revoked_tokens"))


def test_the_health_job_leaves_out_the_readable_check_and_runs_no_cleanup(
    tmp_path, monkeypatch, instance, original
):
    defs = files_definitions(tmp_path, monkeypatch)

    result = defs.resolve_job_def("housekeeping_health_job").execute_in_process(instance=instance)

    assert result.success
    evaluated = {
        evaluation.check_name
        for evaluation in result.get_asset_check_evaluations()
        if evaluation.asset_key == policy_asset_key("app_logs")
    }
    # readable is evaluated by the policy's own runs; here it would run the cleanup.
    assert evaluated == {"health", "deletes_progress"}
    assert result.asset_materializations_for_node("housekeeping__app_logs") == []
    assert snapshot(tmp_path / "logs") == original.content


def test_the_files_asset_compresses_archives_deletes_and_reports_metadata_and_health(
    tmp_path, monkeypatch, instance, original
):
    defs = files_definitions(tmp_path, monkeypatch)

    result = defs.resolve_job_def("app_logs_job").execute_in_process(instance=instance)

    assert result.success
    assert_nothing_lost_or_doubled(tmp_path, original)
    [materialization] = result.asset_materializations_for_node("housekeeping__app_logs")
    metadata = {name: value.value for name, value in materialization.metadata.items()}
    assert (metadata["compressed"], metadata["archived"], metadata["deleted"]) == (2, 3, 3)
    assert (metadata["skipped_active"], metadata["skipped_grace"]) == (1, 1)
    assert metadata["bytes_freed"] > metadata["deleted_bytes"] > 0
    checks = {
        evaluation.check_name: evaluation.passed
        for evaluation in result.get_asset_check_evaluations()
        if evaluation.asset_key == policy_asset_key("app_logs")
    }
    assert checks == {"health": True, "deletes_progress": True, "readable": True}
    history = RunHistory(load_config(tmp_path / "hk.yaml").state_database_url)
    [run] = history.recent("app_logs")
    history.dispose()
    assert (run.status, run.deleted, run.dagster_run_id) == (RunStatus.SUCCESS, 3, result.run_id)


def test_the_dry_run_job_observes_the_files_policy_and_changes_nothing(
    tmp_path, monkeypatch, instance, original
):
    defs = files_definitions(tmp_path, monkeypatch)
    job = defs.resolve_job_def("housekeeping_dry_run_job")

    result = job.execute_in_process(
        instance=instance, asset_selection=[policy_asset_key("app_logs")]
    )

    assert result.success
    assert snapshot(tmp_path / "logs") == original.content
    [observation] = [
        event.asset_observation_data.asset_observation
        for event in result.all_events
        if event.event_type_value == "ASSET_OBSERVATION"
    ]
    assert observation.metadata["dry_run"].value is True
    assert observation.metadata["expected_deleted"].value == 3
    assert observation.metadata["to_compress"].value == 2


def test_hk_config_check_checks_a_files_policy_directory(tmp_path, logs):
    url = f"sqlite:///{tmp_path / 'app.db'}"
    AppDatabase(url).table_names()  # the (empty) application database exists
    config_file = write_files_config(tmp_path)
    data = yaml.safe_load(Path(config_file).read_text())
    del data["policies"]["revoked_tokens"]
    Path(config_file).write_text(yaml.safe_dump(data))
    command = ["config", "check", "--config", config_file, "--database-url", url]

    ok = CliRunner().invoke(main, [*command, "--section", "policies"])
    data["policies"]["app_logs"]["directory"] = str(tmp_path / "missing")
    Path(config_file).write_text(yaml.safe_dump(data))
    missing = CliRunner().invoke(main, [*command, "--section", "policies"])

    assert ok.exit_code == 0, ok.output
    assert "ok    app_logs: 8 files matching 'app*.log*'" in ok.output
    assert "1 policies against" in ok.output  # the files policy counts as one
    assert missing.exit_code == 1
    assert f"policies.app_logs.directory: {tmp_path / 'missing'} does not exist" in missing.output


def test_hk_status_counts_the_files_a_files_policy_deleted(tmp_path, monkeypatch, logs):
    config_file = write_files_config(tmp_path)
    config = load_config(config_file)
    history = RunHistory.from_config(config)
    try:
        run_and_record_files(history, config, "app_logs")
    finally:
        history.dispose()
    monkeypatch.chdir(tmp_path)  # the alert store and rollups default under ./var

    result = CliRunner().invoke(main, ["status", "--json", "--config", config_file])

    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)["policies"]["app_logs"]["metrics"]
    assert (metrics["totalFilesDeleted"], metrics["totalRuns"]) == (3, 1)


# --- faults found by using it on real-looking directories ---------------------------------------


def test_a_dry_run_counts_a_file_beside_its_identical_gz_once_as_the_run_does(tmp_path):
    directory = tmp_path / "logs"
    log_file(directory, "app.log", 0.001)
    rotated = log_file(directory, "app.log.1", 50)
    packed = directory / "app.log.1.gz"
    packed.write_bytes(gzip.compress(rotated.read_bytes()))  # a crash left both
    os.utime(packed, ns=(rotated.stat().st_mtime_ns,) * 2)
    packed_size = packed.stat().st_size
    log_file(directory, "app.log.2", 60)
    log_file(directory, "app.log.2.gz", 60, text="something else\n")  # a conflict: left alone
    config = files_config(tmp_path, max_delete_fraction=1)
    before = snapshot(directory)

    dry = run_file_policy(config, "app_logs", options=RunOptions(dry_run=True))
    assert snapshot(directory) == before
    real = run_file_policy(config, "app_logs")

    assert (dry.matched_files, dry.expected_deleted) == (2, 1)
    assert (dry.matched_files, dry.expected_deleted) == (real.matched_files, real.deleted)
    assert dry.conflicts == real.conflicts == 1
    assert dry.expected_deleted_bytes == real.deleted_bytes == packed_size
    assert sorted(os.listdir(directory)) == ["app.log", "app.log.2", "app.log.2.gz"]


def test_a_file_modified_in_the_future_does_not_unprotect_the_file_being_written(tmp_path):
    directory = tmp_path / "logs"
    # An idle application: its log last written 3 days ago, still open for writing.
    idle = log_file(directory, "app.log", 3)
    log_file(directory, "app.log.1", -2)  # copied from a host whose clock is ahead
    log_file(directory, "app.log.2", 5)
    lines = []

    result = run_file_policy(files_config(tmp_path), "app_logs", log=lines.append)

    assert idle.exists(), "the file being written was compressed and deleted"
    assert sorted(os.listdir(directory)) == ["app.log", "app.log.1", "app.log.2.gz"]
    assert (result.compressed, result.skipped_active, result.skipped_grace) == (1, 1, 1)
    assert any("in the future" in line and "app.log.1" in line for line in lines)


def test_files_removed_by_logrotate_while_the_run_goes_are_skipped_not_fatal(
    tmp_path, logs, monkeypatch
):
    real_plan = file_retention.plan_files

    def plan_then_logrotate_deletes(*args, **kwargs):
        plan = real_plan(*args, **kwargs)
        plan.to_compress[0].path.unlink()
        plan.expiring[0].path.unlink()
        return plan

    monkeypatch.setattr(file_retention, "plan_files", plan_then_logrotate_deletes)
    result = run_file_policy(files_config(tmp_path), "app_logs")

    assert (result.compressed, result.deleted, result.skipped_changed) == (1, 2, 2)
    assert result.archived == 2
    assert not list((tmp_path / "archive").rglob("*.pending"))
    assert not list(logs.glob("*.tmp"))
    assert sorted(entry.source for entry in archived_entries(tmp_path)) == [
        "app.log.6",
        "app.log.7.gz",
    ]


def test_a_file_replaced_under_its_name_is_not_archived_as_the_listed_one(
    tmp_path, logs, monkeypatch
):
    real_plan = file_retention.plan_files
    newer = b"the next rotation, renamed over the listed file\n"

    def plan_then_logrotate_renames(*args, **kwargs):
        plan = real_plan(*args, **kwargs)
        replacement = plan.expiring[0].path.with_name("incoming")
        replacement.write_bytes(newer)
        os.replace(replacement, plan.expiring[0].path)
        return plan

    monkeypatch.setattr(file_retention, "plan_files", plan_then_logrotate_renames)
    result = run_file_policy(files_config(tmp_path), "app_logs")

    assert (result.archived, result.deleted, result.skipped_changed) == (2, 2, 1)
    assert (logs / "app.log.5.gz").read_bytes() == newer
    stored = {(tmp_path / "archive" / path).read_bytes() for path, _ in archived_paths(tmp_path)}
    assert newer not in stored


@pytest.mark.parametrize("name", ["_manifest.json", "_manifest.json.tmp", "app.log.pending"])
def test_a_log_file_named_like_the_archive_own_files_is_archived_as_any_other(tmp_path, name):
    directory = tmp_path / "logs"
    log_file(directory, "app.log", 0.001)
    expiring = log_file(directory, name, 50, text='{"files": "a log line, not a manifest"}\n')
    content = expiring.read_bytes()
    # One stream: app.log is the file being written, the other one expiring.
    config = files_config(tmp_path, glob="*", max_delete_fraction=1, stream_pattern="^(?P<stream>)")

    result = run_file_policy(config, "app_logs")
    rerun = run_file_policy(config, "app_logs")

    assert (result.archived, result.deleted, rerun.recovered) == (1, 1, 0)
    [(path, entry)] = archived_paths(tmp_path)
    assert entry.source == name
    assert (tmp_path / "archive" / path).read_bytes() == content


def test_an_unlisted_archive_copy_is_hashed_without_reading_it_whole(tmp_path, monkeypatch):
    store = LocalArchiveStore(tmp_path / "archive")
    archive = FileArchive(store, "app_logs", str(tmp_path / "logs"))
    copy = tmp_path / "archive" / "files=app_logs" / "date=2026-10-01" / "app.log.9"
    copy.parent.mkdir(parents=True)
    copy.write_bytes(b"x" * (3 * file_archive_module.CHUNK + 5))

    def whole_file_read(*args):
        raise AssertionError("read the whole copy into memory")

    monkeypatch.setattr(LocalArchiveStore, "read_bytes", whole_file_read, raising=True)
    monkeypatch.setattr(
        FileArchive, "manifest", lambda self, day: {"files": [], "bytes": 0}, raising=True
    )
    added = []
    monkeypatch.setattr(
        FileArchive, "_add_to_manifest", lambda self, day, items: added.extend(items)
    )

    recovery = archive.recover(lambda source: True)

    assert recovery.repaired == 1
    [entry] = added
    assert (entry.bytes, entry.sha256) == (
        copy.stat().st_size,
        hashlib.sha256(copy.read_bytes()).hexdigest(),
    )


def test_a_name_with_the_collision_mark_survives_a_crash_before_the_manifest_once(
    tmp_path, monkeypatch
):
    directory = tmp_path / "logs"
    log_file(directory, "app~1.log", 0.001)
    log_file(directory, "app~1.log.1", 50)
    config = files_config(tmp_path, glob="app*")

    with monkeypatch.context() as patch:
        crash_on_call(patch, file_archive_module.FileArchive, "_add_to_manifest", 0)
        with pytest.raises(Crash):
            run_file_policy(config, "app_logs")
    rerun = run_file_policy(config, "app_logs")

    assert (rerun.recovered, rerun.deleted) == (1, 1)
    assert [entry.source for entry in archived_entries(tmp_path)] == ["app~1.log.1"]
