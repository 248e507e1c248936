"""The /_sandbox/ admin interface, the Python handle, and the HTTP/1.1 layer."""

from __future__ import annotations

import http.client
import json
import re
import socket
from typing import TYPE_CHECKING, Any

import pytest
import requests

from sfox_sandbox import SandboxConfig, SandboxServer

if TYPE_CHECKING:
    from conftest import Sandbox


# ----------------------------------------------------------------------------- codes
def test_codes_per_user_and_channel(seeded: Sandbox) -> None:
    for _ in range(2):
        seeded.send("ind-1", "email")
    seeded.send("corp-1", "email")
    data = seeded.admin("GET", "codes/ind-1").json()["data"]
    assert data["user_id"] == "ind-1"
    assert data["email"]["count"] == 2
    assert re.fullmatch(r"[0-9]{6}", data["email"]["latest"])
    assert isinstance(data["email"]["sent_at"], float)
    assert data["sms"] == {"latest": None, "count": 0, "sent_at": None}
    assert [h["type"] for h in data["history"]] == ["email", "email"]
    assert data["history"][-1]["code"] == data["email"]["latest"]
    # the Python form agrees with the path form
    assert seeded.server.codes("ind-1") == data
    assert seeded.admin("GET", "codes/corp-1").json()["data"]["email"]["count"] == 1


def test_codes_of_user_with_slash(sandbox: Sandbox) -> None:
    sandbox.seed({"user_id": "a/b", "account_type": "corporation", "email": "a@example.com"})
    sandbox.send("a%2Fb", "email")
    assert sandbox.admin("GET", "codes/a%2Fb").json()["data"]["email"]["count"] == 1


def test_codes_of_unknown_user_is_404(sandbox: Sandbox) -> None:
    assert sandbox.admin("GET", "codes/nobody").status_code == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "codes"),  # codes are read one user at a time
        ("GET", "faults"),  # PUT answers with the new settings
        ("GET", "rate-limit"),
        ("GET", "users"),
        ("DELETE", "journal"),
        ("GET", "token"),  # the token is never read back
        ("POST", "token"),
    ],
)
def test_routes_nothing_uses_are_gone(sandbox: Sandbox, method: str, path: str) -> None:
    resp = sandbox.admin(method, path)
    assert resp.status_code == 404
    assert resp.json() == {"error": "Unknown sandbox admin route"}


# ----------------------------------------------------------------------------- users
def test_seed_users_forms(sandbox: Sandbox) -> None:
    resp = sandbox.admin(
        "POST",
        "users",
        json={
            "users": [
                {
                    "user_id": "u1",
                    "account_type": "individual",
                    "email": "u1@example.com",
                    "phone_number": "+1555",
                },
                {
                    "user_id": "u2",
                    "account_type": "Corporation",
                    "account_role": "advisor",
                    "email_verified": True,
                    "extra_column": "ignored",
                },
                {
                    "user_id": "u3",
                    "account_type": "individual",
                    "requirements": {"email": False, "sms": True},
                },
                {
                    "user_id": "u4",
                    "account_type": "individual",
                    "email_verified": "true",
                    "phone_verified": "1",
                },
            ]
        },
    )
    assert resp.json() == {"data": {"seeded": 4}}
    users = {u["user_id"]: u for u in sandbox.all_users()}
    assert users["u1"]["requirements"] == {"email": True, "sms": True}
    assert users["u1"]["status"] == "PENDING"
    assert users["u2"]["account_type"] == "corporation"
    assert users["u2"]["account_role"] == "Advisor"
    assert (users["u2"]["status"], users["u2"]["requirements"]) == (
        "VERIFIED",
        {"email": False, "sms": False},
    )
    assert users["u3"]["requirements"] == {"email": False, "sms": True}
    assert users["u4"]["status"] == "VERIFIED"
    # a seeded user with a verified email may get an sms code at once
    assert sandbox.send("u3", "sms").status_code == 422  # u3 has no phone number
    assert sandbox.send("u1", "sms").json() == {"error": "Email must be verified before phone"}


def test_seed_replaces_existing_user(seeded: Sandbox) -> None:
    seeded.seed(
        {"user_id": "ind-1", "account_type": "individual", "email_verified": True, "phone_number": "+1999"}
    )
    user = seeded.api("GET", "/v1/enterprise/users/ind-1").json()["data"]
    assert user["requirements"] == {"email": False, "sms": True}
    assert seeded.send("ind-1", "sms").json()["data"]["phone_number"] == "+1999"


