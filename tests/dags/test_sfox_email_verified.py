"""Real ``dag.test()`` runs of the email-verified follow-up DAG after an onboarding run."""

from __future__ import annotations

import pytest

from tests.dags.test_sfox_batch_onboarding import codes, return_value, verify
from tests.helpers import load_dag, sfox_conn_json
from tests.onboarding_data import make_users, sandbox_users

DAG_ID = "sfox_email_verified"
# The follow-up's SQL (an IN lookup, the planner's upsert) runs on every dialect in the sender's
# and planner's tests; these real runs take 10 s each.
pytestmark = pytest.mark.parametrize("warehouse_db", ["sqlite"], indirect=True)


@pytest.fixture
def onboarded(airflow_db, warehouse_db, sfox_sandbox, monkeypatch):
    """Users whose email codes an onboarding run sent; a few of them then verify their email."""
    monkeypatch.setenv("AIRFLOW_CONN_SFOX_DEFAULT", sfox_conn_json(sfox_sandbox.url, requests_per_second=0))
    users = make_users(30, seed=16, corporation_share=0.3)
    warehouse_db.seed(users)
    sfox_sandbox.seed_users(sandbox_users(users))
    assert load_dag("sfox_batch_onboarding").test(run_conf={"chunk_size": 20}).state == "success"
    individuals = sorted(u[0] for u in users if u[1] == "individual")
    corporations = sorted(u[0] for u in users if u[1] == "corporation")
    for uid in individuals[:5]:
        verify(sfox_sandbox, uid, "email")
    return individuals, corporations


def test_an_event_s_users_get_their_sms_once_and_other_ids_are_skipped(onboarded, sfox_sandbox):
    individuals, corporations = onboarded
    named = [*individuals[:4], corporations[0], "nobody"]  # a corporation, an id the ledger lacks
    before = codes(sfox_sandbox)
    dag = load_dag(DAG_ID)

    first = dag.test(run_conf={"user_ids": named})
    assert first.state == "success"
    sent = codes(sfox_sandbox) - before
    assert sent == {(uid, "sms"): 1 for uid in individuals[:4]}
    counts = return_value(first, "plan", DAG_ID)
    assert counts["planned_users"] == 4
    assert {k: v for k, v in counts.items() if k.startswith("skipped_")} == {
        "skipped_corporation": 1,
        "skipped_unknown": 1,
    }

    # The same event again (a replay) sends nothing twice.
    replay = dag.test(run_conf={"user_ids": named})
    assert replay.state == "success"
    assert codes(sfox_sandbox) - before == sent
    assert return_value(replay, "plan", DAG_ID)["skipped_sms_already_requested"] == 4
    # Nor does the next hourly run of the onboarding DAG, which sends the one verified user no
    # event named (the safety net).
    assert load_dag("sfox_batch_onboarding").test(run_conf={"chunk_size": 20}).state == "success"
    assert codes(sfox_sandbox) - before == {**sent, (individuals[4], "sms"): 1}


@pytest.mark.parametrize(
    ("named", "skipped", "outcome"),
    [
        # sFOX refuses the sms of a user whose email it does not report verified: one read of
        # the user shows the email still required: the sms waits, not a failure.
        (lambda individuals: [individuals[10]], {}, "success"),
        # A malformed id (a newly rejected row): over the threshold.
        (lambda individuals: ["bad\x00id", " "], {"skipped_malformed": 2}, "failed"),
    ],
    ids=["sfox-disagrees", "malformed"],
)
def test_what_cannot_be_sent_is_recorded_and_never_resent(
    onboarded, sfox_sandbox, warehouse_db, named, skipped, outcome
):
    individuals, _ = onboarded
    before = codes(sfox_sandbox)
    ids = named(individuals)
    run = load_dag(DAG_ID).test(run_conf={"user_ids": ids})
    assert run.state == outcome
    assert codes(sfox_sandbox) == before
    counts = return_value(run, "plan", DAG_ID)
    assert {k: v for k, v in counts.items() if k.startswith("skipped_")} == skipped
    sms = {uid: row for (uid, channel), row in warehouse_db.ledger().items() if channel == "sms"}
    assert {uid: (row["state"], row["attempts"]) for uid, row in sms.items()} == (
        {} if skipped else {ids[0]: ("waiting", 1)}
    )


def test_a_dry_run_sends_nothing(onboarded, sfox_sandbox, warehouse_db):
    individuals, _ = onboarded
    before = codes(sfox_sandbox)
    run = load_dag(DAG_ID).test(run_conf={"user_ids": individuals[:3], "dry_run": True})
    assert run.state == "success"
    assert codes(sfox_sandbox) == before
    assert return_value(run, "plan", DAG_ID)["planned_users"] == 3
    assert not [key for key in warehouse_db.ledger() if key[1] == "sms"]
