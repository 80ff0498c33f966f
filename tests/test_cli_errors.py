"""Every `hk` command turns every bad input into one line, exit code 1 or 2, never a traceback.

The command tree is walked from ``housekeeping.cli.main``, so a new command is covered by the
generic bad inputs at once: unreachable databases (the application, state and alert databases),
a missing and a garbled config file, a relative and a missing DAGSTER_HOME, garbage for every
option and argument by its type. A command's own bad inputs are listed in ``SPECIFIC``; the
issue's reported examples also run through the installed `hk` script in a real process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from housekeeping.cli import main
from housekeeping.demo.seed import create_schema

# Refused at once (nothing listens on port 1): an unreachable database without a wait.
UNREACHABLE = "postgresql://hk@127.0.0.1:1/nowhere"
# Plausible values for required arguments, by parameter name.
ARGUMENTS = {"sql": "SELECT 1", "rule": "http_error_rate", "silence_id": "1"}
DURATION_OPTIONS = {"since", "step", "duration"}
# Commands that open the Dagster instance of $DAGSTER_HOME (and read $HK_CONFIG without --config).
DAGSTER_COMMANDS = {"demo", "backfill"}
# Commands that read only the published files: unreachable databases do not concern them.
NO_DATABASE = {("rollups", "status")}


def commands(group: click.Group = main, path: tuple[str, ...] = ()) -> Iterator[tuple]:
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))
        else:
            yield (*path, name), command


# A server runs until stopped when its input is good (tests/test_metrics_endpoint.py covers its
# bad inputs): not a case for this loop.
SERVERS = {("metrics", "serve")}
COMMANDS = {path: command for path, command in commands() if path not in SERVERS}


@dataclass
class Case:
    name: str
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    # A bad input the command may not need (the state database, for `hk alerts list`).
    may_succeed: bool = False


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    garbled = tmp_path / "garbled.yaml"
    garbled.write_text("policies: [unclosed\n  - x: {")
    unreachable = tmp_path / "unreachable.yaml"
    unreachable.write_text(
        yaml.safe_dump(
            {
                "state_database_url": UNREACHABLE,
                "alerts": {"database_url": UNREACHABLE},
                "analytics": {
                    "root": str(tmp_path / "analytics"),
                    "database": str(tmp_path / "analytics" / "rollups.duckdb"),
                },
                "archive": {"root": str(tmp_path / "archive")},
            }
        )
    )
    state_only = tmp_path / "unreachable_state.yaml"
    state_only.write_text(
        yaml.safe_dump(
            {
                "state_database_url": UNREACHABLE,
                "alerts": {"database_url": f"sqlite:///{tmp_path / 'alerts.db'}"},
                "analytics": {
                    "root": str(tmp_path / "analytics"),
                    "database": str(tmp_path / "analytics" / "rollups.duckdb"),
                },
            }
        )
    )
    not_duckdb = tmp_path / "not.duckdb"
    not_duckdb.write_bytes(b"not a database" * 100)
    return {
        "garbled": garbled,
        "unreachable": unreachable,
        "unreachable_state": state_only,
        "missing": tmp_path / "missing.yaml",
        "not_duckdb": not_duckdb,
        "tmp": tmp_path,
    }


def generic_cases(
    path: tuple[str, ...], command: click.Command, files: dict[str, Path]
) -> Iterator[Case]:
    """Bad inputs derived from the command's parameters."""
    names = {param.name for param in command.params}
    no_database = path in NO_DATABASE
    required = []
    for param in command.params:
        if isinstance(param, click.Argument):
            if param.name in ARGUMENTS:
                required.append(ARGUMENTS[param.name])
            else:  # file arguments: a missing one
                required.append(str(files["missing"]))
    unreachable_env = {
        "DATABASE_URL": UNREACHABLE,
        "HK_STATE_DATABASE_URL": UNREACHABLE,
        "HK_CONFIG": str(files["unreachable"]),
        "DAGSTER_HOME": str(files["tmp"]),
    }
    yield Case("unreachable databases", required, unreachable_env, may_succeed=no_database)
    if any(item == str(files["missing"]) for item in required):
        garbled = [
            str(files["garbled"]) if item == str(files["missing"]) else item for item in required
        ]
        yield Case("garbled file arguments", garbled, {"HK_CONFIG": str(files["unreachable"])})
    if "config_file" in names:
        for kind in ("missing", "garbled", "unreachable", "unreachable_state"):
            yield Case(
                f"{kind} config",
                [*required, "--config", str(files[kind])],
                may_succeed=kind == "unreachable_state" or (no_database and kind != "missing"),
            )
    if "config_file" in names or command.name in DAGSTER_COMMANDS:
        yield Case("garbled HK_CONFIG", required, {"HK_CONFIG": str(files["garbled"])})
    if command.name in DAGSTER_COMMANDS:
        yield Case("relative DAGSTER_HOME", required, {**unreachable_env, "DAGSTER_HOME": "dh"})
        yield Case(
            "missing DAGSTER_HOME",
            required,
            {**unreachable_env, "DAGSTER_HOME": str(files["tmp"] / "nope")},
        )
    for param in command.params:
        if not isinstance(param, click.Option) or param.is_flag:
            continue
        flag = param.opts[0]
        base = (
            [*required, "--config", str(files["unreachable"])]
            if "config_file" in names
            else required
        )
        if isinstance(param.type, click.types.IntParamType):
            values = ["many", "-1", "0"]
        elif param.name in DURATION_OPTIONS:
            values = ["3x", "0s", "-1h", "30"]
        elif isinstance(param.type, click.Path):
            values = [str(files["missing"]), str(files["garbled"]), str(files["not_duckdb"])]
        elif param.name == "database_url":
            values = [UNREACHABLE, "garbage://x", "sqlite:///" + str(files["tmp"] / "no" / "x.db")]
        else:
            values = ["", "\x00"]
        for value in values:
            yield Case(f"{flag} {value!r}", [*base, flag, value], unreachable_env)