@pytest.mark.parametrize(
    "body",
    [
        [{"user_id": "ok", "account_type": "individual"}, {"account_type": "individual"}],
        [{"user_id": "x", "account_type": "bank"}],
        [{"user_id": "x", "account_type": "individual", "account_role": "boss"}],
        [{"user_id": "x", "account_type": "individual", "requirements": "none"}],
        [{"user_id": "x", "account_type": "individual", "email_verified": "maybe"}],
        ["not-an-object"],
        {"no": "list"},
        "not json",
    ],
)
def test_invalid_seed_is_400_and_all_or_nothing(sandbox: Sandbox, body: Any) -> None:
    kwargs = {"data": body} if isinstance(body, str) else {"json": body}
    resp = sandbox.admin("POST", "users", **kwargs)
    assert resp.status_code == 400
    assert "error" in resp.json()
    assert sandbox.all_users() == []


def test_invalid_seed_names_the_index(sandbox: Sandbox) -> None:
    resp = sandbox.admin(
        "POST", "users", json=[{"user_id": "a", "account_type": "individual"}, {"user_id": ""}]
    )
    assert "user #1" in resp.json()["error"]


# ----------------------------------------------------------------------------- token
def test_put_token_revokes_the_old_one_until_reset(seeded: Sandbox) -> None:
    assert seeded.api("GET", "/v1/enterprise/users/ind-1").status_code == 200
    resp = seeded.admin("PUT", "token", json={"token": "rotated-1"})
    assert resp.json() == {"data": {"token_changed": True}}  # the token is never echoed
    old = seeded.api("GET", "/v1/enterprise/users/ind-1")
    assert old.status_code == 401
    assert old.json() == {"error": "Unauthorized: missing or invalid API key"}
    assert seeded.api("GET", "/v1/enterprise/users/ind-1", token="rotated-1").status_code == 200
    assert [e["status"] for e in seeded.journal()] == [200, 401, 200]
    # reset restores the start-up token
    seeded.admin("POST", "reset")
    assert seeded.api("GET", "/v1/enterprise/users", token="rotated-1").status_code == 401
    assert seeded.api("GET", "/v1/enterprise/users").status_code == 200


def test_set_token_python_api(seeded: Sandbox) -> None:
    seeded.server.set_token("rotated-2")
    assert seeded.api("GET", "/v1/enterprise/users").status_code == 401
    assert seeded.api("GET", "/v1/enterprise/users", token="rotated-2").status_code == 200
    seeded.server.set_token(seeded.token)
    assert seeded.api("GET", "/v1/enterprise/users").status_code == 200
    for bad in ("", " ", "two words", "line\nbreak"):
        with pytest.raises(ValueError, match="token"):
            seeded.server.set_token(bad)


@pytest.mark.parametrize(
    "body", [{}, {"token": ""}, {"token": "   "}, {"token": None}, {"token": 7}, {"token": "a b"}]
)
def test_put_token_without_a_token_is_400(seeded: Sandbox, body: Any) -> None:
    resp = seeded.admin("PUT", "token", json=body)
    assert resp.status_code == 400
    assert "token" in resp.json()["error"]
    assert seeded.api("GET", "/v1/enterprise/users").status_code == 200  # the token is unchanged


def test_put_token_without_a_body_is_400(seeded: Sandbox) -> None:
    assert seeded.admin("PUT", "token").status_code == 400
    assert seeded.admin("PUT", "token", json=["t"]).status_code == 400
    assert seeded.api("GET", "/v1/enterprise/users").status_code == 200


# ----------------------------------------------------------------------------- reset
def test_reset_returns_to_start_state(seeded: Sandbox) -> None:
    seeded.send("ind-1", "email")
    seeded.server.set_faults(latency_ms=1)
    seeded.server.set_rate_limit(limit=100)
    assert seeded.admin("POST", "reset").json() == {"data": {"reset": True}}
    assert seeded.all_users() == []
    assert seeded.server.state.sent_codes == {}
    assert seeded.journal() == []
    assert seeded.server.state.faults.latency_ms == 0
    assert seeded.server.state.rate_limit.limit == 0


def test_reset_restores_config_seed_users_and_rng() -> None:
    config = SandboxConfig(
        token="t",
        random_seed=42,
        seed_users=[{"user_id": "s1", "account_type": "corporation", "email": "s1@example.com"}],
    )
    auth = {"Authorization": "Bearer t"}
    with SandboxServer(config) as server, requests.Session() as session:
        url = f"{server.url}/v1/enterprise/users/send-verification/s1"
        assert session.post(url, json={"type": "email"}, headers=auth, timeout=5).status_code == 200
        first = server.codes("s1")["email"]["latest"]
        server.seed_users([{"user_id": "s1", "account_type": "individual", "email_verified": True}])
        session.post(f"{server.url}/_sandbox/reset", timeout=5)
        # the seed user is back; the same requests from the re-seeded RNG give the same code
        assert session.post(url, json={"type": "email"}, headers=auth, timeout=5).status_code == 200
        assert server.codes("s1")["email"]["latest"] == first
        user = session.get(f"{server.url}/v1/enterprise/users/s1", headers=auth, timeout=5).json()["data"]
        assert user["account_type"] == "corporation"


