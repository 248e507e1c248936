"""The channel rule, exercised end to end against the sandbox: plan, send, and what sFOX received.

The sandbox's rule is its own (from the API contract), so a provider that gets the rule wrong
sends something the sandbox refuses, or leaves a code the sandbox still requires unsent.
``tests/sandbox/test_independence.py`` runs this module with a planted wrong rule and expects
it to fail.
"""

from __future__ import annotations

import pytest

from airflow_sfox.hooks.sfox import SfoxConnectHook
from airflow_sfox.onboarding.config import OnboardingConfig
from airflow_sfox.onboarding.model import RunRef
from airflow_sfox.onboarding.planner import Planner
from airflow_sfox.onboarding.sender import send_chunk
from airflow_sfox.onboarding.warehouse import Warehouse
from tests.helpers import sfox_conn_json
from tests.onboarding_data import sandbox_users

# (user_id, account_type, email, phone), and whether sFOX already lists the email verified.
USERS = [
    ("ind-new", "individual", "ind-new@example.com", "+12025550101"),
    ("ind-mail", "individual", "ind-mail@example.com", "+12025550102"),
    ("corp-new", "corporation", "corp-new@example.com", None),
    ("corp-mail", "corporation", "corp-mail@example.com", None),
]
EMAIL_VERIFIED = {"ind-mail", "corp-mail"}
# From the contract: corporations verify email only; individuals email, then sms.
EXPECTED_SENDS = {("ind-new", "email"), ("ind-mail", "sms"), ("corp-new", "email")}


@pytest.mark.parametrize("warehouse_db", ["sqlite"], indirect=True)
def test_plan_and_send_follow_the_rule_the_sandbox_enforces(warehouse_db, sfox_sandbox, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_SFOX_DEFAULT", sfox_conn_json(sfox_sandbox.url, rate_limit_requests=0))
    warehouse_db.seed(USERS)
    seeds = [{**user, "email_verified": user["user_id"] in EMAIL_VERIFIED} for user in sandbox_users(USERS)]
    sfox_sandbox.seed_users(seeds)
    warehouse = Warehouse.from_conn_id("sfox_warehouse")
    with SfoxConnectHook() as hook:
        plan = Planner(
            warehouse, hook, OnboardingConfig(chunk_size=1000), run=RunRef("sfox_test", "r1")
        ).plan()
        for chunk in plan.chunks:
            for channel in ("email", "sms"):
                if chunk.get(channel):
                    send_chunk(
                        warehouse,
                        hook,
                        run=RunRef("sfox_test", "r1"),
                        chunk=chunk,
                        channel=channel,
                        threads=1,
                    )

    sends = [e for e in sfox_sandbox.journal() if e.method == "POST"]
    # The sandbox accepted every request the provider made: none broke sFOX's rule ...
    assert [(e.user_id, e.type, e.status) for e in sends if e.status != 200] == []
    # ... and every code due by the contract went out, once.
    assert sorted((e.user_id, e.type) for e in sends) == sorted(EXPECTED_SENDS)
    for user_id, channel in EXPECTED_SENDS:
        assert sfox_sandbox.codes(user_id)[channel]["count"] == 1
    # ... and the ledger keeps only channels sFOX itself lists for the user (its requirements).
    ledger = warehouse_db.ledger()
    with SfoxConnectHook() as hook:
        for user_id, *_ in USERS:
            listed = set(hook.get_user(user_id)["requirements"])
            kept = {channel for uid, channel in ledger if uid == user_id}
            assert kept <= listed, (user_id, kept, listed)
