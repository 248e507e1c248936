"""
The live tests' fixtures (registered for the whole suite by ``tests/conftest.py``).

One whole Airflow (api-server, scheduler with LocalExecutor, dag-processor, triggerer; its
metadata DB on the session's PostgreSQL server) is started once per session, on the first test
that needs it, and shared by every module that uses ``live_airflow`` (or ``shared_airflow``):
the live modules run one after the other at the end of the session (``order_live_tests``), so it
is up only while they run. Each module brings its own parts, and nothing of one module reaches
the next:

- a sandbox of its own (``sandbox``) and a warehouse database of its own (``databases``), which
  ``sfox_default`` and ``sfox_warehouse`` point at while the module runs (connections in the
  metadata DB, replaced by the next module; ``extra_connections`` adds more);
- its DAG files (``extra_dag_files``), written into the DAG folder for the module and removed
  after it, with DAG ids of their own;
- component settings (``extra_env``): the components they concern are restarted with them;
- at the end of the module every DAG is paused.

Deployments that are truly different start their own Airflow: the Celery workers
(``tests/live/test_celery_budget.py``) and the FAB auth manager
(``tests/plugins/test_onboarding_fab_live.py``).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import uuid
from typing import TYPE_CHECKING

import pytest

from tests.helpers import TOKEN, sfox_conn_json, stop_process_group
from tests.live.airflow import (
    REPO,
    USERS,
    LiveAirflow,
    airflow_env,
    conn_json_postgres,
    copy_repo_dags,
    create_source_table,
    tail,
    warehouse_sql,
)
from tests.onboarding_data import BAD_ROWS
from tests.tiers import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

#: The connection the plugin's page reads its ledger through, in the shared Airflow.
PAGE_LEDGER_CONN_ID = "sfox_page_ledger"
#: Which components read a setting, by its ``AIRFLOW__<SECTION>__`` prefix (else: all but the api-server).
_READERS = {"AIRFLOW__SCHEDULER__": ("scheduler",), "AIRFLOW__DAG_PROCESSOR__": ("dag-processor",)}


@pytest.fixture(scope="module")
def databases(postgres_uri) -> Iterator[dict[str, str]]:
    """Two fresh databases on the session's PostgreSQL server: an Airflow metadata DB, a warehouse."""
    import psycopg2

    suffix = uuid.uuid4().hex[:8]
    names = {"meta": f"live_airflow_{suffix}", "warehouse": f"live_warehouse_{suffix}"}
    admin = psycopg2.connect(postgres_uri)
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            for name in names.values():
                cursor.execute(f"CREATE DATABASE {name}")
        base = postgres_uri.rsplit("/", 1)[0]
        yield {kind: f"{base}/{name}" for kind, name in names.items()}
    finally:
        with admin.cursor() as cursor:
            for name in names.values():
                cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Iterator[str]:
    """``python -m sfox_sandbox`` on loopback (free port), one per module; yields its URL."""
    log_dir = tmp_path_factory.mktemp("live-sandbox")
    argv = [sys.executable, "-m", "sfox_sandbox", "--host", "127.0.0.1", "--port", "0"]
    argv += ["--token", TOKEN, "--random-seed", "5", "--rate-limit", "0"]
    with open(log_dir / "sandbox.err", "wb") as err:
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=err, text=True, cwd=REPO, start_new_session=True
        )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), (
            f"sandbox printed {url!r}: {tail(log_dir / 'sandbox.err')}"
        )
        yield url
    finally:
        stop_process_group(proc)


@pytest.fixture(scope="module")
def warehouse(databases):
    """The source table ``sfox_users`` in the module's warehouse: USERS and the bad rows; a query function."""
    query = warehouse_sql(databases["warehouse"])
    create_source_table(query, USERS + [row for row, _ in BAD_ROWS])
    return query


@pytest.fixture(scope="session")
def shared_airflow(postgres_uri, tmp_path_factory) -> Iterator[LiveAirflow]:
    """The session's whole Airflow, started on first use (db migrate, then every component)."""
    import psycopg2

    meta = f"live_shared_meta_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(postgres_uri)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {meta}")
    home = tmp_path_factory.mktemp("live-airflow-home")
    env = airflow_env(home, free_port(), f"{postgres_uri.rsplit('/', 1)[0]}/{meta}")
    env["AIRFLOW__SFOX__ONBOARDING_WAREHOUSE_CONN_ID"] = PAGE_LEDGER_CONN_ID
    copy_repo_dags(home / "dags")
    airflow = LiveAirflow(home, env)
    try:
        airflow.cli("db", "migrate")
        airflow.start()
        yield airflow
    finally:
        airflow.stop()
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {meta} WITH (FORCE)")
        admin.close()


@pytest.fixture(scope="module")
def extra_dag_files() -> dict[str, str]:
    """DAG files a test module adds to the live DAG folder (file name -> source): override it."""
    return {}


@pytest.fixture(scope="module")
def extra_env() -> dict[str, str]:
    """Component settings (``AIRFLOW__*``) a test module needs: override it."""
    return {}


@pytest.fixture(scope="module")
def extra_connections() -> dict[str, str]:
    """Connections (id -> JSON form) a test module adds to ``sfox_default`` and ``sfox_warehouse``."""
    return {}


@pytest.fixture(scope="module")
def live_airflow(
    shared_airflow, databases, sandbox, extra_dag_files, extra_env, extra_connections
) -> Iterator[LiveAirflow]:
    """The shared Airflow, set up for this module: its connections, settings and DAG files."""
    airflow = shared_airflow
    connections = {
        "sfox_default": sfox_conn_json(sandbox, rate_limit_requests=0),
        "sfox_warehouse": conn_json_postgres(databases["warehouse"]),
        **extra_connections,
    }
    for conn_id, conn in connections.items():
        airflow.set_connection(conn_id, conn)
    configure(airflow, extra_env)
    written = []
    for name, source in extra_dag_files.items():
        path = airflow.dags_folder / name
        assert not path.exists(), f"{name}: another module's DAG file has that name"
        path.write_text(source)
        written.append(path)
    try:
        yield airflow
    finally:
        with contextlib.suppress(Exception):  # a dead api-server is reported by the module's tests
            airflow.pause_all()
        for path in written:
            path.unlink()


def configure(airflow: LiveAirflow, settings: dict[str, str]) -> None:
    """
    The shared Airflow with ``settings`` on top of its base environment: each component whose
    environment changes (with respect to the previous module's) is restarted, nothing else.
    """
    wanted = {**airflow.base_env, **settings}
    changed = {k for k in wanted.keys() | airflow.env.keys() if wanted.get(k) != airflow.env.get(k)}
    if not changed:
        return
    components = set()
    for key in changed:
        readers = next((c for prefix, c in _READERS.items() if key.startswith(prefix)), None)
        components.update(readers or ("scheduler", "dag-processor", "triggerer"))
    airflow.env = wanted
    for component in sorted(components):
        airflow.restart(component)


def order_live_tests(items: list[pytest.Item]) -> None:
    """
    The tests of the ``live`` tier last, those on the shared Airflow at the very end (in their
    order): the other tests do not share the machine with an idle Airflow, which is up once.
    """

    def rank(item: pytest.Item) -> int:
        if item.get_closest_marker("live") is None:
            return 0
        fixtures = set(getattr(item, "fixturenames", ()))
        return 2 if {"live_airflow", "shared_airflow"} & fixtures else 1

    items.sort(key=rank)  # stable: the order within each group stays
