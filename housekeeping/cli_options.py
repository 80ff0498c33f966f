"""The click options every package's `hk` commands share, defined once."""

from __future__ import annotations

import click

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
