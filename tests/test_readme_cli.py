"""The README documents every `hk` command and every option of it (as sqlite-utils' own test
does): a command or option added without a line in "The `hk` command" fails here."""

from __future__ import annotations

import re
from pathlib import Path

import click

from housekeeping.cli import main

README = Path(__file__).resolve().parent.parent / "README.md"


def leaf_commands(group: click.Group, prefix: str = "hk") -> dict[str, click.Command]:
    found = {}
    for name, command in group.commands.items():
        path = f"{prefix} {name}"
        if isinstance(command, click.Group):
            found.update(leaf_commands(command, path))
            if command.invoke_without_command:  # `hk metrics` runs on its own too
                found[path] = command
        else:
            found[path] = command
    return found


def documented_rows() -> dict[str, str]:
    """The command table's rows: '`hk rules check [FILE] [--config FILE]`' -> the whole row."""
    text = README.read_text()
    section = text.split("## The `hk` command", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"\| `(hk [a-z -]+?)(?: [\[A-Z\"<-].*?)?` \|", line)
        if match:
            rows[match.group(1).strip()] = line
    return rows


def test_every_command_has_a_row_in_the_readme():
    rows = documented_rows()
    missing = sorted(set(leaf_commands(main)) - set(rows))
    assert missing == [], "add a row to the README's `hk` command table"


def test_every_option_of_every_command_is_in_its_row():
    rows = documented_rows()
    missing = [
        f"{path} {option}"
        for path, command in leaf_commands(main).items()
        for parameter in command.params
        if isinstance(parameter, click.Option)
        for option in parameter.opts
        if option.startswith("--") and option not in rows.get(path, "")
    ]
    assert missing == []


def test_every_documented_command_exists():
    stale = sorted(set(documented_rows()) - set(leaf_commands(main)))
    assert stale == [], "the README names a command hk does not have"
