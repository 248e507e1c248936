"""Robustness through real HTTP: bounded journal and code history, malformed framing,
deeply nested JSON, read and idle timeouts."""

from __future__ import annotations

import json
import re
import socket
from typing import TYPE_CHECKING, Any

import pytest
import requests

from sfox_sandbox import FaultSettings, RateLimitSettings, SandboxConfig, SandboxServer
from sfox_sandbox.config import _field_types

if TYPE_CHECKING:
    from collections.abc import Iterator

    from conftest import Sandbox

TOKEN = "robust-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JOURNAL_SIZE = 5
CODE_HISTORY = 3
USER = {
    "user_id": "r-1",
    "account_type": "individual",
    "email": "r1@example.com",
    "phone_number": "+12223334444",
}


def _recv_all(sock: socket.socket) -> bytes:
    """Read until the server closes the connection (the socket timeout fails the test).

    A server closing with unread request bytes sends a RST after its answer: that also
    counts as closed.
    """
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def _exchange(server: SandboxServer, payload: bytes) -> bytes:
    """Send raw bytes; return everything answered until the server closed the connection."""
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(payload)
        return _recv_all(sock)


def _status(raw: bytes) -> int:
    return _statuses(raw)[0]


def _statuses(raw: bytes) -> list[int]:
    """Status codes of every answer in ``raw`` (bodies here never contain ``HTTP/1.1``)."""
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]


def _json_of(raw: bytes) -> Any:
    return json.loads(raw.split(b"\r\n\r\n", 1)[1])


# ---------------------------------------------------------------- bounded memory
@pytest.fixture(scope="module")
def capped_server() -> Iterator[SandboxServer]:
    config = SandboxConfig(
        token=TOKEN,
        random_seed=7,
        rate_limit=RateLimitSettings(limit=0),
        journal_size=JOURNAL_SIZE,
        code_history_size=CODE_HISTORY,
    )
    with SandboxServer(config) as server:
        yield server


@pytest.fixture
def capped(capped_server: SandboxServer) -> Iterator[tuple[SandboxServer, requests.Session]]:
    session = requests.Session()
    assert session.post(f"{capped_server.url}/_sandbox/reset", timeout=10).status_code == 200
    resp = session.post(f"{capped_server.url}/_sandbox/users", json=[USER], timeout=10)
    assert resp.status_code == 200, resp.text
    yield capped_server, session
    session.close()


def _send(server: SandboxServer, session: requests.Session, channel: str) -> requests.Response:
    return session.post(
        f"{server.url}/v1/enterprise/users/send-verification/r-1",
        json={"type": channel},
        headers=AUTH,
        timeout=10,
    )


def _journal_seqs(server: SandboxServer, session: requests.Session, **params: Any) -> list[int]:
    resp = session.get(f"{server.url}/_sandbox/journal", params=params, timeout=10)
    assert resp.status_code == 200, resp.text
    return [e["seq"] for e in resp.json()["data"]]


@pytest.mark.parametrize(
    ("since", "expected"),
    [
        (0, [4, 5, 6, 7, 8]),
        (2, [4, 5, 6, 7, 8]),  # entries 1-3 were dropped: the kept ones come back
        (3, [4, 5, 6, 7, 8]),
        (5, [6, 7, 8]),
        (7, [8]),
        (8, []),
        (100, []),
    ],
)
def test_journal_keeps_latest_entries_and_seq_keeps_counting(
    capped: tuple[SandboxServer, requests.Session], since: int, expected: list[int]
) -> None:
    server, session = capped
    for _ in range(8):
        assert _send(server, session, "email").status_code == 200
    assert _journal_seqs(server, session, since=since) == expected
    assert [e.seq for e in server.journal(since=since)] == expected
    assert [e.seq for e in server.journal(since=since, user_id="r-1")] == expected
    assert server.journal(since=since, user_id="nobody") == []


def test_journal_cap_after_clear_and_to_dict(capped: tuple[SandboxServer, requests.Session]) -> None:
    server, session = capped
    for _ in range(7):
        _send(server, session, "email")
    server.clear_journal()
    for _ in range(2):
        _send(server, session, "email")
    assert _journal_seqs(server, session) == [1, 2]
    entries = session.get(f"{server.url}/_sandbox/journal", timeout=10).json()["data"]
    assert [e.to_dict() for e in server.journal()] == entries
    assert entries[0]["code_sent"] is True
    with server.state.lock:
        assert server.state.journal.maxlen == JOURNAL_SIZE


