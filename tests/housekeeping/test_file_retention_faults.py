"""Retention for log files against real-world directories: unreadable files and directories,
symlinks, modes and owners, a log directory inside the archive, a full disk, and `hk config
check` with only files policies.

We run as root, who reads everything whatever the mode bits: the permission tests run their part
in a child process without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (``setpriv``), where mode
bits apply to root too. The full-disk tests mount a tiny tmpfs in a child's own user and mount
namespace (``unshare -rm``). Both skip when this machine cannot do that.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from housekeeping.archive import LocalArchiveStore
from housekeeping.cli import main
from housekeeping.config import ConfigError, parse_config
from housekeeping.file_archive import FileArchive
from housekeeping.file_retention import run_file_policy
from tests.housekeeping.test_file_retention import (
    archived,
    files_config,
    files_policy,
    log_file,
    make_logs,
    snapshot,
)

REPO = Path(__file__).resolve().parents[2]
NO_DAC = "-dac_override,-dac_read_search"


def _can(command: list[str]) -> bool:
    if not all(shutil.which(part) for part in command[:1]):
        return False
    return subprocess.run(command, capture_output=True, timeout=30).returncode == 0


def without_file_powers(script: str, *args: str) -> dict:
    """Run ``script`` (Python) in a child that reads and writes files as their mode bits say,
    root or not; its last stdout line parsed as JSON."""
    command = [sys.executable, "-c", script, *args]
    if os.geteuid() == 0:
        if not _can(["setpriv", f"--bounding-set={NO_DAC}", "true"]):
            pytest.skip("setpriv cannot drop CAP_DAC_OVERRIDE here")
        command = ["setpriv", f"--inh-caps={NO_DAC}", f"--bounding-set={NO_DAC}", *command]
    return _json_of(
        subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=_env(), timeout=300)
    )


def on_tiny_disk(mount: Path, script: str, *args: str, size: str = "64k") -> dict:
    """Run ``script`` (Python) in a child that sees a tmpfs of ``size`` mounted on ``mount``
    (gone with the child); its last stdout line parsed as JSON."""
    mount.mkdir(parents=True, exist_ok=True)
    if not _can(["unshare", "-rm", "true"]):
        pytest.skip("unshare -rm (a user and mount namespace) is not allowed here")
    shell = f'mount -t tmpfs -o size={size} tmpfs "$0" && exec "$@"'
    command = ["unshare", "-rm", "sh", "-c", shell, str(mount), sys.executable, "-c", script]
    return _json_of(
        subprocess.run(
            [*command, *args], capture_output=True, text=True, cwd=REPO, env=_env(), timeout=300
        )
    )


def _env() -> dict[str, str]:
    """This process's environment without DATABASE_URL (the children need none)."""
    return {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}


def _json_of(child: subprocess.CompletedProcess) -> dict:
    assert child.returncode == 0, child.stderr
    return json.loads(child.stdout.strip().splitlines()[-1])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def logs(tmp_path):
    """test_file_retention.py's directory of logs (``make_logs``)."""
    return make_logs(tmp_path)


def write_config(tmp_path: Path, **overrides) -> Path:
    """hk.yaml with the one files policy ``app_logs`` (and no table policy, no analytics)."""
    config = {
        "state_database_url": f"sqlite:///{tmp_path / 'state.db'}",
        "archive": {"root": str(tmp_path / "archive")},
        "policies": {"app_logs": files_policy(tmp_path, **overrides)},
        "dagster_runs": {"enabled": False},
    }
    path = tmp_path / "hk.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# --- unreadable files and directories ----------------------------------------------------------


