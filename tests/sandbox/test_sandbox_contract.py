"""The sandbox against the API contract (``sfox-connect-api.md``), never against the provider.

Every expectation here is written out from the contract's text: which channels each account
type verifies and in which order, what ``requirements`` and ``status`` say, and the documented
422 texts. Nothing is imported from ``airflow_sfox``: a rule the provider gets wrong must not
make these tests agree with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Sandbox

# "Corporations verify email only. Individuals verify email and sms, and email must be verified
# before an sms code may be requested." ``verified``: channels the seed marks verified.
SEND_CASES = [
    ("individual", (), "email", 200, None),
    ("individual", (), "sms", 422, None),  # email first; the text is not documented
    ("individual", ("email",), "sms", 200, None),
    ("individual", ("email",), "email", 422, "Email already verified"),
    ("individual", ("email", "sms"), "sms", 422, "Phone number has already been verified"),
    ("corporation", (), "email", 200, None),
    ("corporation", ("email",), "email", 422, "Email already verified"),
]
# ``requirements`` are "the remaining requirements": true while a channel is to be verified;
# ``{"email": false, "sms": false}`` on a verified user.
USER_CASES = [
    ("individual", (), {"email": True, "sms": True}, "PENDING"),
    ("individual", ("email",), {"email": False, "sms": True}, "PENDING"),
    ("individual", ("email", "sms"), {"email": False, "sms": False}, "VERIFIED"),
    ("corporation", (), {"email": True, "sms": False}, "PENDING"),
    ("corporation", ("email",), {"email": False, "sms": False}, "VERIFIED"),
]


def _seed(sandbox: Sandbox, account_type: str, verified: tuple[str, ...]) -> str:
    user = {"user_id": "u-1", "account_type": account_type, "email": "u1@example.com"}
    if account_type == "individual":
        user["phone_number"] = "+12223334444"
    user |= {"email_verified": "email" in verified, "phone_verified": "sms" in verified}
    sandbox.seed(user)
    return "u-1"


@pytest.mark.parametrize(("account_type", "verified", "channel", "status", "error"), SEND_CASES)
def test_send_verification_follows_the_contract(
    sandbox: Sandbox,
    account_type: str,
    verified: tuple[str, ...],
    channel: str,
    status: int,
    error: str | None,
) -> None:
    user_id = _seed(sandbox, account_type, verified)
    resp = sandbox.send(user_id, channel)
    assert resp.status_code == status, resp.text
    if status == 200:
        contact = {"email": ("email", "u1@example.com"), "sms": ("phone_number", "+12223334444")}[channel]
        assert resp.json() == {"data": {"user_id": user_id, "type": channel, contact[0]: contact[1]}}
    else:
        assert set(resp.json()) == {"error"}
        if error is not None:
            assert resp.json()["error"] == error
    assert sandbox.server.codes(user_id)[channel]["count"] == (1 if status == 200 else 0)


def test_a_corporation_has_no_phone_to_verify(sandbox: Sandbox) -> None:
    """sms is not a corporation's channel: refused whatever the state, and no code goes out."""
    user_id = _seed(sandbox, "corporation", ("email",))
    resp = sandbox.send(user_id, "sms")
    assert 400 <= resp.status_code < 500
    assert resp.status_code != 200
    assert sandbox.server.codes(user_id)["sms"]["count"] == 0


@pytest.mark.parametrize(("account_type", "verified", "requirements", "status"), USER_CASES)
def test_user_object_follows_the_contract(
    sandbox: Sandbox,
    account_type: str,
    verified: tuple[str, ...],
    requirements: dict[str, bool],
    status: str,
) -> None:
    user_id = _seed(sandbox, account_type, verified)
    user = sandbox.api("GET", f"/v1/enterprise/users/{user_id}").json()["data"]
    assert (user["requirements"], user["status"]) == (requirements, status)


@pytest.mark.parametrize(
    ("account_type", "order"),
    [("individual", ["email", "sms"]), ("corporation", ["email"])],
)
def test_verifying_each_channel_in_order_makes_the_user_verified(
    sandbox: Sandbox, account_type: str, order: list[str]
) -> None:
    user_id = _seed(sandbox, account_type, ())
    for done, channel in enumerate(order, start=1):
        assert sandbox.send(user_id, channel).status_code == 200
        assert sandbox.verify(user_id, channel, sandbox.latest_code(user_id, channel)).status_code == 200
        user = sandbox.api("GET", f"/v1/enterprise/users/{user_id}").json()["data"]
        assert user["status"] == ("VERIFIED" if done == len(order) else "PENDING")
    assert user["requirements"] == {"email": False, "sms": False}
