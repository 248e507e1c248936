"""Registering unknown users against the real sandbox: once each, settled by reads, no personal data kept."""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone

import pytest

from airflow_sfox.hooks.sfox import SfoxConnectHook
from airflow_sfox.onboarding.config import OnboardingConfig, OnboardingSource
from airflow_sfox.onboarding.model import RunRef
from airflow_sfox.onboarding.planner import Planner
from airflow_sfox.onboarding.registering import register_chunk, source_bodies
from airflow_sfox.onboarding.registration import Registration
from airflow_sfox.onboarding.sender import ChunkStopped, send_chunk
from airflow_sfox.onboarding.warehouse import Warehouse
from tests.helpers import sfox_conn_json
from tests.onboarding.registration_data import (
    corporation,
    individual,
    personal_values,
    seed_registration_source,
)

KEY = b"k" * 32
SOURCE = OnboardingSource(registration=Registration())
REGISTER_PATH = "/v1/enterprise/register-account"


def plan(warehouse, run_id, **config):
    with SfoxConnectHook() as hook:
        return Planner(
            warehouse,
            hook,
            OnboardingConfig(chunk_size=1000, **config),
            source=SOURCE,
            run=RunRef("sfox_test", run_id),
            registration_key=KEY,
        ).plan()


def register(warehouse, run_id, chunk, **hook_kwargs):
    with SfoxConnectHook(**hook_kwargs) as hook:
        return register_chunk(
            warehouse, hook, run=RunRef("sfox_test", run_id), chunk=chunk, source=SOURCE, key=KEY, threads=4
        )


def requests_by_user(sandbox, user_ids):
    """Each user's requests in order, as (method, kind): kind is register, read or the code's channel."""
    seen = defaultdict(list)
    for entry in sandbox.journal():
        if entry.path == REGISTER_PATH:
            kind = "register"
        elif entry.method == "GET":
            kind = "read"
        else:
            kind = entry.type or "send"
        uid = entry.user_id
        if uid in user_ids:
            seen[uid].append((kind, entry.status))
    return seen


@pytest.fixture
def migration(warehouse_db, sfox_sandbox, monkeypatch):
    """New users of both account types, unknown to sFOX, in a registration source; planned as ``r1``."""
    monkeypatch.setenv("AIRFLOW_CONN_SFOX_DEFAULT", sfox_conn_json(sfox_sandbox.url, rate_limit_requests=0))
    rows = [individual(n) for n in range(6)] + [corporation(n) for n in range(4)]
    seed_registration_source(warehouse_db, rows)
    warehouse = Warehouse.from_conn_id("sfox_warehouse")
    planned = plan(warehouse, "r1")
    sfox_sandbox.clear_journal()
    return warehouse, planned, rows


