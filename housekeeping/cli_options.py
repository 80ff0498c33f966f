"""The click options every package's `hk` commands share, defined once."""

from __future__ import annotations

from datetime import timedelta

import click

from housekeeping.config_types import parse_duration

config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Config file (default: $HK_CONFIG, else ./hk.yaml).",
)
database_option = click.option(
    "--database-url",
    default=None,
    help="Application database URL (default: $DATABASE_URL, else the demo's SQLite file).",
)


def positive_duration(value: str, option: str) -> timedelta:
    """An option's duration (``30d``, ``15m``), which must be positive; click's usage error
    (exit 2) naming the option otherwise."""
    try:
        duration = parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None
    if duration <= timedelta(0):
        raise click.BadParameter(f"must be positive, got {value!r}", param_hint=option)
    return duration
