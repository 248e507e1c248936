"""The hook's rate budget: connection extras, sFOX's ceiling, scope, shared pause, fail closed."""

from __future__ import annotations

import threading

import pytest
import requests_mock as rm

from airflow_sfox.exceptions import SfoxConfigError, SfoxRateBudgetError
from airflow_sfox.hooks.sfox import SfoxConnectHook
from airflow_sfox.ratelimit import Budget, MemoryBackend, SqliteBackend
from tests.helpers import sfox_conn_json
from tests.hooks.conftest import BASE_URL, LOOPBACK_URL

OK_EMAIL = {"data": {"user_id": "u1", "type": "email", "email": "jane.doe@example.com"}}


@pytest.fixture
def mock() -> rm.Mocker:
    with rm.Mocker() as m:
        yield m


@pytest.mark.parametrize(
    ("extra", "budget"),
    [
        ({}, Budget(200, 10)),  # the default leaves head-room under sFOX's 250 per 10 s
        ({"rate_limit_requests": 250}, Budget(250, 10)),
        ({"rate_limit_requests": "250", "rate_limit_window_seconds": "10"}, Budget(250, 10)),
        ({"rate_limit_requests": 125, "rate_limit_window_seconds": 5}, Budget(125, 5)),
        ({"rate_limit_requests": 62, "rate_limit_window_seconds": 3}, Budget(62, 3)),  # 62 x 4 = 248
        ({"rate_limit_requests": 250, "rate_limit_window_seconds": 60}, Budget(250, 60)),
        ({"rate_limit_window_seconds": 20}, Budget(200, 20)),
        ({"rate_limit_requests": 250, "rate_limit_margin_seconds": 0.5}, Budget(250, 10, 0.5)),
        ({"rate_limit_requests": 250, "rate_limit_margin_seconds": 2}, Budget(250, 10, 2.0)),
        ({"rate_limit_requests": 1}, Budget(1, 10)),
        ({"rate_limit_requests": 0, "host": LOOPBACK_URL}, None),  # the sandbox may go unbudgeted
        (
            {"rate_limit_requests": 250, "rate_limit_margin_seconds": 0, "host": LOOPBACK_URL},
            Budget(250, 10, 0),
        ),
    ],
)
def test_budget_from_connection(make_hook, extra, budget):
    hook = make_hook(**extra)
    assert hook.config.budget == budget
    assert hook.budget_rate == (budget.rate if budget else 0.0)


def test_rate_limit_requests_argument_wins(make_hook):
    make_hook(rate_limit_requests=100)
    hook = SfoxConnectHook(rate_limit_requests=120)
    assert hook.config.budget == Budget(120, 10)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"rate_limit_requests": 251}, r"'rate_limit_requests' = 251 per 'rate_limit_window_seconds' = 10 s"),
        ({"rate_limit_requests": 126, "rate_limit_window_seconds": 5}, "may put 252 requests in one 10-s"),
        ({"rate_limit_requests": 63, "rate_limit_window_seconds": 3}, "may put 252 requests"),
        ({"rate_limit_requests": 30, "rate_limit_window_seconds": 1}, "may put 300 requests"),
        ({"rate_limit_requests": 300, "rate_limit_window_seconds": 60}, "may put 300 requests"),
    ],
)
def test_budget_above_sfox_limit_is_refused_naming_the_extra(make_hook, mock, extra, match):
    with pytest.raises(SfoxConfigError, match=match) as caught:
        make_hook(**extra).get_user("u1")
    assert "above sFOX's limit of 250 requests per 10 s" in str(caught.value)
    assert mock.call_count == 0


@pytest.mark.parametrize("host", ["http://127.0.0.1:8089", "http://localhost:8089"])
def test_a_loopback_sandbox_may_have_a_budget_above_sfox_limit(make_hook, host):
    """The local sandbox can run sFOX's limit on a faster clock; no sFOX is behind it."""
    hook = make_hook(host=host, rate_limit_requests=2500, rate_limit_window_seconds=10)
    assert hook.config.budget == Budget(2500, 10)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"rate_limit_requests": 2.5}, "'rate_limit_requests' must be a whole number"),
        ({"rate_limit_requests": -1}, "'rate_limit_requests' must be >= 0"),
        ({"rate_limit_requests": "many"}, "'rate_limit_requests' must be a number"),
        ({"rate_limit_window_seconds": 0.5}, "'rate_limit_window_seconds' must be >= 1"),
        ({"rate_limit_window_seconds": 301}, "'rate_limit_window_seconds' must be <= 300"),
        ({"rate_limit_backend": "postgres"}, "'rate_limit_backend' must be one of"),
        ({"rate_limit_scope": 5}, "'rate_limit_scope' must be a non-empty string"),
    ],
)
def test_bad_budget_extras_are_refused(make_hook, mock, extra, match):
    with pytest.raises(SfoxConfigError, match=match):
        make_hook(**extra).get_user("u1")
    assert mock.call_count == 0


@pytest.mark.parametrize(
    ("host", "extra", "scope"),
    [
        ("https://api.sfox.com", {}, "api.sfox.com"),
        ("https://API.sfox.com/", {}, "api.sfox.com"),
        ("http://127.0.0.1:8089", {}, "127.0.0.1:8089"),
        ("https://api.sfox.com", {"rate_limit_scope": "egress-nat-1"}, "egress-nat-1"),
    ],
)
def test_scope_defaults_to_the_host(make_hook, host, extra, scope):
    assert make_hook(host=host, **extra).config.rate_limit_scope == scope


