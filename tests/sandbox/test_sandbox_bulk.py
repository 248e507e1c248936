"""The sandbox at scale: generated users (O(1) memory), the streamed user list, pagination."""

from __future__ import annotations

import json

import pytest
import requests

from tests.sandbox.conftest import ADVISOR, INDIVIDUAL, Sandbox
from tests.sandbox.registrations import REGISTER, registration

USERS = "/v1/enterprise/users"


def generate(sandbox: Sandbox, **options: object) -> dict:
    resp = sandbox.admin("POST", "users/generate", json=options)
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]


def test_generate_route(sandbox: Sandbox) -> None:
    data = generate(sandbox, count=1000, prefix="g-", start=5)
    assert data == {
        "prefix": "g-",
        "start": 5,
        "count": 1000,
        "individual_share": 0.7,
        "email_verified_share": 0.33,
        "first": "g-5",
        "last": "g-1004",
        "total_users": 1000,
    }
    user = sandbox.api("GET", f"{USERS}/g-5").json()["data"]
    assert set(user) == set(INDIVIDUAL_API_KEYS)
    assert user["user_id"] == "g-5"
    assert user["email"] == "g-5@example.com"
    assert user["account_role"] == "Client"
    for missing in ("g-4", "g-1005", "g-05", "g-x", "h-5"):
        assert sandbox.api("GET", f"{USERS}/{missing}").status_code == 404, missing


INDIVIDUAL_API_KEYS = (
    "user_id",
    "account_type",
    "account_role",
    "email",
    "first_name",
    "last_name",
    "phone_number",
    "advisor_user_id",
    "status",
    "requirements",
)


def test_generated_shares_and_determinism(sandbox: Sandbox) -> None:
    sandbox.server.generate_users(10_000, individual_share=0.7, email_verified_share=0.33)
    users = [u.to_api() for u in sandbox.server.state.all_users()]
    individuals = [u for u in users if u["account_type"] == "individual"]
    verified = [u for u in users if not u["requirements"]["email"]]
    assert 0.67 < len(individuals) / len(users) < 0.73
    assert 0.30 < len(verified) / len(users) < 0.36
    assert all(u["phone_number"] and u["requirements"]["sms"] for u in individuals)
    assert all(
        u["phone_number"] is None and not u["requirements"]["sms"] for u in users if u not in individuals
    )
    sandbox.server.reset()
    assert sandbox.server.state.user_count == 0
    sandbox.server.generate_users(10_000, individual_share=0.7, email_verified_share=0.33)
    assert [u.to_api() for u in sandbox.server.state.all_users()] == users


def test_generated_users_verify_like_seeded_ones(sandbox: Sandbox) -> None:
    sandbox.server.generate_users(100, individual_share=1.0, email_verified_share=0.0)
    assert sandbox.send("user-7", "sms").status_code == 422  # email first
    assert sandbox.send("user-7", "email").status_code == 200
    assert sandbox.verify("user-7", "email", sandbox.latest_code("user-7", "email")).status_code == 200
    assert sandbox.send("user-7", "email").json() == {"error": "Email already verified"}
    assert sandbox.send("user-7", "sms").status_code == 200
    assert sandbox.verify("user-7", "sms", sandbox.latest_code("user-7", "sms")).status_code == 200
    assert sandbox.api("GET", f"{USERS}/user-7").json()["data"]["status"] == "VERIFIED"
    listed = sandbox.api("GET", USERS).json()["data"]
    assert [u["user_id"] for u in listed] == [f"user-{n}" for n in range(100)]  # still in place
    assert listed[7]["status"] == "VERIFIED"
    assert sandbox.admin("GET", "codes/user-8").status_code == 200


def test_seeds_replace_generated_users_in_place(sandbox: Sandbox) -> None:
    sandbox.server.generate_users(10)
    sandbox.seed({**ADVISOR, "user_id": "user-3"})
    listed = sandbox.api("GET", USERS).json()["data"]
    assert [u["user_id"] for u in listed] == [f"user-{n}" for n in range(10)]
    assert listed[3]["account_role"] == "Advisor"
    advisors = sandbox.api("GET", USERS, params={"accountRole": "advisor"}).json()["data"]
    assert [u["user_id"] for u in advisors] == ["user-3"]
    resp = sandbox.api("POST", REGISTER, json=registration(user_id="user-4"))
    assert (resp.status_code, resp.json()) == (400, {"error": "User already exists"})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "count is required"),
        ({"count": 0}, "count must be"),
        ({"count": "5"}, "count must be"),
        ({"count": 5, "prefix": ""}, "prefix"),
        ({"count": 5, "individual_share": 1.5}, "individual_share"),
        ({"count": 5, "start": -1}, "start"),
        ({"count": 5, "colour": "red"}, "unknown"),
    ],
)
def test_generate_refuses_bad_values(sandbox: Sandbox, options: dict, message: str) -> None:
    resp = sandbox.admin("POST", "users/generate", json=options)
    assert resp.status_code == 400
    assert message in resp.json()["error"]


