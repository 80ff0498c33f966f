"""A PostgreSQL login role of a test's own, with chosen rights on the test's schema."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from housekeeping.database import AppDatabase
from tests.conftest import with_search_path


@contextmanager
def role_database(
    postgres_server: str, db: AppDatabase, name: str, rights: str, *, connection_limit: int = -1
) -> Iterator[AppDatabase]:
    """An AppDatabase logged in as a new role ``<name>_<schema suffix>`` (CONNECTION LIMIT
    ``connection_limit``, -1: none) with ``rights`` (``SELECT``, ``SELECT, DELETE``) on every
    table of ``db``'s schema; the role is dropped afterwards."""
    schema = db.engine.url.query["options"].split("=", 1)[1]
    role = f"{name}_{schema[-10:]}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT {int(connection_limit)}')
        conn.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"')
        conn.execute(f'GRANT {rights} ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"')
    database = AppDatabase(
        with_search_path(postgres_server.replace("postgres@", f"{role}@", 1), schema)
    )
    try:
        yield database
    finally:
        database.dispose()
        with psycopg.connect(postgres_server, autocommit=True) as conn:
            conn.execute(f'DROP OWNED BY "{role}"')
            conn.execute(f'DROP ROLE "{role}"')
