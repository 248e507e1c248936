"""The real PostgreSQL test server of ``tests/pg.py``: SQL works, it can go down and come back."""

from __future__ import annotations

import psycopg2
import pytest

from tests import pg


def _connect(uri: str):
    return psycopg2.connect(uri, connect_timeout=5)


def test_uri_shape(postgres_uri: str) -> None:
    server = pg.current_server()
    assert postgres_uri == f"postgresql://sfox:sfox@127.0.0.1:{server.port}/warehouse"
    assert pg.ensure_postgres_server() == postgres_uri  # once per session
    assert server.is_running()
    assert server.socket_dir.is_relative_to(server.base_dir)


def test_settings_and_identity(postgres_uri: str) -> None:
    with _connect(postgres_uri) as conn, conn.cursor() as cur:
        cur.execute("SELECT current_user, current_database(), inet_server_addr()::text")
        assert cur.fetchone() == ("sfox", "warehouse", "127.0.0.1/32")
        for name, value in [("fsync", "off"), ("synchronous_commit", "off"), ("full_page_writes", "off")]:
            cur.execute("SELECT current_setting(%s)", (name,))
            assert cur.fetchone() == (value,)
        cur.execute("SELECT rolcreatedb FROM pg_roles WHERE rolname = current_user")
        assert cur.fetchone() == (True,)
    conn.close()


def test_wrong_password_is_rejected(postgres_uri: str) -> None:
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        _connect(postgres_uri.replace("sfox:sfox@", "sfox:wrong@"))


def test_table_roundtrip_and_survives_restart(postgres_uri: str) -> None:
    server = pg.current_server()
    conn = _connect(postgres_uri)
    with conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE trades (id serial PRIMARY KEY, pair text NOT NULL, qty numeric NOT NULL)")
        cur.executemany("INSERT INTO trades (pair, qty) VALUES (%s, %s)", [("btcusd", 1.5), ("ethusd", 2)])
        cur.execute("SELECT pair, qty::text FROM trades ORDER BY id")
        assert cur.fetchall() == [("btcusd", "1.5"), ("ethusd", "2")]
    conn.close()

    server.pg_ctl_stop()
    try:
        assert not server.is_running()
        with pytest.raises(psycopg2.OperationalError):
            _connect(postgres_uri)
    finally:
        server.pg_ctl_start()

    assert server.is_running()
    conn = _connect(postgres_uri)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT pair, qty::text FROM trades ORDER BY id")
        assert cur.fetchall() == [("btcusd", "1.5"), ("ethusd", "2")]
        cur.execute("DROP TABLE trades")
    conn.close()


def test_unavailable_context_restarts(postgres_uri: str) -> None:
    server = pg.current_server()
    port = server.port
    with server.unavailable(), pytest.raises(psycopg2.OperationalError):
        _connect(postgres_uri)
    assert server.port == port
    conn = _connect(postgres_uri)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    conn.close()
