"""
Shared test set-up.

Airflow reads its configuration when first imported, so the environment is set here, at
collection time, before any test module imports Airflow: a throw-away AIRFLOW_HOME with a
SQLite metadata DB, this folder's ``dags/`` as the DAG folder, no example DAGs.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# The live tests' fixtures, for every module that brings up an Airflow (none imports a test module).
from tests.live.fixtures import (  # noqa: F401
    databases,
    extra_connections,
    extra_dag_files,
    extra_env,
    live_airflow,
    sandbox,
    shared_airflow,
    warehouse,
)

TESTS_DIR = Path(__file__).parent
_AIRFLOW_HOME = tempfile.mkdtemp(prefix="sfox-airflow-home-")
#: The DAG folder of the session: the shipped DAGs plus the test DAGs, linked in.
DAGS_FOLDER = Path(_AIRFLOW_HOME) / "dags"
DAGS_FOLDER.mkdir()
for _dag_file in [*(TESTS_DIR.parent / "dags").glob("*.py"), *(TESTS_DIR / "dag_files").glob("*.py")]:
    (DAGS_FOLDER / _dag_file.name).symlink_to(_dag_file)
os.environ["AIRFLOW_HOME"] = _AIRFLOW_HOME
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS_FOLDER)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_AIRFLOW_HOME}/airflow.db"
os.environ.pop("AIRFLOW_CONN_SFOX_DEFAULT", None)


@pytest.fixture(scope="session")
def airflow_db() -> str:
    """A migrated, empty Airflow metadata DB for the whole session (slow: done once)."""
    from airflow.utils import db

    db.resetdb()
    _one_in_process_execution_api()
    return _AIRFLOW_HOME


def _one_in_process_execution_api() -> None:
    """
    ``dag.test()`` serves each task instance from one execution API app, as an api-server does.

    Airflow builds a new in-process app (and its event-loop thread) per task instance; on
    Airflow 3.1 its first requests then cost about 2.5 s of CPU, which made a DAG test of
    eight task instances take a minute. The app holds no state between requests (the DAG
    bag it reads is overridden per task instance by Airflow itself).
    """
    import functools

    from airflow.sdk.execution_time import supervisor

    if not hasattr(supervisor, "in_process_api_server"):
        return
    supervisor.in_process_api_server = functools.cache(supervisor.in_process_api_server)


@pytest.fixture(scope="session")
def sfox_sandbox_server():
    """One real sandbox HTTP server on 127.0.0.1 for the session, rate limit off by default."""
    from sfox_sandbox import RateLimitSettings, SandboxConfig, SandboxServer
    from tests.helpers import TOKEN

    config = SandboxConfig(token=TOKEN, random_seed=42, rate_limit=RateLimitSettings(limit=0))
    with SandboxServer(config) as server:
        yield server


@pytest.fixture
def sfox_sandbox(sfox_sandbox_server, monkeypatch):
    """The sandbox, reset, with ``sfox_default`` pointing at it (tests may re-point it)."""
    from tests.helpers import sfox_conn_json

    sfox_sandbox_server.reset()
    _forget_recorded_outage(sfox_sandbox_server.url)
    monkeypatch.setenv("AIRFLOW_CONN_SFOX_DEFAULT", sfox_conn_json(sfox_sandbox_server.url))
    return sfox_sandbox_server


def _forget_recorded_outage(url: str) -> None:
    """
    End any sFOX outage an earlier test recorded for the session sandbox's budget scope (its
    host:port in the default ``local`` folder): the reset sandbox answers again, and a test that
    sends without planning first must not find its senders stopped by another test's outage.
    """
    from urllib.parse import urlsplit

    from airflow_sfox.ratelimit import DEFAULT_DIR, local_backend

    parts = urlsplit(url)
    local_backend(DEFAULT_DIR).close_outage(f"{parts.hostname}:{parts.port}")


#: Where the browser tests save their screenshots: a temp folder unless set (``make screenshots``
#: sets it to ``docs/``, refreshing the README's pictures on purpose, never as a side effect).
SCREENSHOT_DIR_ENV = "SFOX_SCREENSHOT_DIR"


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory) -> Path:
    """The folder the browser tests write their screenshots to (``$SFOX_SCREENSHOT_DIR`` or a temp one)."""
    configured = os.environ.get(SCREENSHOT_DIR_ENV)
    if not configured:
        return tmp_path_factory.mktemp("screenshots")
    folder = Path(configured)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def pytest_configure(config) -> None:
    from tests.tiers import TIERS

    for tier, needs in TIERS.items():
        config.addinivalue_line("markers", f"{tier}: needs {needs}")


def pytest_collection_modifyitems(items) -> None:
    """
    Mark the tests of a service tier by the fixtures they use (a parametrized warehouse too), and
    run the live tier last (see ``tests/live/fixtures.py``).
    """
    from tests.live.fixtures import order_live_tests

    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "postgres_uri" in fixtures or params.get("warehouse_db") == "postgres":
            item.add_marker(pytest.mark.postgres)
        if "redis_server" in fixtures:
            item.add_marker(pytest.mark.redis)
        if "mariadb_uri" in fixtures or params.get("warehouse_db") == "mariadb":
            item.add_marker(pytest.mark.mariadb)
    order_live_tests(items)


def pytest_terminal_summary(terminalreporter) -> None:
    from tests.tiers import report

    report(terminalreporter)


@pytest.fixture(scope="session")
def postgres_uri():
    """libpq URI of a real PostgreSQL server, started once per session, then stopped."""
    from tests import pg
    from tests.tiers import require_service, unavailable

    if os.geteuid() != 0:  # the private server runs as the postgres OS user
        unavailable("postgres", "the test server runs as the postgres OS user, which needs root")
    require_service("postgres", pg.find_pg_bin_dir() is not None, "PostgreSQL (postgresql)")
    yield pg.ensure_postgres_server()
    pg.stop_postgres_server()


@pytest.fixture(scope="session")
def redis_server():
    """A private redis-server on a free loopback port for the session, stopped by its PID."""
    from tests.redis_server import RedisUnavailable, start_redis_server
    from tests.tiers import unavailable

    try:
        server = start_redis_server()
    except RedisUnavailable as err:
        unavailable("redis", str(err))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mariadb_uri():
    """Connection params (host, port, user, password, database) of a real MariaDB server, once per session."""
    from tests import mariadb
    from tests.tiers import require_service, unavailable

    if os.geteuid() != 0:  # the private server runs as the mysql OS user
        unavailable("mariadb", "the test server runs as the mysql OS user, which needs root")
    require_service("mariadb", mariadb.find_mariadbd() is not None, "MariaDB (mariadb-server)")
    try:
        import MySQLdb  # noqa: F401 - the driver of the provider's default client
    except ImportError:
        unavailable(
            "mariadb",
            "mysqlclient is not installed (it builds against libmariadb-dev: run 'make services', "
            "then 'make install')",
        )
    yield mariadb.ensure_mariadb_server()
    mariadb.stop_mariadb_server()


def mariadb_connect(params: dict, database: str | None = None):
    """A MySQLdb connection to the test server (utf8mb4)."""
    import MySQLdb

    return MySQLdb.connect(
        host=params["host"],
        port=params["port"],
        user=params["user"],
        password=params["password"],
        database=database or params["database"],
        charset="utf8mb4",
    )


#: Databases (schemas) that MariaDB tests may create beside ``warehouse``; dropped per test.
MARIADB_TEST_SCHEMAS = ("sfox_onboarding", "crm")


class WarehouseDB:
    """A real warehouse database behind the ``sfox_warehouse`` connection, for tests."""

    def __init__(self, kind: str, conn_json: str, connect) -> None:
        self.kind = kind
        self.conn_json = conn_json
        self._connect = connect
        # sqlite3: qmark; psycopg2 and MySQLdb: format. Tests write "?" and get the driver's.
        self.ph = "?" if kind == "sqlite" else "%s"

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        conn = self._connect()
        try:
            cursor = conn.cursor()
            cursor.execute(sql.replace("?", self.ph), params)
            rows = [tuple(r) for r in cursor.fetchall()] if cursor.description else []
            conn.commit()
            return rows
        finally:
            conn.close()

    def seed(self, rows, table: str = "sfox_users") -> None:
        """Create (or replace) the source table with ``(user_id, account_type, email, phone)`` rows."""
        conn = self._connect()
        try:
            cursor = conn.cursor()
            cursor.execute(f"DROP TABLE IF EXISTS {table}")
            cursor.execute(
                f"CREATE TABLE {table} (user_id VARCHAR(300), account_type VARCHAR(40), "
                "email VARCHAR(300), phone_number VARCHAR(40), extra VARCHAR(40))"
            )
            cursor.executemany(
                f"INSERT INTO {table} (user_id, account_type, email, phone_number) "
                f"VALUES ({', '.join([self.ph] * 4)})",
                rows,
            )
            conn.commit()
        finally:
            conn.close()

    def has_table(self, name: str) -> bool:
        """Whether a table of that name exists in the warehouse's database."""
        if self.kind == "sqlite":
            rows = self.query("SELECT COUNT(*) FROM sqlite_master WHERE name = ?", (name,))
        elif self.kind == "postgres":
            rows = self.query(
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() "
                "AND table_name = ?",
                (name,),
            )
        else:
            rows = self.query(
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() "
                "AND table_name = ?",
                (name,),
            )
        return bool(rows[0][0])

    def timestamp(self, value):
        """An aware datetime as this database's onboarding tables store it."""
        from datetime import timezone

        value = value.astimezone(timezone.utc)
        if self.kind == "sqlite":
            return value.isoformat(timespec="microseconds")
        return value.replace(tzinfo=None) if self.kind == "mariadb" else value

    def ledger(self) -> dict[tuple[str, str], dict]:
        rows = self.query(
            "SELECT user_id, channel, state, sends, attempts, uncertain, last_status, last_error, run_id "
            "FROM sfox_onboarding_ledger"
        )
        keys = ("state", "sends", "attempts", "uncertain", "last_status", "last_error", "run_id")
        return {(r[0], r[1]): dict(zip(keys, r[2:], strict=True)) for r in rows}

    def attempts(self) -> list[dict]:
        """The attempts table (one row per HTTP request of the engine), in insertion order."""
        keys = ("user_id", "channel", "run_id", "attempt", "status", "outcome", "uncertain", "error")
        rows = self.query(f"SELECT {', '.join(keys)} FROM sfox_onboarding_ledger_attempts ORDER BY id")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def claimed(self) -> set[tuple[str, str]]:
        """The ledger keys with an open claim (being sent, or left by a try that died)."""
        rows = self.query("SELECT user_id, channel FROM sfox_onboarding_ledger WHERE claimed_by IS NOT NULL")
        return {(r[0], r[1]) for r in rows}


