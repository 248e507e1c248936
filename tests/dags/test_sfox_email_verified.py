"""Real ``dag.test()`` runs of the email-verified follow-up DAG after an onboarding run."""

from __future__ import annotations

import pytest

from airflow_sfox.assets.sfox import email_verified_asset
from tests.dags.support import codes, return_value, verify
from tests.helpers import load_dag, sfox_conn_json
from tests.onboarding_data import make_users, sandbox_users

DAG_ID = "sfox_email_verified"
ASSET = email_verified_asset("api.sfox.com")
# The follow-up's SQL (an IN lookup, the planner's upsert) runs on every dialect in the sender's
# and planner's tests; these real runs take 10 s each.
pytestmark = pytest.mark.parametrize("warehouse_db", ["sqlite"], indirect=True)


@pytest.fixture
def onboarded(airflow_db, warehouse_db, sfox_sandbox, monkeypatch):
    """Users whose email codes an onboarding run sent; a few of them then verify their email."""
    monkeypatch.setenv("AIRFLOW_CONN_SFOX_DEFAULT", sfox_conn_json(sfox_sandbox.url, rate_limit_requests=0))
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
    ("named", "malformed"),
    [
        # sFOX refuses the sms of a user whose email it does not report verified: one read of
        # the user shows the email still required: the sms waits, not a failure.
        (lambda individuals: [individuals[10]], 0),
        # Ids that are no user id: the poster's error, reported and never counted against the run.
        (lambda individuals: ["bad\x00id", " "], 2),
    ],
    ids=["sfox-disagrees", "malformed"],
)
def test_what_cannot_be_sent_is_recorded_and_never_resent(
    onboarded, sfox_sandbox, warehouse_db, named, malformed
):
    individuals, _ = onboarded
    before = codes(sfox_sandbox)
    ids = named(individuals)
    run = load_dag(DAG_ID).test(run_conf={"user_ids": ids})
    assert run.state == "success"
    assert codes(sfox_sandbox) == before
    counts = return_value(run, "plan", DAG_ID)
    assert not {k: v for k, v in counts.items() if k.startswith("skipped_")}
    assert (counts["malformed_ids"], counts["rejected"]) == (malformed, 0)
    sms = {uid: row for (uid, channel), row in warehouse_db.ledger().items() if channel == "sms"}
    assert {uid: (row["state"], row["attempts"]) for uid, row in sms.items()} == (
        {} if malformed else {ids[0]: ("waiting", 1)}
    )


def test_a_dry_run_sends_nothing(onboarded, sfox_sandbox, warehouse_db):
    individuals, _ = onboarded
    before = codes(sfox_sandbox)
    run = load_dag(DAG_ID).test(run_conf={"user_ids": individuals[:3], "dry_run": True})
    assert run.state == "success"
    assert codes(sfox_sandbox) == before
    assert return_value(run, "plan", DAG_ID)["planned_users"] == 3
    assert not [key for key in warehouse_db.ledger() if key[1] == "sms"]


def post_event(extra: dict) -> int:
    """An event of the email-verified asset, as the REST API records one; returns its id."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        asset = session.scalars(select(AssetModel).where(AssetModel.uri == ASSET.uri)).one()
        event = AssetEvent(asset_id=asset.id, extra={"from_rest_api": True, **extra})
        session.add(event)
        session.flush()
        return event.id


@pytest.fixture
def run_on_events(monkeypatch):
    """A ``dag.test()`` run that Airflow hands these events, as its scheduler does an asset run's."""
    import airflow.models.dagrun as dagrun_module
    from airflow.models.asset import AssetEvent
    from sqlalchemy import select

    create = dagrun_module.get_or_create_dagrun

    def run(event_ids: list[int]):
        def with_events(**kwargs):
            dag_run = create(**kwargs)
            session = kwargs["session"]
            events = session.scalars(select(AssetEvent).where(AssetEvent.id.in_(event_ids))).all()
            dag_run.consumed_asset_events.extend(events)
            session.commit()
            return dag_run

        with monkeypatch.context() as patched:
            patched.setattr(dagrun_module, "get_or_create_dagrun", with_events)
            return load_dag(DAG_ID).test()

    return run


def test_malformed_events_fail_no_run_and_every_event_is_judged_once(onboarded, sfox_sandbox, run_on_events):
    """
    Issue 20: a partner posts malformed events; Airflow hands them to the next run again (its
    coalescing), and the plan reads events posted after its own (the look-ahead).
    """
    individuals, _ = onboarded
    before = codes(sfox_sandbox)
    load_dag(DAG_ID).test(run_conf={"dry_run": True})  # the asset is in Airflow's database now
    bad = [
        post_event({"user_ids": ["x/.."]}),  # an odd id, but an id: unknown to the ledger
        post_event({"user_ids": ["y" * 2_000_000]}),
        post_event({"user_ids": individuals[0]}),  # a string, not a list
    ]
    first = run_on_events(bad)
    assert first.state == "success"
    counts = return_value(first, "plan", DAG_ID)
    assert (counts["events"], counts["events_seen"], counts["malformed_ids"]) == (3, 0, 2)
    assert counts["malformed_reasons"] == {
        "user_id is longer than 128 characters": 1,
        "user_ids is not a list": 1,
    }
    assert (counts["planned_users"], counts["skipped_unknown"], counts["rejected"]) == (0, 1, 0)

    # The next valid event's run is handed the bad ones again: they are skipped, uncounted.
    valid = post_event({"user_ids": individuals[:2]})
    later = post_event({"user_ids": individuals[2:4]})  # posted before the run starts
    second = run_on_events([*bad, valid])
    assert second.state == "success"
    counts = return_value(second, "plan", DAG_ID)
    assert (counts["events"], counts["events_seen"], counts["malformed_ids"]) == (2, 3, 0)  # + the later one
    assert counts["planned_users"] == 4
    assert codes(sfox_sandbox) - before == {(uid, "sms"): 1 for uid in individuals[:4]}

    # The run the later event triggers finds it judged: nothing counted, nothing sent twice.
    third = run_on_events([later])
    assert third.state == "success"
    counts = return_value(third, "plan", DAG_ID)
    assert (counts["events"], counts["events_seen"], counts["planned_users"]) == (0, 1, 0)
    assert codes(sfox_sandbox) - before == {(uid, "sms"): 1 for uid in individuals[:4]}


def test_200_posted_events_are_counted_as_200(onboarded, sfox_sandbox, run_on_events):
    """A burst: the first run reads the events Airflow left for later (the look-ahead) too."""
    individuals, _ = onboarded
    before = codes(sfox_sandbox)
    load_dag(DAG_ID).test(run_conf={"dry_run": True})  # the asset is in Airflow's database now
    posted = [post_event({"user_ids": [individuals[n % 4], f"nobody-{n}"]}) for n in range(200)]

    first = run_on_events(posted[:50])
    later = run_on_events(posted[50:])  # the events Airflow folded into the next run

    counted = [return_value(run, "plan", DAG_ID) for run in (first, later)]
    assert [run.state for run in (first, later)] == ["success", "success"]
    assert [c["events"] for c in counted] == [200, 0]
    assert [c["events_seen"] for c in counted] == [0, 150]
    assert counted[0]["skipped_unknown"] == 200
    assert codes(sfox_sandbox) - before == {(uid, "sms"): 1 for uid in individuals[:4]}
