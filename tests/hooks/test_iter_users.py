"""SfoxConnectHook.iter_users: the user list read as a stream, pagination, broken bodies."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
import requests_mock as rm
import urllib3

from airflow_sfox.exceptions import (
    SfoxAuthError,
    SfoxError,
    SfoxPaginationError,
    SfoxServerError,
    SfoxStreamInterruptedError,
)
from airflow_sfox.hooks.user_list import STREAM_CHUNK_BYTES
from tests.hooks.conftest import BASE_URL

USERS = f"{BASE_URL}/v1/enterprise/users"
#: Users of a body several stream chunks long (~290 KB).
N = 3000


def user(n: int) -> dict[str, Any]:
    return {"user_id": f"u{n}", "email": f"u{n}@example.com", "requirements": {"email": True, "sms": False}}


class SlowBody:
    """A raw response body handed out in small pieces, recording how far it was read.

    ``fail_after``: raise a connection error (as urllib3 does on a reset) once that many bytes
    were handed out.
    """

    def __init__(self, data: bytes, piece: int = 64, fail_after: int | None = None) -> None:
        self.data = data
        self.piece = piece
        self.fail_after = fail_after
        self.pos = 0
        self.closed = False

    def read(self, size: int = -1, **_: Any) -> bytes:
        if self.fail_after is not None and self.pos >= self.fail_after:
            raise urllib3.exceptions.ProtocolError("Connection broken: reset by peer")
        size = self.piece if size is None or size < 0 else min(size, self.piece)
        chunk = self.data[self.pos : self.pos + size]
        self.pos += len(chunk)
        return chunk

    def close(self) -> None:
        self.closed = True


def body(users: list[dict[str, Any]], before: dict[str, Any] | None = None, **after: Any) -> bytes:
    """A list answer with keys before and/or after ``data``, in that order."""
    obj: dict[str, Any] = dict(before or {})
    obj["data"] = users
    obj.update(after)
    return json.dumps(obj).encode()


@pytest.fixture
def mock() -> rm.Mocker:
    with rm.Mocker() as m:
        yield m


def test_streams_users_one_at_a_time(make_hook, mock):
    raw = SlowBody(body([user(n) for n in range(N)]))
    mock.get(USERS, body=raw)
    hook = make_hook()
    users = hook.iter_users()

    first = next(users)
    assert first == user(0)
    # urllib3 fills one read of the hook's chunk size (64 KiB) before the parser sees it.
    assert 0 < raw.pos <= STREAM_CHUNK_BYTES < len(raw.data) / 4, "the first user came early"
    rest = list(users)
    assert [u["user_id"] for u in [first, *rest]] == [f"u{n}" for n in range(N)]
    assert mock.call_count == 1
    assert hook.stats.requests == 1
    req = mock.last_request
    assert req.headers["Authorization"] == "Bearer tok"
    assert req.qs == {}


def test_role_filter_and_eager_validation(make_hook, mock):
    mock.get(USERS, json={"data": [user(1)]})
    hook = make_hook()
    assert list(hook.iter_users(account_role="advisor")) == [user(1)]
    assert mock.last_request.qs == {"accountrole": ["advisor"]}
    with pytest.raises(ValueError, match="account_role"):
        hook.iter_users(account_role="Advisor")  # at once, not on the first next()
    assert mock.call_count == 1


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", []),
        (b'{"data": []}', []),
        (b'{"data": null}', []),
        (b"[" + json.dumps(user(1)).encode() + b"]", [user(1)]),  # no envelope
        (b'{"data": [{"user_id": "a", "score": 1.5}, 7, "x"]}', [{"user_id": "a", "score": 1.5}]),
    ],
)
def test_tolerant_shapes(make_hook, mock, raw, expected):
    mock.get(USERS, content=raw)
    users = list(make_hook().iter_users())
    assert users == expected
    assert all(type(v) is not object for u in users for v in u.values())
    if users and "score" in users[0]:
        assert type(users[0]["score"]) is float  # like json.loads, not Decimal


def test_list_users_is_the_whole_stream(make_hook, mock):
    mock.get(USERS, content=body([user(1), user(2)]))
    assert make_hook().list_users() == [user(1), user(2)]


# --- pagination ---------------------------------------------------------------------------------


def _pages(mock: rm.Mocker, pages: dict[str | None, bytes]) -> None:
    """Serve pages by the ``cursor`` query parameter (None: the first page)."""

    def answer(request: Any, context: Any) -> bytes:
        cursor = request.qs.get("cursor", [None])[-1]
        return pages[cursor]

    mock.get(USERS, content=answer)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("next", "/v1/enterprise/users?cursor=p2"),
        ("next", f"{BASE_URL}/v1/enterprise/users?cursor=p2"),
        ("next", "p2"),  # neither URL nor path: a cursor
        ("next_url", "/v1/enterprise/users?cursor=p2"),
        ("links.next", "/v1/enterprise/users?cursor=p2"),
        ("next_cursor", "p2"),
        ("cursor", "p2"),
        ("meta.next_cursor", "p2"),
        ("pagination.next_cursor", "p2"),
    ],
)
@pytest.mark.parametrize("where", ["before", "after"])
def test_pagination_keys(make_hook, mock, key, value, where):
    head, _, tail = key.partition(".")
    named: dict[str, Any] = {head: {tail: value}} if tail else {head: value}
    first = body([user(1), user(2)], before=named) if where == "before" else body([user(1), user(2)], **named)
    last = body([user(3)], **({head: {tail: None}} if tail else {head: None}))
    _pages(mock, {None: first, "p2": last})

    users = list(make_hook().iter_users())
    assert [u["user_id"] for u in users] == ["u1", "u2", "u3"]
    assert mock.call_count == 2
    assert mock.request_history[1].qs == {"cursor": ["p2"]}


def test_cursor_keeps_the_role_filter(make_hook, mock):
    _pages(mock, {None: body([user(1)], next_cursor="p2"), "p2": body([user(2)])})
    users = list(make_hook().iter_users(account_role="client"))
    assert [u["user_id"] for u in users] == ["u1", "u2"]
    assert mock.request_history[1].qs == {"accountrole": ["client"], "cursor": ["p2"]}


def test_a_repeated_cursor_is_a_loop(make_hook, mock):
    _pages(mock, {None: body([user(1)], next_cursor="p2"), "p2": body([user(2)], next_cursor="p2")})
    seen = []
    with pytest.raises(SfoxPaginationError, match="twice"):
        seen.extend(u["user_id"] for u in make_hook().iter_users())
    assert seen == ["u1", "u2"]
    assert mock.call_count == 2


def test_a_next_page_on_another_host_is_refused(make_hook, mock):
    mock.get(USERS, content=body([user(1)], next="https://evil.example/v1/enterprise/users?cursor=2"))
    evil = mock.get("https://evil.example/v1/enterprise/users")
    with pytest.raises(SfoxPaginationError, match="not under"):
        list(make_hook().iter_users())
    assert evil.call_count == 0


def test_each_page_is_one_paced_request(make_hook, mock):
    _pages(
        mock,
        {None: body([user(1)], next_cursor="b"), "b": body([user(2)], next_cursor="c"), "c": body([])},
    )
    hook = make_hook()
    assert len(list(hook.iter_users())) == 2
    assert hook.stats.requests == 3


# --- errors -------------------------------------------------------------------------------------


def test_401_before_the_body_is_the_typed_error(make_hook, mock):
    mock.get(USERS, status_code=401, json={"error": "invalid api key"})
    with pytest.raises(SfoxAuthError) as caught:
        list(make_hook().iter_users())
    assert caught.value.status_code == 401
    assert mock.call_count == 1


def test_5xx_before_the_body_is_retried(make_hook, mock):
    mock.get(USERS, [{"status_code": 503, "json": {"error": "maintenance"}}, {"content": body([user(1)])}])
    assert list(make_hook().iter_users()) == [user(1)]
    assert mock.call_count == 2


def test_5xx_past_the_retry_budget(make_hook, mock):
    mock.get(USERS, status_code=500, json={"error": "boom"})
    with pytest.raises(SfoxServerError):
        list(make_hook(max_retry_seconds=0).iter_users())


def test_truncated_body(make_hook, mock):
    raw = body([user(n) for n in range(10)])
    mock.get(USERS, content=raw[: len(raw) - 40])
    seen = []
    with pytest.raises(SfoxStreamInterruptedError, match="ended before its JSON") as caught:
        seen.extend(make_hook().iter_users())
    assert len(seen) == 9
    assert caught.value.retryable
    assert mock.call_count == 1  # never retried from the start


def test_connection_lost_mid_stream_is_not_retried(make_hook, mock):
    raw = body([user(n) for n in range(N)])
    mock.get(USERS, body=SlowBody(raw, piece=4096, fail_after=3 * STREAM_CHUNK_BYTES))
    seen = []
    with pytest.raises(SfoxStreamInterruptedError, match="ChunkedEncodingError") as caught:
        seen.extend(make_hook().iter_users())
    assert 0 < len(seen) < N
    assert f"after {len(seen)} users" in str(caught.value)
    assert mock.call_count == 1


def test_read_timeout_mid_stream(make_hook, mock):
    class TimingOut(SlowBody):
        def read(self, size: int = -1, **kw: Any) -> bytes:
            if self.pos >= 2 * STREAM_CHUNK_BYTES:
                raise urllib3.exceptions.ReadTimeoutError(None, "/", "read timed out")  # type: ignore[arg-type]
            return super().read(size, **kw)

    mock.get(USERS, body=TimingOut(body([user(n) for n in range(N)]), piece=4096))
    with pytest.raises(SfoxStreamInterruptedError):
        list(make_hook().iter_users())
    assert mock.call_count == 1


def test_not_json_keeps_the_body_out_of_the_error(make_hook, mock):
    mock.get(USERS, content=b"<html>jane.doe@example.com +12223334444</html>")
    with pytest.raises(SfoxError, match="not JSON") as caught:
        list(make_hook().iter_users())
    assert not isinstance(caught.value, SfoxStreamInterruptedError)
    assert caught.value.__cause__ is None
    assert "jane" not in str(caught.value)


def test_connection_is_released_when_the_caller_stops_early(make_hook, mock):
    raw = SlowBody(body([user(n) for n in range(N)]))
    mock.get(USERS, body=raw)
    users = make_hook().iter_users()
    next(users)
    assert not raw.closed
    users.close()
    assert raw.closed


# --- test_connection ----------------------------------------------------------------------------


def test_test_connection_counts_without_keeping(make_hook, mock):
    mock.get(USERS, content=body([user(n) for n in range(5)]))
    ok, message = make_hook().test_connection()
    assert (ok, message) == (True, f"Connected to {BASE_URL} as the partner: 5 end users visible.")


def test_test_connection_stops_after_a_bound(make_hook, mock, monkeypatch):
    monkeypatch.setattr("airflow_sfox.hooks.sfox.TEST_CONNECTION_MAX_COUNT", 10)
    raw = SlowBody(body([user(n) for n in range(N)]))
    mock.get(USERS, body=raw)
    ok, message = make_hook().test_connection()
    assert ok is True
    assert "at least 10 end users" in message
    assert raw.pos <= STREAM_CHUNK_BYTES < len(raw.data) / 4


def test_test_connection_says_when_more_pages_follow(make_hook, mock):
    mock.get(USERS, content=body([user(1)], next_cursor="p2"))
    ok, message = make_hook().test_connection()
    assert ok is True
    assert "1 end users on the first page, more pages follow" in message
    assert mock.call_count == 1


@pytest.mark.parametrize(
    "response",
    [
        {"status_code": 401, "json": {"error": "invalid api key"}},
        {"status_code": 503, "json": {"error": "maintenance"}},
        {"exc": requests.ConnectionError("refused")},
        {"content": b'{"data": [{"user_id": "a"}, {"us'},
    ],
)
def test_test_connection_failure_names_the_connection(make_hook, mock, response):
    mock.get(USERS, **response)
    ok, message = make_hook(password="very-secret").test_connection()
    assert ok is False
    assert "'sfox_default'" in message
    assert "very-secret" not in message
    assert mock.call_count == 1