def test_code_history_is_bounded_but_counts_stay_exact(
    capped: tuple[SandboxServer, requests.Session],
) -> None:
    server, session = capped
    for _ in range(2):
        assert _send(server, session, "email").status_code == 200
    email_code = server.codes("r-1")["email"]["latest"]
    resp = session.post(
        f"{server.url}/v1/enterprise/users/verify/r-1",
        json={"type": "email", "otp": email_code},
        headers=AUTH,
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    for _ in range(4):
        assert _send(server, session, "sms").status_code == 200

    data = session.get(f"{server.url}/_sandbox/codes/r-1", timeout=10).json()["data"]
    # only the latest CODE_HISTORY codes are kept, all sms by now ...
    assert [h["type"] for h in data["history"]] == ["sms"] * CODE_HISTORY
    assert data["history"][-1]["code"] == data["sms"]["latest"]
    # ... while counts and the latest email code are still exact
    assert data["email"]["count"] == 2
    assert data["email"]["latest"] == email_code
    assert isinstance(data["email"]["sent_at"], float)
    assert data["sms"]["count"] == 4
    assert server.codes("r-1") == data
    # the newest sms code is the one verify accepts
    resp = session.post(
        f"{server.url}/v1/enterprise/users/verify/r-1",
        json={"type": "sms", "otp": data["sms"]["latest"]},
        headers=AUTH,
        timeout=10,
    )
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"journal_size": -1}, "journal_size"),
        ({"code_history_size": -2}, "code_history_size"),
        ({"journal_size": 1.5}, "journal_size"),
        ({"request_timeout": 0}, "request_timeout"),
        ({"idle_timeout": -1.0}, "idle_timeout"),
        ({"idle_timeout": float("inf")}, "idle_timeout"),
        ({"faults": FaultSettings(error_500_rate=2.0)}, "error_500_rate"),
    ],
)
def test_invalid_config_is_refused(changes: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        SandboxServer(SandboxConfig(**changes))


def test_settings_field_types_are_resolved() -> None:
    assert _field_types(RateLimitSettings) == {
        "limit": int,
        "window_seconds": float,
        "block_seconds": float,
        "time_scale": float,
        "retry_after": bool,
    }
    assert set(_field_types(FaultSettings).values()) == {float}


@pytest.mark.parametrize(
    ("path", "change", "status", "stored"),
    [
        ("rate-limit", {"limit": 5.0}, 200, ("limit", 5)),
        ("rate-limit", {"time_scale": 1}, 200, ("time_scale", 1.0)),
        ("rate-limit", {"retry_after": True}, 200, ("retry_after", True)),
        ("rate-limit", {"retry_after": 1}, 400, None),
        ("rate-limit", {"limit": 2.5}, 400, None),
        ("faults", {"latency_ms": 3}, 200, ("latency_ms", 3.0)),
        ("faults", {"latency_ms": "3"}, 400, None),
    ],
)
def test_settings_updates_coerce_by_declared_type(
    sandbox: Sandbox, path: str, change: dict[str, Any], status: int, stored: tuple[str, Any] | None
) -> None:
    resp = sandbox.admin("PUT", path, json=change)
    assert resp.status_code == status, resp.text
    if stored is not None:
        name, value = stored
        got = resp.json()["data"][name]
        assert got == value
        assert type(got) is type(value)


# ------------------------------------------------------------- malformed framing
def _chunked(body: bytes, token: str) -> bytes:
    return (
        b"POST /v1/enterprise/users/send-verification/ind-1 HTTP/1.1\r\nHost: x\r\n"
        b"Connection: close\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    )


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b"10\r\n" + b'{"type":"email"}' + b"\r\n0\r\n\r\n", 200, None),  # control: valid
        (b"10;ext=1\r\n" + b'{"type":"email"}' + b"\r\n0\r\nX-T: 1\r\n\r\n", 200, None),
        (b"-5\r\nhello\r\n0\r\n\r\n", 400, "Bad chunk size"),
        (b"+5\r\nhello\r\n0\r\n\r\n", 400, "Bad chunk size"),
        (b"0x5\r\nhello\r\n0\r\n\r\n", 400, "Bad chunk size"),
        (b"1_0\r\n" + b"x" * 16 + b"\r\n0\r\n\r\n", 400, "Bad chunk size"),
        (b"zz\r\nhello\r\n0\r\n\r\n", 400, "Bad chunk size"),
        (b"\r\nhello\r\n0\r\n\r\n", 400, "Bad chunk size"),
        (b"\xd9\xa3\r\nabc\r\n0\r\n\r\n", 400, "Bad chunk size"),  # non-ASCII digit
        (b"5\r\nhelloXY0\r\n\r\n", 400, "Bad chunk: data must end with CRLF"),
        (b"1\r\nx\r\n0\r\n" + b"X-Trailer: aaaaaaaa\r\n" * 4000 + b"\r\n", 400, "Chunked framing too large"),
    ],
)
def test_chunked_framing_is_checked(seeded: Sandbox, body: bytes, status: int, error: str | None) -> None:
    raw = _exchange(seeded.server, _chunked(body, seeded.token))
    assert _statuses(raw) == [status], raw
    if error is not None:
        assert _json_of(raw) == {"error": error}
    else:
        assert _json_of(raw)["data"]["type"] == "email"
    assert seeded.admin("GET", "health").status_code == 200  # the server lives on


