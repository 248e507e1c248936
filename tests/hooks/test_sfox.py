"""Unit tests of SfoxConnectHook against requests-mock, on a fake clock (no real sleeping)."""

from __future__ import annotations

import logging
import pickle
import threading
from urllib.parse import urlsplit

import pytest
import requests
import requests_mock as rm
import urllib3

from airflow_sfox.exceptions import (
    SfoxAlreadyVerifiedError,
    SfoxAuthError,
    SfoxConfigError,
    SfoxConnectionError,
    SfoxError,
    SfoxInvalidRequestError,
    SfoxNotFoundError,
    SfoxRateLimitError,
    SfoxServerError,
    scrub,
)
from airflow_sfox.hooks.sfox import SfoxConnectHook
from airflow_sfox.hooks.transport import MAX_BACKOFF_SECONDS, retry_after
from tests.hooks.conftest import BASE_URL, LOOPBACK_URL

SEND = f"{BASE_URL}/v1/enterprise/users/send-verification/"
OK_EMAIL = {"data": {"user_id": "u1", "type": "email", "email": "jane.doe@example.com"}}


@pytest.fixture
def mock() -> rm.Mocker:
    with rm.Mocker() as m:
        yield m


# --- requests on the wire ----------------------------------------------------------------------


def test_send_verification_request_and_payload(make_hook, mock):
    mock.post(f"{SEND}u1", json=OK_EMAIL)
    data = make_hook(password="secret-token").send_verification("u1", "email")

    assert data == OK_EMAIL["data"]
    req = mock.last_request
    assert req.method == "POST"
    assert req.headers["Authorization"] == "Bearer secret-token"
    assert req.headers["Accept"] == "application/json"
    assert req.headers["User-Agent"].startswith("airflow-provider-sfox/")
    assert req.json() == {"type": "email"}


@pytest.mark.parametrize(
    ("user_id", "segment"),
    [
        ("client_account_1", "client_account_1"),
        ("a/b", "a%2Fb"),
        ("?", "%3F"),
        ("x?type=sms", "x%3Ftype%3Dsms"),
        ("#", "%23"),
        ("%", "%25"),
        ("%2F", "%252F"),
        ("a b", "a%20b"),
        ("é字", "%C3%A9%E5%AD%97"),
        ("...", "..."),
        ("a..b", "a..b"),
        ("../../admin", "..%2F..%2Fadmin"),
        ("a\\b", "a%5Cb"),
        ("a;b=c&d", "a%3Bb%3Dc%26d"),
    ],
)
def test_hostile_user_id_is_one_path_segment(make_hook, mock, user_id, segment):
    mock.post(rm.ANY, json=OK_EMAIL)
    make_hook().send_verification(user_id, "email")

    url = urlsplit(mock.last_request.url)
    assert url.path == f"/v1/enterprise/users/send-verification/{segment}"
    assert url.query == ""
    assert url.fragment == ""


@pytest.mark.parametrize("user_id", ["", ".", "..", "a\nb", "a\rb", "nul\x00", "del\x7f", "c1\x85", 42, None])
def test_invalid_user_id_is_refused_before_any_request(make_hook, mock, user_id):
    hook = make_hook()
    with pytest.raises(ValueError, match="user_id"):
        hook.send_verification(user_id, "email")
    with pytest.raises(ValueError, match="user_id"):
        hook.get_user(user_id)
    assert mock.call_count == 0


@pytest.mark.parametrize("verification_type", ["phone", "EMAIL", "", "email ", None])
def test_invalid_verification_type_is_refused_before_any_request(make_hook, mock, verification_type):
    with pytest.raises(ValueError, match="verification_type"):
        make_hook().send_verification("u1", verification_type)
    assert mock.call_count == 0


@pytest.mark.parametrize(
    ("extra", "overrides", "expected"),
    [
        ({}, {}, (10.0, 30.0)),
        ({"timeout": 5}, {}, (10.0, 5.0)),
        ({"timeout": "7.5", "connect_timeout": "2"}, {}, (2.0, 7.5)),
        ({"timeout": 5}, {"timeout": 9}, (10.0, 9.0)),
    ],
)
def test_timeouts_are_passed(monkeypatch, clock, mock, extra, overrides, expected):
    from tests.helpers import sfox_conn_json

    monkeypatch.setenv("AIRFLOW_CONN_SFOX_DEFAULT", sfox_conn_json(BASE_URL, **extra))
    mock.get(f"{BASE_URL}/v1/enterprise/users/u1", json={"data": {"user_id": "u1"}})
    SfoxConnectHook(clock=clock, sleep=clock.sleep, **overrides).get_user("u1")
    assert mock.last_request.timeout == expected


