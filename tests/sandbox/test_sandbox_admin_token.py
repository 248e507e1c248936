"""The admin routes' own token (issue 20): required when set, refused off loopback without one.

Most cases run the app directly (no socket), so no test has to listen on a public address.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

import pytest
import requests

from sfox_sandbox import SandboxConfig, SandboxServer
from sfox_sandbox.app import SandboxApp
from sfox_sandbox.messages import Request
from sfox_sandbox.state import SandboxState

if TYPE_CHECKING:
    from sfox_sandbox.messages import Response

API_TOKEN = "api-token"
ADMIN = "admin-token-1"


def _call(config: SandboxConfig, path: str, headers: dict[str, str], method: str = "GET") -> Response:
    config.validate()
    app = SandboxApp(SandboxState(config))
    try:
        return asyncio.run(app.handle(Request(method, path, "", headers, b"", "10.0.0.7")))
    finally:
        app.state.asset_events.close()


@pytest.mark.parametrize(
    ("host", "admin_token", "headers", "status"),
    [
        ("127.0.0.1", "", {}, 200),  # the loopback default stays open (the test suite)
        ("::1", "", {}, 200),
        ("127.0.0.1", ADMIN, {}, 401),
        ("127.0.0.1", ADMIN, {"x-sandbox-admin-token": "wrong"}, 401),
        ("127.0.0.1", ADMIN, {"x-sandbox-admin-token": ADMIN + "x"}, 401),
        ("127.0.0.1", ADMIN, {"x-sandbox-admin-token": ADMIN}, 200),
        ("127.0.0.1", ADMIN, {"x-sandbox-admin-token": API_TOKEN}, 401),  # never the API token
        ("127.0.0.1", ADMIN, {"authorization": f"Bearer {ADMIN}"}, 401),
        ("0.0.0.0", "", {}, 403),  # noqa: S104 - the case under test
        ("0.0.0.0", "", {"x-sandbox-admin-token": "anything"}, 403),  # noqa: S104
        ("::", "", {}, 403),
        ("sandbox.example", "", {}, 403),
        ("0.0.0.0", ADMIN, {"x-sandbox-admin-token": ADMIN}, 200),  # noqa: S104
        ("0.0.0.0", ADMIN, {}, 401),  # noqa: S104
    ],
)
@pytest.mark.parametrize("path", ["/_sandbox/health", "/_sandbox/codes/u1", "/_sandbox/journal"])
def test_admin_access(host: str, admin_token: str, headers: dict[str, str], status: int, path: str) -> None:
    config = SandboxConfig(host=host, token=API_TOKEN, admin_token=admin_token)
    config.seed_users = [{"user_id": "u1", "account_type": "corporation", "email": "u1@example.com"}]
    resp = _call(config, path, headers)
    assert resp.status == status
    body = json.loads(resp.body)
    if status == 403:
        assert "SFOX_SANDBOX_ADMIN_TOKEN" in body["error"]
        assert "X-Sandbox-Admin-Token" in body["error"]
    if status in (401, 403):
        assert set(body) == {"error"}
        assert ADMIN not in body["error"]


@pytest.mark.parametrize("headers", [{}, {"x-sandbox-admin-token": ADMIN}])
def test_the_admin_token_does_not_open_the_api(headers: dict[str, str]) -> None:
    """``/v1/`` still needs the API token; the admin token is no key to it."""
    config = SandboxConfig(host="0.0.0.0", token=API_TOKEN, admin_token=ADMIN)  # noqa: S104
    assert _call(config, "/v1/enterprise/users", headers).status == 401
    bearer = {**headers, "authorization": f"Bearer {ADMIN}"}
    assert _call(config, "/v1/enterprise/users", bearer).status == 401
    assert _call(config, "/v1/enterprise/users", {"authorization": f"Bearer {API_TOKEN}"}).status == 200


@pytest.mark.parametrize(
    ("admin_token", "message"),
    [(API_TOKEN, "differ from the API token"), ("two words", "no spaces"), ("tab\there", "no spaces")],
)
def test_invalid_admin_token_is_refused(admin_token: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SandboxConfig(token=API_TOKEN, admin_token=admin_token).validate()


def test_the_admin_token_stays_out_of_repr() -> None:
    text = repr(SandboxConfig(token=API_TOKEN, admin_token=ADMIN))
    assert ADMIN not in text
    assert "admin_token='***'" in text


def test_a_real_server_with_an_admin_token() -> None:
    config = SandboxConfig(token=API_TOKEN, admin_token=ADMIN)
    with SandboxServer(config) as server:
        url = f"{server.url}/_sandbox/outage"
        assert requests.put(url, json={"seconds": 60}, timeout=10).status_code == 401
        assert server.state.current_outage() is None
        resp = requests.put(url, json={"seconds": 60}, headers={"X-Sandbox-Admin-Token": ADMIN}, timeout=10)
        assert resp.status_code == 200
        assert resp.json()["data"]["mode"] == "503"
