"""
Issue 7.6: the warehouse (a real PostgreSQL server) stops in the middle of a chunk.

The chunk task must fail cleanly (a database error, no personal data in it); once the server
is back, a rerun misses no user and re-sends no more than the requests that were in flight
when the ledger became unwritable (the 8 threads of the chunk task).
"""

from __future__ import annotations

import threading

import pytest

from airflow_sfox.onboarding.sender import ChunkStopped
from tests import pg
from tests.helpers import TOKEN, sfox_conn_json
from tests.onboarding_data import make_users, sandbox_users
from tests.reliability.support import THREADS, FakeTI, audit, chunk_task, run_onboarding, sends, wait_for

USERS = 200


def _outage_then_rerun(warehouse_db, sfox_sandbox, monkeypatch) -> dict:
    """Plan, send one chunk while PostgreSQL is stopped half-way, restart it, run again."""
    from airflow_sfox.onboarding.runs import plan_run

    users = make_users(USERS, seed=61, corporation_share=1.0)
    warehouse_db.seed(users)
    sfox_sandbox.seed_users(sandbox_users(users))
    monkeypatch.setenv("AIRFLOW_CONN_SFOX_DEFAULT", sfox_conn_json(sfox_sandbox.url, rate_limit_requests=0))
    planned = plan_run(
        params={"chunk_size": USERS, "channels": ["email"]},
        run_id="outage-1",
        dag_id="sfox_reliability",
        warehouse_conn_id="sfox_warehouse",
        sfox_conn_id="sfox_default",
    )
    (chunk,) = planned["chunks"]
    sfox_sandbox.set_faults(latency_ms=150)  # 8 threads: ~50 requests/s, the chunk takes seconds
    server = pg.current_server()
    stopped = threading.Event()

    def stop_mid_chunk() -> None:
        if wait_for(lambda: len(sends(sfox_sandbox)) >= 24, timeout=120):
            server.pg_ctl_stop()
            stopped.set()

    stopper = threading.Thread(target=stop_mid_chunk, daemon=True)
    stopper.start()
    task = chunk_task(
        "sfox_reliability", task_id="send_email", chunk=chunk, verification_type="email", threads=THREADS
    )
    error: BaseException | None = None
    try:
        task.execute({"run_id": "outage-1", "ti": FakeTI()})  # type: ignore[arg-type]
    except Exception as err:
        error = err
    finally:
        stopper.join(60)
        if stopped.is_set():
            server.pg_ctl_start()
    assert stopped.is_set(), "PostgreSQL was not stopped during the chunk"
    sfox_sandbox.set_faults(latency_ms=0)
    at_failure = {e.user_id for e in sfox_sandbox.journal() if e.code_sent}
    ledger = warehouse_db.ledger()
    unrecorded = {uid for uid in at_failure if ledger[(uid, "email")]["state"] == "queued"}

    rerun = run_onboarding("outage-2", params={"chunk_size": USERS})
    report = audit(sfox_sandbox.journal(), warehouse_db.ledger(), [u[0] for u in users])
    return {
        "error": error,
        "users": users,
        "sent_before_rerun": len(at_failure),
        "unrecorded": unrecorded,
        "rerun": rerun,
        "report": report,
    }


@pytest.mark.parametrize("warehouse_db", ["postgres"], indirect=True)
def test_postgres_stopped_mid_chunk_fails_the_task_cleanly_and_a_rerun_misses_nobody(
    warehouse_db, sfox_sandbox, monkeypatch
):
    out = _outage_then_rerun(warehouse_db, sfox_sandbox, monkeypatch)
    error = out["error"]
    # The task fails naming the warehouse, caused by the database's error (psycopg or psycopg2,
    # whichever the hook uses) as SQLAlchemy wraps it (``.orig``): Airflow's retry resumes it.
    assert isinstance(error, ChunkStopped), repr(error)
    assert "the warehouse (connection 'sfox_warehouse') is unreachable" in str(error)
    assert "users left queued" in str(error)
    driver_error = getattr(error.__cause__, "orig", error.__cause__)
    assert type(driver_error).__module__.split(".")[0] in ("psycopg", "psycopg2"), repr(error)
    text = f"{error!r} {error}"
    assert TOKEN not in text
    assert "@example.com" not in text
    assert out["rerun"]["error"] is None
    report = out["report"]
    assert report.missed == [], report.summary()
    assert report.not_done_in_ledger == [], report.summary()
    assert set(report.duplicates) <= out["unrecorded"], report.summary()  # only sends the ledger lost
    assert report.stray_requests == []


@pytest.mark.parametrize("warehouse_db", ["postgres"], indirect=True)
def test_postgres_stopped_mid_chunk_resends_no_more_than_in_flight(warehouse_db, sfox_sandbox, monkeypatch):
    out = _outage_then_rerun(warehouse_db, sfox_sandbox, monkeypatch)
    report = out["report"]
    assert report.missed == []
    assert len(out["unrecorded"]) <= THREADS, (len(out["unrecorded"]), out["sent_before_rerun"])
    assert len(report.duplicates) <= THREADS, report.summary()
