"""Preflight of the Dagster instance (``$DAGSTER_HOME/dagster.yaml``) before the daemon starts.

Dagster names a missing variable one at a time, and reports an unreachable host, a wrong port or
a misnamed database only as "too many retries for DB connection" after retrying for a while,
naming none of them. This check reads the same file and names every problem by its key and its
environment variable, and never prints the password.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import yaml
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from housekeeping.errors import HkError

# dagster-postgres must be given psycopg2: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3,
# and dagster-postgres then fails on its NOTIFY run_events (dagster issue #33958).
REQUIRED_SCHEME = "postgresql+psycopg2"


class InstanceConfigError(HkError):
    """dagster.yaml or the environment it reads is missing, malformed or points nowhere."""


@dataclass(frozen=True)
class EnvReference:
    key: str  # where in dagster.yaml, e.g. storage.postgres.postgres_db.hostname
    variable: str


@dataclass(frozen=True)
class InstanceReport:
    config_file: Path
    storage: str  # what Dagster stores its runs in, password hidden
    variables: list[str] = field(default_factory=list)
    run_monitoring: bool = False


def env_references(value: Any, key: str = "") -> Iterator[EnvReference]:
    """Every ``{env: NAME}`` in the config: Dagster's way of reading a value from the environment."""
    if isinstance(value, dict):
        if set(value) == {"env"} and isinstance(value["env"], str):
            yield EnvReference(key, value["env"])
            return
        for name, item in value.items():
            yield from env_references(item, f"{key}.{name}" if key else str(name))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from env_references(item, f"{key}[{index}]")


def _resolve(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"env"} and isinstance(value["env"], str):
            return os.environ[value["env"]]
        return {name: _resolve(item) for name, item in value.items()}
    if isinstance(value, list):
        return [_resolve(item) for item in value]
    return value


def _source(raw: Any) -> str:
    """' (from VAR)' when the raw config reads this key from the environment."""
    if isinstance(raw, dict) and set(raw) == {"env"}:
        return f" (from {raw['env']})"
    return ""


def dagster_home(home: str | None = None) -> Path:
    """``home`` (default ``$DAGSTER_HOME``) as Dagster requires it: set, absolute, an existing
    directory. Raises InstanceConfigError naming the value otherwise (Dagster itself raises
    with a traceback)."""
    source = "--home" if home else "DAGSTER_HOME"
    home = home or os.environ.get("DAGSTER_HOME")
    if not home:
        raise InstanceConfigError(
            "DAGSTER_HOME is not set: set it to the directory that holds dagster.yaml"
        )
    path = Path(home)
    if not path.is_absolute():
        raise InstanceConfigError(
            f"{source}: {home!r} must be an absolute path (Dagster requires one), "
            f"e.g. {path.resolve()}"
        )
    if not path.is_dir():
        raise InstanceConfigError(
            f"{source}: {home!r} is not an existing directory: create it and put dagster.yaml "
            "there (make demo uses var/dagster_home)"
        )
    return path


def check_instance(home: str | None = None, connect_timeout: int = 5) -> InstanceReport:
    """Check dagster.yaml in ``home`` (default ``$DAGSTER_HOME``); raise naming the problem."""
    home = str(dagster_home(home))
    config_file = Path(home) / "dagster.yaml"
    if not config_file.exists():
        raise InstanceConfigError(
            f"{config_file} not found: copy the shipped dagster.yaml there (PostgreSQL storage) "
            "or deploy/dagster.demo.yaml (the demo's SQLite storage)"
        )
    try:
        raw = yaml.safe_load(config_file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InstanceConfigError(f"{config_file}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise InstanceConfigError(f"{config_file}: expected a mapping of keys at the top level")

    references = list(env_references(raw))
    missing = [ref for ref in references if ref.variable not in os.environ]
    if missing:
        named = ", ".join(f"{ref.variable} (for {ref.key})" for ref in missing)
        raise InstanceConfigError(f"{config_file}: environment variable(s) not set: {named}")
    config = _resolve(raw)
    variables = sorted({ref.variable for ref in references})
    monitoring = bool((config.get("run_monitoring") or {}).get("enabled"))

    postgres = (config.get("storage") or {}).get("postgres")
    if postgres is None:
        if "storage" in config:
            storage = f"{', '.join(config['storage'])} (not checked)"
        else:
            storage = f"SQLite under {home}"
        return InstanceReport(config_file, storage, variables, monitoring)
    raw_postgres = raw["storage"]["postgres"]
    if postgres.get("postgres_url"):
        url = _postgres_url_target(postgres["postgres_url"], _source(raw_postgres["postgres_url"]))
    else:
        url = _postgres_db_target(
            postgres.get("postgres_db") or {}, raw_postgres.get("postgres_db") or {}
        )
    _connect(url, raw_postgres, connect_timeout)
    storage = f"PostgreSQL {url.render_as_string(hide_password=True)}"
    return InstanceReport(config_file, storage, variables, monitoring)


def _postgres_db_target(values: dict[str, Any], raw: dict[str, Any]) -> URL:
    key = "storage.postgres.postgres_db"
    for required in ("hostname", "db_name", "username"):
        if not values.get(required):
            raise InstanceConfigError(f"{key}.{required}{_source(raw.get(required))} is empty")
    port = values.get("port", 5432)
    try:
        port_number = int(port)
    except (TypeError, ValueError):
        port_number = 0
    if not 1 <= port_number <= 65535:
        raise InstanceConfigError(
            f"{key}.port{_source(raw.get('port'))} is {port!r}, not a port number (1-65535)"
        )
    scheme = values.get("scheme", "postgresql")
    if scheme != REQUIRED_SCHEME:
        raise InstanceConfigError(
            f"{key}.scheme{_source(raw.get('scheme'))} is {scheme!r}: set it to "
            f"{REQUIRED_SCHEME} (SQLAlchemy 2.1 maps {scheme!r} to psycopg 3, and dagster-postgres "
            "then fails on NOTIFY run_events; dagster issue #33958)"
        )
    return make_url(f"{REQUIRED_SCHEME}://").set(
        host=values["hostname"],
        port=port_number,
        database=values["db_name"],
        username=values["username"],
        password=values.get("password") or None,
    )


def _postgres_url_target(text: str, source: str) -> URL:
    key = "storage.postgres.postgres_url"
    try:
        url = make_url(text)
    except ArgumentError:
        raise InstanceConfigError(f"{key}{source} is not a database URL") from None
    if url.drivername != REQUIRED_SCHEME:
        raise InstanceConfigError(
            f"{key}{source} starts with {url.drivername}://: write it as {REQUIRED_SCHEME}://… "
            "(SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, and dagster-postgres then "
            "fails on NOTIFY run_events; dagster issue #33958)"
        )
    return url


def _connect(url: URL, raw_postgres: dict[str, Any], connect_timeout: int) -> None:
    names = [
        ref.variable for ref in env_references(raw_postgres) if not ref.key.endswith("password")
    ]
    where = f"{url.host}:{url.port or 5432}/{url.database} as {url.username}"
    try:
        with psycopg.connect(
            host=url.host,
            port=url.port or 5432,
            dbname=url.database,
            user=url.username,
            password=url.password,
            connect_timeout=connect_timeout,
        ):
            pass
    except psycopg.OperationalError as exc:
        # libpq's message spans lines ("connection refused", "is the server running..."): one line
        reason = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        if url.password:
            reason = reason.replace(str(url.password), "***")
        hint = f" (check {', '.join(names)})" if names else ""
        raise InstanceConfigError(
            f"cannot connect to Dagster's storage database {where}{hint}: {reason}"
        ) from None
