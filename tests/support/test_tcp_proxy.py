"""The test proxy really cuts PostgreSQL off and really brings it back (the outage test relies on it)."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.postgres


def connect(proxy: TcpProxy, database: str) -> psycopg.Connection:
    return psycopg.connect(
        host="127.0.0.1", port=proxy.port, dbname=database, user="postgres", connect_timeout=3
    )


def test_a_cut_drops_open_connections_refuses_new_ones_and_restore_heals(postgres_server):
    server = conninfo_to_dict(postgres_server)
    database = server["dbname"]
    proxy = TcpProxy(server["host"], int(server.get("port") or 5432)).start()
    try:
        open_connection = connect(proxy, database)
        assert open_connection.execute("SELECT 1").fetchone() == (1,)

        proxy.cut()

        with pytest.raises(psycopg.OperationalError):
            open_connection.execute("SELECT 1")
        with pytest.raises(psycopg.OperationalError, match="refused"):
            connect(proxy, database)
        proxy.restore()
        with connect(proxy, database) as healed:
            assert healed.execute("SELECT 1").fetchone() == (1,)
    finally:
        proxy.stop()