SPECIFIC: dict[tuple[str, ...], list[Case]] = {
    ("query",): [
        Case("empty SQL", [""]),
        Case("whitespace SQL", ["  ;  "]),
        Case("not SQL", ["SELEC 1"]),
    ],
    ("alerts", "silence"): [
        Case("no duration", ["http_error_rate", "--reason", "x"]),
    ],
}


def run(case: Case, path: tuple[str, ...]):
    # A clean environment for what the case does not set: no ambient config or database.
    env = {
        "HK_CONFIG": "",
        "DATABASE_URL": "",
        "HK_STATE_DATABASE_URL": "",
        "DAGSTER_HOME": "",
        "SLACK_BOT_TOKEN": "",
        "SLACK_WEBHOOK_URL": "",
        **case.env,
    }
    env = {key: (value or None) for key, value in env.items()}
    return CliRunner().invoke(main, [*path, *case.args], env=env)


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_every_command_answers_every_bad_input_in_one_line(path, files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./hk.yaml, and nothing created in the checkout
    command = COMMANDS[path]
    cases = [*generic_cases(path, command, files), *SPECIFIC.get(path, [])]
    failures = []
    for case in cases:
        result = run(case, path)
        output = result.output
        lines = [line for line in output.splitlines() if line.strip()]
        problems = []
        if result.exit_code not in (1, 2) and not (case.may_succeed and result.exit_code == 0):
            problems.append(f"exit code {result.exit_code}")
        if "Traceback" in output:
            problems.append("a traceback")
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            problems.append(f"escaped {type(result.exception).__name__}: {result.exception}")
        if "unexpected error" in output:
            problems.append("an error nobody named")
        if (
            result.exit_code == 1
            and not (lines and lines[-1].startswith("Error: "))
            and not (path == ("rules", "test") and lines and "failed" in lines[-1])
        ):
            problems.append("no one-line 'Error:' at the end")
        if problems:
            failures.append(f"{case.name}: {', '.join(problems)}\n{output}")
    assert failures == [], "\n\n".join(failures)


def test_specific_cases_name_commands_that_exist():
    assert set(SPECIFIC) <= set(COMMANDS)


def hk(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("hk")
    return subprocess.run(
        [str(script), *args],
        env={**os.environ, "HK_TRACEBACK": "", **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_reported_examples_answer_in_one_line_from_the_real_script(tmp_path):
    """The issue's examples, through the installed `hk` in its own process."""
    app = f"sqlite:///{tmp_path / 'app.db'}"
    create_schema(app)
    mixed_case = tmp_path / "mixed.yaml"
    mixed_case.write_text(
        yaml.safe_dump(
            {
                "state_database_url": f"sqlite:///{tmp_path / 'state.db'}",
                "policies": {
                    "request_logs": {
                        "kind": "age",
                        "table": "Request_Logs",
                        "cutoff_column": "ts",
                        "retention": "30d",
                    }
                },
            }
        )
    )
    shipped = Path(__file__).resolve().parent.parent / "hk.yaml"
    examples = [
        (["config", "check", "--config", str(mixed_case)], {"DATABASE_URL": app}, "Request_Logs"),
        (
            ["status", "--config", str(shipped)],
            {
                "HK_STATE_DATABASE_URL": UNREACHABLE,
                "HK_ALERTS_DATABASE_URL": f"sqlite:///{tmp_path / 'alerts.db'}",
            },
            "state_database_url",
        ),
        (["demo"], {"DAGSTER_HOME": "var/dagster_home", "HK_CONFIG": str(shipped)}, "absolute"),
        (
            ["demo"],
            {"DAGSTER_HOME": str(tmp_path / "nope"), "HK_CONFIG": str(shipped)},
            "not an existing directory",
        ),
        (["query", ""], {}, "no SQL statement given"),
    ]
    for args, env, named in examples:
        result = hk(*args, env=env, cwd=tmp_path)
        output = result.stdout + result.stderr
        assert result.returncode in (1, 2), output
        assert "Traceback" not in output, output
        lines = [line for line in output.splitlines() if line.strip()]
        assert lines[-1].startswith("Error: "), output
        assert any(named in line for line in lines), output
    assert not (tmp_path / "var").exists()  # the demo refused before seeding anything