UNREADABLE_RUN = """
import json, sys
from pathlib import Path
import dagster as dg
from click.testing import CliRunner
from housekeeping.cli import main
from housekeeping.config import load_config
from housekeeping.definitions import build_definitions
from housekeeping.file_retention import run_file_policy
from housekeeping.policies import RunOptions

config_file = sys.argv[1]
check = CliRunner().invoke(main, ["config", "check", "--config", config_file, "--section", "policies"])
config = load_config(config_file)
dry = run_file_policy(config, "app_logs", options=RunOptions(dry_run=True))
defs = build_definitions(config, config_file)
with dg.DagsterInstance.ephemeral() as instance:
    run = defs.resolve_job_def("app_logs_job").execute_in_process(instance=instance)
    [materialized] = run.asset_materializations_for_node("housekeeping__app_logs")
    [readable] = [e for e in run.get_asset_check_evaluations() if e.check_name == "readable"]
print(json.dumps({
    "check_exit": check.exit_code,
    "check_output": check.output,
    "dry_unreadable": dry.unreadable_files,
    "success": run.success,
    "metadata": {key: value.value for key, value in materialized.metadata.items()},
    "readable_passed": readable.passed,
    "readable_severity": str(readable.severity),
    "readable_description": readable.description,
}))
"""


def test_unreadable_log_files_are_skipped_counted_and_named_and_the_run_goes_on(tmp_path, logs):
    config_file = write_config(tmp_path)
    # One to compress and one to archive, neither readable by anyone but their owner's powers.
    (logs / "app.log.3").chmod(0)
    (logs / "app.log.6").chmod(0)
    kept = {name: sha256(logs / name) for name in ("app.log.3", "app.log.6")}

    child = without_file_powers(UNREADABLE_RUN, str(config_file))

    # hk config check names them beforehand, as a warning.
    assert child["check_exit"] == 0, child["check_output"]
    assert "warn  app_logs: 2 files cannot be read (permission denied)" in child["check_output"]
    assert "app.log.3, app.log.6" in child["check_output"]
    assert sorted(child["dry_unreadable"]) == ["app.log.3", "app.log.6"]
    # The run goes on: the readable ones are compressed, archived and deleted.
    assert child["success"]
    metadata = child["metadata"]
    assert (metadata["unreadable"], metadata["unreadable_files"]) == (2, "app.log.3, app.log.6")
    assert (metadata["compressed"], metadata["archived"], metadata["deleted"]) == (1, 2, 2)
    assert not child["readable_passed"]
    assert child["readable_severity"] == "AssetCheckSeverity.WARN"
    assert "2 files could not be read" in child["readable_description"]
    # Left alone, as they were; nothing of them in the archive.
    for name in kept:
        (logs / name).chmod(0o644)
    assert {name: sha256(logs / name) for name in kept} == kept
    assert not (logs / "app.log.3.gz").exists()
    assert sorted(archived(tmp_path)) == ["app.log.5.gz", "app.log.7.gz"]


UNLISTABLE_RUN = """
import json, sys
from pathlib import Path
from housekeeping.config import ConfigError
from housekeeping.file_retention import run_file_policy
from tests.housekeeping.test_file_retention import files_config

try:
    run_file_policy(files_config(Path(sys.argv[1])), "app_logs")
    error = None
except ConfigError as exc:
    error = str(exc)
print(json.dumps({"error": error}))
"""


def test_an_unlistable_directory_is_one_line_naming_it_and_changes_nothing(tmp_path, logs):
    before = snapshot(logs)
    logs.chmod(0o300)  # can be entered and written, not listed

    try:
        child = without_file_powers(UNLISTABLE_RUN, str(tmp_path))
    finally:
        logs.chmod(0o755)

    assert child["error"].startswith(f"policies.app_logs.directory: {logs} cannot be listed (")
    assert "\n" not in child["error"]
    assert snapshot(logs) == before
    assert not (tmp_path / "archive").exists()


def test_a_readable_run_passes_the_readable_check(tmp_path, logs):
    result = run_file_policy(files_config(tmp_path), "app_logs")

    assert (result.unreadable, result.unreadable_files) == (0, [])
    assert result.metadata()["unreadable_files"] == ""
    assert "unreadable" not in result.summary_line()


# --- symlinks, modes, owners -------------------------------------------------------------------