@pytest.fixture(params=["sqlite", "postgres", "mariadb"])
def warehouse_db(request, tmp_path, monkeypatch):
    """An empty warehouse (SQLite file, a real PostgreSQL or MariaDB server) as ``sfox_warehouse``."""
    import json

    if request.param == "sqlite":
        import sqlite3

        path = str(tmp_path / "warehouse.db")
        conn_json = json.dumps({"conn_type": "sqlite", "host": path})
        db = WarehouseDB("sqlite", conn_json, lambda: sqlite3.connect(path))
    elif request.param == "mariadb":
        params = request.getfixturevalue("mariadb_uri")
        conn = mariadb_connect(params)
        try:
            cursor = conn.cursor()
            for name in (params["database"], *MARIADB_TEST_SCHEMAS):
                cursor.execute(f"DROP DATABASE IF EXISTS {name}")
            cursor.execute(f"CREATE DATABASE {params['database']} CHARACTER SET utf8mb4")
        finally:
            conn.close()
        conn_json = json.dumps(
            {
                "conn_type": "mysql",
                "host": params["host"],
                "port": params["port"],
                "login": params["user"],
                "password": params["password"],
                "schema": params["database"],
                "extra": {"charset": "utf8mb4"},
            }
        )
        db = WarehouseDB("mariadb", conn_json, lambda: mariadb_connect(params))
    else:
        import psycopg2

        uri = request.getfixturevalue("postgres_uri")
        with psycopg2.connect(uri) as conn, conn.cursor() as cursor:
            cursor.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        parts = uri.split("@", 1)[1]
        host_port, database = parts.split("/", 1)
        host, port = host_port.split(":")
        conn_json = json.dumps(
            {
                "conn_type": "postgres",
                "host": host,
                "port": int(port),
                "login": "sfox",
                "password": "sfox",
                "schema": database,
            }
        )
        db = WarehouseDB("postgres", conn_json, lambda: psycopg2.connect(uri))
    monkeypatch.setenv("AIRFLOW_CONN_SFOX_WAREHOUSE", conn_json)
    return db
