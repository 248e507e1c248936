"""Real ``dag.test()`` runs of the onboarding DAG against the sandbox and a SQLite warehouse."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter

import pytest
import requests

from tests.helpers import TOKEN, load_dag, sfox_conn_json
from tests.onboarding_data import BAD_ROWS, make_users, sandbox_users, seed_sqlite

DAG_ID = "sfox_batch_onboarding"


@pytest.fixture
def warehouse(tmp_path, monkeypatch):
    path = tmp_path / "warehouse.db"
    monkeypatch.setenv("AIRFLOW_CONN_SFOX_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    return str(path)


@pytest.fixture
def run_dag(airflow_db, sfox_sandbox, monkeypatch):
    # A budget far above the sandbox's needs: runs take seconds, pacing is tested elsewhere.
    monkeypatch.setenv("AIRFLOW_CONN_SFOX_DEFAULT", sfox_conn_json(sfox_sandbox.url, requests_per_second=500))
    dag = load_dag(DAG_ID)

    def run(**conf):
        return dag.test(run_conf=conf)

    return run


def ledger(path: str) -> dict[tuple[str, str], tuple]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT user_id, channel, state, sends, last_error FROM sfox_onboarding_ledger")
        return {(r[0], r[1]): r[2:] for r in rows}


def sends(server) -> Counter:
    return Counter(
        (e.user_id, e.type) for e in server.journal() if "/send-verification/" in e.path and e.status == 200
    )


def test_two_runs_send_each_code_once(run_dag, warehouse, sfox_sandbox):
    users = make_users(60)
    seed_sqlite(warehouse, users + [row for row, _ in BAD_ROWS])
    sfox_sandbox.seed_users(sandbox_users(users))

    first = run_dag(chunk_size=20, failure_threshold=0.2)
    assert first.state == "success"
    codes = sends(sfox_sandbox)
    assert codes == Counter({(u[0], "email"): 1 for u in users})

    # A third of the individuals verify their email, like a person typing the code.
    individuals = [u[0] for u in users if u[1] == "individual"]
    verified = individuals[::3]
    for user_id in verified:
        otp = sfox_sandbox.codes(user_id)["email"]["latest"]
        r = requests.post(
            f"{sfox_sandbox.url}/v1/enterprise/users/verify/{user_id}",
            json={"type": "email", "otp": otp},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=5,
        )
        assert r.status_code == 200, r.text

    second = run_dag(chunk_size=20, failure_threshold=0.2)
    assert second.state == "success"
    codes = sends(sfox_sandbox)
    assert codes == Counter({**{(u[0], "email"): 1 for u in users}, **{(u, "sms"): 1 for u in verified}})

    led = ledger(warehouse)
    for user_id in verified:
        assert led[(user_id, "email")][0] == "verified"
        assert led[(user_id, "sms")][0] == "sent"
    rejected = {k: v for k, v in led.items() if v[0] == "rejected"}
    assert len(rejected) == len(BAD_ROWS) - 1  # the duplicate pair is one user_id
    journal_ids = {e.user_id for e in sfox_sandbox.journal()}
    assert not journal_ids & {row[0] for row, _ in BAD_ROWS}