def test_symlinks_are_never_followed_nor_deleted(tmp_path, logs):
    outside = tmp_path / "elsewhere"
    target = log_file(outside, "precious.log", 90)
    victim = log_file(outside, "victim", 90, text="must stay as it is\n")
    links = {
        "app.log.8": target,  # an old "rotated file" that is a link: not ours to archive
        "app.log.2.gz.tmp": victim,  # where compressing app.log.2 would write its temporary
        "app.log.3.gz": outside / "missing.gz",  # dangling, where app.log.3's .gz would go
    }
    for name, points_to in links.items():
        (logs / name).symlink_to(points_to)
        os.utime(logs / name, (0, 0), follow_symlinks=False)  # older than any retention
    before = {path.name: sha256(path) for path in outside.iterdir()}

    result = run_file_policy(files_config(tmp_path), "app_logs")

    for name, points_to in links.items():
        assert (logs / name).is_symlink() and os.readlink(logs / name) == str(points_to)
    assert {path.name: sha256(path) for path in outside.iterdir()} == before
    assert "app.log.8" not in archived(tmp_path) and "precious.log" not in archived(tmp_path)
    # app.log.2 and app.log.3 stay plain (a link stands where their .gz.tmp or .gz goes).
    assert (logs / "app.log.2").is_file() and (logs / "app.log.3").is_file()
    assert (result.compressed, result.skipped_changed) == (0, 2)
    assert result.deleted == 3  # the expiring regular files, as without the links


def test_a_compressed_file_keeps_the_mode_and_owner_of_its_original(tmp_path, logs):
    original = logs / "app.log.3"
    original.chmod(0o640)
    if os.geteuid() == 0:
        os.chown(original, 1234, 2345)
    owner = (original.stat().st_uid, original.stat().st_gid)

    run_file_policy(files_config(tmp_path), "app_logs")

    packed = (logs / "app.log.3.gz").stat()
    assert oct(packed.st_mode & 0o7777) == oct(0o640)
    assert (packed.st_uid, packed.st_gid) == owner
    assert oct((logs / "app.log.2.gz").stat().st_mode & 0o7777) == oct(0o644)


# --- the archive and the logs kept apart ------------------------------------------------------


@pytest.mark.parametrize("inside", ["archive", "archive/files=app_logs"])
def test_a_log_directory_inside_the_archive_root_is_refused(tmp_path, inside):
    directory = tmp_path / inside
    log_file(directory, "app.log.1", 50)
    before = snapshot(directory)

    with pytest.raises(ConfigError) as refused:
        run_file_policy(files_config(tmp_path, directory=str(directory)), "app_logs")

    message = str(refused.value)
    assert message.startswith(f"policies.app_logs.directory: {directory} is inside archive.root")
    assert "\n" not in message
    assert snapshot(directory) == before


def test_an_archive_root_inside_the_log_directory_is_never_archived(tmp_path, logs):
    config = parse_config(
        {
            "archive": {"root": str(logs / "archive")},
            "state_database_url": f"sqlite:///{tmp_path / 'state.db'}",
            "policies": {"app_logs": files_policy(tmp_path)},
        }
    )
    store = LocalArchiveStore(logs / "archive")

    first = run_file_policy(config, "app_logs")
    second = run_file_policy(config, "app_logs")

    entries = FileArchive(store, "app_logs", "").entries()
    assert sorted(entry.source for _, entry in entries) == [
        "app.log.5.gz",
        "app.log.6",
        "app.log.7.gz",
    ]
    assert (first.archived, second.archived, second.deleted) == (3, 0, 0)


# --- full disks --------------------------------------------------------------------------------


FULL_LOG_DISK = """
import hashlib, json, os, sys, time
from pathlib import Path
from housekeeping.atomic import DiskFull
from housekeeping.file_retention import run_file_policy
from tests.housekeeping.test_file_retention import files_config

tmp = Path(sys.argv[1])
logs = tmp / "logs"
(logs / "app.log").write_text("today\\n")
rotated = logs / "app.log.1"
rotated.write_bytes(os.urandom(40 * 1024))  # gzip cannot shrink it: its .gz does not fit
old = int(time.time() - 10 * 86400) * 10**9
os.utime(rotated, ns=(old, old))
before = hashlib.sha256(rotated.read_bytes()).hexdigest()
try:
    run_file_policy(files_config(tmp, archive=False), "app_logs")
    error = None
except DiskFull as exc:
    error = str(exc)
print(json.dumps({
    "error": error,
    "files": sorted(os.listdir(logs)),
    "intact": hashlib.sha256(rotated.read_bytes()).hexdigest() == before,
    "mtime_kept": rotated.stat().st_mtime_ns == old,
}))
"""


