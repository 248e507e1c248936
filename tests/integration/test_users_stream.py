"""SfoxConnectHook.iter_users against the real sandbox: 100,000 users in bounded memory, pages."""

from __future__ import annotations

import gc
import subprocess
import sys
import tracemalloc
from typing import TYPE_CHECKING

import pytest
import requests

from airflow_sfox.exceptions import SfoxStreamInterruptedError
from airflow_sfox.hooks.sfox import SfoxConnectHook
from tests.helpers import TOKEN, sfox_conn_json

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

USERS = 100_000


def _peak_growth(read: Callable[[], int]) -> tuple[int, int]:
    """Run ``read``; return its result and the peak of Python memory it allocated (bytes)."""
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        result = read()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak - before


@pytest.fixture
def sandbox_process() -> Iterator[str]:
    """A sandbox in a process of its own: tracemalloc then sees only the reading process."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sfox_sandbox", "--port", "0", "--token", TOKEN, "--rate-limit", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_100k_users_stream_in_bounded_memory(sandbox_process, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_SFOX_DEFAULT", sfox_conn_json(sandbox_process, rate_limit_requests=0))
    resp = requests.post(f"{sandbox_process}/_sandbox/users/generate", json={"count": USERS}, timeout=10)
    assert resp.status_code == 200, resp.text
    with SfoxConnectHook() as hook:
        assert next(hook.iter_users())["user_id"] == "user-0"  # connection read, session open

        def stream() -> int:
            count = 0
            for user in hook.iter_users():
                count += 1
                assert user["user_id"]
            return count

        count, streamed_peak = _peak_growth(stream)
        whole, listed_peak = _peak_growth(lambda: len(hook.list_users()))

    assert count == whole == USERS
    mib = 2**20
    print(f"\n{USERS} users: iter_users peak {streamed_peak / mib:.1f} MiB,", end=" ")
    print(f"list_users {listed_peak / mib:.1f} MiB")
    assert streamed_peak < 20 * 2**20
    assert listed_peak > 10 * streamed_peak


@pytest.mark.parametrize(
    ("next_key", "next_first"), [("next", False), ("links.next", True), ("next_cursor", False)]
)
def test_pages_against_the_sandbox(sfox_sandbox, monkeypatch, next_key, next_first):
    monkeypatch.setenv("AIRFLOW_CONN_SFOX_DEFAULT", sfox_conn_json(sfox_sandbox.url, rate_limit_requests=0))
    sfox_sandbox.seed_users([{"user_id": "adv-1", "account_type": "corporation", "account_role": "advisor"}])
    sfox_sandbox.generate_users(5_500)
    sfox_sandbox.set_list(page_size=1000, next_key=next_key, next_first=next_first)
    with SfoxConnectHook() as hook:
        ids = [u["user_id"] for u in hook.iter_users()]
        assert ids == ["adv-1"] + [f"user-{n}" for n in range(5_500)]
        assert hook.stats.requests == 6
        clients = [u["user_id"] for u in hook.iter_users(account_role="client")]
        assert clients == [f"user-{n}" for n in range(5_500)]
        assert [u["user_id"] for u in hook.iter_users(account_role="advisor")] == ["adv-1"]
    paths = [entry.path for entry in sfox_sandbox.journal()]
    assert paths[:2] == ["/v1/enterprise/users", "/v1/enterprise/users?cursor=1.999"]
    assert all("accountRole=client" in p for p in paths[6:12])


def test_test_connection_with_many_users(sfox_sandbox):
    sfox_sandbox.generate_users(50_000)
    ok, message = SfoxConnectHook().test_connection()
    assert ok is True, message
    assert "at least 1000 end users visible" in message
    assert len(sfox_sandbox.journal()) == 1


def test_a_body_broken_off_mid_stream_is_not_retried(sfox_sandbox, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_SFOX_DEFAULT", sfox_conn_json(sfox_sandbox.url, rate_limit_requests=0))
    sfox_sandbox.generate_users(5_000)
    sfox_sandbox.set_list(cut_after=3_000)
    seen = []
    with SfoxConnectHook() as hook, pytest.raises(SfoxStreamInterruptedError) as caught:
        seen.extend(hook.iter_users())
    assert 0 < len(seen) <= 3_000
    assert f"after {len(seen)} users" in str(caught.value)
    assert caught.value.retryable
    assert len(sfox_sandbox.journal()) == 1  # never retried from the start