def test_other_endpoints(make_hook, mock):
    hook = make_hook()
    mock.post(f"{BASE_URL}/v1/enterprise/users/verify/u%201", json={"data": {"success": True}})
    mock.get(f"{BASE_URL}/v1/enterprise/users", json={"data": [{"user_id": "a"}]})
    mock.post(f"{BASE_URL}/v1/enterprise/register-account", status_code=200, text="")

    assert hook.confirm_verification("u 1", "sms", "123456") == {"success": True}
    assert mock.last_request.json() == {"type": "sms", "otp": "123456"}
    assert hook.list_users() == [{"user_id": "a"}]
    assert mock.last_request.qs == {}
    assert hook.list_users(account_role="advisor") == [{"user_id": "a"}]
    assert mock.last_request.qs == {"accountrole": ["advisor"]}
    assert hook.create_user({"user_id": "n1", "account_type": "individual"}) == {}
    assert mock.last_request.json() == {"user_id": "n1", "account_type": "individual"}
    with pytest.raises(ValueError, match="account_role"):
        hook.list_users(account_role="Client")


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ({"json": {"data": {"a": 1}}}, {"a": 1}),
        ({"json": {"user_id": "u1"}}, {"user_id": "u1"}),  # no envelope: taken as it is
        ({"text": ""}, {}),
        ({"json": {"data": ["not", "an", "object"]}}, {}),
        ({"status_code": 204, "text": ""}, {}),
    ],
)
def test_payload_parsing(make_hook, mock, response, expected):
    mock.get(f"{BASE_URL}/v1/enterprise/users/u1", **response)
    assert make_hook().get_user("u1") == expected


def test_non_json_success_is_an_error(make_hook, mock):
    mock.get(f"{BASE_URL}/v1/enterprise/users/u1", text="<html>maintenance</html>")
    with pytest.raises(SfoxError, match="not JSON"):
        make_hook().get_user("u1")


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "error_class"),
    [
        (400, {"error": "invalid type"}, SfoxInvalidRequestError),
        (401, {"error": "invalid api key"}, SfoxAuthError),
        (403, {"error": "not authorized"}, SfoxAuthError),
        (404, {"error": "user not found"}, SfoxNotFoundError),
        (405, {"error": "method not allowed"}, SfoxInvalidRequestError),
        (406, {"error": "json only"}, SfoxInvalidRequestError),
        (422, {"error": "Email already verified"}, SfoxAlreadyVerifiedError),
        (422, {"error": "Phone number has already been verified"}, SfoxAlreadyVerifiedError),
        (422, {"error": "Email must be verified first"}, SfoxInvalidRequestError),
    ],
)
def test_client_errors_are_typed_and_never_retried(make_hook, mock, clock, status, body, error_class):
    mock.post(f"{SEND}u1", status_code=status, json=body)
    with pytest.raises(error_class) as caught:
        make_hook().send_verification("u1", "email")

    err = caught.value
    assert type(err) is error_class
    assert err.status_code == status
    assert err.message == body["error"]
    assert not err.retryable
    assert f"HTTP {status}" in str(err)
    assert "/v1/enterprise/users/send-verification/u1" in str(err)
    assert mock.call_count == 1
    assert clock.waits == []
    if error_class is SfoxInvalidRequestError and status == 422:
        assert not isinstance(err, SfoxAlreadyVerifiedError)


def test_error_without_json_body_uses_reason(make_hook, mock):
    mock.get(f"{BASE_URL}/v1/enterprise/users/u1", status_code=404, text="nope", reason="Not Found")
    with pytest.raises(SfoxNotFoundError) as caught:
        make_hook().get_user("u1")
    assert caught.value.message == "Not Found"


