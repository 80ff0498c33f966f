"""Shared fixtures: real SQLite files and a real PostgreSQL schema per test.

PostgreSQL tests use ``HK_TEST_POSTGRES_URL`` (default: the local trust-auth server). Without a
reachable server they skip with a message; under CI (``CI=true``) they fail instead, so CI can
never go green by skipping them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import dagster as dg
import psycopg
import pytest

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Group the tests for ``pytest -n 2 --dist loadgroup`` (what ``make test`` runs).

    Each test file is one group, so a module-scoped fixture is built once, on one worker. Every
    end-to-end test (marker ``e2e``) joins the one group ``e2e``: each starts a webserver and a
    daemon, and two such stacks at once would starve a 2-core machine. That group, the longest,
    is moved to the front so it starts first and the other worker takes the files meanwhile.
    Without xdist the marks are inert and the order is the same apart from e2e first.
    """
    e2e: list[pytest.Item] = []
    rest: list[pytest.Item] = []
    for item in items:
        if item.get_closest_marker("e2e") is not None:
            item.add_marker(pytest.mark.xdist_group("e2e"))
            e2e.append(item)
        else:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))
            rest.append(item)
    items[:] = e2e + rest


def postgres_base_url() -> str:
    return os.environ.get("HK_TEST_POSTGRES_URL", DEFAULT_PG_URL)


def _postgres_unavailable_reason() -> str | None:
    try:
        with psycopg.connect(postgres_base_url(), connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"{exc}".strip()


@pytest.fixture(scope="session")
def postgres_server() -> str:
    reason = _postgres_unavailable_reason()
    if reason is not None:
        message = (
            f"PostgreSQL at {postgres_base_url()} is not reachable ({reason}). "
            "Start it (pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start) "
            "or point HK_TEST_POSTGRES_URL at a server to run the PostgreSQL tests."
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return postgres_base_url()


def with_search_path(url: str, schema: str) -> str:
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options={quote(f'-csearch_path={schema}')}"


@pytest.fixture
def pg_url(postgres_server: str) -> Iterator[str]:
    """A libpq URL whose search_path is a fresh, empty schema, dropped afterwards."""
    schema = f"hk_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield with_search_path(postgres_server, schema)
    finally:
        with psycopg.connect(postgres_server, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'app.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def app_url(request) -> str:
    """Runs a test once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def instance(tmp_path) -> Iterator[dg.DagsterInstance]:
    """A Dagster instance of the test's own (SQLite storage under tmp_path) for real runs."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as test_instance:
        yield test_instance
