"""
Issue 7.1: 10% 5xx, 2% connection resets, 2% timeouts, 1% "processed, answer dropped" and a
429 burst, over a few hundred users (thousands with ``SFOX_RELIABILITY_PROFILE=soak``).

Afterwards every valid user has a successful email request in the ledger, the sandbox journal
shows a code for every one of them, and every extra code is explained: an earlier answer of
that user's request was lost (dropped or timed out) and the ledger marks the row uncertain.
"""

from __future__ import annotations

import pytest

from tests.helpers import sfox_conn_json
from tests.onboarding_data import BAD_ROWS, make_users, sandbox_users
from tests.reliability.support import (
    FAULT_CONN_EXTRA,
    FAULT_USERS,
    ISSUE_FAULTS,
    LOST_ANSWER_FAULTS,
    BurstOf429,
    audit,
)


@pytest.mark.parametrize("warehouse_db", ["sqlite"], indirect=True)
def test_faults_lose_nobody_and_every_extra_code_is_explained(warehouse_db, sfox_sandbox, monkeypatch):
    users = make_users(FAULT_USERS, seed=71)
    warehouse_db.seed(users + [row for row, _ in BAD_ROWS])
    sfox_sandbox.seed_users(sandbox_users(users))
    monkeypatch.setenv("AIRFLOW_CONN_SFOX_DEFAULT", sfox_conn_json(sfox_sandbox.url, **FAULT_CONN_EXTRA))
    sfox_sandbox.set_faults(**ISSUE_FAULTS)

    from tests.reliability.support import run_onboarding

    with BurstOf429(sfox_sandbox, after=FAULT_USERS // 4) as burst:
        result = run_onboarding("faults-1", params={"chunk_size": max(FAULT_USERS // 3, 1)})
    sfox_sandbox.set_faults(**dict.fromkeys(ISSUE_FAULTS, 0.0))

    assert result["error"] is None, result["error"]
    assert result["summary"]["status"] == "success"
    journal = sfox_sandbox.journal()
    ledger = warehouse_db.ledger()
    report = audit(journal, ledger, [u[0] for u in users], attempts=warehouse_db.attempts())
    facts = report.summary()

    # The faults really happened, the 429 burst included.
    assert burst.started.is_set(), facts
    assert report.statuses["429"] > 0, facts
    assert min(report.faults[kind] for kind in ("error_500", "error_503", "reset")) > 0, facts
    assert report.lost_answers > 0, facts  # answers dropped or timed out: duplicates are possible

    # Nobody missed: a code in sFOX's journal and a successful row in the ledger for every user.
    assert report.missed == [], facts
    assert report.not_done_in_ledger == [], facts
    # Extra codes only where an answer was lost, each such row marked uncertain.
    assert report.unexplained_duplicates == [], facts
    lost = {e.user_id for e in journal if e.fault in (*LOST_ANSWER_FAULTS, "reset")}
    assert {uid for uid in lost if ledger[(uid, "email")]["uncertain"] != 1} == set(), facts
    # The ledger counts every request sFOX saw for the user; nothing else was requested.
    assert report.attempts_mismatch == {}, facts
    assert report.stray_requests == [], facts
    # The attempts table has a row per request sFOX saw; the ledger's counters add up from it.
    assert report.attempts_table == {}, facts
    assert {uid: row["sends"] for (uid, _), row in ledger.items() if row["state"] == "sent"} == {
        u[0]: 1 for u in users
    }
    # The run row counts every request the sandbox saw (the planner's GET included).
    (requests,) = warehouse_db.query("SELECT requests FROM sfox_onboarding_runs")[0]
    assert requests == len(journal)
    print("fault run:", facts)