@pytest.mark.parametrize("error_class", [SfoxNotFoundError, SfoxServerError, SfoxConnectionError])
def test_errors_survive_pickling(error_class):
    err = error_class("boom", status_code=404, method="GET", path="/x")
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone) is error_class
    assert (clone.message, clone.status_code, clone.method, clone.path) == ("boom", 404, "GET", "/x")
    assert str(clone) == str(err)
    err.attempts, err.uncertain = 3, True
    clone = pickle.loads(pickle.dumps(err))
    assert (clone.attempts, clone.uncertain) == (3, True)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Email already verified", "Email already verified"),
        ("jane.doe@example.com already verified", "<email> already verified"),
        ("phone +1 (222) 333-4444 invalid", "phone <phone> invalid"),
        ("bad token tok-123", "bad token ***"),
        ("line\nbreak\tand  spaces", "line break and spaces"),
        ("x" * 500, "x" * 197 + "..."),
    ],
)
def test_scrub(text, expected):
    assert scrub(text, secrets=("tok-123",)) == expected


# --- retries -----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_retried_until_success(make_hook, mock, clock, status):
    mock.post(
        f"{SEND}u1",
        [{"status_code": status, "json": {"error": "down"}}] * 3 + [{"json": OK_EMAIL}],
    )
    assert make_hook().send_verification("u1", "email") == OK_EMAIL["data"]
    assert mock.call_count == 4
    assert len(clock.waits) == 3
    for attempt, wait in enumerate(clock.waits, start=1):
        assert 0 <= wait <= 0.5 * 2 ** (attempt - 1)


@pytest.mark.parametrize(
    "exc", [requests.ConnectionError, requests.ConnectTimeout, requests.ReadTimeout, requests.Timeout]
)
def test_connection_errors_and_timeouts_are_retried(make_hook, mock, clock, exc):
    mock.post(f"{SEND}u1", [{"exc": exc}, {"exc": exc}, {"json": OK_EMAIL}])
    assert make_hook().send_verification("u1", "email") == OK_EMAIL["data"]
    assert mock.call_count == 3
    assert len(clock.waits) == 2


REGISTER = f"{BASE_URL}/v1/enterprise/register-account"
NEW_USER = {"user_id": "n1", "account_type": "individual"}


@pytest.mark.parametrize(
    ("first", "error_class"),
    [
        ({"status_code": 500, "json": {"error": "boom"}}, SfoxServerError),
        ({"status_code": 503, "json": {"error": "maintenance"}}, SfoxServerError),
        ({"exc": requests.ReadTimeout}, SfoxConnectionError),
        ({"exc": requests.ConnectionError("reset")}, SfoxConnectionError),
    ],
    ids=["500", "503", "read-timeout", "connection-lost"],
)
def test_create_user_is_single_shot_when_the_request_may_have_landed(
    make_hook, mock, clock, first, error_class
):
    mock.post(REGISTER, [first, {"json": {"data": {}}}])
    with pytest.raises(error_class) as raised:
        make_hook().create_user(NEW_USER)
    assert mock.call_count == 1  # never a second register request: read the user first
    assert raised.value.attempts == 1


@pytest.mark.parametrize(
    "first",
    [{"status_code": 429, "json": {"error": "slow down"}}, {"exc": requests.ConnectTimeout}],
    ids=["429", "connect-timeout"],
)
def test_create_user_repeats_only_what_surely_did_nothing(make_hook, mock, clock, first):
    mock.post(REGISTER, [first, {"json": {"data": {"user_id": "n1"}}}])
    assert make_hook().create_user(NEW_USER) == {"user_id": "n1"}
    assert mock.call_count == 2


@pytest.mark.parametrize(
    ("response", "error_class", "status"),
    [
        ({"status_code": 503, "json": {"error": "maintenance"}}, SfoxServerError, 503),
        ({"exc": requests.ConnectionError("reset")}, SfoxConnectionError, None),
    ],
)
def test_retries_stop_at_the_retry_budget(make_hook, mock, clock, response, error_class, status):
    mock.post(f"{SEND}u1", **response)
    hook = make_hook(max_retry_seconds=20)
    started = clock.now
    with pytest.raises(error_class) as caught:
        hook.send_verification("u1", "email")

    assert caught.value.status_code == status
    assert caught.value.retryable
    assert mock.call_count > 3
    assert clock.now - started <= 20
    assert len(clock.waits) == mock.call_count - 1


