"""
Helpers of the live Celery test (``test_celery_budget.py``): Celery workers as subprocesses,
killing one like a lost machine, and reading the sandbox journal and the REST API.

The processes, the Airflow environment and the login come from ``tests/live/airflow.py``; this
module adds what a CeleryExecutor deployment needs beyond them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

from tests.live.airflow import LiveAirflow, Process

if TYPE_CHECKING:
    from collections.abc import Iterable

#: The module a worker's task processes name themselves by (``[core] hostname_callable``): the
#: two workers run on one machine, so socket.getfqdn() would not tell them apart.
WORKER_NAME_MODULE = "sfox_live_worker_name"
WORKER_NAME_ENV = "SFOX_LIVE_WORKER"
_WORKER_NAME_SOURCE = f'''"""The task instance hostname of a live-test Celery worker: ${WORKER_NAME_ENV}."""

import os
import socket


def hostname() -> str:
    return os.environ.get("{WORKER_NAME_ENV}") or socket.getfqdn()
'''


def write_worker_name_module(folder: Path) -> str:
    """Write the hostname callable into ``folder`` (put it on PYTHONPATH); return its dotted path."""
    (folder / f"{WORKER_NAME_MODULE}.py").write_text(_WORKER_NAME_SOURCE)
    return f"{WORKER_NAME_MODULE}.hostname"


# --- processes ---------------------------------------------------------------------------------


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    return int(stat.rsplit(")", 1)[1].split()[1])


def process_tree(root: int) -> list[int]:
    """``root`` and every live descendant (by /proc parent links), root first."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            parent = _parent_of(int(entry.name))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def kill_tree(root: int) -> list[int]:
    """
    SIGKILL ``root``, its process group and every descendant, as a lost machine would end them.

    Airflow 3.2+ puts each task runner in a process group of its own, so the worker's group
    alone does not hold it: the tree is frozen (SIGSTOP) first, then killed, so no process of
    it gets to act between the two. Returns the pids killed.
    """
    tree = process_tree(root)
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(root, sig)
        for pid in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
    return tree


class CeleryWorker(Process):
    """``airflow celery worker -H <name>@%h --concurrency N``, named ``name`` in task instances."""

    def __init__(self, name: str, concurrency: int, env: dict[str, str], log_dir: Path) -> None:
        argv = [sys.executable, "-m", "airflow", "celery", "worker"]
        argv += ["--celery-hostname", f"{name}@%h", "--concurrency", str(concurrency)]
        # Two workers on one machine: no log server each (the log files are local), no chatter.
        argv += ["--skip-serve-logs", "--without-mingle", "--without-gossip"]
        super().__init__(f"worker-{name}", argv, {**env, WORKER_NAME_ENV: name}, log_dir)
        self.worker_name = name
        self.killed: list[int] = []
        self._tree: list[int] = []

    def kill_9(self) -> list[int]:
        """kill -9 the worker's whole tree (main process, pool children, task supervisors, tasks)."""
        self.killed = kill_tree(self.pid)
        self.proc.wait(30)
        return self.killed

    def terminate(self) -> None:
        self._tree = process_tree(self.pid) if self.alive() else []
        super().terminate()

    def stop(self, timeout: float = 20.0) -> None:
        tree = self._tree or (process_tree(self.pid) if self.alive() else [])
        super().stop(timeout)
        for pid in tree:  # task runners in process groups of their own
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# --- the REST API and the sandbox ---------------------------------------------------------------


