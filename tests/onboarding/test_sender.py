"""Sending one chunk against the real sandbox: outcomes, attempts, claims, auth failure, uncertain sends."""

from __future__ import annotations

import time
from collections import Counter, defaultdict

import pytest

from airflow_sfox.exceptions import SfoxAuthError
from airflow_sfox.hooks.sfox import SfoxConnectHook
from airflow_sfox.onboarding.config import OnboardingConfig
from airflow_sfox.onboarding.model import RunRef
from airflow_sfox.onboarding.planner import Planner
from airflow_sfox.onboarding.sender import MAX_THREADS, send_chunk, threads_for
from airflow_sfox.onboarding.warehouse import Warehouse
from tests.helpers import sfox_conn_json
from tests.onboarding_data import make_users, sandbox_users


@pytest.fixture
def planned(warehouse_db, sfox_sandbox, monkeypatch):
    """Seed users (only ``registered`` ones known to sFOX), plan run ``r1``; return the chunks."""

    def prepare(users, registered):
        warehouse_db.seed(users)
        sfox_sandbox.seed_users(sandbox_users(registered))
        warehouse = Warehouse.from_conn_id("sfox_warehouse")
        with SfoxConnectHook() as hook:
            plan = Planner(
                warehouse, hook, OnboardingConfig(chunk_size=1000), run=RunRef("sfox_test", "r1")
            ).plan()
        sfox_sandbox.clear_journal()
        return warehouse, plan.chunks

    monkeypatch.setenv("AIRFLOW_CONN_SFOX_DEFAULT", sfox_conn_json(sfox_sandbox.url, rate_limit_requests=0))
    return prepare


def test_outcomes_are_recorded(planned, warehouse_db, sfox_sandbox):
    users = make_users(12, seed=5, corporation_share=0)
    warehouse, chunks = planned(users, registered=users[:10])  # two users unknown to sFOX

    with SfoxConnectHook() as hook:
        stats = send_chunk(
            warehouse, hook, run=RunRef("sfox_test", "r1"), chunk=chunks[0], channel="email", threads=4
        )

    assert stats.outcomes == {"sent": 10, "not_registered": 2}
    assert stats.requests == 12
    ledger = warehouse_db.ledger()
    for uid, *_ in users[10:]:
        row = ledger[(uid, "email")]
        assert (row["state"], row["last_status"], row["attempts"]) == ("not_registered", 404, 1)
    for uid, *_ in users[:10]:
        row = ledger[(uid, "email")]
        assert (row["state"], row["sends"], row["last_status"], row["uncertain"]) == ("sent", 1, 200, 0)
    # A chunk task retried after success sends nothing again.
    with SfoxConnectHook() as hook:
        again = send_chunk(warehouse, hook, run=RunRef("sfox_test", "r1"), chunk=chunks[0], channel="email")
    assert again.queued == 0
    assert again.as_dict()["note"].startswith("nothing queued")  # says so in XCom, not a silent 0
    assert len(sfox_sandbox.journal()) == 12


def test_revoked_token_stops_the_chunk_fast_and_keeps_the_rest_queued(
    planned, warehouse_db, sfox_sandbox, monkeypatch
):
    users = make_users(40, seed=6, corporation_share=0)
    warehouse, chunks = planned(users, registered=users)
    monkeypatch.setenv(
        "AIRFLOW_CONN_SFOX_DEFAULT",
        sfox_conn_json(sfox_sandbox.url, password="revoked", rate_limit_requests=0),
    )

    with SfoxConnectHook() as hook, pytest.raises(SfoxAuthError):
        send_chunk(
            warehouse, hook, run=RunRef("sfox_test", "r1"), chunk=chunks[0], channel="email", threads=4
        )

    unauthorized = [e for e in sfox_sandbox.journal() if e.status == 401]
    assert 1 <= len(unauthorized) <= 4  # at most the requests in flight
    ledger = warehouse_db.ledger()
    assert [row["state"] for row in ledger.values()].count("queued") == len(users)
    # A refused request sent no code: its claim is released, and the next try sends it plainly;
    # it is still a request: the attempts table has it, and the ledger counts it.
    assert warehouse_db.claimed() == set()
    refused = [(a["status"], a["outcome"]) for a in warehouse_db.attempts()]
    assert refused == [(401, "refused")] * len(unauthorized)
    assert sum(row["attempts"] for row in ledger.values()) == len(unauthorized)