@pytest.mark.parametrize(
    ("responses", "trail", "raises"),
    [
        ([{"json": OK_EMAIL}], [(200, None, False)], None),
        (
            [
                {"status_code": 503, "json": {"error": "down"}},
                {"exc": requests.ReadTimeout},
                {"json": OK_EMAIL},
            ],
            [(503, "down", False), (None, "ReadTimeout", True), (200, None, False)],
            None,
        ),
        (
            [{"exc": requests.ConnectTimeout}, {"status_code": 404, "json": {"error": "no such user"}}],
            [(None, "ConnectTimeout", False), (404, "no such user", False)],
            SfoxNotFoundError,
        ),
        ([{"status_code": 200, "text": "<html>"}], [(200, "response is not JSON", False)], SfoxError),
        ([{"exc": requests.exceptions.SSLError}], [(None, "SSLError", False)], SfoxError),
    ],
    ids=["ok", "503-timeout-ok", "connect-timeout-404", "not-json", "tls-error"],
)
def test_every_request_of_a_call_is_in_its_trail(make_hook, mock, clock, responses, trail, raises):
    mock.post(f"{SEND}u1", responses)
    hook = make_hook()
    if raises is None:
        answer = hook.send_verification_result("u1", "email")
    else:
        with pytest.raises(raises) as caught:
            hook.send_verification_result("u1", "email")
        answer = caught.value
    assert [(a.status, a.error, a.uncertain) for a in answer.trail] == trail
    assert answer.attempts == len(answer.trail) == mock.call_count
    assert answer.uncertain == any(a.uncertain for a in answer.trail)
    assert all(a.at.tzinfo is not None for a in answer.trail)


def test_no_retry_budget_means_one_attempt(make_hook, mock, clock):
    mock.post(f"{SEND}u1", status_code=500, json={"error": "x"})
    with pytest.raises(SfoxServerError):
        make_hook(max_retry_seconds=0).send_verification("u1", "email")
    assert mock.call_count == 1


@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    [(1, 0.5), (2, 1.0), (4, 4.0), (7, MAX_BACKOFF_SECONDS), (30, MAX_BACKOFF_SECONDS)],
)
def test_backoff_is_capped_full_jitter(make_hook, attempt, ceiling):
    hook = make_hook()
    draws = [hook._backoff(attempt) for _ in range(300)]
    assert all(0 <= d <= ceiling for d in draws)
    assert max(draws) > ceiling * 0.8  # jitter spans the range, not a constant


# --- 429 -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "extra", "expected_pause"),
    [
        ({}, {}, 60.0),
        ({}, {"rate_limit_pause_seconds": 15}, 15.0),
        ({"Retry-After": "7"}, {}, 7.0),
        ({"Retry-After": "garbage"}, {}, 60.0),
    ],
)
def test_429_pauses_then_retries(make_hook, mock, clock, headers, extra, expected_pause):
    mock.post(
        f"{SEND}u1",
        [{"status_code": 429, "json": {"error": "rate limited"}, "headers": headers}, {"json": OK_EMAIL}],
    )
    assert make_hook(**extra).send_verification("u1", "email") == OK_EMAIL["data"]
    assert mock.call_count == 2
    assert clock.waits == [expected_pause]


def test_429_gives_up_when_the_pause_passes_the_retry_budget(make_hook, mock, clock):
    mock.post(f"{SEND}u1", status_code=429, json={"error": "rate limited"})
    with pytest.raises(SfoxRateLimitError) as caught:
        make_hook(max_retry_seconds=100).send_verification("u1", "email")
    assert caught.value.status_code == 429
    assert mock.call_count == 2  # 0 s: 429, pause 60 s; 60 s: 429, a second pause would end at 120 s
    assert clock.waits == [60.0]


