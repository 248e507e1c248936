"""Asset events: an email confirmation makes the sandbox post an Airflow asset event.

Real HTTP both ways: the session sandbox posts to a fake Airflow API (``fake_airflow``) on a
free port of 127.0.0.1. The tests never measure time: they wait (with a generous deadline)
until the sandbox says nothing is pending, and prove "nothing was posted" by a later
confirmation that must be posted, in order, alone.
"""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING, Any

import pytest

from sfox_sandbox.config import DEFAULT_ASSET_URI
from tests.sandbox.conftest import ADVISOR, CORPORATION, INDIVIDUAL
from tests.sandbox.fake_airflow import PASSWORD, STATIC_TOKEN, USERNAME, FakeAirflow

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tests.sandbox.conftest import Sandbox

EVENTS = ("POST", "/api/v2/assets/events")
LOOKUPS = ("GET", "/api/v2/assets")
TOKENS = ("POST", "/auth/token")
#: An individual whose email is verified already: the next code it may confirm is sms.
PHONE_NEXT = {
    "user_id": "ind-2",
    "account_type": "individual",
    "email": "ind2@example.com",
    "phone_number": "+12223336666",
    "email_verified": True,
}


@pytest.fixture
def airflow() -> Iterator[FakeAirflow]:
    with FakeAirflow() as fake:
        yield fake


@pytest.fixture
def users(seeded: Sandbox) -> Sandbox:
    seeded.seed(PHONE_NEXT)
    return seeded


def put_events(sandbox: Sandbox, **changes: Any) -> dict[str, Any]:
    data = sandbox.admin_data("PUT", "asset-events", json=changes)
    assert isinstance(data, dict)
    return data


def enable(sandbox: Sandbox, airflow: FakeAirflow | str, **changes: Any) -> dict[str, Any]:
    """Turn posting on to ``airflow`` with the static token and quick retries."""
    url = airflow if isinstance(airflow, str) else airflow.url
    settings = {"airflow_url": url, "token": STATIC_TOKEN, "backoff_ms": 1, "timeout_seconds": 5}
    return put_events(sandbox, **{**settings, **changes})


def confirm(sandbox: Sandbox, user_id: str, channel: str = "email") -> None:
    """Request a code and verify it: a successful sFOX confirmation."""
    assert sandbox.send(user_id, channel).status_code == 200
    resp = sandbox.verify(user_id, channel, sandbox.latest_code(user_id, channel))
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"data": {"success": True, "user_id": user_id, "type": channel}}


def delivery(sandbox: Sandbox) -> dict[str, Any]:
    data = sandbox.admin_data("GET", "asset-events")["delivery"]
    assert isinstance(data, dict)
    return data


def wait_delivered(sandbox: Sandbox, events: int) -> dict[str, Any]:
    """Wait until ``events`` events were posted or given up and nothing is pending."""
    deadline = time.monotonic() + 30
    while True:
        state = delivery(sandbox)
        if state["pending"] == 0 and state["posted"] + state["failed"] >= events:
            return state
        if time.monotonic() > deadline:
            pytest.fail(f"the sandbox did not finish posting {events} event(s): {state}")
        time.sleep(0.02)


def user_ids(airflow: FakeAirflow) -> list[list[str]]:
    return [event["extra"]["user_ids"] for event in airflow.events()]


# --------------------------------------------------------------------------- posting
def test_email_confirmation_posts_one_event(seeded: Sandbox, airflow: FakeAirflow) -> None:
    settings = enable(seeded, airflow)["settings"]
    assert (settings["enabled"], settings["asset_uri"]) == (True, DEFAULT_ASSET_URI)
    confirm(seeded, "ind-1")
    state = wait_delivered(seeded, 1)
    assert airflow.events() == [{"asset_id": 3, "extra": {"user_ids": ["ind-1"]}}]
    assert airflow.accepted_auth() == [f"Bearer {STATIC_TOKEN}"]
    assert state == {
        "confirmations": 1,
        "posted": 1,
        "failed": 0,
        "dropped": 0,
        "retried": 0,
        "pending": 0,
        "last_status": 200,
        "last_error": None,
        "asset_id": 3,
    }
    # the asset id is looked up once, then kept
    confirm(seeded, "corp-1")
    wait_delivered(seeded, 2)
    assert user_ids(airflow) == [["ind-1"], ["corp-1"]]
    assert len(airflow.calls(*LOOKUPS)) == 1


