"""The sFOX-like rate limit through real HTTP: sliding window, 429 block, time scale, Retry-After."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Sandbox

USER = "/v1/enterprise/users/ind-1"


def _limit(sandbox: Sandbox, **settings: Any) -> dict[str, Any]:
    data = sandbox.admin_data("PUT", "rate-limit", json=settings)
    assert isinstance(data, dict)
    return data


def _wait_unblocked(sandbox: Sandbox, bound_s: float = 15.0) -> int:
    """Poll (bounded) until a /v1/ request is no longer 429; return how many 429s were seen."""
    seen = 0
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        status = sandbox.api("GET", USER).status_code
        if status != 429:
            return seen
        seen += 1
        time.sleep(0.05)
    pytest.fail("rate-limit block did not end")


def test_limit_then_block_then_recover(seeded: Sandbox) -> None:
    # window 1000 s * 0.01 = 10 s (never slides during the test), block 60 s * 0.01 = 0.6 s
    _limit(seeded, limit=5, window_seconds=1000, block_seconds=60, time_scale=0.01)
    statuses = [seeded.api("GET", USER).status_code for _ in range(5)]
    assert statuses == [200] * 5
    resp = seeded.api("GET", USER)
    assert resp.status_code == 429
    assert set(resp.json()) == {"error"}
    assert "Retry-After" not in resp.headers  # off by default, like sFOX
    # during the block every /v1/ request gets 429, whatever the route or the token
    assert seeded.send("ind-1", "email").status_code == 429
    assert seeded.api("GET", "/v1/nothing", token="bad").status_code == 429
    assert seeded.server.codes("ind-1")["email"]["count"] == 0
    # admin routes are not rate limited and show the block
    blocked = seeded.admin("PUT", "rate-limit", json={}).json()["data"]["blocked"]
    assert set(blocked) == {"127.0.0.1"}
    assert 0 < blocked["127.0.0.1"] <= 0.6

    _wait_unblocked(seeded)
    # after the block a fresh window starts: 5 more pass (one was used by the poll)
    statuses = [seeded.api("GET", USER).status_code for _ in range(4)]
    assert statuses == [200] * 4
    assert seeded.api("GET", USER).status_code == 429
    journal_statuses = [e["status"] for e in seeded.journal()]
    assert journal_statuses[:8] == [200] * 5 + [429] * 3
    assert journal_statuses[-1] == 429


def test_unauthorized_and_unknown_requests_count_too(seeded: Sandbox) -> None:
    _limit(seeded, limit=3, window_seconds=1000, block_seconds=60, time_scale=0.01)
    assert seeded.api("GET", USER, token="bad").status_code == 401
    assert seeded.api("GET", "/v1/enterprise/nothing").status_code == 404
    assert seeded.api("GET", USER).status_code == 200
    assert seeded.api("GET", USER).status_code == 429


def test_window_slides(seeded: Sandbox) -> None:
    # window 0.3 s: after it has passed, old requests no longer count
    _limit(seeded, limit=2, window_seconds=30, block_seconds=60, time_scale=0.01)
    assert [seeded.api("GET", USER).status_code for _ in range(2)] == [200, 200]
    time.sleep(0.45)
    assert [seeded.api("GET", USER).status_code for _ in range(2)] == [200, 200]
    assert seeded.api("GET", USER).status_code == 429


@pytest.mark.parametrize("block_seconds", [60, 150])
def test_retry_after_header_when_enabled(seeded: Sandbox, block_seconds: int) -> None:
    _limit(
        seeded, limit=1, window_seconds=1000, block_seconds=block_seconds, time_scale=0.01, retry_after=True
    )
    assert seeded.api("GET", USER).status_code == 200
    resp = seeded.api("GET", USER)
    assert resp.status_code == 429
    # whole seconds, rounded up from the scaled block (0.6 s -> 1, 1.5 s -> 2)
    assert resp.headers["Retry-After"] == str(-(-block_seconds // 100))


def test_limit_zero_disables(seeded: Sandbox) -> None:
    _limit(seeded, limit=0, window_seconds=1000, time_scale=1)
    assert {seeded.api("GET", USER).status_code for _ in range(60)} == {200}


def test_default_is_sfox_limit(sandbox: Sandbox) -> None:
    from sfox_sandbox import RateLimitSettings

    defaults = RateLimitSettings()
    assert (defaults.limit, defaults.window, defaults.block, defaults.retry_after) == (250, 10.0, 60.0, False)
    # the session fixture turned it off; reset restores that start-up value
    assert _limit(sandbox, limit=7)["limit"] == 7
    sandbox.admin("POST", "reset")
    assert sandbox.rate_limit() == {
        "limit": 0,
        "window_seconds": 10.0,
        "block_seconds": 60.0,
        "time_scale": 1.0,
        "retry_after": False,
        "blocked": {},
    }


def test_reset_clears_a_block(seeded: Sandbox) -> None:
    seeded.server.set_rate_limit(limit=1, block_seconds=3600)
    assert seeded.api("GET", USER).status_code == 200
    assert seeded.api("GET", USER).status_code == 429
    seeded.admin("POST", "reset")
    seeded.seed(seeded.users["ind-1"])
    assert seeded.api("GET", USER).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"limit": -1},
        {"limit": 2.5},
        {"window_seconds": 0},
        {"time_scale": 0},
        {"retry_after": "yes"},
        {"x": 1},
    ],
)
def test_invalid_rate_limit_settings_are_400(sandbox: Sandbox, body: dict[str, Any]) -> None:
    before = sandbox.rate_limit()
    resp = sandbox.admin("PUT", "rate-limit", json=body)
    assert resp.status_code == 400
    assert "error" in resp.json()
    assert sandbox.rate_limit() == before