# ---------------------------------------------------------------------------- journal
def test_journal_records_every_v1_request(seeded: Sandbox) -> None:
    seeded.send("ind-1", "email")
    seeded.send("ind-1", "sms")
    seeded.api("GET", "/v1/enterprise/users?accountRole=client")
    seeded.api("GET", "/v1/enterprise/users/corp-1", token="bad")
    seeded.admin("GET", "health")  # admin: not journaled
    seeded.api("GET", "/elsewhere")  # outside /v1/: not journaled
    entries = seeded.journal()
    assert [
        (e["seq"], e["method"], e["status"], e["user_id"], e["type"], e["code_sent"]) for e in entries
    ] == [
        (1, "POST", 200, "ind-1", "email", True),
        (2, "POST", 422, "ind-1", "sms", False),
        (3, "GET", 200, None, None, False),
        (4, "GET", 401, "corp-1", None, False),
    ]
    assert entries[2]["path"] == "/v1/enterprise/users?accountRole=client"
    assert all(e["client"] == "127.0.0.1" and isinstance(e["time"], float) for e in entries)
    assert set(entries[0]) == {
        "seq", "time", "method", "path", "user_id", "status", "code_sent", "type", "client", "fault"
    }  # fmt: skip


def test_journal_filters_and_clear(seeded: Sandbox) -> None:  # clear: from Python
    seeded.send("ind-1", "email")
    seeded.send("corp-1", "email")
    seeded.send("ind-1", "email")
    assert [e["seq"] for e in seeded.journal(since=1)] == [2, 3]
    assert [e["seq"] for e in seeded.journal(user_id="ind-1")] == [1, 3]
    assert [e["seq"] for e in seeded.journal(since=1, user_id="ind-1")] == [3]
    assert seeded.admin("GET", "journal", params={"since": "x"}).status_code == 400
    # count codes per user from the journal
    sent = [e["user_id"] for e in seeded.journal() if e["code_sent"]]
    assert sent.count("ind-1") == 2
    seeded.server.clear_journal()
    assert seeded.journal() == []
    seeded.send("corp-1", "email")
    assert [e["seq"] for e in seeded.journal()] == [1]
    # clearing the journal keeps the codes
    assert seeded.server.codes("corp-1")["email"]["count"] == 2


def test_journal_python_access(seeded: Sandbox) -> None:
    seeded.send("ind-1", "email")
    state = seeded.server.state
    with state.lock:
        live = list(state.journal)
    assert [(e.user_id, e.status, e.code_sent, e.type) for e in live] == [("ind-1", 200, True, "email")]
    assert seeded.server.journal(user_id="ind-1")[0].to_dict() == seeded.journal()[0]
    seeded.server.clear_journal()
    assert seeded.server.journal() == []


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "nothing"), ("POST", "health"), ("GET", "reset"), ("PATCH", "faults"), ("GET", "codes/a/b")],
)
def test_unknown_admin_route_is_404(sandbox: Sandbox, method: str, path: str) -> None:
    resp = sandbox.admin(method, path)
    assert resp.status_code == 404
    assert "error" in resp.json()


def test_health(sandbox: Sandbox) -> None:
    assert sandbox.admin("GET", "health").json() == {"data": {"ok": True}}


# ------------------------------------------------------------------------- Python API
def test_server_lifecycle_and_free_port() -> None:
    server = SandboxServer(SandboxConfig(token="t"))
    with pytest.raises(RuntimeError):
        _ = server.url
    url = server.start()
    try:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        assert server.url == url
        assert server.port > 0
        assert requests.get(f"{url}/_sandbox/health", timeout=5).status_code == 200
        with pytest.raises(RuntimeError):
            server.start()
    finally:
        server.stop()
    server.stop()  # idempotent
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/_sandbox/health", timeout=5)


def test_two_servers_are_independent() -> None:
    with SandboxServer(SandboxConfig(token="a")) as one, SandboxServer(SandboxConfig(token="b")) as two:
        assert one.port != two.port
        one.seed_users([{"user_id": "x", "account_type": "corporation"}])
        auth_b = {"Authorization": "Bearer b"}
        assert requests.get(f"{two.url}/v1/enterprise/users/x", headers=auth_b, timeout=5).status_code == 404
        assert requests.get(f"{one.url}/v1/enterprise/users/x", headers=auth_b, timeout=5).status_code == 401