def test_a_migration_registers_each_new_user_once_and_requests_no_email(
    migration, warehouse_db, sfox_sandbox
):
    warehouse, planned, rows = migration
    assert planned.counts["due_individual_registration"] == 6
    assert planned.counts["due_corporation_registration"] == 4
    assert "due_individual_email" not in planned.counts  # the registration sends it

    for chunk in planned.chunks:
        stats = register(warehouse, "r1", chunk)
        assert stats.outcomes == {"registered": chunk["registration"]}
        # The email step has nothing left: sFOX emailed the first code itself.
        with SfoxConnectHook() as hook:
            assert (
                send_chunk(
                    warehouse, hook, run=RunRef("sfox_test", "r1"), chunk=chunk, channel="email"
                ).queued
                == 0
            )

    ids = {row["user_id"] for row in rows}
    seen = requests_by_user(sfox_sandbox, ids)
    assert {uid: [kind for kind, _ in seen[uid]] for uid in ids} == {uid: ["register"] for uid in ids}
    ledger = warehouse_db.ledger()
    for uid in ids:
        assert ledger[(uid, "registration")]["state"] == "registered"
        email = ledger[(uid, "email")]
        assert (email["state"], email["sends"], email["attempts"]) == ("sent", 1, 0)
        assert sfox_sandbox.codes(uid)["email"]["count"] == 1
    # The next plan sees them in sFOX's list: nothing to register, no email due yet (cooldown).
    again = plan(warehouse, "r2")
    assert again.counts["planned_users"] == 0
    assert again.counts.get("awaiting_email_verification") == 6  # individuals: sms after email

    # No value of the registration fields is in the ledger, the attempts table or the figures.
    stored = repr(warehouse_db.query("SELECT * FROM sfox_onboarding_ledger"))
    stored += repr(warehouse_db.query("SELECT * FROM sfox_onboarding_ledger_attempts"))
    stored += repr(planned.counts) + repr(again.counts)
    leaked = [value for value in personal_values(rows) if value in stored]
    assert leaked == []


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"first_name": None}, "first_name is missing"),
        ({"account_purpose": "Speculation"}, "account_purpose is not one of"),
        ({"phone_country_code": "USA"}, "phone_country_code is not an ISO 3166-1 alpha-2"),
        ({"individual": '{"dob": "31/12/1980"}'}, "individual.dob is not a date"),
        ({"individual": '{"ssn": "x"}'}, "individual.dob is missing"),
        ({"individual": "{not json"}, "individual is not valid JSON"),
    ],
)
def test_rejected_rows_name_the_field_and_never_its_value(warehouse_db, sfox_sandbox, override, field):
    rows = [individual(1, **override), individual(2)]
    seed_registration_source(warehouse_db, rows)
    warehouse = Warehouse.from_conn_id("sfox_warehouse")

    planned = plan(warehouse, "r1")

    assert planned.counts["rejected"] == 1
    ((reason, _),) = planned.counts["rejected_reasons"].items()
    assert field in reason
    for value in override.values():
        if value and len(value) > 3:
            assert value not in reason
    assert warehouse_db.ledger()[("ind-0001", "email")]["state"] == "rejected"
    assert planned.counts["due_individual_registration"] == 1
    assert sfox_sandbox.journal()[-1].path == "/v1/enterprise/users"  # only the plan's list read


def test_an_existing_user_answered_with_an_error_is_settled_registered_by_the_read(
    migration, warehouse_db, sfox_sandbox
):
    warehouse, planned, rows = migration
    existing = rows[0]
    # Someone registered it between the plan's list read and the step: sFOX answers an error.
    sfox_sandbox.seed_users([{k: existing[k] for k in ("user_id", "account_type", "email", "phone_number")}])
    chunk = next(c for c in planned.chunks if c["account_type"] == "individual")

    stats = register(warehouse, "r1", chunk)

    assert stats.outcomes == {"registered": 6}
    seen = requests_by_user(sfox_sandbox, {existing["user_id"]})[existing["user_id"]]
    assert [kind for kind, _ in seen] == ["register", "read"]
    assert seen[0][1] >= 400
    ledger = warehouse_db.ledger()
    assert ledger[(existing["user_id"], "registration")]["state"] == "registered"
    # Our post created nothing: its email code is the email step's, as for any listed user.
    assert (existing["user_id"], "email") not in ledger or ledger[(existing["user_id"], "email")][
        "sends"
    ] == 0


@pytest.mark.parametrize("mode", ["lost", "503", "timeout"])
def test_an_unclear_answer_after_creation_is_found_by_the_read_never_posted_twice(
    migration, warehouse_db, sfox_sandbox, monkeypatch, mode
):
    warehouse, planned, rows = migration
    monkeypatch.setenv(
        "AIRFLOW_CONN_SFOX_DEFAULT", sfox_conn_json(sfox_sandbox.url, rate_limit_requests=0, timeout=1)
    )
    faulted = {"ind-0001", "ind-0003", "corp-0002"}
    for uid in faulted:  # created, first code sent, then the answer is lost, a 503, or too late
        sfox_sandbox.set_register_fault(uid, mode=mode, times=1, seconds=3)

    for chunk in planned.chunks:
        register(warehouse, "r1", chunk)

    ids = {row["user_id"] for row in rows}
    assert sfox_sandbox.register_requests() == dict.fromkeys(ids, 1)  # none registered twice
    seen = requests_by_user(sfox_sandbox, ids)
    for uid in ids:
        kinds = [kind for kind, _ in seen[uid]]
        assert kinds == (["register", "read"] if uid in faulted else ["register"]), uid
        assert sfox_sandbox.codes(uid)["email"]["count"] == 1
    ledger = warehouse_db.ledger()
    assert {ledger[(uid, "registration")]["state"] for uid in ids} == {"registered"}
    assert {(ledger[(uid, "email")]["state"], ledger[(uid, "email")]["sends"]) for uid in ids} == {
        ("sent", 1)
    }