@pytest.mark.parametrize(
    ("asset_uri", "asset_id"),
    [
        # Airflow's search also finds email-verified-v2 and email-verified2 (listed first)
        (DEFAULT_ASSET_URI, 3),
        # "_" is a wildcard of the search: email-verified2 (listed first) matches too
        ("sfox://api.sfox.com/email_verified2", 2),
        ("sfox://api.sfox.com/email-verified-v2", 1),
    ],
)
def test_the_asset_uri_is_matched_exactly(
    seeded: Sandbox, airflow: FakeAirflow, asset_uri: str, asset_id: int
) -> None:
    enable(seeded, airflow, asset_uri=asset_uri)
    confirm(seeded, "corp-1")
    assert wait_delivered(seeded, 1)["asset_id"] == asset_id
    assert airflow.events() == [{"asset_id": asset_id, "extra": {"user_ids": ["corp-1"]}}]
    assert airflow.calls(*LOOKUPS)[0].query["uri_pattern"] == [asset_uri]


def test_a_missing_asset_is_looked_up_again_on_the_next_confirmation(
    seeded: Sandbox, airflow: FakeAirflow
) -> None:
    uri = "sfox://api.sfox.com/not-parsed-yet"
    enable(seeded, airflow, asset_uri=uri)
    confirm(seeded, "ind-1")
    state = wait_delivered(seeded, 1)
    assert (state["posted"], state["failed"], state["asset_id"]) == (0, 1, None)
    assert "no asset with uri 'sfox://api.sfox.com/not-parsed-yet'" in state["last_error"]
    assert airflow.calls(*EVENTS) == []
    # a DAG using the asset was parsed meanwhile
    with airflow.lock:
        airflow.assets.append({"id": 9, "uri": uri})
    confirm(seeded, "corp-1")
    state = wait_delivered(seeded, 2)
    assert (state["posted"], state["failed"], state["asset_id"]) == (1, 1, 9)
    assert airflow.events() == [{"asset_id": 9, "extra": {"user_ids": ["corp-1"]}}]


def _sms(sandbox: Sandbox) -> None:
    confirm(sandbox, "ind-2", "sms")


def _while_disabled(sandbox: Sandbox) -> None:
    assert put_events(sandbox, enabled=False)["settings"]["enabled"] is False
    confirm(sandbox, "ind-1")
    put_events(sandbox, enabled=True)


def _after_delete(sandbox: Sandbox) -> None:
    resp = sandbox.admin("DELETE", "asset-events")
    assert resp.status_code == 200
    assert resp.json()["data"]["settings"]["enabled"] is False
    confirm(sandbox, "ind-1")
    put_events(sandbox, token=STATIC_TOKEN)  # DELETE forgot the token


def _wrong_otp(sandbox: Sandbox) -> None:
    assert sandbox.send("ind-1", "email").status_code == 200
    wrong = f"{(int(sandbox.latest_code('ind-1', 'email')) + 1) % 1_000_000:06d}"
    resp = sandbox.verify("ind-1", "email", wrong)
    assert resp.json() == {"error": "Invalid verification code"}


def _no_code_requested(sandbox: Sandbox) -> None:
    assert sandbox.verify("ind-1", "email", "123456").status_code == 422


def _already_verified(sandbox: Sandbox) -> None:
    resp = sandbox.verify("ind-2", "email", "123456")
    assert resp.json() == {"error": "Email already verified"}


@pytest.mark.parametrize(
    "not_posted",
    [_sms, _while_disabled, _after_delete, _wrong_otp, _no_code_requested, _already_verified],
    ids=lambda f: f.__name__.strip("_"),
)
def test_nothing_but_an_email_confirmation_posts(
    users: Sandbox, airflow: FakeAirflow, not_posted: Callable[[Sandbox], None]
) -> None:
    enable(users, airflow)
    not_posted(users)
    # events go out in confirmation order: had the step above posted, it would come first
    confirm(users, "corp-1")
    state = wait_delivered(users, 1)
    assert user_ids(airflow) == [["corp-1"]]
    assert len(airflow.calls(*EVENTS)) == 1
    assert (state["confirmations"], state["posted"]) == (1, 1)


