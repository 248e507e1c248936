"""register-account against the API contract (``sfox-connect-api.md``, "Registering end users").

The expectations are written out from the contract's text, not read from the sandbox's own
tables: the required fields per account type, the documented formats and ``account_purpose``
values, the first email code sFOX sends at creation, and the answers sFOX does not document
(an existing ``user_id``, a validation failure), which are configurable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import requests

from sfox_sandbox import SandboxConfig, SandboxServer
from sfox_sandbox.config import RegisterAnswer
from tests.sandbox.conftest import INDIVIDUAL, SANDBOX_TOKEN
from tests.sandbox.registrations import DELETE, REGISTER, registration

if TYPE_CHECKING:
    from tests.sandbox.conftest import Sandbox

KINDS = ("us-individual", "individual", "corporation")
TOP_LEVEL = (
    "user_id",
    "account_type",
    "first_name",
    "last_name",
    "email",
    "phone_country_code",
    "phone_number",
    "account_purpose",
)
# The contract's lists, copied from its text.
INDIVIDUAL_PURPOSES = (
    "Trading",
    "Selling only",
    "Other",
    "Online purchases",
    "Online payments",
    "Investing",
    "Buying only",
    "Business",
)
CORPORATION_PURPOSES = (
    "Treasury Management",
    "Operating",
    "Liquidating Crypto Assets",
    "Investment Fund",
    "Cross Border Payments",
    "Arbitrage Trading",
    "Other",
)

# (kind, path removed, field the answer names, rest of the answer)
MISSING = [(kind, name, name, "is required") for kind in KINDS for name in TOP_LEVEL] + [
    ("us-individual", "individual", "individual", "is required for individual accounts"),
    ("us-individual", "individual.dob", "individual.dob", "is required"),
    ("us-individual", "individual.address", "individual.address", "is required"),
    ("us-individual", "individual.address.street", "individual.address.street", "is required"),
    ("us-individual", "individual.address.city", "individual.address.city", "is required"),
    ("us-individual", "individual.address.postal_code", "individual.address.postal_code", "is required"),
    ("us-individual", "individual.address.country", "individual.address.country", "is required"),
    ("us-individual", "individual.ssn", "individual.ssn", "is required"),
    ("individual", "individual.passport_number", "individual.passport_number", "is required"),
    ("individual", "individual.passport_country", "individual.passport_country", "is required"),
    ("corporation", "business", "business", "is required for corporation accounts"),
    ("corporation", "beneficial_owners", "beneficial_owners", "is required for corporation accounts"),
]

# (kind, path, value, field the answer names)
MALFORMED = [
    ("us-individual", "email", " grace@example.com", "email"),
    ("us-individual", "email", "grace@example.com ", "email"),
    ("us-individual", "email", "grace.example.com", "email"),
    ("us-individual", "email", "grace@example", "email"),
    ("us-individual", "email", "a@b@example.com", "email"),
    ("corporation", "email", 42, "email"),
    ("us-individual", "phone_number", "2025550123", "phone_number"),
    ("us-individual", "phone_number", "+02025550123", "phone_number"),
    ("us-individual", "phone_number", "+1 202 555 0123", "phone_number"),
    ("us-individual", "phone_number", "+12345", "phone_number"),
    ("us-individual", "phone_number", "+1234567890123456", "phone_number"),
    ("corporation", "phone_number", "(202) 555-0123", "phone_number"),
    ("us-individual", "phone_country_code", "us", "phone_country_code"),
    ("us-individual", "phone_country_code", "USA", "phone_country_code"),
    ("corporation", "phone_country_code", "U1", "phone_country_code"),
    ("us-individual", "account_purpose", "investing", "account_purpose"),
    ("us-individual", "account_purpose", "Treasury Management", "account_purpose"),
    ("corporation", "account_purpose", "Trading", "account_purpose"),
    ("us-individual", "account_type", "business", "account_type"),
    ("us-individual", "account_role", "owner", "account_role"),
    ("us-individual", "account_role", 5, "account_role"),
    ("us-individual", "advisor_user_id", 5, "advisor_user_id"),
    ("us-individual", "first_name", "   ", "first_name"),
    ("corporation", "last_name", 7, "last_name"),
    ("us-individual", "user_id", ["new-1"], "user_id"),
    ("us-individual", "individual", "yes", "individual"),
    ("us-individual", "individual", {}, "individual"),
    ("us-individual", "individual.dob", "01/31/1990", "individual.dob"),
    ("us-individual", "individual.dob", "1990-1-31", "individual.dob"),
    ("us-individual", "individual.dob", "1990-02-30", "individual.dob"),
    ("us-individual", "individual.dob", "2999-01-01", "individual.dob"),
    ("us-individual", "individual.dob", "1899-12-31", "individual.dob"),
    ("us-individual", "individual.dob", 19900131, "individual.dob"),
    ("us-individual", "individual.address", "1 Main St, Arlington", "individual.address"),
    ("us-individual", "individual.address", {}, "individual.address"),
    ("us-individual", "individual.address.country", "USA", "individual.address.country"),
    ("us-individual", "individual.address.country", "us", "individual.address.country"),
    ("us-individual", "individual.address.city", 12, "individual.address.city"),
    ("us-individual", "individual.ssn", "12345678", "individual.ssn"),
    ("us-individual", "individual.ssn", "123-45-678x", "individual.ssn"),
    ("individual", "individual.passport_country", "France", "individual.passport_country"),
    ("corporation", "business", "Acme Inc", "business"),
    ("corporation", "business", {}, "business"),
    ("corporation", "beneficial_owners", [], "beneficial_owners"),
    ("corporation", "beneficial_owners", {"first_name": "Wile"}, "beneficial_owners"),
    ("corporation", "beneficial_owners.0", "Wile Coyote", "beneficial_owners[0]"),
    ("corporation", "beneficial_owners.0", {}, "beneficial_owners[0]"),
    ("corporation", "beneficial_owners.0.dob", "05/05/1970", "beneficial_owners[0].dob"),
]

# (kind, changes, requirements, role shown)
VALID = [
    ("us-individual", {}, {"email": True, "sms": True}, "Client"),
    ("individual", {}, {"email": True, "sms": True}, "Client"),
    ("corporation", {}, {"email": True, "sms": False}, "Client"),
    ("us-individual", {"account_role": "advisor"}, {"email": True, "sms": True}, "Advisor"),
    ("us-individual", {"account_role": "Advisor"}, {"email": True, "sms": True}, "Advisor"),
    ("us-individual", {"account_role": DELETE}, {"email": True, "sms": True}, "Client"),
    ("corporation", {"account_role": "advisor"}, {"email": True, "sms": False}, "Advisor"),
    # the key names inside individual{} are not documented: common spellings pass
    (
        "us-individual",
        {
            "individual.address": DELETE,
            "individual.residential_address": {
                "street_address": "1 Main St",
                "city": "Arlington",
                "zip": "22201",
                "country_code": "US",
            },
            "individual.ssn": "123456789",
        },
        {"email": True, "sms": True},
        "Client",
    ),
    (
        "individual",
        {
            "individual.address": DELETE,
            "individual.address_line_1": "2 rue Haute",
            "individual.city": "Paris",
            "individual.postcode": "75001",
            "individual.country": "FR",
            "individual.passport_country": DELETE,
            "individual.passport_issuing_country": "FR",
        },
        {"email": True, "sms": True},
        "Client",
    ),
    # the contract is incomplete: unknown extra fields pass
    (
        "us-individual",
        {"source_of_funds": "Salary", "individual.occupation": "Engineer", "individual.address.state": "VA"},
        {"email": True, "sms": True},
        "Client",
    ),
    (
        "corporation",
        {"business.ein": "12-3456789", "beneficial_owners.0.ownership": 60},
        {"email": True, "sms": False},
        "Client",
    ),
]


def _post(sandbox: Sandbox, body: Any) -> requests.Response:
    return sandbox.api("POST", REGISTER, json=body)


def _assert_nothing_created(sandbox: Sandbox, user_id: str = "new-1") -> None:
    assert sandbox.api("GET", f"/v1/enterprise/users/{user_id}").status_code == 404
    assert sandbox.all_users() == []
    assert sandbox.journal()[-1]["code_sent"] is False


# --------------------------------------------------------------------------- created
@pytest.mark.parametrize(("kind", "changes", "requirements", "role"), VALID)
def test_a_valid_body_creates_a_pending_user_and_sends_the_first_email_code(
    sandbox: Sandbox, kind: str, changes: dict[str, Any], requirements: dict[str, bool], role: str
) -> None:
    body = registration(kind, **changes)
    resp = _post(sandbox, body)
    assert resp.status_code == 200, resp.text
    user = sandbox.api("GET", "/v1/enterprise/users/new-1").json()["data"]
    assert (user["status"], user["requirements"], user["account_role"]) == ("PENDING", requirements, role)
    assert (user["account_type"], user["email"], user["phone_number"]) == (
        body["account_type"],
        body["email"],
        body["phone_number"],
    )
    # "Upon successfully creating an account, sFOX will send a verification OTP code directly
    # to the email of the account": one email code, no sms code.
    codes = sandbox.server.codes("new-1")
    assert (codes["email"]["count"], codes["sms"]["count"]) == (1, 0)
    entry = sandbox.journal()[0]
    assert (entry["path"], entry["user_id"], entry["status"]) == (REGISTER, "new-1", 200)
    assert (entry["code_sent"], entry["type"]) == (True, "email")
    assert sandbox.server.register_requests() == {"new-1": 1}


@pytest.mark.parametrize(
    ("kind", "purpose"),
    [("us-individual", p) for p in INDIVIDUAL_PURPOSES] + [("corporation", p) for p in CORPORATION_PURPOSES],
)
def test_every_documented_account_purpose_is_accepted(sandbox: Sandbox, kind: str, purpose: str) -> None:
    assert _post(sandbox, registration(kind, account_purpose=purpose)).status_code == 200


@pytest.mark.parametrize(
    ("kind", "channels"), [("us-individual", ["email", "sms"]), ("corporation", ["email"])]
)
def test_the_first_code_verifies_the_email_then_the_user_goes_on_as_usual(
    sandbox: Sandbox, kind: str, channels: list[str]
) -> None:
    assert _post(sandbox, registration(kind)).status_code == 200
    for channel in channels:
        if channel != "email":  # the email code came with the registration
            assert sandbox.send("new-1", channel).status_code == 200
        assert sandbox.verify("new-1", channel, sandbox.latest_code("new-1", channel)).status_code == 200
    user = sandbox.api("GET", "/v1/enterprise/users/new-1").json()["data"]
    assert (user["status"], user["requirements"]) == ("VERIFIED", {"email": False, "sms": False})


def test_without_register_sends_code_no_code_goes_out() -> None:
    config = SandboxConfig(token=SANDBOX_TOKEN, register_sends_code=False)
    with SandboxServer(config) as server:
        resp = requests.post(
            server.url + REGISTER,
            json=registration(),
            headers={"Authorization": f"Bearer {SANDBOX_TOKEN}"},
            timeout=10,
        )
        assert resp.status_code == 200, resp.text
        assert server.codes("new-1")["email"]["count"] == 0
        assert server.journal()[0].code_sent is False


# --------------------------------------------------------------------------- refused
@pytest.mark.parametrize(("kind", "path", "field", "reason"), MISSING)
def test_a_missing_required_field_is_refused_by_name(
    sandbox: Sandbox, kind: str, path: str, field: str, reason: str
) -> None:
    resp = _post(sandbox, registration(kind, **{path: DELETE}))
    assert resp.status_code == 400
    assert resp.json() == {"error": f"{field} {reason}"}
    _assert_nothing_created(sandbox)
    # counted for its user_id, unless the body has none
    assert sandbox.server.register_requests() == ({} if path == "user_id" else {"new-1": 1})


@pytest.mark.parametrize("path", ["first_name", "email", "individual.dob", "individual.address.city"])
def test_an_empty_string_is_missing(sandbox: Sandbox, path: str) -> None:
    resp = _post(sandbox, registration(**{path: ""}))
    assert resp.json() == {"error": f"{path} is required"}


@pytest.mark.parametrize(("kind", "path", "value", "field"), MALFORMED)
def test_a_malformed_value_is_refused_naming_the_field_never_the_value(
    sandbox: Sandbox, kind: str, path: str, value: Any, field: str
) -> None:
    resp = _post(sandbox, registration(kind, **{path: value}))
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert set(resp.json()) == {"error"}
    assert error.startswith(f"{field} ")
    assert "must be" in error
    if isinstance(value, str) and len(value.strip()) > 3:  # shorter ones may be in any word
        assert value.strip() not in error
    _assert_nothing_created(sandbox)


@pytest.mark.parametrize(
    "body",
    ["not json", ["a", "list"]],
)
def test_a_body_that_is_no_json_object_is_400_and_not_counted(sandbox: Sandbox, body: Any) -> None:
    kwargs = {"data": body} if isinstance(body, str) else {"json": body}
    resp = sandbox.api("POST", REGISTER, **kwargs)
    assert resp.status_code == 400
    assert set(resp.json()) == {"error"}
    assert sandbox.server.register_requests() == {}
    assert sandbox.all_users() == []


@pytest.mark.parametrize(
    ("existing", "user_id"),
    [("seeded", "ind-1"), ("generated", "user-4"), ("registered", "new-1")],
)
def test_an_existing_user_id_gets_the_existing_answer_and_stays_as_it_was(
    sandbox: Sandbox, existing: str, user_id: str
) -> None:
    if existing == "seeded":
        sandbox.seed(INDIVIDUAL)
    elif existing == "generated":
        sandbox.server.generate_users(10)
    else:
        assert _post(sandbox, registration()).status_code == 200
    before = sandbox.api("GET", f"/v1/enterprise/users/{user_id}").json()["data"]
    codes_before = sandbox.server.codes(user_id)["email"]["count"]
    body = registration("corporation", user_id=user_id, email="other@example.com")
    resp = _post(sandbox, body)
    assert resp.status_code == 400
    assert resp.json() == {"error": "User already exists"}
    assert sandbox.api("GET", f"/v1/enterprise/users/{user_id}").json()["data"] == before
    assert sandbox.server.codes(user_id)["email"]["count"] == codes_before
    assert sandbox.journal()[-1]["code_sent"] is False
    assert sandbox.server.register_requests()[user_id] == (2 if existing == "registered" else 1)


# ------------------------------------------------------------------ configured answers
@pytest.mark.parametrize("via", ["python", "admin"])
@pytest.mark.parametrize(
    ("kind", "body", "status", "text", "expected"),
    [
        ("existing", registration(), 409, "Conflict: {field} {reason}", "Conflict: user_id already exists"),
        ("existing", registration(), 422, "Account exists", "Account exists"),
        ("invalid", registration(email="nope"), 422, "Invalid field {field}", "Invalid field email"),
        ("invalid", registration(**{"individual.dob": DELETE}), 400, "{reason}!", "is required!"),
    ],
)
def test_the_undocumented_answers_are_configurable(
    sandbox: Sandbox, via: str, kind: str, body: dict[str, Any], status: int, text: str, expected: str
) -> None:
    if kind == "existing":
        assert _post(sandbox, body).status_code == 200
    if via == "python":
        assert sandbox.server.set_register_answer(kind, status, text) == {"status": status, "error": text}
    else:
        answer = {"status": status, "error": text}
        assert sandbox.admin_data("PUT", f"register-answers/{kind}", json=answer) == answer
    assert sandbox.admin_data("GET", "register-answers")[kind] == {"status": status, "error": text}
    resp = _post(sandbox, body)
    assert (resp.status_code, resp.json()) == (status, {"error": expected})
    sandbox.server.reset()
    assert sandbox.admin_data("GET", "register-answers") == {
        "existing": {"status": 400, "error": "User already exists"},
        "invalid": {"status": 400, "error": "{field} {reason}"},
    }


def test_a_partial_admin_update_keeps_the_other_half(sandbox: Sandbox) -> None:
    assert sandbox.admin_data("PUT", "register-answers/existing", json={"status": 409}) == {
        "status": 409,
        "error": "User already exists",
    }


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("register-answers/other", {"status": 400}),
        ("register-answers/existing", {"status": 200}),
        ("register-answers/existing", {"status": 600}),
        ("register-answers/existing", {"status": "409"}),
        ("register-answers/existing", {"status": True}),
        ("register-answers/invalid", {"error": ""}),
        ("register-answers/invalid", {"error": "a\nb"}),
        ("register-answers/invalid", {"error": 5}),
        ("register-answers/invalid", {"colour": "red"}),
    ],
)
def test_an_invalid_answer_setting_is_400_and_changes_nothing(
    sandbox: Sandbox, path: str, body: dict[str, Any]
) -> None:
    before = sandbox.admin_data("GET", "register-answers")
    resp = sandbox.admin("PUT", path, json=body)
    assert resp.status_code == 400, resp.text
    assert sandbox.admin_data("GET", "register-answers") == before


@pytest.mark.parametrize(
    ("kind", "status", "text", "message"),
    [("other", 400, "x", "kind"), ("existing", 302, "x", "status"), ("invalid", 400, " ", "error")],
)
def test_set_register_answer_refuses_invalid_values(
    sandbox: Sandbox, kind: str, status: int, text: str, message: str
) -> None:
    with pytest.raises(ValueError, match=f"^{message} must"):
        sandbox.server.set_register_answer(kind, status, text)


def test_the_answers_come_from_the_config() -> None:
    config = SandboxConfig(
        token=SANDBOX_TOKEN,
        register_existing=RegisterAnswer(409, "Taken"),
        register_invalid=RegisterAnswer(422, "Bad {field}"),
    )
    headers = {"Authorization": f"Bearer {SANDBOX_TOKEN}"}
    with SandboxServer(config) as server:
        answers = [
            requests.post(server.url + REGISTER, json=body, headers=headers, timeout=10)
            for body in (registration(), registration(), registration(phone_number="555"))
        ]
        assert [(r.status_code, r.json().get("error")) for r in answers] == [
            (200, None),
            (409, "Taken"),
            (422, "Bad phone_number"),
        ]


def test_an_invalid_configured_answer_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="status"):
        SandboxServer(SandboxConfig(register_existing=RegisterAnswer(200, "ok")))