def test_random_lost_answers_never_make_two_registrations_without_a_read(
    migration, warehouse_db, sfox_sandbox
):
    warehouse, planned, rows = migration
    sfox_sandbox.set_faults(drop_rate=0.4)  # any request: processed, then the connection reset

    for chunk in planned.chunks:
        for _ in range(20):  # the step's retries, as Airflow would run them
            try:
                register(warehouse, "r1", chunk, sleep=lambda s: time.sleep(s / 50))
                break
            except ChunkStopped:
                continue
    sfox_sandbox.set_faults(drop_rate=0.0)

    ids = {row["user_id"] for row in rows}
    seen = requests_by_user(sfox_sandbox, ids)
    for uid in ids:
        kinds = [kind for kind, _ in seen[uid]]
        for before, after in itertools.pairwise(kinds):
            assert (before, after) != ("register", "register"), (uid, kinds)
        assert sfox_sandbox.codes(uid)["email"]["count"] == 1, (uid, kinds)  # created once
    assert sum(sfox_sandbox.register_requests().values()) == len(ids)
    ledger = warehouse_db.ledger()
    assert {ledger[(uid, "registration")]["state"] for uid in ids} == {"registered"}


def test_a_claim_left_by_a_killed_step_is_settled_by_a_read(migration, warehouse_db, sfox_sandbox):
    warehouse, planned, _ = migration
    chunk = next(c for c in planned.chunks if c["account_type"] == "corporation")
    landed, unsent = "corp-0000", "corp-0001"
    # A try claimed two users and died: one post had reached sFOX (created), the other had not.
    with SfoxConnectHook() as hook:
        hook.create_user(source_bodies(warehouse, SOURCE, [landed])[landed])
    with warehouse.connect() as conn:
        warehouse.claim(conn, [landed, unsent], channel="registration", run=RunRef("sfox_test", "r0"))
        conn.commit()
    sfox_sandbox.clear_journal()

    stats = register(warehouse, "r1", chunk)

    assert stats.lost == 2
    seen = requests_by_user(sfox_sandbox, {landed, unsent})
    assert [kind for kind, _ in seen[landed]] == ["read"]
    assert [kind for kind, _ in seen[unsent]] == ["read", "register"]
    ledger = warehouse_db.ledger()
    assert {ledger[(uid, "registration")]["state"] for uid in (landed, unsent)} == {"registered"}
    assert warehouse_db.claimed() == set()


def test_a_refusal_is_failed_scrubbed_and_tried_again_only_when_the_fields_change(
    warehouse_db, sfox_sandbox, monkeypatch
):
    monkeypatch.setenv("AIRFLOW_CONN_SFOX_DEFAULT", sfox_conn_json(sfox_sandbox.url, rate_limit_requests=0))
    # Our checks pass it (the address's keys are not documented); sFOX refuses it.
    refused = individual(1, individual='{"dob": "1980-02-03", "ssn": "912-77-0001"}')
    sfox_sandbox.set_register_answer("invalid", 400, "Invalid {field}: {reason} (Ada1x Lovelace1y)")
    seed_registration_source(warehouse_db, [refused, individual(2)])
    warehouse = Warehouse.from_conn_id("sfox_warehouse")

    (chunk,) = plan(warehouse, "r1").chunks
    stats = register(warehouse, "r1", chunk)

    assert stats.outcomes == {"failed": 1, "registered": 1}
    row = warehouse_db.ledger()[("ind-0001", "registration")]
    assert row["state"] == "failed"
    assert row["last_error"].startswith("sFOX refused the registration (400): Invalid individual")
    kept = row["last_error"] + repr(warehouse_db.attempts())
    assert "Ada1x" not in kept  # scrubbed, in the ledger and in the attempts table
    assert "Lovelace1y" not in kept
    assert "<redacted> <redacted>" in kept
    assert [kind for kind, _ in requests_by_user(sfox_sandbox, {"ind-0001"})["ind-0001"]] == [
        "register",
        "read",
    ]
    (stored,) = warehouse_db.query(
        "SELECT fields_hmac FROM sfox_onboarding_ledger "
        "WHERE user_id = 'ind-0001' AND channel = 'registration'"
    )
    assert len(stored[0]) == 64  # a keyed hash of the fields, never the fields

    # The same fields: not tried again, whatever the wait; a re-drive of failed tries them.
    assert plan(warehouse, "r2", dry_run=True).counts["planned_users"] == 0
    assert plan(warehouse, "r3", dry_run=True, redrive=["failed"]).counts["planned_users"] == 1
    # The partner fixes the row: its fields changed, so it is registered by the next run.
    seed_registration_source(warehouse_db, [individual(1), individual(2)])
    again = plan(warehouse, "r4")
    assert again.counts["due_individual_registration"] == 1
    assert register(warehouse, "r4", again.chunks[0]).outcomes == {"registered": 1}