def test_port_in_use_raises() -> None:
    with SandboxServer() as one:
        other = SandboxServer(SandboxConfig(port=one.port))
        with pytest.raises(OSError, match=r"(?i)address already in use"):
            other.start()


def test_stop_closes_keep_alive_and_hanging_connections() -> None:
    server = SandboxServer(
        SandboxConfig(token="t", seed_users=[{"user_id": "u", "account_type": "corporation"}])
    )
    server.start()
    session = requests.Session()
    assert session.get(f"{server.url}/_sandbox/health", timeout=5).status_code == 200  # keep-alive open
    server.set_faults(hang_rate=1.0, hang_seconds=600)
    with pytest.raises(requests.exceptions.ReadTimeout):
        session.get(f"{server.url}/v1/enterprise/users/u", headers={"Authorization": "Bearer t"}, timeout=0.2)
    server.stop(timeout=10)
    assert server._thread is None
    session.close()


def test_config_repr_hides_token() -> None:
    assert "s3cret" not in repr(SandboxConfig(token="s3cret"))


# ---------------------------------------------------------------------------- HTTP/1.1
def test_keep_alive_reuses_one_connection(seeded: Sandbox) -> None:
    conn = http.client.HTTPConnection(seeded.server.host, seeded.server.port, timeout=5)
    headers = {"Authorization": f"Bearer {seeded.token}"}
    conn.request("GET", "/v1/enterprise/users/ind-1", headers=headers)
    first = conn.getresponse()
    first.read()
    sock = conn.sock
    for _ in range(3):
        conn.request("GET", "/v1/enterprise/users/ind-1", headers=headers)
        resp = conn.getresponse()
        assert resp.status == 200
        assert json.loads(resp.read())["data"]["user_id"] == "ind-1"
        assert resp.getheader("Connection") == "keep-alive"
    assert conn.sock is sock  # never reconnected
    conn.close()


def _raw(sandbox: Sandbox, payload: bytes) -> bytes:
    with socket.create_connection((sandbox.server.host, sandbox.server.port), timeout=5) as sock:
        sock.sendall(payload)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk


def test_connection_close_is_honoured(seeded: Sandbox) -> None:
    data = _raw(
        seeded,
        b"GET /_sandbox/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Connection: close" in data  # and the server closed: _raw returned


def test_http10_closes_by_default(sandbox: Sandbox) -> None:
    data = _raw(sandbox, b"GET /_sandbox/health HTTP/1.0\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200 OK")


def test_pipelined_requests(seeded: Sandbox) -> None:
    one = b"GET /_sandbox/health HTTP/1.1\r\nHost: x\r\n\r\n"
    last = b"GET /_sandbox/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    data = _raw(seeded, one + one + last)
    assert data.count(b"HTTP/1.1 200 OK") == 3


def test_chunked_request_body(seeded: Sandbox) -> None:
    body = b'{"type": "email"}'
    chunked = b"".join(
        [b"5\r\n", body[:5], b"\r\n", f"{len(body) - 5:x}\r\n".encode(), body[5:], b"\r\n0\r\n\r\n"]
    )
    data = _raw(
        seeded,
        b"POST /v1/enterprise/users/send-verification/ind-1 HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Bearer {seeded.token}\r\n".encode()
        + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        + chunked,
    )
    assert data.startswith(b"HTTP/1.1 200 OK")
    assert seeded.server.codes("ind-1")["email"]["count"] == 1


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (b"NONSENSE\r\n\r\n", b"400"),
        (b"GET / SPDY/3\r\n\r\n", b"400"),
        (b"GET /_sandbox/health HTTP/1.1\r\nbad header line\r\n\r\n", b"400"),
        (b"POST /_sandbox/users HTTP/1.1\r\nContent-Length: abc\r\n\r\n", b"400"),
        (b"POST /_sandbox/users HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", b"413"),
        (b"GET /_sandbox/health HTTP/1.1\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n", b"431"),
    ],
)
def test_malformed_http_is_refused(sandbox: Sandbox, payload: bytes, status: bytes) -> None:
    data = _raw(sandbox, payload)
    assert data.startswith(b"HTTP/1.1 " + status)
    assert b"Connection: close" in data


def test_head_has_no_body(sandbox: Sandbox) -> None:
    resp = requests.head(f"{sandbox.url}/_sandbox/nothing", timeout=5)
    assert resp.status_code == 404
    assert resp.content == b""
    assert int(resp.headers["Content-Length"]) > 0
