"""An outage window and chosen 422 texts, set from the admin API (issue 20)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest
import requests

if TYPE_CHECKING:
    from conftest import Sandbox

USERS = "/v1/enterprise/users"


def _wait_until_over(sandbox: Sandbox, limit: float = 30.0) -> None:
    """Poll the admin API until no outage is open (bounded: a stuck window fails the test)."""
    deadline = time.monotonic() + limit
    while sandbox.admin_data("GET", "outage") is not None:
        assert time.monotonic() < deadline, "the outage did not end by itself"
        time.sleep(0.05)


# ---------------------------------------------------------------------------- outage
@pytest.mark.parametrize(("mode", "status"), [("503", 503), ("refuse", "refused")])
def test_every_v1_request_fails_during_an_outage_and_is_journaled(
    seeded: Sandbox, mode: str, status: int | str
) -> None:
    data = seeded.admin_data("PUT", "outage", json={"seconds": 600, "mode": mode})
    assert data["mode"] == mode
    assert data["until"] > time.time()
    assert seeded.admin_data("GET", "outage")["mode"] == mode
    for path, body in [(f"{USERS}/ind-1", None), (f"{USERS}/send-verification/ind-1", {"type": "email"})]:
        method = "POST" if body else "GET"
        if mode == "503":
            resp = seeded.api(method, path, json=body)
            assert resp.status_code == 503
            assert set(resp.json()) == {"error"}
        else:
            with pytest.raises(requests.ConnectionError):
                seeded.api(method, path, json=body)
    journal = seeded.journal()
    assert [(e["status"], e["fault"]) for e in journal] == [(status, "outage")] * 2
    assert journal[1]["user_id"] == "ind-1"
    assert seeded.server.codes("ind-1")["email"]["count"] == 0  # nothing was processed
    assert seeded.admin_data("GET", "health") == {"ok": True}  # admin routes stay up


def test_an_outage_ends_by_itself_on_the_sandbox_clock(seeded: Sandbox) -> None:
    seeded.server.set_rate_limit(time_scale=0.001)
    data = seeded.admin_data("PUT", "outage", json={"seconds": 100})  # 0.1 s at this scale
    assert data["mode"] == "503"  # the default
    assert data["seconds_left"] <= 100 * 0.001
    assert seeded.send("ind-1", "email").status_code == 503
    _wait_until_over(seeded)
    assert seeded.send("ind-1", "email").status_code == 200
    assert [e["status"] for e in seeded.journal()] == [503, 200]


@pytest.mark.parametrize(
    ("scale", "seconds", "most_left"),
    [(1.0, 30, 30), (0.01, 3600, 36)],
)
def test_the_window_honours_the_time_scale(
    seeded: Sandbox, scale: float, seconds: int, most_left: float
) -> None:
    seeded.server.set_rate_limit(time_scale=scale)
    before = time.time()
    data = seeded.server.set_outage(seconds)
    assert 0 < data["seconds_left"] <= most_left
    assert before < data["until"] <= time.time() + most_left


@pytest.mark.parametrize("end", ["delete", "python", "reset"])
def test_an_outage_can_be_ended_early(seeded: Sandbox, end: str) -> None:
    seeded.server.set_outage(600, "refuse")
    if end == "delete":
        assert seeded.admin_data("DELETE", "outage") is None
    elif end == "python":
        seeded.server.clear_outage()
    else:
        seeded.admin_data("POST", "reset")
        seeded.seed(seeded.users["ind-1"])
    assert seeded.admin_data("GET", "outage") is None
    assert seeded.send("ind-1", "email").status_code == 200


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "seconds is required"),
        ({"seconds": 0}, "seconds must be"),
        ({"seconds": -5}, "seconds must be"),
        ({"seconds": "10"}, "seconds must be"),
        ({"seconds": True}, "seconds must be"),
        ({"seconds": 10, "mode": "500"}, "mode must be"),
        ({"seconds": 10, "mode": 503}, "mode must be"),
        ({"seconds": 10, "until": 5}, "unknown field"),
        ([10], "JSON object"),
    ],
)
def test_invalid_outage_is_400_and_changes_nothing(seeded: Sandbox, body: Any, message: str) -> None:
    resp = seeded.admin("PUT", "outage", json=body)
    assert resp.status_code == 400
    assert message in resp.json()["error"]
    assert seeded.admin_data("GET", "outage") is None


def test_the_python_api_refuses_an_unknown_mode(sandbox: Sandbox) -> None:
    with pytest.raises(ValueError, match="mode must be"):
        sandbox.server.set_outage(10, "down")


# ------------------------------------------------------------------- chosen 422 texts
@pytest.mark.parametrize(
    ("user_id", "verified", "channel", "text"),
    [
        ("ind-1", False, "email", "Email is already verified"),
        ("ind-1", True, "email", "Email is already verified"),
        ("ind-1", True, "sms", "Phone verification temporarily unavailable"),
        ("corp-1", False, "email", ""),
        ("corp-1", False, "email", 'é ünïcode and "quotes"'),
    ],
)
def test_a_chosen_422_answers_every_send_of_that_user_and_channel(
    seeded: Sandbox, user_id: str, verified: bool, channel: str, text: str
) -> None:
    if verified:
        seeded.seed({**seeded.users[user_id], "email_verified": True})
    before = seeded.api("GET", f"{USERS}/{user_id}").json()["data"]
    data = seeded.admin_data("PUT", f"users/{user_id}/unprocessable", json={"type": channel, "error": text})
    assert data[channel] == text
    for _ in range(2):
        resp = seeded.send(user_id, channel)
        assert resp.status_code == 422
        assert resp.json() == {"error": text}
    assert seeded.api("GET", f"{USERS}/{user_id}").json()["data"] == before  # state unchanged
    assert seeded.server.codes(user_id)[channel]["count"] == 0
    sends = [e for e in seeded.journal() if e["method"] == "POST"]
    assert [(e["status"], e["fault"], e["type"], e["code_sent"]) for e in sends] == [
        (422, "unprocessable", channel, False)
    ] * 2


def test_other_users_and_channels_are_untouched(seeded: Sandbox) -> None:
    seeded.server.set_unprocessable("ind-1", "sms", "nope")
    assert seeded.send("ind-1", "email").status_code == 200
    assert seeded.send("corp-1", "email").status_code == 200
    assert seeded.send("ind-1", "sms").json() == {"error": "nope"}


@pytest.mark.parametrize("clear", ["delete-type", "delete-all", "python", "reset"])
def test_a_chosen_422_lasts_until_cleared(seeded: Sandbox, clear: str) -> None:
    seeded.server.set_unprocessable("corp-1", "email", "Try again later")
    assert seeded.send("corp-1", "email").status_code == 422
    if clear == "delete-type":
        data = seeded.admin_data("DELETE", "users/corp-1/unprocessable", params={"type": "email"})
        assert data == {"user_id": "corp-1", "email": None, "sms": None}
    elif clear == "delete-all":
        seeded.admin_data("DELETE", "users/corp-1/unprocessable")
    elif clear == "python":
        seeded.server.clear_unprocessable("corp-1", "email")
    else:
        seeded.admin_data("POST", "reset")
        seeded.seed(seeded.users["corp-1"])
    assert seeded.admin_data("GET", "users/corp-1/unprocessable")["email"] is None
    assert seeded.send("corp-1", "email").status_code == 200


@pytest.mark.parametrize(
    ("user_id", "body", "status"),
    [
        ("nobody", {"type": "email", "error": "x"}, 404),
        ("ind-1", {"type": "phone", "error": "x"}, 400),
        ("ind-1", {"type": "email"}, 400),
        ("ind-1", {"error": "x"}, 400),
        ("ind-1", {"type": "email", "error": 422}, 400),
        ("ind-1", {"type": "email", "error": "x", "status": 500}, 400),
    ],
)
def test_invalid_unprocessable_is_refused(seeded: Sandbox, user_id: str, body: Any, status: int) -> None:
    resp = seeded.admin("PUT", f"users/{user_id}/unprocessable", json=body)
    assert resp.status_code == status
    assert "error" in resp.json()
    assert seeded.send("ind-1", "email").status_code == 200