def test_a_batch_window_coalesces_confirmations(seeded: Sandbox, airflow: FakeAirflow) -> None:
    enable(seeded, airflow, batch_ms=600_000)  # ten minutes: only the flush ends this window
    for user_id in ("ind-1", "corp-1", "adv-1"):
        confirm(seeded, user_id)
    state = delivery(seeded)
    assert (state["confirmations"], state["pending"], state["posted"]) == (3, 3, 0)
    assert seeded.admin("POST", "asset-events/flush").json() == {"data": {"flushed": 3}}
    wait_delivered(seeded, 1)
    assert airflow.events() == [{"asset_id": 3, "extra": {"user_ids": ["ind-1", "corp-1", "adv-1"]}}]


def test_a_batch_window_ends_by_itself(seeded: Sandbox, airflow: FakeAirflow) -> None:
    enable(seeded, airflow, batch_ms=50)
    confirm(seeded, "adv-1")
    wait_delivered(seeded, 1)  # no flush
    assert user_ids(airflow) == [["adv-1"]]


def test_python_api(seeded: Sandbox, airflow: FakeAirflow) -> None:
    server = seeded.server
    settings = server.set_asset_events(airflow_url=airflow.url, username=USERNAME, password=PASSWORD)
    assert (settings.enabled, settings.username) == (True, USERNAME)
    assert server.asset_events()["settings"]["password"] == "***"
    confirm(seeded, "ind-1")
    wait_delivered(seeded, 1)
    assert server.asset_events()["delivery"]["posted"] == 1
    with pytest.raises(ValueError, match="batch_ms"):
        server.set_asset_events(batch_ms=-1)
    assert server.set_asset_events(enabled=False).enabled is False


# ------------------------------------------------------------------------ failures
@pytest.mark.parametrize(
    ("failures", "posted", "retried", "last_status"),
    [
        ([503], 1, 1, 200),
        ([500, 502, 429], 1, 3, 200),
        ([503, 503, 503, 503], 0, 3, 503),  # retries=3: four attempts, all refused
        ([400], 0, 0, 400),  # not worth another attempt
        ([403, 503], 0, 0, 403),
    ],
)
def test_failed_posts_are_retried_when_worth_it(
    seeded: Sandbox,
    airflow: FakeAirflow,
    failures: list[int],
    posted: int,
    retried: int,
    last_status: int,
) -> None:
    airflow.event_failures.extend(failures)
    enable(seeded, airflow, retries=3)
    confirm(seeded, "ind-1")
    state = wait_delivered(seeded, 1)
    assert (state["posted"], state["failed"], state["retried"]) == (posted, 1 - posted, retried)
    assert state["last_status"] == last_status
    assert len(airflow.events()) == posted
    assert len(airflow.calls(*EVENTS)) == retried + 1
    # the latest refused attempt, even when a later one succeeded
    last_refused = failures[retried - posted]
    assert state["last_error"] == f"POST /api/v2/assets/events: HTTP {last_refused}: injected failure"


def _refused_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"  # closed again: connections refused


