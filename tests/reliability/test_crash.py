"""
Issue 7.2: ``airflow dags test`` is killed with SIGKILL in the middle of a chunk, then the DAG
runs again. Nobody is missed, and the only duplicate codes are the requests that were in
flight at the kill (at most the threads of the one chunk task that was sending). Issue 20: the
rerun marks the killed run's row, which still says ``running``, ``interrupted``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import load_dag, sfox_conn_json
from tests.onboarding_data import make_users, sandbox_users
from tests.reliability.support import DAG_THREADS, audit, sends, wait_for

DAG_ID = "sfox_batch_onboarding"
CONF = {"chunk_size": 150, "failure_threshold": 0.2}


def _killed_run_failed_in_airflow(run_id: str) -> None:
    """
    The killed run, as Airflow sees it: ``airflow dags test`` leaves it ``running`` for ever
    (no scheduler watches it), so it is marked failed, as an operator does in the UI.
    """
    from airflow.models import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        run = session.scalars(select(DagRun).where(DagRun.dag_id == DAG_ID, DagRun.run_id == run_id)).one()
        assert run.state == "running"
        run.state = "failed"


@pytest.mark.parametrize("warehouse_db", ["sqlite"], indirect=True)
def test_kill_9_mid_chunk_then_rerun(airflow_db, warehouse_db, sfox_sandbox, monkeypatch, tmp_path):
    users = make_users(300, seed=21, corporation_share=0.2)
    warehouse_db.seed(users)
    sfox_sandbox.seed_users(sandbox_users(users))
    monkeypatch.setenv("AIRFLOW_CONN_SFOX_DEFAULT", sfox_conn_json(sfox_sandbox.url, rate_limit_requests=0))
    sfox_sandbox.set_faults(latency_ms=150)  # a chunk takes seconds

    output = tmp_path / "dags-test.log"
    with output.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "airflow", "dags", "test", DAG_ID, "-c", json.dumps(CONF)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(os.environ),
            start_new_session=True,  # its own process group: the kill takes every child too
        )
    try:
        started = wait_for(lambda: len(sends(sfox_sandbox)) >= 40 or proc.poll() is not None, timeout=240)
        assert started, "no sends within 240 s"
        assert proc.poll() is None, output.read_text()[-3000:]
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    time.sleep(0.5)  # requests already on the wire still reach the sandbox (150 ms latency)

    at_kill = sfox_sandbox.journal()
    sent_at_kill = {e.user_id for e in at_kill if e.code_sent}
    ledger = warehouse_db.ledger()
    assert 0 < len(sent_at_kill) < len(users), "the kill must land in the middle of the sending"
    # A code went out but its outcome never reached the ledger: the requests in flight.
    unrecorded = {uid for uid in sent_at_kill if ledger[(uid, "email")]["state"] == "queued"}
    assert len(unrecorded) <= DAG_THREADS, (len(unrecorded), len(sent_at_kill))
    assert {u[0] for u in users} - sent_at_kill, "some users were still queued at the kill"

    # Nobody summarized the killed run: its row still says running.
    ((killed,),) = warehouse_db.query("SELECT run_id FROM sfox_onboarding_runs WHERE status = 'running'")
    _killed_run_failed_in_airflow(killed)

    sfox_sandbox.set_faults(latency_ms=0)
    monkeypatch.setenv("AIRFLOW_CONN_SFOX_DEFAULT", sfox_conn_json(sfox_sandbox.url, rate_limit_requests=0))
    rerun = load_dag(DAG_ID).test(run_conf=CONF)
    assert rerun.state == "success"
    # The rerun found the killed run's row still saying "running" while Airflow no longer runs
    # it: the row says it was interrupted, and what it finished.
    (status, reason, finished) = warehouse_db.query(
        "SELECT status, reason, finished_at FROM sfox_onboarding_runs WHERE run_id = ?", (killed,)
    )[0]
    assert status == "interrupted"
    assert finished is not None
    assert "its Airflow run is failed and never summarized" in reason
    assert f"{len(sent_at_kill - unrecorded)} codes sent" in reason

    ledger = warehouse_db.ledger()
    attempts = warehouse_db.attempts()
    report = audit(sfox_sandbox.journal(), ledger, [u[0] for u in users], attempts=attempts)
    facts = {**report.summary(), "unrecorded_at_kill": len(unrecorded)}
    assert report.missed == [], facts
    assert report.not_done_in_ledger == [], facts
    assert set(report.duplicates) <= unrecorded, facts  # duplicates: only the requests in flight
    assert len(report.duplicates) <= DAG_THREADS, facts
    assert all(n == 2 for n in report.duplicates.values()), facts
    assert report.stray_requests == [], facts
    # The rerun found the claims of the requests in flight at the kill: each is a "lost" attempt
    # of the killed run, its row marked uncertain; each duplicate shows both of its requests.
    lost = {a["user_id"] for a in attempts if a["outcome"] == "lost"}
    assert unrecorded <= lost, facts
    assert len(lost) <= DAG_THREADS, facts
    assert {ledger[(uid, "email")]["uncertain"] for uid in lost} == {1}, facts
    for uid in report.duplicates:
        assert [a["outcome"] for a in attempts if a["user_id"] == uid] == ["lost", "sent"], facts
    assert report.attempts_table == {}, facts
    print("crash:", facts, "lost claims:", len(lost))
