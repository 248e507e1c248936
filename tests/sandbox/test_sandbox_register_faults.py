"""register-account's faults (answers lost after the account was created) and request counts.

The contract: "The request is not idempotent: after an unclear outcome, read the user before
posting again." The sandbox makes those outcomes on purpose (``set_register_fault``: the
request is carried out, then its answer is lost, a 503 or too late) and counts register
requests per ``user_id`` (``register_requests``), so a client's tests can assert it never
registers a user twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import requests

from tests.sandbox.conftest import INDIVIDUAL
from tests.sandbox.registrations import DELETE, REGISTER, registration

if TYPE_CHECKING:
    from tests.sandbox.conftest import Sandbox

# mode -> (what the client sees, the journal's status)
MODES = {
    "lost": (requests.ConnectionError, "dropped"),
    "503": (503, 503),
    "timeout": (requests.ReadTimeout, 200),
}


def _post(sandbox: Sandbox, body: Any, timeout: float = 10) -> requests.Response:
    """A request of its own connection (a lost or late answer must not spoil the session's)."""
    return requests.post(
        sandbox.url + REGISTER,
        json=body,
        headers={"Authorization": f"Bearer {sandbox.token}"},
        timeout=timeout,
    )


def _outcome(sandbox: Sandbox, body: Any) -> int | type[Exception]:
    """The status answered, or the exception the client got."""
    try:
        return _post(sandbox, body, timeout=0.5).status_code
    except (requests.ConnectionError, requests.ReadTimeout) as exc:
        return type(exc)


def _user(sandbox: Sandbox, user_id: str = "new-1") -> dict[str, Any] | None:
    resp = sandbox.api("GET", f"/v1/enterprise/users/{user_id}")
    return resp.json()["data"] if resp.status_code == 200 else None


# ------------------------------------------------------------------------- faults
@pytest.mark.parametrize("mode", sorted(MODES))
def test_a_register_fault_creates_the_account_then_loses_the_answer(sandbox: Sandbox, mode: str) -> None:
    seen, journaled = MODES[mode]
    assert sandbox.server.set_register_fault("new-1", mode=mode, times=1, seconds=2.0) == {
        "user_id": "new-1",
        "mode": mode,
        "times": 1,
        "seconds": 2.0,
    }
    outcome = _outcome(sandbox, registration())
    assert outcome == seen
    # the account exists, the first code went out: a read settles the outcome
    user = _user(sandbox)
    assert user is not None
    assert (user["status"], user["requirements"]) == ("PENDING", {"email": True, "sms": True})
    assert sandbox.server.codes("new-1")["email"]["count"] == 1
    entry = [e for e in sandbox.journal() if e["path"] == REGISTER][-1]
    assert (entry["status"], entry["fault"], entry["code_sent"]) == (journaled, f"register_{mode}", True)
    # used up: the next request is answered, as an existing user
    assert sandbox.admin_data("GET", "users/new-1/register-fault") is None
    resp = _post(sandbox, registration())
    assert (resp.status_code, resp.json()) == (400, {"error": "User already exists"})
    assert sandbox.server.register_requests() == {"new-1": 2}
    assert sandbox.server.codes("new-1")["email"]["count"] == 1


def test_a_timeout_without_seconds_holds_the_answer_as_long_as_a_hang(sandbox: Sandbox) -> None:
    sandbox.server.set_faults(hang_seconds=1.5)
    sandbox.server.set_register_fault("new-1", mode="timeout")
    assert _outcome(sandbox, registration()) is requests.ReadTimeout
    assert _user(sandbox) is not None


def test_a_fault_lasts_its_times_and_each_request_is_carried_out(sandbox: Sandbox) -> None:
    sandbox.server.set_register_fault("new-1", times=2)
    assert _outcome(sandbox, registration()) is requests.ConnectionError  # created, lost
    assert sandbox.admin_data("GET", "users/new-1/register-fault")["times"] == 1
    assert _outcome(sandbox, registration()) is requests.ConnectionError  # refused (exists), lost
    assert _outcome(sandbox, registration()) == 400
    assert sandbox.server.register_requests() == {"new-1": 3}
    assert sandbox.server.codes("new-1")["email"]["count"] == 1
    faults = [e["fault"] for e in sandbox.journal(user_id="new-1") if e["path"] == REGISTER]
    assert faults == ["register_lost", "register_lost", None]


@pytest.mark.parametrize(
    ("seed", "body", "mode", "created"),
    [
        (False, registration(email=DELETE), "lost", False),  # refused as invalid, then lost
        (False, registration(email=DELETE), "503", False),
        (True, registration(user_id="ind-1"), "503", False),  # refused as existing, then a 503
    ],
)
def test_a_refused_request_under_a_fault_changes_nothing(
    sandbox: Sandbox, seed: bool, body: dict[str, Any], mode: str, created: bool
) -> None:
    if seed:
        sandbox.seed(INDIVIDUAL)
    user_id = body["user_id"]
    before = _user(sandbox, user_id)
    sandbox.server.set_register_fault(user_id, mode=mode)
    outcome = _outcome(sandbox, body)
    assert outcome == (503 if mode == "503" else requests.ConnectionError)
    assert _user(sandbox, user_id) == before
    assert sandbox.server.codes(user_id)["email"]["count"] == 0
    assert sandbox.server.register_requests() == {user_id: 1}


def test_register_fault_admin_routes(sandbox: Sandbox) -> None:
    path = "users/new-1/register-fault"
    assert sandbox.admin_data("GET", path) is None
    assert sandbox.admin_data("PUT", path, json={"mode": "503", "times": 2}) == {
        "user_id": "new-1",
        "mode": "503",
        "times": 2,
        "seconds": None,
    }
    assert _outcome(sandbox, registration()) == 503
    assert sandbox.admin_data("GET", path)["times"] == 1
    assert sandbox.admin_data("DELETE", path) is None
    assert _outcome(sandbox, registration()) == 400  # exists: the 503 came after the creation
    # defaults: lost, once
    assert sandbox.admin_data("PUT", "users/new-2/register-fault", json={}) == {
        "user_id": "new-2",
        "mode": "lost",
        "times": 1,
        "seconds": None,
    }
    sandbox.server.reset()
    assert sandbox.admin_data("GET", "users/new-2/register-fault") is None


@pytest.mark.parametrize(
    "body",
    [
        {"mode": "boom"},
        {"mode": 503},
        {"times": 0},
        {"times": "1"},
        {"times": True},
        {"seconds": -1},
        {"seconds": "2"},
        {"colour": "red"},
    ],
)
def test_an_invalid_register_fault_is_400_and_sets_nothing(sandbox: Sandbox, body: dict[str, Any]) -> None:
    resp = sandbox.admin("PUT", "users/new-1/register-fault", json=body)
    assert resp.status_code == 400, resp.text
    assert set(resp.json()) == {"error"}
    assert sandbox.admin_data("GET", "users/new-1/register-fault") is None


@pytest.mark.parametrize(
    ("user_id", "mode", "times", "message"),
    [("", "lost", 1, "user_id"), ("new-1", "boom", 1, "mode"), ("new-1", "lost", 0, "times")],
)
def test_set_register_fault_refuses_invalid_values(
    sandbox: Sandbox, user_id: str, mode: str, times: int, message: str
) -> None:
    with pytest.raises(ValueError, match=f"^{message} must"):
        sandbox.server.set_register_fault(user_id, mode=mode, times=times)


def test_clear_register_fault(sandbox: Sandbox) -> None:
    sandbox.server.set_register_fault("new-1")
    sandbox.server.clear_register_fault("new-1")
    assert _outcome(sandbox, registration()) == 200


# ----------------------------------------------------------- outage and rate limit
def test_an_outage_answers_before_the_call_keeping_the_fault_and_the_count(sandbox: Sandbox) -> None:
    sandbox.server.set_register_fault("new-1", mode="lost")
    sandbox.server.set_outage(60)
    assert _outcome(sandbox, registration()) == 503
    assert sandbox.journal()[-1]["fault"] == "outage"
    sandbox.server.clear_outage()
    assert _user(sandbox) is None
    assert sandbox.server.register_requests() == {}
    assert sandbox.admin_data("GET", "users/new-1/register-fault")["times"] == 1
    assert _outcome(sandbox, registration()) is requests.ConnectionError
    assert _user(sandbox) is not None


def test_a_refusing_outage_resets_register_requests_unprocessed(sandbox: Sandbox) -> None:
    sandbox.server.set_outage(60, mode="refuse")
    assert _outcome(sandbox, registration()) is requests.ConnectionError
    sandbox.server.clear_outage()
    assert (_user(sandbox), sandbox.server.register_requests()) == (None, {})


def test_the_rate_limit_counts_register_requests_and_429_creates_nothing(sandbox: Sandbox) -> None:
    sandbox.server.set_rate_limit(limit=2, window_seconds=60, block_seconds=60)
    assert _outcome(sandbox, registration(user_id="a")) == 200
    assert _outcome(sandbox, registration(user_id="b")) == 200
    assert _outcome(sandbox, registration(user_id="c")) == 429
    assert [u["user_id"] for u in sandbox.all_users()] == ["a", "b"]
    assert sandbox.server.register_requests() == {"a": 1, "b": 1}
    assert [(e["user_id"], e["status"]) for e in sandbox.journal()] == [("a", 200), ("b", 200), ("c", 429)]


def test_a_wrong_token_is_401_and_not_counted(sandbox: Sandbox) -> None:
    resp = sandbox.api("POST", REGISTER, token="wrong", json=registration())
    assert resp.status_code == 401
    assert (_user(sandbox), sandbox.server.register_requests()) == (None, {})


# ------------------------------------------------------------------------- counts
def test_register_requests_counts_every_request_that_reached_the_call(sandbox: Sandbox) -> None:
    sandbox.server.set_register_fault("new-3", mode="lost")
    bodies = [
        registration(),  # created
        registration(),  # existing
        registration(user_id="new-2", email=DELETE),  # invalid
        registration(user_id="new-3"),  # created, answer lost
        registration(user_id=DELETE),  # invalid, no user_id: not counted
    ]
    outcomes = [_outcome(sandbox, body) for body in bodies]
    assert outcomes == [200, 400, 400, requests.ConnectionError, 400]
    expected = {"new-1": 2, "new-2": 1, "new-3": 1}
    assert sandbox.server.register_requests() == expected
    assert sandbox.admin_data("GET", "register-requests") == expected
    # the journal names the user_id of each register request that had one
    assert [e["user_id"] for e in sandbox.journal()] == ["new-1", "new-1", "new-2", "new-3", None]
    sandbox.server.reset()
    assert sandbox.admin_data("GET", "register-requests") == {}


def test_many_registrations_on_one_connection_are_each_counted_once(sandbox: Sandbox) -> None:
    count = 300
    for number in range(count):
        kind = "corporation" if number % 3 == 0 else "us-individual"
        resp = sandbox.api("POST", REGISTER, json=registration(kind, user_id=f"bulk-{number}"))
        assert resp.status_code == 200, resp.text
    counts = sandbox.server.register_requests()
    assert counts == {f"bulk-{n}": 1 for n in range(count)}
    listed = sandbox.api("GET", "/v1/enterprise/users").json()["data"]
    assert [u["user_id"] for u in listed] == [f"bulk-{n}" for n in range(count)]
    assert all(sandbox.server.codes(f"bulk-{n}")["email"]["count"] == 1 for n in range(count))