@pytest.fixture
def silent_port() -> Iterator[str]:
    """A port that accepts connections (the backlog) but never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize("where", ["refused", "silent"])
def test_an_unreachable_airflow_never_breaks_the_confirmation(
    seeded: Sandbox, request: pytest.FixtureRequest, where: str
) -> None:
    url = _refused_port() if where == "refused" else request.getfixturevalue("silent_port")
    enable(seeded, url, retries=1, timeout_seconds=0.5)
    confirm(seeded, "ind-1")  # answered 200 as usual, whatever Airflow does
    user = seeded.api("GET", "/v1/enterprise/users/ind-1").json()["data"]
    assert user["requirements"]["email"] is False
    state = wait_delivered(seeded, 1)
    assert (state["posted"], state["failed"], state["retried"]) == (0, 1, 1)
    assert state["last_error"].startswith("GET /api/v2/assets: cannot reach Airflow")
    assert state["last_status"] is None


def test_turning_posting_off_ends_the_retries(seeded: Sandbox) -> None:
    enable(seeded, _refused_port(), retries=10, backoff_ms=600_000)  # ten minutes to the retry
    confirm(seeded, "ind-1")
    deadline = time.monotonic() + 30
    while delivery(seeded)["retried"] == 0:
        assert time.monotonic() < deadline, delivery(seeded)
        time.sleep(0.02)
    assert delivery(seeded)["pending"] == 1  # waiting for its retry
    assert seeded.admin("DELETE", "asset-events").status_code == 200
    state = wait_delivered(seeded, 1)
    assert (state["failed"], state["retried"]) == (1, 1)
    assert state["last_error"] == "posting was turned off while retrying"


def test_a_token_is_fetched_and_renewed_after_401(seeded: Sandbox, airflow: FakeAirflow) -> None:
    enable(seeded, airflow, token=None, username=USERNAME, password=PASSWORD)
    confirm(seeded, "ind-1")
    wait_delivered(seeded, 1)
    assert [c.body for c in airflow.calls(*TOKENS)] == [{"username": USERNAME, "password": PASSWORD}]
    airflow.expire_tokens()
    confirm(seeded, "corp-1")
    state = wait_delivered(seeded, 2)
    assert (state["posted"], state["failed"]) == (2, 0)
    assert airflow.issued == ["tok-1", "tok-2"]
    assert airflow.accepted_auth() == ["Bearer tok-1", "Bearer tok-2"]
    # the refused call, then the same event once more with the new token
    assert [c.authorization for c in airflow.calls(*EVENTS)] == [
        "Bearer tok-1",
        "Bearer tok-1",
        "Bearer tok-2",
    ]


@pytest.mark.parametrize(
    ("credentials", "token_failure", "status", "error"),
    [
        (
            {"username": USERNAME, "password": "wrong"},
            None,
            401,
            "POST /auth/token: HTTP 401 (check the username and password)",
        ),
        (
            # a validation error echoing the request body: the password must not be repeated
            {"username": USERNAME, "password": PASSWORD},
            (422, {"detail": [{"type": "missing", "input": {"username": USERNAME, "password": PASSWORD}}]}),
            422,
            "POST /auth/token: HTTP 422",
        ),
        ({"token": "expired-jwt"}, None, 401, "GET /api/v2/assets: HTTP 401: Not authenticated"),
    ],
)
def test_refused_credentials_fail_without_retries(
    seeded: Sandbox,
    airflow: FakeAirflow,
    credentials: dict[str, str],
    token_failure: tuple[int, Any] | None,
    status: int,
    error: str,
) -> None:
    airflow.token_failure = token_failure
    enable(seeded, airflow, **{"token": None, **credentials})
    confirm(seeded, "ind-1")
    state = wait_delivered(seeded, 1)
    assert (state["failed"], state["retried"], state["last_status"]) == (1, 0, status)
    assert state["last_error"] == error
    assert airflow.calls(*EVENTS) == []


# ------------------------------------------------------------------------ settings
@pytest.mark.parametrize(
    "credentials",
    [{"token": "jwt-s3cret-value"}, {"username": USERNAME, "password": "pw-s3cret-value"}],
    ids=["token", "password"],
)
def test_the_secrets_are_never_shown(seeded: Sandbox, credentials: dict[str, str]) -> None:
    secret = next(value for key, value in credentials.items() if key != "username")
    body = {"airflow_url": _refused_port(), "backoff_ms": 1, **credentials}
    answers = [seeded.admin("PUT", "asset-events", json=body)]
    confirm(seeded, "ind-1")  # a failure: last_error must not hold the secret either
    wait_delivered(seeded, 1)
    answers.append(seeded.admin("GET", "asset-events"))
    settings = answers[-1].json()["data"]["settings"]
    assert settings["token" if "token" in credentials else "password"] == "***"
    assert settings["password" if "token" in credentials else "token"] is None
    answers.append(seeded.admin("DELETE", "asset-events"))
    assert all(resp.status_code == 200 for resp in answers)
    assert not any(secret in resp.text for resp in answers)
    assert answers[-1].json()["data"]["settings"] | {"airflow_url": None} == {
        "enabled": False,
        "airflow_url": None,
        "asset_uri": DEFAULT_ASSET_URI,
        "token": None,
        "username": "",
        "password": None,
        "batch_ms": 0.0,
        "timeout_seconds": 5.0,
        "retries": 3,
        "backoff_ms": 1.0,
    }
    assert secret not in repr(seeded.server.state.asset_events.settings)
    assert secret not in repr(seeded.server.config)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({}, "enabled needs airflow_url"),
        ({"airflow_url": "http://127.0.0.1:8080"}, "enabled needs a token, or a username and password"),
        ({"airflow_url": "ftp://127.0.0.1", "token": "t"}, "airflow_url must be an http:// or https://"),
        ({"airflow_url": "http://u:p@127.0.0.1", "token": "t"}, "airflow_url must not hold credentials"),
        ({"airflow_url": "http://127.0.0.1:99999", "token": "t"}, "airflow_url is not a valid URL"),
        ({"airflow_url": "http://h/?q=1", "token": "t"}, "airflow_url must have no query"),
        ({"enabled": "yes"}, "enabled must be a boolean"),
        ({"enabled": False, "batch_ms": -1}, "batch_ms must be >= 0"),
        ({"enabled": False, "batch_ms": "5"}, "batch_ms must be a number"),
        ({"enabled": False, "retries": 11}, "retries must be between 0 and 10"),
        ({"enabled": False, "retries": 1.5}, "retries must be an integer"),
        ({"enabled": False, "timeout_seconds": 0}, "timeout_seconds must be > 0"),
        ({"enabled": False, "username": USERNAME}, "username and password go together"),
        ({"enabled": False, "token": "two words"}, "token must hold no spaces"),
        ({"enabled": False, "asset_uri": 7}, "asset_uri must be a string"),
        ({"enabled": False, "colour": "red"}, "unknown setting 'colour'"),
    ],
)
def test_invalid_settings_are_400_and_change_nothing(sandbox: Sandbox, body: Any, error: str) -> None:
    resp = sandbox.admin("PUT", "asset-events", json=body)
    assert resp.status_code == 400
    assert error in resp.json()["error"]
    settings = sandbox.admin("GET", "asset-events").json()["data"]["settings"]
    assert (settings["enabled"], settings["airflow_url"], settings["batch_ms"]) == (False, "", 0.0)


def test_a_new_airflow_url_needs_the_credentials_again(sandbox: Sandbox, airflow: FakeAirflow) -> None:
    enable(sandbox, airflow)
    # the admin routes are unauthenticated: the token must not follow the URL elsewhere
    moved = sandbox.admin("PUT", "asset-events", json={"airflow_url": "http://127.0.0.1:9"})
    assert moved.status_code == 400
    assert "given again whenever airflow_url changes" in moved.json()["error"]
    settings = put_events(sandbox, airflow_url="http://127.0.0.1:9", enabled=False)["settings"]
    assert (settings["token"], settings["username"], settings["password"]) == (None, "", None)
    # the same URL (give or take a trailing slash) keeps them
    enable(sandbox, airflow, token=None, username=USERNAME, password=PASSWORD)
    settings = put_events(sandbox, airflow_url=airflow.url + "/", batch_ms=10)["settings"]
    assert (settings["username"], settings["password"], settings["batch_ms"]) == (USERNAME, "***", 10.0)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("PUT", "asset-events", 400), ("POST", "asset-events", 404), ("GET", "asset-events/flush", 404)],
)
def test_asset_events_routes_refuse_the_rest(sandbox: Sandbox, method: str, path: str, status: int) -> None:
    resp = sandbox.admin(method, path, data="[1]")
    assert resp.status_code == status
    assert "error" in resp.json()


def test_reset_turns_posting_off_and_zeroes_the_counters(seeded: Sandbox, airflow: FakeAirflow) -> None:
    enable(seeded, airflow)
    confirm(seeded, "ind-1")
    assert wait_delivered(seeded, 1)["posted"] == 1
    seeded.admin("POST", "reset")
    data = seeded.admin("GET", "asset-events").json()["data"]
    assert data["settings"]["enabled"] is False
    assert data["delivery"] == {
        "confirmations": 0, "posted": 0, "failed": 0, "dropped": 0, "retried": 0,
        "pending": 0, "last_status": None, "last_error": None, "asset_id": None,
    }  # fmt: skip
    seeded.seed(INDIVIDUAL, CORPORATION, ADVISOR)
    confirm(seeded, "corp-1")  # posting is off after the reset
    assert delivery(seeded)["confirmations"] == 0
