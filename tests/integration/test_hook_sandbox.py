"""SfoxConnectHook against the real sandbox server over HTTP on 127.0.0.1."""

from __future__ import annotations

import threading
import time

import pytest

from airflow_sfox.exceptions import (
    SfoxAlreadyVerifiedError,
    SfoxAuthError,
    SfoxInvalidRequestError,
    SfoxNotFoundError,
)
from airflow_sfox.hooks.sfox import SfoxConnectHook
from tests.helpers import sfox_conn_json

INDIVIDUAL = {
    "account_type": "individual",
    "account_role": "client",
    "user_id": "ind/1 é?",
    "first_name": "Ada",
    "last_name": "Lovelace",
    "email": "ada@example.com",
    "phone_country_code": "US",
    "phone_number": "+12223334444",
    # the sandbox checks the fields sFOX documents as required for an individual
    "account_purpose": "Investing",
    "individual": {
        "dob": "1990-01-31",
        "address": {"street": "1 Main St", "city": "Arlington", "postal_code": "22201", "country": "US"},
        "ssn": "123-45-6789",
    },
}


def test_full_verification_flow(sfox_sandbox):
    with SfoxConnectHook() as hook:
        hook.create_user(INDIVIDUAL)
        user_id = INDIVIDUAL["user_id"]
        assert hook.get_user(user_id)["requirements"] == {"email": True, "sms": True}

        sent = hook.send_verification(user_id, "email")
        assert (sent["user_id"], sent["type"], sent["email"]) == (user_id, "email", "ada@example.com")
        with pytest.raises(SfoxInvalidRequestError):
            hook.send_verification(user_id, "sms")  # email must be verified first
        code = sfox_sandbox.codes(user_id)["email"]["latest"]
        with pytest.raises(SfoxInvalidRequestError):
            hook.confirm_verification(user_id, "email", "000000" if code != "000000" else "111111")
        hook.confirm_verification(user_id, "email", code)
        with pytest.raises(SfoxAlreadyVerifiedError):
            hook.send_verification(user_id, "email")

        hook.send_verification(user_id, "sms")
        hook.confirm_verification(user_id, "sms", sfox_sandbox.codes(user_id)["sms"]["latest"])

        user = hook.get_user(user_id)
        assert user["status"] == "VERIFIED"
        assert user["requirements"] == {"email": False, "sms": False}
        assert [u["user_id"] for u in hook.list_users(account_role="client")] == [user_id]
        assert hook.list_users(account_role="advisor") == []

    # The hostile user_id reached the server as one segment of the expected route.
    paths = {entry.path for entry in sfox_sandbox.journal(user_id=user_id)}
    assert "/v1/enterprise/users/send-verification/ind%2F1%20%C3%A9%3F" in paths


def test_unknown_user_and_bad_token(sfox_sandbox, monkeypatch):
    with SfoxConnectHook() as hook, pytest.raises(SfoxNotFoundError) as caught:
        hook.send_verification("nobody", "email")
    assert caught.value.status_code == 404

    monkeypatch.setenv("AIRFLOW_CONN_SFOX_DEFAULT", sfox_conn_json(sfox_sandbox.url, password="wrong"))
    with SfoxConnectHook() as hook:
        with pytest.raises(SfoxAuthError):
            hook.get_user("nobody")
        ok, message = hook.test_connection()
    assert ok is False
    assert "401" in message
    assert "wrong" not in message


def test_test_connection_against_sandbox(sfox_sandbox):
    ok, message = SfoxConnectHook().test_connection()
    assert ok is True, message


def _seed_individuals(sandbox, count: int) -> list[str]:
    users = [
        {
            "user_id": f"u{i}",
            "account_type": "individual",
            "email": f"u{i}@example.com",
            "phone_number": f"+1222333{i:04d}",
        }
        for i in range(count)
    ]
    sandbox.seed_users(users)
    return [u["user_id"] for u in users]


def _send_all(hook: SfoxConnectHook, user_ids: list[str], threads: int = 4) -> list[BaseException]:
    errors: list[BaseException] = []
    queue = list(user_ids)
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if not queue:
                    return
                user_id = queue.pop()
            try:
                hook.send_verification(user_id, "email")
            except Exception as err:  # collected, asserted empty below
                with lock:
                    errors.append(err)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return errors


def test_rate_limit_pauses_and_completes_every_call(sfox_sandbox, monkeypatch):
    """A scaled-down sFOX limit: the hook pauses on 429 and no call is lost."""
    # 10 requests per 0.2 s window, then a 0.5 s block (sFOX's shape, scaled by 0.02 / 1/120).
    sfox_sandbox.set_rate_limit(limit=10, window_seconds=10, block_seconds=60, time_scale=0.02)
    monkeypatch.setenv(
        "AIRFLOW_CONN_SFOX_DEFAULT",
        sfox_conn_json(
            sfox_sandbox.url, rate_limit_requests=0, rate_limit_pause_seconds=1.2, max_retry_seconds=60
        ),
    )
    user_ids = _seed_individuals(sfox_sandbox, 40)
    with SfoxConnectHook() as hook:
        errors = _send_all(hook, user_ids)
    assert errors == []

    journal = sfox_sandbox.journal()
    assert any(entry.status == 429 for entry in journal), "the scaled limit was never hit"
    for user_id in user_ids:
        statuses = [e.status for e in journal if e.user_id == user_id]
        assert statuses.count(200) == 1
        assert sfox_sandbox.codes(user_id)["email"]["count"] == 1


def test_pacing_keeps_under_the_limit(sfox_sandbox, monkeypatch):
    """Within a window-exact budget just under the limit, the limit is never hit."""
    sfox_sandbox.set_rate_limit(limit=10, window_seconds=10, block_seconds=60, time_scale=0.1)  # 10/s
    # 9 per 1 s: bursts of 9, with the jitter margin on the sandbox's 10x clock (0.5 s / 10).
    budget = {"rate_limit_requests": 9, "rate_limit_window_seconds": 1, "rate_limit_margin_seconds": 0.05}
    monkeypatch.setenv("AIRFLOW_CONN_SFOX_DEFAULT", sfox_conn_json(sfox_sandbox.url, **budget))
    user_ids = _seed_individuals(sfox_sandbox, 20)
    with SfoxConnectHook() as hook:
        assert _send_all(hook, user_ids) == []
    assert [e.status for e in sfox_sandbox.journal()] == [200] * 20


def test_faults_are_retried_through(sfox_sandbox, monkeypatch):
    sfox_sandbox.set_faults(error_500_rate=0.1, error_503_rate=0.1, reset_rate=0.1)
    monkeypatch.setenv(
        "AIRFLOW_CONN_SFOX_DEFAULT",
        sfox_conn_json(sfox_sandbox.url, rate_limit_requests=0, max_retry_seconds=120),
    )
    user_ids = _seed_individuals(sfox_sandbox, 60)
    # Back-off waits run 10x faster than configured: the retry logic is real, the wall time short.
    with SfoxConnectHook(sleep=lambda seconds: time.sleep(seconds / 10)) as hook:
        assert _send_all(hook, user_ids) == []

    journal = sfox_sandbox.journal()
    faults = {e.fault for e in journal if e.fault}
    assert {"error_500", "error_503", "reset"} <= faults
    for user_id in user_ids:
        # Faults here are answered before processing: exactly one code per user.
        assert sfox_sandbox.codes(user_id)["email"]["count"] == 1