def test_a_request_interrupted_mid_flight_keeps_its_claim(planned, warehouse_db, sfox_sandbox, monkeypatch):
    users = make_users(5, seed=7, corporation_share=0)
    warehouse, chunks = planned(users, registered=users)
    send = SfoxConnectHook.send_verification_result

    def killed_after_sending(self, user_id, channel):
        send(self, user_id, channel)  # the code went out; the task is killed before the answer
        raise KeyboardInterrupt

    monkeypatch.setattr(SfoxConnectHook, "send_verification_result", killed_after_sending)
    with SfoxConnectHook() as hook, pytest.raises(KeyboardInterrupt):
        send_chunk(
            warehouse, hook, run=RunRef("sfox_test", "r1"), chunk=chunks[0], channel="email", threads=4
        )

    first = min(u[0] for u in users)
    assert [e.user_id for e in sfox_sandbox.journal()] == [first]
    assert warehouse_db.claimed() == {(first, "email")}  # the next try records it as lost


def test_dropped_answers_are_marked_uncertain(planned, warehouse_db, sfox_sandbox):
    users = make_users(30, seed=8, corporation_share=0)
    warehouse, chunks = planned(users, registered=users)
    sfox_sandbox.set_faults(drop_rate=0.3)

    with SfoxConnectHook(sleep=lambda s: time.sleep(s / 20)) as hook:
        stats = send_chunk(
            warehouse, hook, run=RunRef("sfox_test", "r1"), chunk=chunks[0], channel="email", threads=4
        )

    codes = {uid: sfox_sandbox.codes(uid)["email"]["count"] for uid, *_ in users}
    ledger = warehouse_db.ledger()
    uncertain = {uid for (uid, _), row in ledger.items() if row["uncertain"]}
    assert {uid for uid, n in codes.items() if n > 1} == uncertain  # extra codes only where marked
    assert uncertain  # the fault was hit
    assert stats.uncertain == len(uncertain)
    assert all(row["state"] == "sent" for row in ledger.values())


def test_every_request_is_one_attempt_row_and_the_ledger_adds_up_from_them(
    planned, warehouse_db, sfox_sandbox
):
    users = make_users(40, seed=9, corporation_share=0)
    warehouse, chunks = planned(users, registered=users[:36])  # four unknown to sFOX (404)
    sfox_sandbox.set_faults(error_503_rate=0.25, drop_rate=0.1)

    with SfoxConnectHook(sleep=lambda s: time.sleep(s / 50)) as hook:
        send_chunk(
            warehouse, hook, run=RunRef("sfox_test", "r1"), chunk=chunks[0], channel="email", threads=4
        )

    attempts = warehouse_db.attempts()
    by_user = defaultdict(list)
    for row in attempts:
        by_user[row["user_id"]].append(row)
    journal = Counter(e.user_id for e in sfox_sandbox.journal())
    assert Counter({uid: len(rows) for uid, rows in by_user.items()}) == journal  # one row per request
    assert {row["status"] for row in attempts} >= {200, 404, 503, None}  # the faults were hit
    for (uid, _), row in warehouse_db.ledger().items():
        trail = by_user[uid]
        assert [a["attempt"] for a in trail] == list(range(1, len(trail) + 1))
        assert [a["outcome"] for a in trail] == ["retried"] * (len(trail) - 1) + [row["state"]]
        assert row["attempts"] == len(trail)
        assert row["sends"] == sum(a["outcome"] == "sent" for a in trail)
        assert row["uncertain"] == max(a["uncertain"] for a in trail)
        assert {a["run_id"] for a in trail} == {"r1"}
    assert not [a["error"] for a in attempts if a["error"] and "@" in a["error"]]  # no email in errors
    assert warehouse_db.claimed() == set()