def test_a_full_log_disk_while_compressing_is_one_line_and_leaves_no_partial_gz(tmp_path):
    child = on_tiny_disk(tmp_path / "logs", FULL_LOG_DISK, str(tmp_path))

    rotated = tmp_path / "logs" / "app.log.1"
    assert child["error"] is not None
    assert child["error"].startswith(f"{rotated}: disk full while compressing it to app.log.1.gz")
    assert "\n" not in child["error"]
    assert child["files"] == ["app.log", "app.log.1"]
    assert child["intact"] and child["mtime_kept"]


FULL_ARCHIVE = """
import json, os, sys
from pathlib import Path
from housekeeping.atomic import DiskFull
from housekeeping.file_retention import run_file_policy
from tests.housekeeping.test_file_retention import files_config

tmp = Path(sys.argv[1])
try:
    run_file_policy(files_config(tmp), "app_logs")
    error = None
except DiskFull as exc:
    error = str(exc)
left = sorted(
    str(path.relative_to(tmp / "archive")) for path in (tmp / "archive").rglob("*") if path.is_file()
)
print(json.dumps({"error": error, "archive": left}))
"""


def test_a_full_archive_root_is_one_line_naming_it_and_keeps_the_source(tmp_path):
    logs = tmp_path / "logs"
    log_file(logs, "app.log", 0.001)
    log_file(logs, "app.log.1", 50, text=os.urandom(64 * 1024).hex())  # 128 KiB
    before = snapshot(logs)

    child = on_tiny_disk(tmp_path / "archive", FULL_ARCHIVE, str(tmp_path))

    assert child["error"] is not None
    assert child["error"].startswith(f"archive.root: {tmp_path / 'archive'} is full")
    assert "\n" not in child["error"]
    assert not [name for name in child["archive"] if name.endswith(".pending")]
    assert snapshot(logs) == before


# --- hk config check with only files policies ----------------------------------------------


def test_config_check_with_only_files_policies_needs_no_database_url(tmp_path, logs, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)  # where the demo's SQLite file would be looked for: not there
    config_file = write_config(tmp_path)

    result = CliRunner().invoke(main, ["config", "check", "--config", str(config_file)])

    assert result.exit_code == 0, result.output
    assert "ok    DATABASE_URL: not needed" in result.output
    assert "ok    app_logs: 8 files matching" in result.output
    assert f"ok    archive.root: {tmp_path / 'archive'} does not exist yet" in result.output
    assert "no application database (none needed)" in result.output
    assert not (tmp_path / "archive").exists()  # checked, not created
    assert not (tmp_path / "var").exists()


def test_config_check_names_an_archive_root_that_cannot_be_written(tmp_path, logs, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "archive").write_text("a file where the archive root should be")
    config_file = write_config(tmp_path)

    result = CliRunner().invoke(main, ["config", "check", "--config", str(config_file)])

    assert result.exit_code == 1
    assert f"error archive.root: cannot write to {tmp_path / 'archive'}" in result.output
    assert (tmp_path / "archive").read_text() == "a file where the archive root should be"


def test_config_check_refuses_a_log_directory_inside_the_archive_root(tmp_path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    log_file(tmp_path / "archive" / "logs", "app.log", 0.001)
    config_file = write_config(tmp_path, directory=str(tmp_path / "archive" / "logs"))

    result = CliRunner().invoke(main, ["config", "check", "--config", str(config_file)])

    assert result.exit_code == 1
    assert "policies.app_logs.directory:" in result.output
    assert "is inside archive.root" in result.output


def test_config_check_with_a_table_policy_still_needs_the_database(tmp_path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "logs").mkdir()
    config_file = write_config(tmp_path)
    data = yaml.safe_load(config_file.read_text())
    data["policies"]["revoked_tokens"] = {
        "kind": "expired",
        "table": "revoked_tokens",
        "cutoff_column": "expires_at",
    }
    config_file.write_text(yaml.safe_dump(data))

    result = CliRunner().invoke(main, ["config", "check", "--config", str(config_file)])

    assert result.exit_code == 1
    assert "DATABASE_URL: the SQLite file" in result.output
    assert "not needed" not in result.output