def test_generate_refuses_collisions(sandbox: Sandbox) -> None:
    generate(sandbox, count=10)
    for options in ({"count": 5, "start": 8}, {"count": 5, "prefix": "user-1"}, {"count": 1, "prefix": "u"}):
        assert sandbox.admin("POST", "users/generate", json=options).status_code == 400, options
    assert generate(sandbox, count=5, start=10)["total_users"] == 15
    sandbox.seed({**INDIVIDUAL, "user_id": "x-3"})
    assert sandbox.admin("POST", "users/generate", json={"count": 5, "prefix": "x-"}).status_code == 400


# --- the streamed list ----------------------------------------------------------------------------


def test_list_is_streamed_and_unchanged_in_shape(seeded: Sandbox) -> None:
    seeded.server.generate_users(2500)
    resp = seeded.api("GET", USERS)
    assert resp.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in resp.headers
    expected = {"data": [u.to_api() for u in seeded.server.state.all_users()]}
    assert resp.content == json.dumps(expected, separators=(",", ":")).encode()  # byte for byte
    assert len(expected["data"]) == 2503
    clients = seeded.api("GET", USERS, params={"accountRole": "client"}).json()["data"]
    assert len(clients) == 2502
    empty = seeded.api("GET", USERS, params={"accountRole": "advisor", "cursor": "1.0"})
    assert empty.json() == {"data": []}


def test_list_keeps_the_connection_usable(seeded: Sandbox) -> None:
    seeded.server.generate_users(3000)
    for _ in range(3):  # keep-alive after a chunked body
        assert len(seeded.api("GET", USERS).json()["data"]) == 3003
    assert seeded.api("GET", f"{USERS}/ind-1").status_code == 200


@pytest.mark.parametrize(
    "next_key", ["next", "next_url", "links.next", "next_cursor", "cursor", "meta.next_cursor"]
)
@pytest.mark.parametrize("next_first", [False, True])
def test_pagination(seeded: Sandbox, next_key: str, next_first: bool) -> None:
    seeded.server.generate_users(10)
    resp = seeded.admin("PUT", "list", json={"page_size": 4, "next_key": next_key, "next_first": next_first})
    assert resp.json()["data"] == {
        "page_size": 4,
        "next_key": next_key,
        "next_first": next_first,
        "cut_after": 0,
    }
    head, _, tail = next_key.partition(".")
    ids, params, pages = [], {}, 0
    while True:
        raw = seeded.api("GET", USERS, params=params).content
        page = json.loads(raw)
        pages += 1
        ids += [u["user_id"] for u in page["data"]]
        if head not in page:
            break
        assert (raw.index(head.encode()) < raw.index(b'"data"')) is next_first
        value = page[head][tail] if tail else page[head]
        if next_key in ("next", "next_url", "links.next"):
            assert value.startswith("/v1/enterprise/users?cursor=")
            value = value.partition("cursor=")[2]
        params = {"cursor": value}
    assert ids == ["ind-1", "corp-1", "adv-1"] + [f"user-{n}" for n in range(10)]
    assert pages == 4  # 4 + 4 + 4 + 1, and no empty last page


def test_pagination_keeps_the_role_filter(seeded: Sandbox) -> None:
    seeded.server.generate_users(10)
    seeded.server.set_list(page_size=5)
    page = seeded.api("GET", USERS, params={"accountRole": "client"}).json()
    assert page["next"].startswith("/v1/enterprise/users?accountRole=client&cursor=")
    assert len(page["data"]) == 5


def test_cut_after_breaks_the_body_off(seeded: Sandbox) -> None:
    seeded.server.generate_users(3000)
    seeded.server.set_list(cut_after=1500)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        seeded.api("GET", USERS)
    seeded.session.close()
    seeded.server.set_list(cut_after=0)
    assert len(seeded.api("GET", USERS).json()["data"]) == 3003


def test_list_settings_and_cursor_validation(sandbox: Sandbox) -> None:
    for bad in (
        {"page_size": -1},
        {"next_key": "after"},
        {"next_first": "yes"},
        {"size": 3},
        {"cut_after": 1.5},
    ):
        assert sandbox.admin("PUT", "list", json=bad).status_code == 400, bad
    for cursor in ("x", "1", "9.0", "-1.2"):
        assert sandbox.api("GET", USERS, params={"cursor": cursor}).status_code == 400, cursor
    sandbox.server.set_list(page_size=2)
    sandbox.server.reset()
    assert sandbox.server.state.list_settings.page_size == 0
