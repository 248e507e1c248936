"""
The emergency stop across processes, against the real sandbox: a sender process runs; the
operator's ``python -m airflow_sfox hold`` (another process) stops it before its next request,
on the ``local`` backend (a SQLite file) and on a real Redis server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from airflow_sfox.exceptions import SfoxHeldError
from airflow_sfox.hooks.budget import current_hold, release
from airflow_sfox.hooks.sfox import SfoxConnectHook
from tests.helpers import sfox_conn_json, stop_process_group

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("hold_worker.py")


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=REPO,
        start_new_session=True,
    )


def test_a_hold_stops_a_running_sender_in_another_process(sandbox, backend_extras, monkeypatch):
    extra: dict[str, Any] = {
        "rate_limit_scope": "hold-test",
        "rate_limit_requests": 20,
        "rate_limit_window_seconds": 1,
        **backend_extras,
    }
    conn = sfox_conn_json(sandbox.url, **extra)
    monkeypatch.setenv("AIRFLOW_CONN_SFOX_DEFAULT", conn)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    worker = start([str(WORKER)], env)
    try:
        assert worker.stdout is not None
        seen = []
        while (line := worker.stdout.readline()) and line.strip() != "SENDING":
            seen.append(line)
        assert line.strip() == "SENDING", "".join(seen)[-2000:]

        operator = subprocess.run(
            [
                sys.executable,
                "-m",
                "airflow_sfox",
                "hold",
                "--conn-id",
                "sfox_default",
                "--reason",
                "maintenance",
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=120,
        )
        assert operator.returncode == 0, operator.stderr[-2000:]
        assert "sfox_default: held until released (maintenance); scope 'hold-test'" in operator.stdout

        out, _ = worker.communicate(timeout=120)
        line = next(
            (line for line in out.splitlines() if line.startswith(("HELD ", "NOT HELD"))), out[-2000:]
        )
        assert line.startswith("HELD "), line
        stopped = json.loads(line.removeprefix("HELD "))
        assert (stopped["scope"], stopped["until"]) == ("hold-test", None)
        # Every request the sandbox saw was one the worker had answered: none after the hold.
        assert len(sandbox.journal()) == stopped["answered"] > 0
    finally:
        stop_process_group(worker)

    held = current_hold("sfox_default")
    assert held is not None
    assert (held["scope"], held["reason"], held["until"]) == ("hold-test", "maintenance", None)
    with pytest.raises(SfoxHeldError):
        SfoxConnectHook().list_users(account_role="advisor")
    assert len(sandbox.journal()) == stopped["answered"]

    assert release("sfox_default") is True
    SfoxConnectHook().list_users(account_role="advisor")  # sends again once released
    assert len(sandbox.journal()) == stopped["answered"] + 1