def test_429_pause_holds_every_thread(make_hook, mock, clock):
    """A 429 seen by one thread makes another thread's request wait for the same pause."""
    hook = make_hook(rate_limit_requests=250)
    request_times: dict[str, float] = {}

    def answer(request, context):
        user = request.path.rsplit("/", 1)[-1]
        request_times.setdefault(user, clock.now)
        if user == "a" and len([r for r in mock.request_history if r.path.endswith("/a")]) == 1:
            context.status_code = 429
            return {"error": "rate limited"}
        return OK_EMAIL

    mock.post(rm.ANY, json=answer)
    other: dict[str, object] = {}

    def in_other_thread(seconds: float) -> None:
        # While thread A sleeps out its pause, thread B sends its own request.
        if threading.current_thread().name == "A" and "b" not in other:
            worker = threading.Thread(
                target=lambda: other.setdefault("b", hook.send_verification("b", "email")), name="B"
            )
            worker.start()
            worker.join()

    clock.on_sleep = in_other_thread
    start = clock.now
    thread_a = threading.Thread(target=lambda: hook.send_verification("a", "email"), name="A")
    thread_a.start()
    thread_a.join()

    assert other["b"] == OK_EMAIL["data"]
    assert ("B", 60.0) in clock.sleeps
    assert request_times["b"] >= start + 60
    statuses = [r for r in mock.request_history if r.path.endswith("/a")]
    assert len(statuses) == 2


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("12", 12.0),
        ("0.5", 0.5),
        ("-3", 0.0),
        ("soon", None),
        ("nan", None),
        ("inf", None),
        ("86400", 3600.0),
    ],
)
def test_retry_after_parsing(value, expected):
    assert retry_after(value) == expected


def test_retry_after_http_date():
    from email.utils import formatdate
    from time import time

    assert 25 <= retry_after(formatdate(time() + 30, usegmt=True)) <= 31


# --- pacing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "expected_waits"),
    [
        # 2 per 10 s: the third start waits until the first has left the window (so far under
        # sFOX's limit that no jitter margin is added).
        ({"rate_limit_requests": 2}, [10]),
        ({"rate_limit_requests": 3}, []),
        ({"rate_limit_requests": 0, "host": LOOPBACK_URL}, []),  # no client-side budget: sandbox only
    ],
)
def test_hook_paces_requests(make_hook, mock, clock, extra, expected_waits):
    mock.post(rm.ANY, json=OK_EMAIL)
    hook = make_hook(**extra)
    for user in ("a", "b", "c"):
        hook.send_verification(user, "email")
    assert clock.waits == pytest.approx(expected_waits)
    assert hook.stats.as_dict()["budget_wait_seconds"] == pytest.approx(sum(expected_waits))


# --- connection --------------------------------------------------------------------------------


def test_no_io_in_init_and_connection_fetched_once(monkeypatch, make_hook, mock):
    calls = []
    original = SfoxConnectHook.get_connection

    def counting(conn_id):
        calls.append(conn_id)
        return original(conn_id)

    monkeypatch.setattr(SfoxConnectHook, "get_connection", staticmethod(counting))
    hook = make_hook()
    assert calls == []
    mock.post(rm.ANY, json=OK_EMAIL)
    for user in ("a", "b", "c"):
        hook.send_verification(user, "email")
    assert calls == ["sfox_default"]


def test_unknown_connection_fails_on_first_use_not_in_init(clock):
    hook = SfoxConnectHook(sfox_conn_id="does_not_exist", clock=clock, sleep=clock.sleep)
    with pytest.raises(Exception, match="does_not_exist"):
        hook.get_user("u1")


def test_one_session_reused_and_closed(make_hook, mock):
    mock.post(rm.ANY, json=OK_EMAIL)
    with make_hook() as hook:
        hook.send_verification("a", "email")
        session = hook.session
        hook.send_verification("b", "email")
        assert hook.session is session
        assert hook.get_conn() is session
        assert session.get_adapter(BASE_URL)._pool_maxsize == hook.pool_size
    assert hook._session is None
    hook.send_verification("c", "email")  # usable again after close, with a new session
    assert hook.session is not session
    hook.close()


@pytest.mark.parametrize("password", [None, "", "   "])
def test_missing_token_names_the_connection(make_hook, mock, password):
    with pytest.raises(SfoxConfigError, match="'sfox_default' has no Enterprise API token"):
        make_hook(password=password).get_user("u1")
    assert mock.call_count == 0


@pytest.mark.parametrize(
    ("host", "base_url"),
    [
        ("https://api.sfox.com", "https://api.sfox.com"),
        ("https://api.sfox.com/", "https://api.sfox.com"),
        ("api.staging.sfox.com", "https://api.staging.sfox.com"),
        ("http://127.0.0.1:8089", "http://127.0.0.1:8089"),
        ("http://localhost:8089", "http://localhost:8089"),
        ("http://[::1]:8089", "http://[::1]:8089"),
        ("", "https://api.sfox.com"),
    ],
)
def test_base_url(make_hook, host, base_url):
    assert make_hook(host=host).base_url == base_url


