"""Fixtures of the sandbox tests: one real sandbox server per session, reset before each test."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import pytest
import requests

from sfox_sandbox import RateLimitSettings, SandboxConfig, SandboxServer

if TYPE_CHECKING:
    from collections.abc import Iterator

SANDBOX_TOKEN = "test-token-123"

INDIVIDUAL = {
    "user_id": "ind-1",
    "account_type": "individual",
    "email": "ind1@example.com",
    "phone_number": "+12223334444",
    "first_name": "Ada",
    "last_name": "Lovelace",
}
CORPORATION = {
    "user_id": "corp-1",
    "account_type": "corporation",
    "email": "corp1@example.com",
    "first_name": "Acme",
    "last_name": "Inc",
}
ADVISOR = {
    "user_id": "adv-1",
    "account_type": "individual",
    "account_role": "advisor",
    "email": "adv1@example.com",
    "phone_number": "+12223335555",
}


@dataclass
class Sandbox:
    """A reset sandbox plus helpers speaking real HTTP to it."""

    server: SandboxServer
    session: requests.Session
    token: ClassVar[str] = SANDBOX_TOKEN
    # The standard users of ``seeded``, by user_id.
    users: ClassVar[dict[str, dict[str, Any]]] = {u["user_id"]: u for u in (INDIVIDUAL, CORPORATION, ADVISOR)}

    @property
    def url(self) -> str:
        return self.server.url

    def api(
        self, method: str, path: str, token: str | None = SANDBOX_TOKEN, **kwargs: Any
    ) -> requests.Response:
        """Call a /v1/ route with the bearer token (or without any when token is None)."""
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        kwargs.setdefault("timeout", 10)
        return self.session.request(method, self.url + path, headers=headers, **kwargs)

    def admin(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Call a /_sandbox/ admin route (no token)."""
        kwargs.setdefault("timeout", 10)
        return self.session.request(method, f"{self.url}/_sandbox/{path}", **kwargs)

    def admin_data(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call an admin route that must answer 200; return its ``data``."""
        resp = self.admin(method, path, **kwargs)
        assert resp.status_code == 200, resp.text
        return resp.json()["data"]

    def seed(self, *users: dict[str, Any]) -> None:
        resp = self.admin("POST", "users", json=list(users))
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"data": {"seeded": len(users)}}

    def send(self, user_id: str, channel: str, **kwargs: Any) -> requests.Response:
        return self.api(
            "POST", f"/v1/enterprise/users/send-verification/{user_id}", json={"type": channel}, **kwargs
        )

    def verify(self, user_id: str, channel: str, otp: str) -> requests.Response:
        return self.api("POST", f"/v1/enterprise/users/verify/{user_id}", json={"type": channel, "otp": otp})

    def latest_code(self, user_id: str, channel: str) -> str:
        resp = self.admin("GET", f"codes/{user_id}")
        assert resp.status_code == 200, resp.text
        code = resp.json()["data"][channel]["latest"]
        assert isinstance(code, str)
        return code

    # The settings and users, read from the Python side (the admin API has no GET for them).
    def faults(self) -> dict[str, Any]:
        with self.server.state.lock:
            return self.server.state.faults.to_dict()

    def rate_limit(self) -> dict[str, Any]:
        state = self.server.state
        with state.lock:
            return dict(state.rate_limit.to_dict(), blocked=state.limiter.blocked(time.monotonic()))

    def all_users(self) -> list[dict[str, Any]]:
        with self.server.state.lock:
            return [u.to_api() for u in self.server.state.all_users()]

    def journal(self, **params: Any) -> list[dict[str, Any]]:
        data = self.admin_data("GET", "journal", params=params)
        assert isinstance(data, list)
        return data


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[SandboxServer]:
    # Rate limit off by default so the whole suite never trips it; tests that need it
    # set it at run time and the reset before the next test restores it.
    config = SandboxConfig(token=SANDBOX_TOKEN, random_seed=1234, rate_limit=RateLimitSettings(limit=0))
    with SandboxServer(config) as server:
        yield server


@pytest.fixture
def sandbox(sandbox_server: SandboxServer) -> Iterator[Sandbox]:
    session = requests.Session()
    resp = session.post(f"{sandbox_server.url}/_sandbox/reset", timeout=10)
    assert resp.status_code == 200, resp.text
    yield Sandbox(sandbox_server, session)
    session.close()


@pytest.fixture
def seeded(sandbox: Sandbox) -> Sandbox:
    """The sandbox with ind-1 (individual client), corp-1 (corporation) and adv-1 (advisor)."""
    sandbox.seed(INDIVIDUAL, CORPORATION, ADVISOR)
    return sandbox