def test_backend_choice(make_hook, tmp_path):
    assert isinstance(make_hook().budget.backend, MemoryBackend)  # a hook on a fake clock
    hook = make_hook(rate_limit_backend="local", rate_limit_dir=str(tmp_path))
    _ = hook.config
    assert isinstance(hook.budget.backend, SqliteBackend)
    assert hook.budget.backend.folder == tmp_path


def test_hooks_of_one_scope_share_the_window_in_the_local_backend(make_hook, mock, clock, tmp_path):
    """Two hooks (two tasks, two connections) to one host: one log in one SQLite file."""
    mock.post(rm.ANY, json=OK_EMAIL)
    extra = {"rate_limit_backend": "local", "rate_limit_dir": str(tmp_path), "rate_limit_requests": 4}
    first = make_hook(**extra)
    first.send_verification("a", "email")
    second = make_hook(**extra)
    starts = []
    for user in "bcdefgh":
        (first if user in "bdf" else second).send_verification(user, "email")
        starts.append(clock.now)
    # 4 per 10 s across both hooks: a, b, c, d at once; e, f, g, h one span later.
    assert starts[:3] == [1000.0] * 3
    assert starts[3:] == pytest.approx([1000.0 + Budget(4, 10).span] * 4)


def test_429_pause_is_shared_between_hooks_of_a_scope(make_hook, mock, clock, tmp_path):
    extra = {"rate_limit_backend": "local", "rate_limit_dir": str(tmp_path), "rate_limit_requests": 250}
    mock.post(
        f"{BASE_URL}/v1/enterprise/users/send-verification/a",
        [{"status_code": 429, "json": {"error": "rate limited"}}, {"json": OK_EMAIL}],
    )
    mock.post(f"{BASE_URL}/v1/enterprise/users/send-verification/b", json=OK_EMAIL)
    first, second = make_hook(**extra), make_hook(**extra)
    seen: list[float] = []

    def send_b_while_a_waits(seconds: float) -> None:
        if threading.current_thread().name == "A" and not seen:
            seen.append(second.budget.paused_for)
            worker = threading.Thread(target=lambda: second.send_verification("b", "email"), name="B")
            worker.start()
            worker.join()

    clock.on_sleep = send_b_while_a_waits
    thread = threading.Thread(target=lambda: first.send_verification("a", "email"), name="A")
    thread.start()
    thread.join()
    assert seen == [60.0]
    assert ("B", 60.0) in clock.sleeps  # the other hook waited for the pause too
    assert first.stats.as_dict()["pause_seconds"] == 60.0
    assert second.stats.as_dict()["pause_seconds"] == 60.0


def test_unwritable_folder_fails_closed(make_hook, mock, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    mock.post(rm.ANY, json=OK_EMAIL)
    hook = make_hook(rate_limit_backend="local", rate_limit_dir=str(blocker / "budget"))
    with pytest.raises(SfoxRateBudgetError) as caught:
        hook.send_verification("u1", "email")
    message = str(caught.value)
    assert "'local' rate-limit backend" in message
    assert str(blocker / "budget") in message
    assert "'sfox_default'" in message
    assert "not sent" in message
    assert caught.value.retryable
    assert caught.value.attempts == 0
    assert mock.call_count == 0  # never unpaced
    ok, text = hook.test_connection()
    assert not ok
    assert "rate-limit backend" in text


def test_redis_backend_unreachable_fails_closed(make_hook, mock, monkeypatch):
    pytest.importorskip("redis")
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AIRFLOW_CONN_BUDGET_REDIS", f"redis://127.0.0.1:{port}/0")
    mock.post(rm.ANY, json=OK_EMAIL)
    hook = make_hook(rate_limit_backend="redis", rate_limit_redis_conn_id="budget_redis")
    with pytest.raises(SfoxRateBudgetError) as caught:
        hook.send_verification("u1", "email")
    message = str(caught.value)
    assert "'redis' rate-limit backend" in message
    assert "'budget_redis'" in message
    assert f"127.0.0.1:{port}" in message
    assert mock.call_count == 0


def test_redis_connection_missing_fails_closed(make_hook, mock):
    pytest.importorskip("redis")
    hook = make_hook(rate_limit_backend="redis", rate_limit_redis_conn_id="no_such_redis")
    with pytest.raises(SfoxRateBudgetError, match="'no_such_redis' cannot be read"):
        hook.send_verification("u1", "email")
    assert mock.call_count == 0


def test_connection_form_lists_the_budget_extras():
    from airflow_sfox.get_provider_info import CONN_FIELDS

    for name in (
        "rate_limit_requests",
        "rate_limit_window_seconds",
        "rate_limit_scope",
        "rate_limit_backend",
        "rate_limit_dir",
        "rate_limit_redis_conn_id",
    ):
        assert name in CONN_FIELDS
    assert "250 requests per 10 s" in CONN_FIELDS["rate_limit_requests"]["description"]
    assert "200 per 10 s" in CONN_FIELDS["rate_limit_requests"]["description"]


def test_conn_json_helper_is_unchanged():
    assert '"rate_limit_requests": 5' in sfox_conn_json(BASE_URL, rate_limit_requests=5)