class CeleryAirflow(LiveAirflow):
    """A live Airflow running one DAG on Celery workers."""

    def __init__(self, home: Path, env: dict[str, str], dag_id: str) -> None:
        super().__init__(home, env)
        self.dag_id = dag_id
        self.workers: dict[str, CeleryWorker] = {}

    def report(self, run_id: str | None = None) -> str:
        """
        For a failure message: first the run's task states and every error its task logs hold
        (what a truncated CI log must still show), then the tails of every log.
        """
        parts = []
        if run_id is not None:
            with contextlib.suppress(Exception):
                states = sorted(
                    (ti["task_id"], ti["map_index"], ti["state"], ti["try_number"], ti["hostname"])
                    for ti in self.task_instances(run_id)
                )
                parts.append(f"--- task instances of {run_id} ---\n" + "\n".join(map(str, states)))
        logs = sorted((self.home / "logs").glob(f"dag_id={self.dag_id}/**/*.log"))
        for log in logs:
            errors = [line[:1500] for line in _lines(log) if '"level":"error"' in line]
            if errors:
                name = log.relative_to(self.home / "logs")
                parts.append(f"--- errors in {name} ---\n" + "\n".join(errors[:5]))
        parts += [process.report() for process in self.processes]
        for log in logs:
            parts.append(f"--- task log {log.relative_to(self.home / 'logs')} ---\n{_tail(log, 25)}")
        return "\n".join(parts)

    def check_alive(self, allow: Iterable[str] = ()) -> None:
        dead = [p for p in self.processes if not p.alive() and p.name not in set(allow)]
        assert not dead, f"{', '.join(p.name for p in dead)} exited early\n{self.report()}"

    def task_instances(self, run_id: str) -> list[dict[str, Any]]:
        response = self.api(
            "GET", f"/api/v2/dags/{self.dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100}
        )
        assert response.status_code == 200, response.text
        return list(response.json()["task_instances"])

    def tries(self, run_id: str, task_id: str, map_index: int) -> list[dict[str, Any]]:
        """Every try of one task instance (hostname, state, dates of each)."""
        path = f"/api/v2/dags/{self.dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/tries"
        response = self.api("GET", path)
        assert response.status_code == 200, response.text
        return list(response.json()["task_instances"])

    def trigger(self, run_id: str, conf: dict[str, Any]) -> None:
        triggered = self.api(
            "POST",
            f"/api/v2/dags/{self.dag_id}/dagRuns",
            json={"dag_run_id": run_id, "logical_date": None, "conf": conf},
        )
        assert triggered.status_code == 200, triggered.text

    def run_state(self, run_id: str) -> str:
        response = self.api("GET", f"/api/v2/dags/{self.dag_id}/dagRuns/{run_id}")
        assert response.status_code == 200, response.text
        return str(response.json()["state"])

    def wait_for_state(self, run_id: str, timeout: float, allow_dead: Iterable[str] = ()) -> str:
        """Until the run is ``success`` or ``failed``; returns the state."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive(allow_dead)
            state = self.run_state(run_id)
            if state in ("success", "failed"):
                return state
            if time.monotonic() > deadline:
                states = sorted(
                    (ti["task_id"], ti["map_index"], ti["state"], ti["hostname"])
                    for ti in self.task_instances(run_id)
                )
                report = self.report(run_id)
                raise AssertionError(f"run still {state} after {timeout:.0f}s\n{states}\n{report}")
            time.sleep(2)


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except OSError:
        return []


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(_lines(path)[-lines:]) or "(no log)"


def journal(sandbox_url: str, since: int = 0) -> list[dict[str, Any]]:
    """The ``/v1/`` requests the sandbox saw after ``seq`` ``since`` (``time``, ``status``, ...)."""
    response = requests.get(f"{sandbox_url}/_sandbox/journal", params={"since": since}, timeout=60)
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


def codes_sent(entries: Iterable[dict[str, Any]], channel: str = "email") -> Counter[str]:
    """Codes the sandbox sent, per user, on ``channel``."""
    return Counter(e["user_id"] for e in entries if e["code_sent"] and e["type"] == channel)


def most_in_window(times: Iterable[float], window: float) -> int:
    """The most of ``times`` in any half-open window ``(t - window, t]``."""
    ordered = sorted(times)
    most = tail = 0
    for head, moment in enumerate(ordered):
        while ordered[tail] <= moment - window:
            tail += 1
        most = max(most, head - tail + 1)
    return most


def parse_time(value: str) -> float:
    """An ISO-8601 date of the REST API as epoch seconds."""
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def overlapping(spans: list[tuple[float, float]]) -> int:
    """How many pairs of ``(start, end)`` spans overlap in time."""
    return sum(
        1
        for i, (start_a, end_a) in enumerate(spans)
        for start_b, end_b in spans[i + 1 :]
        if start_a < end_b and start_b < end_a
    )
