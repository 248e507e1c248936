"""
The registration path of the onboarding DAG, run with ``dag.test()`` and ``airflow dags test``
against the real sandbox and warehouse: a migration registers each new user once and asks no
email code; individuals get their sms once the email is verified; a ``kill -9`` mid-registration
then a rerun registers nobody twice; no registration field value is kept anywhere.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from airflow_sfox.hooks.sfox import SfoxConnectHook
from tests.helpers import load_dag, sfox_conn_json
from tests.onboarding.registration_data import (
    corporation,
    individual,
    personal_values,
    seed_registration_source,
)

DAG_ID = "sfox_test_registration"
SEND_PATH = "/v1/enterprise/users/send-verification/"
SECRET = "registration-secret-for-tests-0123456789"


@pytest.fixture
def registering(airflow_db, warehouse_db, sfox_sandbox, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_SFOX_DEFAULT", sfox_conn_json(sfox_sandbox.url, rate_limit_requests=0))
    monkeypatch.setenv("AIRFLOW_VAR_SFOX_REGISTRATION_SECRET", SECRET)
    return warehouse_db


def _sends(sandbox) -> Counter:
    return Counter((e.user_id, e.type) for e in sandbox.journal() if e.path.startswith(SEND_PATH))


def _metadata_dump(airflow_home: str) -> str:
    """Every row of every table of Airflow's metadata DB, as text."""
    with sqlite3.connect(Path(airflow_home) / "airflow.db") as conn:
        return "\n".join(conn.iterdump())


@pytest.mark.parametrize("warehouse_db", ["sqlite"], indirect=True)
def test_a_migration_registers_once_then_individuals_get_their_sms(
    registering, sfox_sandbox, airflow_db, capfd, caplog
):
    rows = [individual(n) for n in range(5)] + [corporation(n) for n in range(3)]
    bad = individual(9, individual=json.dumps({"dob": "1980-13-45"}))
    seed_registration_source(registering, [*rows, bad])
    dag = load_dag(DAG_ID)

    first = dag.test(run_conf={"failure_threshold": 0.5})

    assert first.state == "success"
    ids = {row["user_id"] for row in rows}
    assert sfox_sandbox.register_requests() == dict.fromkeys(ids, 1)
    assert _sends(sfox_sandbox) == Counter()  # sFOX emailed the first codes itself
    ledger = registering.ledger()
    assert {ledger[(uid, "registration")]["state"] for uid in ids} == {"registered"}
    assert ledger[(bad["user_id"], "email")]["state"] == "rejected"
    assert "individual.dob is not a date" in ledger[(bad["user_id"], "email")]["last_error"]
    run = registering.query(
        "SELECT registered, rejected FROM sfox_onboarding_runs WHERE run_id = ?", (first.run_id,)
    )
    assert run == [(len(ids), 1)]

    # The individuals verify their email; the next run asks their sms, and nothing else.
    with SfoxConnectHook() as hook:
        for uid in sorted(ids):
            if uid.startswith("ind-"):
                hook.confirm_verification(uid, "email", sfox_sandbox.codes(uid)["email"]["latest"])
    sfox_sandbox.clear_journal()
    second = dag.test(run_conf={"failure_threshold": 0.5})

    assert second.state == "success"
    assert _sends(sfox_sandbox) == Counter({(uid, "sms"): 1 for uid in ids if uid.startswith("ind-")})
    assert sum(sfox_sandbox.register_requests().values()) == len(ids)  # nobody registered again

    # No value of a registration field in logs, XCom, Airflow's tables, the ledger or the attempts.
    out, err = capfd.readouterr()
    kept = out + err + caplog.text + _metadata_dump(airflow_db)
    for table in ("sfox_onboarding_ledger", "sfox_onboarding_ledger_attempts", "sfox_onboarding_runs"):
        kept += repr(registering.query(f"SELECT * FROM {table}"))
    values = personal_values([*rows, bad])
    assert values  # the search has something to find
    assert [value for value in values if value in kept] == []


@pytest.mark.parametrize("warehouse_db", ["sqlite"], indirect=True)
def test_kill_9_mid_registration_then_a_rerun_registers_nobody_twice(
    registering, sfox_sandbox, airflow_db, tmp_path
):
    rows = [individual(n) for n in range(40)] + [corporation(n) for n in range(20)]
    seed_registration_source(registering, rows)
    sfox_sandbox.set_faults(latency_ms=150)  # a registration step takes seconds

    output = tmp_path / "dags-test.log"
    with output.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "airflow", "dags", "test", DAG_ID, "-c", json.dumps({"chunk_size": 100})],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(os.environ),
            start_new_session=True,  # its own process group: the kill takes every child too
        )
    try:
        deadline = time.monotonic() + 240
        while sum(sfox_sandbox.register_requests().values()) < 10 and proc.poll() is None:
            assert time.monotonic() < deadline, "no registration within 240 s"
            time.sleep(0.02)
        assert proc.poll() is None, output.read_text()[-3000:]
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    time.sleep(0.5)  # requests already on the wire still reach the sandbox
    claimed = {uid for uid, channel in registering.claimed() if channel == "registration"}
    registered_at_kill = set(sfox_sandbox.register_requests())
    ids = {row["user_id"] for row in rows}
    assert 0 < len(registered_at_kill) < len(ids), "the kill must land in the middle of the registrations"
    assert claimed, "the kill must leave registrations in flight"
    _killed_run_failed(tmp_path)
    since = sfox_sandbox.journal()[-1].seq
    sfox_sandbox.set_faults(latency_ms=0)

    rerun = load_dag(DAG_ID).test(run_conf={"chunk_size": 100})

    assert rerun.state == "success"
    assert sfox_sandbox.register_requests() == dict.fromkeys(ids, 1)  # 0 duplicate registrations
    after = sfox_sandbox.journal(since=since)
    for uid in claimed:  # every claimed user is settled by a read before anything is posted
        first = next(e for e in after if e.user_id == uid)
        assert first.method == "GET", (uid, first)
    ledger = registering.ledger()
    assert {ledger[(uid, "registration")]["state"] for uid in ids} == {"registered"}
    assert {ledger[(uid, "email")]["state"] for uid in ids} == {"sent"}
    assert _sends(sfox_sandbox) == Counter()


def _killed_run_failed(tmp_path: Path) -> None:
    """The killed run stays ``running`` (no scheduler watches it): marked failed, as an operator does."""
    from airflow.models import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        for run in session.scalars(select(DagRun).where(DagRun.dag_id == DAG_ID, DagRun.state == "running")):
            run.state = "failed"