@pytest.mark.parametrize(
    ("host", "match"),
    [
        ("http://api.sfox.com", "https is required"),
        ("http://10.0.0.5:8089", "https is required"),
        ("ftp://api.sfox.com", "must be a base URL"),
        ("https://api.sfox.com/?x=1", "no query"),
    ],
)
def test_bad_base_url_is_refused(make_hook, mock, host, match):
    with pytest.raises(SfoxConfigError, match=match):
        make_hook(host=host).get_user("u1")
    assert mock.call_count == 0


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"timeout": "fast"}, "'timeout' must be a number"),
        ({"rate_limit_requests": -1}, "'rate_limit_requests' must be >= 0"),
        ({"connect_timeout": 0}, "'connect_timeout' must be >= 0.1"),
    ],
)
def test_bad_extra_is_refused(make_hook, extra, match):
    with pytest.raises(SfoxConfigError, match=match):
        make_hook(**extra).get_user("u1")


# --- test_connection ---------------------------------------------------------------------------


def test_test_connection_success(make_hook, mock):
    mock.get(f"{BASE_URL}/v1/enterprise/users", json={"data": [{"user_id": "adv"}, {"user_id": "c"}]})
    ok, message = make_hook().test_connection()
    assert ok is True
    assert BASE_URL in message
    assert "2 end users visible" in message
    assert mock.call_count == 1


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ({"status_code": 401, "json": {"error": "invalid api key"}}, "HTTP 401"),
        ({"status_code": 503, "json": {"error": "maintenance"}}, "HTTP 503"),
        ({"exc": requests.ConnectionError("refused")}, "no response"),
    ],
)
def test_test_connection_failure_never_raises_nor_retries(make_hook, mock, response, expected):
    mock.get(f"{BASE_URL}/v1/enterprise/users", **response)
    ok, message = make_hook(password="very-secret").test_connection()
    assert ok is False
    assert expected in message
    assert "'sfox_default'" in message
    assert "very-secret" not in message
    assert mock.call_count == 1


@pytest.mark.parametrize(
    ("call", "response"),
    [
        (
            lambda hook: hook.send_verification("u1", "email"),
            {"status_code": 401, "json": {"error": "bad key"}},
        ),
        (lambda hook: hook.get_user("u1"), {"status_code": 404, "json": {"error": "not found"}}),
        (lambda hook: list(hook.iter_users()), {"status_code": 403, "json": {"error": "forbidden"}}),
        (lambda hook: hook.get_user("u1"), {"exc": requests.ConnectionError("refused")}),
    ],
)
def test_every_request_error_names_the_connection(make_hook, mock, call, response):
    mock.register_uri(rm.ANY, rm.ANY, **response)
    with pytest.raises(SfoxError) as caught:
        call(make_hook(max_retry_seconds=0))
    assert caught.value.conn_id == "sfox_default"
    assert "through connection 'sfox_default'" in str(caught.value)
    assert pickle.loads(pickle.dumps(caught.value)).conn_id == "sfox_default"  # across processes


def test_test_connection_reports_config_errors(make_hook, mock):
    ok, message = make_hook(password=None).test_connection()
    assert ok is False
    assert "no Enterprise API token" in message
    assert mock.call_count == 0


# --- secrets and personal data -------------------------------------------------------------------


def test_no_token_or_pii_in_logs_or_errors(make_hook, mock, caplog, capsys):
    token = "tok-SECRET-1234"
    email, phone = "jane.doe@example.com", "+12223334444"
    mock.post(f"{SEND}u1", json={"data": {"user_id": "u1", "type": "email", "email": email}})
    mock.post(
        f"{SEND}u2",
        status_code=422,
        json={"error": f"Phone number has already been verified: {phone}, {email}, {token}"},
    )
    mock.post(f"{SEND}u3", [{"status_code": 500, "text": f"{email} {phone}"}, {"json": OK_EMAIL}])
    hook = make_hook(password=token)
    caplog.set_level(logging.DEBUG)

    hook.send_verification("u1", "email")
    with pytest.raises(SfoxAlreadyVerifiedError) as caught:
        hook.send_verification("u2", "sms")
    hook.send_verification("u3", "email")

    # Airflow 3.3 logs through structlog to the console, 3.1 through the logging module: read both.
    captured = capsys.readouterr()
    logs = caplog.text + captured.out + captured.err
    texts = [logs, str(caught.value), repr(caught.value), caught.value.message, repr(hook.config)]
    for text in texts:
        assert token not in text
        assert email not in text
        assert phone not in text
        assert "Authorization" not in text
    assert "POST /v1/enterprise/users/send-verification/u1 -> 200" in logs
    assert isinstance(caught.value, SfoxAlreadyVerifiedError)  # scrubbing kept the meaning


