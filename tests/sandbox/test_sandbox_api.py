"""The emulated sFOX Connect routes, through real HTTP: auth, routing, user_id, verification rules."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Sandbox

SEND = "/v1/enterprise/users/send-verification/"
VERIFY = "/v1/enterprise/users/verify/"


# ------------------------------------------------------------------------------ auth
@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"Authorization": "Bearer"}, 401),
        ({"Authorization": "Basic dGVzdC10b2tlbi0xMjM="}, 401),
        ({"Authorization": "test-token-123"}, 401),
        ({"Authorization": "Bearer test-token-1234"}, 401),
        ({"Authorization": "Bearer test-token-123"}, 200),
        ({"Authorization": "bearer test-token-123"}, 200),
    ],
)
def test_bearer_token_is_required(seeded: Sandbox, headers: dict[str, str], expected: int) -> None:
    resp = seeded.api("GET", "/v1/enterprise/users/ind-1", token=None, headers=headers)
    assert resp.status_code == expected
    if expected == 401:
        assert set(resp.json()) == {"error"}
        assert seeded.journal()[-1]["status"] == 401
    else:
        assert resp.json()["data"]["user_id"] == "ind-1"


def test_unauthorized_request_changes_nothing(seeded: Sandbox) -> None:
    resp = seeded.send("ind-1", "email", token="wrong")
    assert resp.status_code == 401
    codes = seeded.admin("GET", "codes/ind-1").json()["data"]
    assert codes["email"]["count"] == 0
    assert seeded.journal()[-1]["code_sent"] is False


# --------------------------------------------------------------------------- routing
@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/v1/enterprise/nothing", 404),
        ("GET", "/v1/enterprise/users/ind-1/extra", 404),
        ("POST", "/v1/enterprise/users/send-verification/", 404),
        ("POST", "/v1/enterprise/users/send-verification/ind-1/x", 404),
        ("POST", "/v1/enterprise/users/send-verification/a/b", 404),
        ("GET", "/v1/other", 404),
        ("GET", "/v2/enterprise/users", 404),
        ("GET", "/", 404),
        ("DELETE", "/v1/enterprise/users/ind-1", 405),
        ("GET", "/v1/enterprise/register-account", 405),
        # routes of sFOX the provider does not call are not emulated
        ("POST", "/v1/enterprise/user-tokens", 404),
        ("POST", "/v1/enterprise/user-tokens/ind-1", 404),
        ("DELETE", "/v1/enterprise/account/ind-1", 404),
    ],
)
def test_unknown_routes(seeded: Sandbox, method: str, path: str, expected: int) -> None:
    resp = seeded.api(method, path, json={"type": "email"})
    assert resp.status_code == expected
    assert "error" in resp.json()
    assert seeded.admin("GET", "codes/ind-1").json()["data"]["email"]["count"] == 0


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/enterprise/users/nobody", None),
        ("POST", SEND + "nobody", {"type": "email"}),
        ("POST", VERIFY + "nobody", {"type": "email", "otp": "123456"}),
    ],
)
def test_unknown_user_is_404(seeded: Sandbox, method: str, path: str, body: Any) -> None:
    resp = seeded.api(method, path, json=body)
    assert resp.status_code == 404
    assert "error" in resp.json()


# ------------------------------------------------------------------------- user_id
@pytest.mark.parametrize(
    ("user_id", "encoded"),
    [
        ("a/b", "a%2Fb"),
        ("with space", "with%20space"),
        ("plus+sign", "plus%2Bsign"),
        ("q?x=1", "q%3Fx%3D1"),
        ("pct%41", "pct%2541"),
        ("émile", "%C3%A9mile"),
    ],
)
def test_user_id_is_one_percent_decoded_segment(sandbox: Sandbox, user_id: str, encoded: str) -> None:
    sandbox.seed({"user_id": user_id, "account_type": "corporation", "email": "x@example.com"})
    resp = sandbox.api("GET", f"/v1/enterprise/users/{encoded}")
    assert resp.status_code == 200
    assert resp.json()["data"]["user_id"] == user_id
    resp = sandbox.send(encoded, "email")
    assert resp.status_code == 200
    assert resp.json()["data"]["user_id"] == user_id
    entry = sandbox.journal()[-1]
    assert entry["user_id"] == user_id
    assert entry["path"] == SEND + encoded
    assert sandbox.server.codes(user_id)["email"]["count"] == 1


def test_plus_in_path_is_not_a_space(sandbox: Sandbox) -> None:
    sandbox.seed({"user_id": "a b", "account_type": "corporation", "email": "x@example.com"})
    assert sandbox.api("GET", "/v1/enterprise/users/a+b").status_code == 404
    assert sandbox.api("GET", "/v1/enterprise/users/a%20b").status_code == 200


def test_invalid_percent_encoding_is_400(sandbox: Sandbox) -> None:
    resp = sandbox.api("GET", "/v1/enterprise/users/%FF%FE")
    assert resp.status_code == 400
    assert "error" in resp.json()


# ------------------------------------------------------------------ register-account
# (register-account has its own tests: test_sandbox_register.py, test_sandbox_register_faults.py)


# ------------------------------------------------------------------ send-verification
def test_send_email_code(seeded: Sandbox) -> None:
    resp = seeded.send("ind-1", "email")
    assert resp.status_code == 200
    assert resp.json() == {"data": {"user_id": "ind-1", "type": "email", "email": "ind1@example.com"}}
    codes = seeded.admin("GET", "codes/ind-1").json()["data"]
    assert re.fullmatch(r"[0-9]{6}", codes["email"]["latest"])
    assert codes["email"]["count"] == 1
    assert codes["sms"] == {"latest": None, "count": 0, "sent_at": None}
    entry = seeded.journal()[-1]
    assert entry["code_sent"] is True
    assert entry["type"] == "email"
    assert entry["status"] == 200


def test_every_send_issues_a_new_code_and_only_the_latest_verifies(seeded: Sandbox) -> None:
    for _ in range(3):
        assert seeded.send("ind-1", "email").status_code == 200
    codes = seeded.server.codes("ind-1")
    assert codes["email"]["count"] == 3
    history = [h["code"] for h in codes["history"]]
    assert history[-1] == codes["email"]["latest"]
    older = [c for c in history[:-1] if c != codes["email"]["latest"]]
    if older:
        assert seeded.verify("ind-1", "email", older[0]).status_code == 422
    assert seeded.verify("ind-1", "email", codes["email"]["latest"]).status_code == 200


@pytest.mark.parametrize(
    "body",
    [{}, {"type": "phone"}, {"type": "EMAIL"}, {"type": 1}, {"type": None}, [], "nope"],
)
def test_send_invalid_type_is_400(seeded: Sandbox, body: Any) -> None:
    kwargs = {"data": body} if isinstance(body, str) else {"json": body}
    resp = seeded.api("POST", SEND + "ind-1", **kwargs)
    assert resp.status_code == 400
    assert set(resp.json()) == {"error"}
    assert seeded.server.codes("ind-1")["email"]["count"] == 0


def test_send_without_body_is_400(seeded: Sandbox) -> None:
    resp = seeded.api("POST", SEND + "ind-1")
    assert resp.status_code == 400


def test_sms_before_email_is_422(seeded: Sandbox) -> None:
    resp = seeded.send("ind-1", "sms")
    assert resp.status_code == 422
    assert resp.json() == {"error": "Email must be verified before phone"}
    assert seeded.server.codes("ind-1")["sms"]["count"] == 0
    assert seeded.journal()[-1]["code_sent"] is False


def test_sms_for_corporation_is_400(seeded: Sandbox) -> None:
    resp = seeded.send("corp-1", "sms")
    assert resp.status_code == 400
    assert "error" in resp.json()
    assert seeded.server.codes("corp-1")["sms"]["count"] == 0


def test_individual_full_flow(seeded: Sandbox) -> None:
    assert seeded.send("ind-1", "email").status_code == 200
    resp = seeded.verify("ind-1", "email", seeded.latest_code("ind-1", "email"))
    assert resp.status_code == 200
    assert resp.json() == {"data": {"success": True, "user_id": "ind-1", "type": "email"}}
    user = seeded.api("GET", "/v1/enterprise/users/ind-1").json()["data"]
    assert (user["status"], user["requirements"]) == ("PENDING", {"email": False, "sms": True})

    resp = seeded.send("ind-1", "email")
    assert resp.status_code == 422
    assert resp.json() == {"error": "Email already verified"}

    resp = seeded.send("ind-1", "sms")
    assert resp.status_code == 200
    assert resp.json() == {"data": {"user_id": "ind-1", "type": "sms", "phone_number": "+12223334444"}}
    assert seeded.verify("ind-1", "sms", seeded.latest_code("ind-1", "sms")).status_code == 200
    user = seeded.api("GET", "/v1/enterprise/users/ind-1").json()["data"]
    assert (user["status"], user["requirements"]) == ("VERIFIED", {"email": False, "sms": False})

    resp = seeded.send("ind-1", "sms")
    assert resp.status_code == 422
    assert resp.json() == {"error": "Phone number has already been verified"}
    codes = seeded.server.codes("ind-1")
    assert (codes["email"]["count"], codes["sms"]["count"]) == (1, 1)


def test_corporation_is_verified_after_email(seeded: Sandbox) -> None:
    user = seeded.api("GET", "/v1/enterprise/users/corp-1").json()["data"]
    assert user["requirements"] == {"email": True, "sms": False}
    assert seeded.send("corp-1", "email").status_code == 200
    assert seeded.verify("corp-1", "email", seeded.latest_code("corp-1", "email")).status_code == 200
    user = seeded.api("GET", "/v1/enterprise/users/corp-1").json()["data"]
    assert (user["status"], user["requirements"]) == ("VERIFIED", {"email": False, "sms": False})


# ---------------------------------------------------------------------------- verify
def test_wrong_otp_is_422_and_changes_nothing(seeded: Sandbox) -> None:
    assert seeded.send("ind-1", "email").status_code == 200
    code = seeded.latest_code("ind-1", "email")
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    resp = seeded.verify("ind-1", "email", wrong)
    assert resp.status_code == 422
    assert resp.json() == {"error": "Invalid verification code"}
    user = seeded.api("GET", "/v1/enterprise/users/ind-1").json()["data"]
    assert user["requirements"]["email"] is True
    # the right code still works after a wrong try
    assert seeded.verify("ind-1", "email", code).status_code == 200


def test_verify_without_code_sent_is_422(seeded: Sandbox) -> None:
    resp = seeded.verify("ind-1", "email", "123456")
    assert resp.status_code == 422
    assert "error" in resp.json()


def test_verify_twice_is_already_verified(seeded: Sandbox) -> None:
    seeded.send("corp-1", "email")
    code = seeded.latest_code("corp-1", "email")
    assert seeded.verify("corp-1", "email", code).status_code == 200
    resp = seeded.verify("corp-1", "email", code)
    assert resp.status_code == 422
    assert resp.json() == {"error": "Email already verified"}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"type": "email"}, 400),
        ({"type": "email", "otp": 123456}, 400),
        ({"type": "email", "otp": ""}, 400),
        ({"otp": "123456"}, 400),
        ({"type": "fax", "otp": "123456"}, 400),
    ],
)
def test_verify_malformed_body(seeded: Sandbox, body: dict[str, Any], expected: int) -> None:
    seeded.send("ind-1", "email")
    resp = seeded.api("POST", VERIFY + "ind-1", json=body)
    assert resp.status_code == expected
    assert "error" in resp.json()


def test_verify_sms_for_corporation_is_400(seeded: Sandbox) -> None:
    assert seeded.verify("corp-1", "sms", "123456").status_code == 400


# ------------------------------------------------------------------------- get users
@pytest.mark.parametrize(
    ("query", "expected_ids"),
    [
        ("", ["ind-1", "corp-1", "adv-1"]),
        ("?accountRole=client", ["ind-1", "corp-1"]),
        ("?accountRole=advisor", ["adv-1"]),
        ("?accountRole=Advisor", ["adv-1"]),
    ],
)
def test_get_users(seeded: Sandbox, query: str, expected_ids: list[str]) -> None:
    resp = seeded.api("GET", "/v1/enterprise/users" + query)
    assert resp.status_code == 200
    users = resp.json()["data"]
    assert [u["user_id"] for u in users] == expected_ids
    roles = {u["user_id"]: u["account_role"] for u in users}
    assert all(role in ("Client", "Advisor") for role in roles.values())
    if "adv-1" in roles:
        assert roles["adv-1"] == "Advisor"


def test_get_users_invalid_role_is_400(seeded: Sandbox) -> None:
    assert seeded.api("GET", "/v1/enterprise/users?accountRole=admin").status_code == 400


def test_user_object_shape(seeded: Sandbox) -> None:
    user = seeded.api("GET", "/v1/enterprise/users/ind-1").json()["data"]
    assert user == {
        "user_id": "ind-1",
        "account_type": "individual",
        "account_role": "Client",
        "email": "ind1@example.com",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "phone_number": "+12223334444",
        "advisor_user_id": None,
        "status": "PENDING",
        "requirements": {"email": True, "sms": True},
    }
