"""
A budget is mandatory for a real sFOX host (issue 20): refused budgets fail at the connection's
first use, naming the connection and the extra, before any socket is opened.

These hooks run on the real clock (so the ``local`` backend is the default, as in production)
and real ``requests``: the socket layer itself is patched to record and refuse connections.
"""

from __future__ import annotations

import socket

import pytest

from airflow_sfox.exceptions import SfoxConfigError, SfoxConnectionError
from airflow_sfox.hooks.budget import multi_machine_executors
from airflow_sfox.hooks.sfox import SfoxConnectHook
from tests.helpers import sfox_conn_json

REAL = "https://api.sfox.com"
SANDBOX = "http://127.0.0.1:9"


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every name lookup and socket connection attempted; each connection is refused."""
    seen: list[object] = []
    lookup = socket.getaddrinfo

    def resolve(host: object, *args: object, **kwargs: object) -> object:
        seen.append(host)
        return lookup(host, *args, **kwargs)  # type: ignore[arg-type]

    def refuse(self: socket.socket, address: object) -> None:
        seen.append(address)
        raise ConnectionRefusedError("no network in this test")

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return seen


@pytest.fixture
def hook_for(monkeypatch: pytest.MonkeyPatch, tmp_path):
    """A hook on the real clock whose connection ``sfox_partner`` has the given host and extras."""

    def make(host: str = REAL, executor: str = "LocalExecutor", **extra: object) -> SfoxConnectHook:
        monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", executor)
        extra.setdefault("rate_limit_dir", str(tmp_path / "budget"))
        monkeypatch.setenv("AIRFLOW_CONN_SFOX_PARTNER", sfox_conn_json(host, **extra))
        monkeypatch.setenv("AIRFLOW_CONN_BUDGET_REDIS", "redis://127.0.0.1:9/0")
        return SfoxConnectHook(sfox_conn_id="sfox_partner", max_retry_seconds=0)

    return make


@pytest.mark.parametrize(
    ("settings", "extra_named", "match"),
    [
        ({"rate_limit_requests": 0}, "rate_limit_requests", "turns the client-side budget off"),
        ({"rate_limit_requests": "0"}, "rate_limit_requests", "turns the client-side budget off"),
        ({"rate_limit_requests": 251}, "rate_limit_requests", "above sFOX's limit"),
        ({"rate_limit_requests": 30, "rate_limit_window_seconds": 1}, "rate_limit_requests", "300 requests"),
        ({"rate_limit_backend": "memory"}, "rate_limit_backend", "keeps the budget in one process"),
        (
            {"rate_limit_requests": 250, "rate_limit_margin_seconds": 0},
            "rate_limit_margin_seconds",
            "below the jitter margin of 0.5 s",
        ),
        (
            {"rate_limit_requests": 245, "rate_limit_margin_seconds": 0.2},
            "rate_limit_margin_seconds",
            "below the jitter margin of 0.295918 s",
        ),
        ({"executor": "CeleryExecutor"}, "rate_limit_backend", "CeleryExecutor"),
        ({"executor": "KubernetesExecutor"}, "rate_limit_backend", "KubernetesExecutor"),
        ({"executor": "LocalExecutor,CeleryExecutor"}, "rate_limit_backend", "CeleryExecutor"),
        (
            {"executor": "LocalExecutor, airflow.providers.edge3.executors.EdgeExecutor"},
            "rate_limit_backend",
            "EdgeExecutor",
        ),
        (
            {"executor": "fast:airflow.providers.celery.executors.celery_executor.CeleryExecutor"},
            "rate_limit_backend",
            "fast:airflow",
        ),
        (
            {"executor": "CeleryExecutor", "rate_limit_backend": "local", "rate_limit_scope": "egress-nat"},
            "rate_limit_backend",
            "'redis'",
        ),
    ],
)
def test_a_refused_budget_sends_nothing(hook_for, connects, settings, extra_named, match):
    hook = hook_for(**settings)
    with pytest.raises(SfoxConfigError) as caught:
        hook.send_verification("u1", "email")
    message = str(caught.value)
    assert "'sfox_partner'" in message
    assert f"extra {extra_named!r}" in message
    assert match in message
    assert connects == []  # refused before any socket was opened


def test_the_hook_argument_is_checked_like_the_extra(hook_for, connects):
    hook_for()
    hook = SfoxConnectHook(sfox_conn_id="sfox_partner", rate_limit_requests=0)
    with pytest.raises(SfoxConfigError, match="'rate_limit_requests' = 0"):
        hook.get_user("u1")
    assert connects == []


def test_nothing_is_checked_in_init(hook_for, connects):
    hook = hook_for(rate_limit_requests=0)  # refused, but only when first used
    assert hook._config is None
    with pytest.raises(SfoxConfigError):
        _ = hook.config


@pytest.mark.parametrize(
    "settings",
    [
        {},  # the default: 200 per 10 s, local, on a one-machine executor
        {"rate_limit_requests": 250},  # the margin is computed: 0.5 s
        {"rate_limit_requests": 250, "rate_limit_margin_seconds": 0.5},
        {"rate_limit_requests": 1},
        {
            "executor": "CeleryExecutor",
            "rate_limit_backend": "redis",
            "rate_limit_redis_conn_id": "budget_redis",
        },
        {"executor": "CeleryExecutor", "rate_limit_scope": "egress-{hostname}"},  # one IP per host
        {"executor": "LocalExecutor,my_company.executors.BatchExecutor"},
        # the local sandbox keeps its freedom
        {"host": SANDBOX, "rate_limit_requests": 0},
        {"host": SANDBOX, "rate_limit_requests": 2500, "rate_limit_margin_seconds": 0},
        {"host": SANDBOX, "rate_limit_backend": "memory"},
        {"host": SANDBOX, "executor": "CeleryExecutor"},
    ],
)
def test_an_accepted_budget_reaches_the_network(hook_for, connects, settings):
    """The control of the test above: the same path does open a socket when the budget is sound."""
    hook = hook_for(**settings)
    if hook.config.rate_limit_backend == "redis":
        assert connects == []  # the budget is set up without talking to Redis
        return
    with pytest.raises(SfoxConnectionError):
        hook.get_user("u1")
    assert connects  # the hook went for the network, and the patch saw it


def test_a_per_host_scope_names_this_machine(hook_for):
    hook = hook_for(executor="CeleryExecutor", rate_limit_scope="egress-{hostname}")
    assert hook.config.rate_limit_scope == f"egress-{socket.gethostname().lower()}"
    assert hook.config.per_host_scope


@pytest.mark.parametrize(
    ("executor", "spread"),
    [
        ("LocalExecutor", []),
        ("", []),
        ("CeleryExecutor", ["CeleryExecutor"]),
        ("LocalExecutor,KubernetesExecutor", ["KubernetesExecutor"]),
        (" LocalExecutor , CeleryExecutor ", ["CeleryExecutor"]),
        (
            "airflow.providers.edge3.executors.EdgeExecutor",
            ["airflow.providers.edge3.executors.EdgeExecutor"],
        ),
        (
            "a:airflow.providers.celery.executors.celery_executor.CeleryExecutor,LocalExecutor",
            ["a:airflow.providers.celery.executors.celery_executor.CeleryExecutor"],
        ),
        ("celery_alias:my.Local", []),  # the alias does not count, the class does
        ("my_company.executors.BatchExecutor", []),
    ],
)
def test_multi_machine_executors(executor, spread):
    assert multi_machine_executors(executor) == spread