@pytest.mark.parametrize(
    ("value", "status", "error"),
    [
        (b"2", 200, None),  # control
        (b"-1", 400, "Bad Content-Length"),
        (b"+5", 400, "Bad Content-Length"),
        (b"0x5", 400, "Bad Content-Length"),
        (b"5 5", 400, "Bad Content-Length"),
        (b"\xb2", 400, "Bad Content-Length"),  # latin-1 superscript two: isdigit() is True
        (b"1" * 30, 413, "Request body too large"),
        (b"9" * 5000, 413, "Request body too large"),  # more digits than int() accepts
    ],
)
def test_content_length_is_checked(seeded: Sandbox, value: bytes, status: int, error: str | None) -> None:
    raw = _exchange(
        seeded.server,
        b"POST /_sandbox/users HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: "
        + value
        + b"\r\n\r\n[]",
    )
    assert _statuses(raw) == [status], raw
    if error is not None:
        assert _json_of(raw) == {"error": error}


def test_empty_lines_before_a_request_are_ignored(seeded: Sandbox) -> None:
    raw = _exchange(
        seeded.server, b"\r\n\r\nGET /_sandbox/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert _status(raw) == 200, raw


# -------------------------------------------------------------- deeply nested JSON
DEPTH = 100_000
NESTED_BODIES = {
    "list": b"[" * DEPTH + b"]" * DEPTH,
    "object": b'{"a":' * DEPTH + b"1" + b"}" * DEPTH,
}


@pytest.mark.parametrize("shape", sorted(NESTED_BODIES))
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/enterprise/register-account"),
        ("POST", "/v1/enterprise/users/send-verification/ind-1"),
        ("POST", "/v1/enterprise/users/verify/ind-1"),
        ("PUT", "/_sandbox/faults"),
        ("PUT", "/_sandbox/rate-limit"),
        ("PUT", "/_sandbox/token"),
        ("POST", "/_sandbox/users"),
    ],
)
def test_deeply_nested_json_is_400(seeded: Sandbox, shape: str, method: str, path: str) -> None:
    resp = seeded.session.request(
        method,
        seeded.url + path,
        data=NESTED_BODIES[shape],
        headers={"Authorization": f"Bearer {seeded.token}", "Content-Type": "application/json"},
        timeout=10,
    )
    assert resp.status_code == 400, resp.text
    assert resp.json() == {"error": "Request body must be JSON"}
    if path.startswith("/v1/"):
        entry = seeded.journal()[-1]
        assert (entry["status"], entry["type"]) == (400, None)


# ------------------------------------------------------------------------ timeouts
@pytest.fixture(scope="module")
def impatient_server() -> Iterator[SandboxServer]:
    config = SandboxConfig(
        token=TOKEN, rate_limit=RateLimitSettings(limit=0), request_timeout=0.2, idle_timeout=0.2
    )
    with SandboxServer(config) as server:
        yield server


POST_HEAD = b"POST /_sandbox/users HTTP/1.1\r\nHost: x\r\n"


@pytest.mark.parametrize(
    ("payload", "answers"),
    [
        (b"", []),  # connected, never sent a byte: idle timeout, closed without answer
        (b"GET /_sandbox/health HTTP/1.1\r\nHost: x\r\n", [408]),  # partial head
        (b"G", [408]),  # a single byte starts a request
        (POST_HEAD + b"Content-Length: 20\r\n\r\n[{", [408]),  # partial body
        (POST_HEAD + b"Transfer-Encoding: chunked\r\n\r\n", [408]),  # no chunk yet
        (POST_HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\n[]", [408]),  # partial chunk
        (POST_HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\n[]\r\n0\r\n", [408]),  # trailers
        (b"GET /_sandbox/health HTTP/1.1\r\nHost: x\r\n\r\n", [200]),  # then idle keep-alive
        (b"GET /_sandbox/health HTTP/1.1\r\n\r\nGET /_sandbox/he", [200, 408]),  # 2nd stalls
    ],
)
def test_stalled_or_idle_connections_are_closed(
    impatient_server: SandboxServer, payload: bytes, answers: list[int]
) -> None:
    raw = _exchange(impatient_server, payload)  # returns only once the server closed
    assert _statuses(raw) == answers, raw
    if 408 in answers:
        assert raw.endswith(b'{"error":"Request timeout"}')
    # the server still serves new connections
    assert requests.get(f"{impatient_server.url}/_sandbox/health", timeout=10).status_code == 200