@pytest.mark.parametrize("hold", [False, True], ids=["sent-again", "held"])
def test_claims_left_by_a_dead_try_are_lost_attempts_marked_uncertain(
    planned, warehouse_db, sfox_sandbox, hold
):
    users = make_users(20, seed=10, corporation_share=0)
    warehouse, chunks = planned(users, registered=users)
    dead = sorted(u[0] for u in users)[:3]
    with warehouse.connect() as conn:  # a try claimed three users, then died before any answer
        warehouse.claim(conn, dead, channel="email", run=RunRef("sfox_test", "r0"))
        conn.commit()

    with SfoxConnectHook() as hook:
        stats = send_chunk(
            warehouse,
            hook,
            run=RunRef("sfox_test", "r1"),
            chunk=chunks[0],
            channel="email",
            threads=4,
            hold_uncertain=hold,
        )

    assert stats.lost == 3
    ledger = warehouse_db.ledger()
    attempts = warehouse_db.attempts()
    lost = [
        (a["user_id"], a["run_id"], a["status"], a["uncertain"]) for a in attempts if a["outcome"] == "lost"
    ]
    assert sorted(lost) == [(uid, "r0", None, 1) for uid in dead]
    sent_to = Counter(e.user_id for e in sfox_sandbox.journal())
    for uid in dead:
        row = ledger[(uid, "email")]
        assert row["uncertain"] == 1
        if hold:  # held for review: no request, queued again only by a re-drive of uncertain
            assert (row["state"], row["attempts"], sent_to[uid]) == ("held", 1, 0)
        else:  # sent again: the attempts table shows both requests
            assert (row["state"], row["sends"], row["attempts"], sent_to[uid]) == ("sent", 1, 2, 1)
            assert [a["outcome"] for a in attempts if a["user_id"] == uid] == ["lost", "sent"]
    others = [ledger[(u[0], "email")] for u in users if u[0] not in dead]
    assert {(row["state"], row["uncertain"]) for row in others} == {("sent", 0)}
    assert stats.uncertain == (0 if hold else 3)
    assert stats.outcomes.get("held", 0) == (3 if hold else 0)
    assert warehouse_db.claimed() == set()

    if hold:
        for redrive, due in (([], 0), (["uncertain"], 3)):
            with SfoxConnectHook() as hook:
                config = OnboardingConfig(chunk_size=1000, redrive=redrive, dry_run=True)
                plan = Planner(warehouse, hook, config, run=RunRef("sfox_test", "r2")).plan()
            assert plan.counts["planned_users"] == due, redrive


@pytest.mark.parametrize(
    ("rate", "threads"),
    [(0, 8), (1, 4), (10, 4), (20, 8), (50, 20), (240, MAX_THREADS), (10_000, MAX_THREADS)],
)
def test_threads_fill_the_budget_at_300_ms(rate, threads):
    assert threads_for(rate) == threads


def _seed(uid: str, kind: str, *, email_verified: bool) -> dict:
    phone = "+12025550199" if kind == "individual" else None
    return {
        "user_id": uid,
        "account_type": kind,
        "email": f"{uid}@example.com",
        "phone_number": phone,
        "email_verified": email_verified,
    }


@pytest.mark.parametrize("warehouse_db", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("kind", "channel", "verified_now", "text", "state", "failures"),
    [
        # sFOX's record says the email is verified, in words we do not know: already verified.
        ("corporation", "email", True, "Email is already verified", "already_verified", 0),
        # Still required per sFOX's record: a failure, with sFOX's message.
        ("corporation", "email", False, "Email cannot be sent right now", "failed", 1),
        # An sms asked before sFOX has the email verified: back to waiting, not a failure.
        ("individual", "sms", False, "Verify the email address first", "waiting", 0),
    ],
    ids=["verified", "still-required", "sms-before-email"],
)
def test_an_undocumented_422_is_settled_by_reading_the_user(
    planned, warehouse_db, sfox_sandbox, kind, channel, verified_now, text, state, failures
):
    uid = f"{kind}-422"
    # At plan time the email is verified for the individual (its sms is due), not for the corporation.
    warehouse_db.seed([(uid, kind, f"{uid}@example.com", "+12025550199" if kind == "individual" else None)])
    sfox_sandbox.seed_users([_seed(uid, kind, email_verified=kind == "individual")])
    warehouse = Warehouse.from_conn_id("sfox_warehouse")
    with SfoxConnectHook() as hook:
        config = OnboardingConfig(chunk_size=10, channels=[channel])
        chunks = Planner(warehouse, hook, config, run=RunRef("sfox_test", "r1")).plan().chunks
    # Between the plan and the send, sFOX's record changes.
    sfox_sandbox.seed_users([_seed(uid, kind, email_verified=verified_now)])
    sfox_sandbox.clear_journal()

    sfox_sandbox.set_unprocessable(uid, channel, text)  # sFOX's 422, in words it does not document
    with SfoxConnectHook() as hook:
        send_chunk(
            warehouse, hook, run=RunRef("sfox_test", "r1"), chunk=chunks[0], channel=channel, threads=2
        )

    # The one send, answered 422; one read of the user settled it, and nothing was posted again.
    assert [(e.method, e.path, e.status) for e in sfox_sandbox.journal()] == [
        ("POST", f"/v1/enterprise/users/send-verification/{uid}", 422),
        ("GET", f"/v1/enterprise/users/{uid}", 200),
    ]
    row = warehouse_db.ledger()[(uid, channel)]
    assert (row["state"], row["last_status"], row["attempts"]) == (state, 422, 1)
    assert text in row["last_error"]
    (failed,) = warehouse_db.query(
        "SELECT failures FROM sfox_onboarding_ledger WHERE user_id = ? AND channel = ?", (uid, channel)
    )[0]
    assert failed == failures
