"""Helpers shared by the test modules (fixtures live in the conftest files)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
from pathlib import Path

#: A recognisable token: tests search logs, errors and XCom for it.
TOKEN = "sfox-test-token-7f3a9c"


def sfox_conn_json(host: str, *, password: str | None = TOKEN, **extra: object) -> str:
    """The JSON form of an ``sfox`` connection, for an ``AIRFLOW_CONN_*`` variable."""
    conn: dict[str, object] = {"conn_type": "sfox", "host": host, "extra": extra}
    if password is not None:
        conn["password"] = password
    return json.dumps(conn)


def load_dag(dag_id: str):
    """Import ``<dag_id>.py`` from the session's DAG folder (set by conftest); return its DAG."""
    return load_dag_file(Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]) / f"{dag_id}.py", dag_id)


def load_dag_file(path: str | Path, dag_id: str):
    """Import a DAG file as a module of its own; return its DAG ``dag_id``."""
    spec = importlib.util.spec_from_file_location(f"dag_file_{dag_id}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return next(v for v in vars(module).values() if getattr(v, "dag_id", None) == dag_id)


def stop_process_group(proc: subprocess.Popen, timeout: float = 10) -> None:
    """Stop a process started with ``start_new_session=True`` and its children: TERM, then KILL."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout)


def copy_metadata_db(airflow_home: str | Path, target: Path) -> str:
    """
    A consistent copy of the session's SQLite metadata DB (the backup API reads its WAL too,
    which a file copy would miss); returns its SQLAlchemy URL, for one more Airflow process.
    """
    import sqlite3

    with sqlite3.connect(Path(airflow_home) / "airflow.db") as source, sqlite3.connect(target) as copy:
        source.backup(copy)
    return f"sqlite:///{target}"


def most_in_window(times: list[float], window: float) -> int:
    """The most of ``times`` (sorted) in any half-open window ``(t - window, t]``."""
    most = tail = 0
    for head, moment in enumerate(times):
        while times[tail] <= moment - window:
            tail += 1
        most = max(most, head - tail + 1)
    return most
