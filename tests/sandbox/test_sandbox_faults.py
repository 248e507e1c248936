"""Fault injection through real HTTP: 500/503, resets, drops after processing, hangs, latency."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

import pytest
import requests

if TYPE_CHECKING:
    from conftest import Sandbox


def _raw_send(sandbox: Sandbox, user_id: str) -> bytes:
    """Send one send-verification request on a raw socket; return what the server answered."""
    body = b'{"type": "email"}'
    request = (
        f"POST /v1/enterprise/users/send-verification/{user_id} HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\nAuthorization: Bearer {sandbox.token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection((sandbox.server.host, sandbox.server.port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks):
                break
        return b"".join(chunks)


@pytest.mark.parametrize(
    ("setting", "status", "fault"),
    [("error_500_rate", 500, "error_500"), ("error_503_rate", 503, "error_503")],
)
def test_error_faults_answer_without_processing(
    seeded: Sandbox, setting: str, status: int, fault: str
) -> None:
    seeded.server.set_faults(**{setting: 1.0})
    resp = seeded.send("ind-1", "email")
    assert resp.status_code == status
    assert set(resp.json()) == {"error"}
    entry = seeded.journal()[-1]
    assert (entry["status"], entry["fault"], entry["code_sent"]) == (status, fault, False)
    assert seeded.server.codes("ind-1")["email"]["count"] == 0


@pytest.mark.parametrize(
    ("setting", "journal_status", "code_count"),
    [("reset_rate", "reset", 0), ("drop_rate", "dropped", 1)],
)
def test_connection_faults(seeded: Sandbox, setting: str, journal_status: str, code_count: int) -> None:
    seeded.server.set_faults(**{setting: 1.0})
    with pytest.raises(requests.ConnectionError):
        seeded.send("ind-1", "email")
    entries = seeded.journal()
    # exactly one request reached the server: the client did not retry behind our back
    assert len(entries) == 1
    entry = entries[0]
    assert entry["status"] == journal_status
    assert entry["code_sent"] is (code_count == 1)
    assert entry["type"] == "email"
    assert seeded.server.codes("ind-1")["email"]["count"] == code_count


@pytest.mark.parametrize("setting", ["reset_rate", "drop_rate"])
def test_connection_faults_send_a_tcp_reset(seeded: Sandbox, setting: str) -> None:
    seeded.server.set_faults(**{setting: 1.0})
    with pytest.raises(ConnectionResetError):
        _raw_send(seeded, "ind-1")


def test_session_recovers_after_reset(seeded: Sandbox) -> None:
    assert seeded.send("ind-1", "email").status_code == 200
    seeded.server.set_faults(reset_rate=1.0)
    with pytest.raises(requests.ConnectionError):
        seeded.send("ind-1", "email")
    seeded.server.set_faults(reset_rate=0.0)
    # the same keep-alive session opens a new connection and goes on
    assert seeded.send("corp-1", "email").status_code == 200
    assert [e["status"] for e in seeded.journal()] == [200, "reset", 200]


def test_hang_processes_but_answers_after_the_client_timeout(seeded: Sandbox) -> None:
    seeded.server.set_faults(hang_rate=1.0, hang_seconds=3.0)
    with pytest.raises(requests.exceptions.ReadTimeout):
        seeded.send("ind-1", "email", timeout=0.3)
    entry = seeded.journal()[-1]
    assert (entry["status"], entry["fault"], entry["code_sent"]) == (200, "hang", True)
    assert seeded.server.codes("ind-1")["email"]["count"] == 1


def test_hang_answer_arrives_when_client_waits(seeded: Sandbox) -> None:
    seeded.server.set_faults(hang_rate=1.0, hang_seconds=0.2)
    resp = seeded.send("ind-1", "email", timeout=10)
    assert resp.status_code == 200
    assert resp.json()["data"]["type"] == "email"


def test_latency_longer_than_timeout_times_out(seeded: Sandbox) -> None:
    seeded.server.set_faults(latency_ms=2000)
    with pytest.raises(requests.exceptions.ReadTimeout):
        seeded.api("GET", "/v1/enterprise/users/ind-1", timeout=0.2)
    seeded.server.set_faults(latency_ms=50, jitter_ms=20)
    assert seeded.api("GET", "/v1/enterprise/users/ind-1").status_code == 200


@pytest.mark.parametrize(
    "setting", ["error_500_rate", "error_503_rate", "reset_rate", "drop_rate", "hang_rate"]
)
def test_faults_never_touch_admin_routes(seeded: Sandbox, setting: str) -> None:
    seeded.server.set_faults(**{setting: 1.0}, hang_seconds=30)
    for path in ("health", "codes/ind-1", "journal"):
        assert seeded.admin("GET", path, timeout=5).status_code == 200
    assert seeded.admin("POST", "users", json=[], timeout=5).status_code == 200
    assert seeded.admin("PUT", "rate-limit", json={}, timeout=5).status_code == 200
    assert seeded.admin("PUT", "token", json={"token": seeded.token}, timeout=5).status_code == 200
    assert seeded.journal() == []


def test_fault_draw_is_reproducible_with_a_seed(seeded: Sandbox) -> None:
    def run() -> list[int]:
        resp = seeded.admin(
            "PUT", "faults", json={"error_500_rate": 0.3, "error_503_rate": 0.3, "random_seed": 7}
        )
        assert resp.status_code == 200
        return [seeded.api("GET", "/v1/enterprise/users/ind-1").status_code for _ in range(30)]

    first = run()
    assert run() == first
    assert {200, 500, 503} <= set(first)


def test_shares_split_the_traffic(seeded: Sandbox) -> None:
    seeded.admin("PUT", "faults", json={"error_500_rate": 0.5, "random_seed": 3})
    statuses = [seeded.api("GET", "/v1/enterprise/users/ind-1").status_code for _ in range(200)]
    # 200 draws at 0.5: far inside [50, 150] for any seed
    assert 50 <= statuses.count(500) <= 150
    assert statuses.count(500) + statuses.count(200) == 200


def test_put_faults(sandbox: Sandbox) -> None:
    # an empty partial update changes nothing and answers the current settings
    resp = sandbox.admin("PUT", "faults", json={})
    assert resp.json()["data"] == {
        "latency_ms": 0.0,
        "jitter_ms": 0.0,
        "error_500_rate": 0.0,
        "error_503_rate": 0.0,
        "reset_rate": 0.0,
        "hang_rate": 0.0,
        "hang_seconds": 30.0,
        "drop_rate": 0.0,
    }
    resp = sandbox.admin("PUT", "faults", json={"latency_ms": 5, "drop_rate": 0.25})
    assert resp.status_code == 200
    data = resp.json()["data"]
    assert (data["latency_ms"], data["drop_rate"], data["error_500_rate"]) == (5.0, 0.25, 0.0)
    assert sandbox.faults() == data
    assert sandbox.server.state.faults.drop_rate == 0.25
    # reset restores the start-up faults
    sandbox.admin("POST", "reset")
    assert sandbox.faults()["drop_rate"] == 0.0


@pytest.mark.parametrize(
    "body",
    [
        {"error_500_rate": 0.6, "error_503_rate": 0.6},
        {"reset_rate": 1.5},
        {"drop_rate": -0.1},
        {"latency_ms": -1},
        {"latency_ms": "fast"},
        {"hang_rate": True},
        {"no_such_fault": 0.1},
        {"random_seed": "x"},
        ["not", "an", "object"],
    ],
)
def test_invalid_fault_settings_are_400(sandbox: Sandbox, body: Any) -> None:
    before = sandbox.faults()
    resp = sandbox.admin("PUT", "faults", json=body)
    assert resp.status_code == 400
    assert "error" in resp.json()
    assert sandbox.faults() == before


def test_set_faults_python_api_validates(sandbox: Sandbox) -> None:
    with pytest.raises(ValueError, match="add up"):
        sandbox.server.set_faults(error_500_rate=0.7, drop_rate=0.7)
    settings = sandbox.server.set_faults(error_503_rate=0.1)
    assert settings.error_503_rate == 0.1
    assert sandbox.faults()["error_503_rate"] == 0.1