@pytest.mark.parametrize(
    ("failures", "hours_ago", "redrive", "due", "count", "after"),
    [
        (1, 0.1, [], 0, "retry_waiting_registration", "failed"),  # waits its 1 h
        (1, 2.0, [], 1, "retry_registration", "failed"),
        (2, 2.0, [], 0, "retry_waiting_registration", "failed"),  # its second wait: 4 h
        (4, 2.0, [], 0, "gave_up_registration", "gave_up"),  # max_tries 4
        (4, 2.0, ["failed"], 1, "redrive_registration", "failed"),
        (1, 0.1, ["uncertain"], 1, "redrive_registration", "failed"),  # its post may have landed
    ],
)
def test_a_registration_failed_without_a_refusal_waits_and_is_given_up_like_any_channel(
    warehouse_db, sfox_sandbox, monkeypatch, failures, hours_ago, redrive, due, count, after
):
    # A user whose own posts kept answering 5xx while others were registered: failed, and no
    # keyed hash (sFOX refused nothing). Tried again after the growing waits, not every run.
    monkeypatch.setenv("AIRFLOW_CONN_SFOX_DEFAULT", sfox_conn_json(sfox_sandbox.url, rate_limit_requests=0))
    seed_registration_source(warehouse_db, [individual(1)])
    warehouse = Warehouse.from_conn_id("sfox_warehouse")
    warehouse.create_tables()
    with warehouse.connect() as conn:
        failed = ("ind-0001", "registration", "individual", "failed", None, "HTTP 503")
        warehouse.upsert_plan(conn, [failed], run=RunRef("sfox_test", "r0"))
        conn.commit()
    at = warehouse_db.timestamp(datetime.now(timezone.utc) - timedelta(hours=hours_ago))
    warehouse_db.query(
        "UPDATE sfox_onboarding_ledger SET failures = ?, last_request_at = ?, uncertain = ? "
        "WHERE channel = 'registration'",
        (failures, at, int(redrive == ["uncertain"])),
    )

    planned = plan(warehouse, "r1", redrive=redrive)

    assert (planned.counts["planned_users"], planned.counts[count]) == (due, 1)
    assert warehouse_db.ledger()[("ind-0001", "registration")]["state"] == ("queued" if due else after)
    if after == "gave_up":  # with its cause, and stays so: only a re-drive registers it again
        assert warehouse_db.ledger()[("ind-0001", "registration")]["last_error"].endswith(": HTTP 503")
        assert plan(warehouse, "r2").counts["planned_users"] == 0
        assert plan(warehouse, "r3", dry_run=True, redrive=["gave_up"]).counts["planned_users"] == 1
    assert sfox_sandbox.register_requests() == {}  # planning posts nothing