# --- helpers -----------------------------------------------------------------------------------


# --- responses and transport errors that are not plain successes ------------------------------


@pytest.mark.parametrize("status", [301, 302, 307, 101])
def test_unexpected_non_2xx_is_an_error_not_data(make_hook, mock, status):
    mock.post(f"{SEND}u1", status_code=status, headers={"Location": "https://elsewhere.test/"})
    with pytest.raises(SfoxError, match=f"unexpected HTTP {status}") as caught:
        make_hook().send_verification("u1", "email")
    assert not caught.value.retryable
    assert mock.call_count == 1


@pytest.mark.parametrize(
    ("exc", "retried"),
    [
        (requests.exceptions.ChunkedEncodingError("cut mid-body"), True),
        (requests.exceptions.SSLError("certificate verify failed"), False),
        (requests.exceptions.InvalidURL("bad"), False),
    ],
)
def test_transport_errors_are_typed(make_hook, mock, clock, exc, retried):
    mock.post(f"{SEND}u1", [{"exc": exc}, {"json": OK_EMAIL}])
    hook = make_hook()
    if retried:
        assert hook.send_verification("u1", "email") == OK_EMAIL["data"]
        assert mock.call_count == 2
    else:
        with pytest.raises(SfoxError) as caught:
            hook.send_verification("u1", "email")
        assert type(caught.value) is SfoxError
        assert not caught.value.retryable
        assert str(exc) not in str(caught.value)
        assert mock.call_count == 1


@pytest.mark.parametrize(
    ("exc", "uncertain"),
    [
        (requests.ReadTimeout("read timed out"), True),  # sent; the answer never came
        (requests.ConnectionError(ConnectionResetError("reset by peer")), True),
        (requests.ConnectTimeout("connect timed out"), False),  # never reached sFOX
        (
            requests.ConnectionError(
                urllib3.exceptions.MaxRetryError(
                    None, "/", urllib3.exceptions.NewConnectionError(None, "refused")
                )
            ),
            False,
        ),
    ],
)
def test_result_reports_attempts_and_uncertain_sends(make_hook, mock, exc, uncertain):
    mock.post(f"{SEND}u1", [{"exc": exc}, {"json": OK_EMAIL}])
    hook = make_hook()
    result = hook.send_verification_result("u1", "email")
    assert (result.data, result.status_code, result.attempts) == (OK_EMAIL["data"], 200, 2)
    assert result.uncertain is uncertain
    assert hook.stats.as_dict() == {
        "requests": 2,
        "rate_limited": 0,
        "server_errors": 0,
        "connection_errors": 1,
        "budget_wait_seconds": 0.0,
        "pause_seconds": 0.0,
    }


def test_failed_call_carries_attempts_and_uncertain(make_hook, mock):
    mock.post(
        f"{SEND}u1", [{"exc": requests.ReadTimeout("slow")}, {"status_code": 400, "json": {"error": "x"}}]
    )
    with pytest.raises(SfoxInvalidRequestError) as caught:
        make_hook().send_verification_result("u1", "email")
    assert (caught.value.attempts, caught.value.uncertain) == (2, True)


def test_get_requests_are_never_uncertain(make_hook, mock):
    mock.get(
        f"{BASE_URL}/v1/enterprise/users/u1", [{"exc": requests.ReadTimeout("slow")}, {"json": {"data": {}}}]
    )
    hook = make_hook()
    assert hook._call("GET", "/v1/enterprise/users/u1").uncertain is False


def test_rate_limit_pause_past_the_budget_fails_fast(make_hook, mock, clock):
    """A Retry-After longer than the retry budget: the call fails at once, later calls too."""
    mock.post(
        f"{SEND}u1",
        [{"status_code": 429, "json": {"error": "slow down"}, "headers": {"Retry-After": "86400"}}],
    )
    hook = make_hook(max_retry_seconds=300)
    with pytest.raises(SfoxRateLimitError):
        hook.send_verification("u1", "email")
    mock.post(f"{SEND}u2", json=OK_EMAIL)
    with pytest.raises(SfoxRateLimitError, match="past the retry budget"):
        hook.send_verification("u2", "email")  # the pause still holds: no request, no long sleep
    assert mock.call_count == 1
    assert clock.waits == []


