"""
Issue 7.3: the token is revoked while a run sends (the sandbox answers 401 from then on).

The tests revoke the token through the sandbox's admin API (``PUT /_sandbox/token`` with
another token, see ``support.Revoker``): from that moment every ``/v1/`` request gets 401,
exactly as sFOX answers a revoked key.
"""

from __future__ import annotations

from collections import Counter

import pytest

from airflow_sfox._compat import AirflowFailException
from tests.helpers import TOKEN, load_dag, sfox_conn_json
from tests.onboarding_data import make_users, sandbox_users
from tests.reliability.support import DAG_THREADS, FakeTI, Revoker, audit, chunk_task

DAG_ID = "sfox_batch_onboarding"


def _users():
    return make_users(240, seed=31, corporation_share=0)


def _setup(warehouse_db, sfox_sandbox, monkeypatch, users):
    warehouse_db.seed(users)
    sfox_sandbox.seed_users(sandbox_users(users))
    monkeypatch.setenv("AIRFLOW_CONN_SFOX_DEFAULT", sfox_conn_json(sfox_sandbox.url, rate_limit_requests=0))
    sfox_sandbox.set_faults(latency_ms=100)


def _ledger_matches_journal(warehouse_db, sfox_sandbox, users) -> None:
    """Every code sFOX sent is a ``sent`` row; every other user is still ``queued``."""
    codes = Counter(e.user_id for e in sfox_sandbox.journal() if e.code_sent)
    ledger = warehouse_db.ledger()
    assert max(codes.values()) == 1
    states = {uid: ledger[(uid, "email")]["state"] for uid, *_ in users}
    assert {uid for uid, s in states.items() if s == "sent"} == set(codes)
    assert {s for uid, s in states.items() if uid not in codes} == {"queued"}


@pytest.mark.parametrize("warehouse_db", ["sqlite"], indirect=True)
def test_token_revoked_mid_run_stops_with_a_clear_error_and_a_rerun_completes(
    airflow_db, warehouse_db, sfox_sandbox, monkeypatch, caplog, capfd
):
    users = _users()
    _setup(warehouse_db, sfox_sandbox, monkeypatch, users)
    revoker = Revoker(sfox_sandbox, after=40, token=TOKEN)
    dag = load_dag(DAG_ID)

    failed = dag.test(run_conf={"chunk_size": 80, "channels": ["email"]})

    assert revoker.revoked.is_set()
    assert failed.state == "failed"
    journal = sfox_sandbox.journal()
    first_401 = next(i for i, e in enumerate(journal) if e.status == 401)
    after = journal[first_401:]
    assert {e.status for e in after} == {401}  # nothing got through once revoked
    # The chunk task stops at its first 401 (at most its requests in flight are refused) and
    # fails without retries; each later chunk task's first request goes alone: one 401 each.
    assert 1 <= len(after) <= DAG_THREADS
    # A clear error, naming the status and what to do about it, never the token.
    text = capfd.readouterr().out + caplog.text
    assert "HTTP 401" in text
    assert "Unauthorized: missing or invalid API key" in text
    assert TOKEN not in text
    _ledger_matches_journal(warehouse_db, sfox_sandbox, users)
    (status, reason) = warehouse_db.query("SELECT status, reason FROM sfox_onboarding_runs")[0]
    assert status == "auth_failed"
    assert reason.startswith("sFOX refused the token"), reason

    revoker.restore()
    sfox_sandbox.set_faults(latency_ms=0)
    rerun = dag.test(run_conf={"chunk_size": 80, "channels": ["email"]})
    assert rerun.state == "success"
    report = audit(sfox_sandbox.journal(), warehouse_db.ledger(), [u[0] for u in users])
    assert report.missed == [], report.summary()
    assert report.duplicates == {}, report.summary()
    assert report.not_done_in_ledger == [], report.summary()


@pytest.mark.parametrize("warehouse_db", ["sqlite"], indirect=True)
def test_token_revoked_costs_a_handful_of_401s_per_run(warehouse_db, sfox_sandbox, monkeypatch):
    users = _users()
    _setup(warehouse_db, sfox_sandbox, monkeypatch, users)
    revoker = Revoker(sfox_sandbox, after=40, token=TOKEN)

    from airflow_sfox.onboarding.runs import plan_run

    params = {"chunk_size": 40, "channels": ["email"]}
    planned = plan_run(
        params=params,
        run_id="auth-1",
        dag_id=DAG_ID,
        warehouse_conn_id="sfox_warehouse",
        sfox_conn_id="sfox_default",
    )
    failures = 0
    for chunk in planned["chunks"]:  # the mapped chunk tasks, run one after the other
        task = chunk_task(DAG_ID, task_id="send_email", chunk=chunk, verification_type="email")
        try:
            task.execute({"run_id": "auth-1", "ti": FakeTI()})  # type: ignore[arg-type]
        except AirflowFailException:  # not retried: a retry cannot fix a token
            failures += 1
    assert revoker.revoked.is_set()
    assert failures >= 2
    _ledger_matches_journal(warehouse_db, sfox_sandbox, users)
    unauthorized = [e for e in sfox_sandbox.journal() if e.status == 401]
    assert len(unauthorized) <= DAG_THREADS, f"{len(unauthorized)} requests answered 401 in one run"