@pytest.mark.parametrize("earlier", ["not_registered", "gave_up"])
def test_rows_sfox_did_not_know_are_registered_by_the_next_run_without_a_redrive(
    warehouse_db, sfox_sandbox, monkeypatch, earlier
):
    monkeypatch.setenv("AIRFLOW_CONN_SFOX_DEFAULT", sfox_conn_json(sfox_sandbox.url, rate_limit_requests=0))
    rows = [individual(1), corporation(1)]
    seed_registration_source(warehouse_db, rows)
    warehouse = Warehouse.from_conn_id("sfox_warehouse")
    warehouse.create_tables()
    with warehouse.connect() as conn:  # what runs without registration left: 404s, retried, given up
        warehouse.upsert_plan(
            conn,
            [(r["user_id"], "email", r["account_type"], earlier, None, "HTTP 404") for r in rows],
            run=RunRef("sfox_test", "r0"),
        )
        conn.commit()

    planned = plan(warehouse, "r1")
    assert planned.counts["planned_users"] == 2
    for chunk in planned.chunks:
        register(warehouse, "r1", chunk)

    ledger = warehouse_db.ledger()
    for row in rows:
        assert ledger[(row["user_id"], "registration")]["state"] == "registered"
        assert (ledger[(row["user_id"], "email")]["state"], ledger[(row["user_id"], "email")]["sends"]) == (
            "sent",
            1,
        )
    assert _sends_of(sfox_sandbox) == []


def _sends_of(sandbox):
    return [e for e in sandbox.journal() if "/send-verification/" in e.path]


def test_a_source_without_a_registration_column_fails_the_plan_before_any_request(
    warehouse_db, sfox_sandbox, monkeypatch
):
    monkeypatch.setenv("AIRFLOW_CONN_SFOX_DEFAULT", sfox_conn_json(sfox_sandbox.url, rate_limit_requests=0))
    warehouse_db.seed([("u1", "individual", "u1@example.com", "+12025550100")])  # no registration columns
    warehouse = Warehouse.from_conn_id("sfox_warehouse")

    with pytest.raises(ValueError, match=r"no column 'first_name' \(field first_name\)"):
        plan(warehouse, "r1")
    assert sfox_sandbox.journal() == []


def test_an_erase_run_removes_one_users_records_and_plans_nothing(migration, warehouse_db, sfox_sandbox):
    warehouse, planned, rows = migration
    for chunk in planned.chunks:
        register(warehouse, "r1", chunk)
    gone, kept = rows[0]["user_id"], rows[1]["user_id"]
    before = len(warehouse_db.attempts())
    sfox_sandbox.clear_journal()

    dry = plan(warehouse, "r2", erase_user_ids=[gone], dry_run=True)
    assert dry.counts["erased_rows"] == 0
    assert (gone, "registration") in warehouse_db.ledger()
    erased = plan(warehouse, "r3", erase_user_ids=[gone])

    assert erased.chunks == []
    assert erased.counts["erased_rows"] == 3  # its registration and email rows, its one attempt
    ledger = warehouse_db.ledger()
    assert {uid for uid, _ in ledger} == {row["user_id"] for row in rows} - {gone}
    assert gone not in {a["user_id"] for a in warehouse_db.attempts()}
    assert len(warehouse_db.attempts()) == before - 1
    assert (kept, "registration") in ledger
    assert sfox_sandbox.journal() == []  # no request: not even the list


def test_the_page_shows_the_registered_step_and_the_registration_attempt(
    migration, warehouse_db, sfox_sandbox
):
    from airflow_sfox.plugins.dashboard import DashboardSettings
    from airflow_sfox.plugins.lookups import Lookups

    warehouse, planned, rows = migration
    for chunk in planned.chunks:
        register(warehouse, "r1", chunk)
    page = Lookups(warehouse, DashboardSettings())

    funnel = {row["account_type"]: row for row in page.summary()["funnel"]}
    assert {
        kind: (row["seen"], row["registered"], row["email_requested"]) for kind, row in funnel.items()
    } == {
        "corporation": (4, 4, 4),
        "individual": (6, 6, 6),
    }
    user = page.user(rows[0]["user_id"])
    assert [record["channel"] for record in user["ledger"]][:2] == ["registration", "email"]
    assert "fields_hmac" not in user["ledger"][0]
    assert [(a["channel"], a["outcome"], a["status"]) for a in user["attempts"]] == [
        ("registration", "registered", 200)
    ]


def test_a_run_that_sends_no_email_code_registers_nobody(migration, warehouse_db, sfox_sandbox):
    warehouse, _, _ = migration
    sms_only = plan(warehouse, "r2", channels=["sms"])
    assert sms_only.counts["planned_users"] == 0  # registering would send the first email code
    assert plan(warehouse, "r3", channels=["email"]).counts["due_individual_registration"] == 6