def test_budget_rate_is_the_shared_budget_as_requests_per_second(make_hook):
    """N / W of the budget every hook of the scope shares: what thread pools are sized by."""
    assert make_hook(rate_limit_requests=100).budget_rate == 10.0
    assert make_hook(rate_limit_requests=0, host=LOOPBACK_URL).budget_rate == 0.0


@pytest.mark.parametrize("token", ["tok\nX-Evil: 1", "tok en", "tok\x00"])
def test_token_with_whitespace_or_controls_is_refused_without_echo(make_hook, mock, token):
    with pytest.raises(SfoxConfigError) as caught:
        make_hook(password=token).get_user("u1")
    assert token.strip() not in str(caught.value)
    assert mock.call_count == 0


def test_non_json_error_has_no_body_in_its_context(make_hook, mock):
    mock.get(f"{BASE_URL}/v1/enterprise/users/u1", text="jane@example.com +12223334444 <html>")
    with pytest.raises(SfoxError) as caught:
        make_hook().get_user("u1")
    assert caught.value.__context__ is None
    assert caught.value.__cause__ is None


@pytest.mark.parametrize(("level", "logged_at_info"), [(logging.INFO, True), (logging.DEBUG, False)])
def test_the_per_request_line_has_the_level_the_caller_chose(
    make_hook, mock, caplog, monkeypatch, level, logged_at_info
):
    """Batch tasks log their requests at DEBUG (progress lines report instead); one-offs at INFO."""
    mock.get(f"{BASE_URL}/v1/enterprise/users/u1", json={"data": {"user_id": "u1"}})
    # The hook's own logger, as a plain stdlib logger that caplog sees.
    monkeypatch.setattr(SfoxConnectHook, "log", logging.getLogger("tests.sfox_hook"))
    caplog.set_level(logging.DEBUG, logger="tests.sfox_hook")
    hook = make_hook()
    hook.request_log_level = level
    hook.get_user("u1")
    lines = [r for r in caplog.records if "/v1/enterprise/users/u1 -> 200" in r.getMessage()]
    assert [r.levelno for r in lines] == [level]
    assert any(r.levelno >= logging.INFO for r in lines) is logged_at_info


@pytest.mark.parametrize(
    ("answers", "fails"),
    [
        ([{"status_code": 503, "json": {"error": "maintenance"}}, {"json": OK_EMAIL}], False),
        ([{"status_code": 429, "json": {"error": "slow down"}}, {"json": OK_EMAIL}], False),
        ([{"exc": requests.exceptions.ConnectTimeout}, {"json": OK_EMAIL}], False),
        ([{"status_code": 500, "json": {"error": "boom"}}] * 3, True),
    ],
)
@pytest.mark.parametrize("level", [logging.INFO, logging.DEBUG])
def test_retries_log_at_debug(make_hook, mock, caplog, monkeypatch, answers, fails, level):
    """A call logs at most its first request at the caller's level; retries and give-ups at DEBUG."""
    mock.post(f"{SEND}u1", answers)
    monkeypatch.setattr(SfoxConnectHook, "log", logging.getLogger("tests.sfox_hook"))
    caplog.set_level(logging.DEBUG, logger="tests.sfox_hook")
    hook = make_hook(password="tok-SECRET-1234", max_retry_seconds=120 if not fails else 2)
    hook.request_log_level = level
    if fails:
        with pytest.raises(SfoxServerError):
            hook.send_verification("u1", "email")
    else:
        hook.send_verification("u1", "email")
    records = [r for r in caplog.records if r.name == "tests.sfox_hook"]
    above_debug = [r.getMessage() for r in records if r.levelno > logging.DEBUG]
    retry_lines = [r for r in records if "retrying" in r.getMessage() or "attempt" in r.getMessage()]
    assert mock.call_count >= 2
    assert len(above_debug) == (1 if level == logging.INFO and "status_code" in answers[0] else 0)
    assert retry_lines
    assert {r.levelno for r in retry_lines} == {logging.DEBUG}
    assert "tok-SECRET-1234" not in caplog.text
