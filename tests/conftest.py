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
    return _AIRFLOW_HOME


@pytest.fixture(scope="session")
def sfox_sandbox_server():
    """One real sandbox HTTP server on 127.0.0.1 for the session, rate limit off by default."""
    from airflow_sfox.sandbox import RateLimitSettings, SandboxConfig, SandboxServer
    from tests.helpers import TOKEN

    config = SandboxConfig(token=TOKEN, random_seed=42, rate_limit=RateLimitSettings(limit=0))
    with SandboxServer(config) as server:
        yield server


@pytest.fixture
def sfox_sandbox(sfox_sandbox_server, monkeypatch):
    """The sandbox, reset, with ``sfox_default`` pointing at it (tests may re-point it)."""
    from tests.helpers import sfox_conn_json

    sfox_sandbox_server.reset()
    monkeypatch.setenv("AIRFLOW_CONN_SFOX_DEFAULT", sfox_conn_json(sfox_sandbox_server.url))
    return sfox_sandbox_server
