"""The operator's hold in each budget backend: stored beside the 429 pause, open-ended or dated."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from airflow_sfox.ratelimit import (
    Budget,
    BudgetHeld,
    Hold,
    RateBudget,
    SqliteBackend,
)

KEY = "api.sfox.test"
OTHER = "other-egress"


def test_no_hold_by_default(backend):
    assert backend.get_hold(KEY) is None
    assert backend.acquire(KEY, Budget(5, 10)) == (0.0, False)
    assert backend.clear_hold(KEY) is False


@pytest.mark.parametrize(
    ("ahead", "reason"),
    [
        (None, "held by operator"),  # until released
        (timedelta(minutes=30), "sFOX maintenance 18:00-19:00"),
        (timedelta(days=3), "held by operator"),  # longer than any 429 pause
    ],
)
def test_a_hold_stops_every_start_until_released(backend, ahead, reason):
    until = None if ahead is None else time.time() + ahead.total_seconds()
    before = datetime.now(timezone.utc)
    backend.set_hold(KEY, until=until, reason=reason)

    held = backend.get_hold(KEY)
    assert isinstance(held, Hold)
    assert (held.scope, held.reason) == (KEY, reason)
    if until is None:
        assert held.until is None
    else:  # stored to the microsecond
        assert abs(held.until - datetime.fromtimestamp(until, tz=timezone.utc)) <= timedelta(microseconds=2)
    assert held.since >= before - timedelta(seconds=1)
    for budget in (Budget(5, 10), None):  # an unlimited budget is held too
        with pytest.raises(BudgetHeld) as caught:
            backend.acquire(KEY, budget)
        assert caught.value.hold == held
    assert backend.acquire(OTHER, Budget(5, 10)) == (0.0, False)  # another egress IP is free

    assert backend.clear_hold(KEY) is True
    assert backend.get_hold(KEY) is None
    assert backend.acquire(KEY, Budget(5, 10)) == (0.0, False)


def test_a_hold_that_has_ended_holds_nothing(backend):
    backend.set_hold(KEY, until=time.time() - 1, reason="yesterday's window")
    assert backend.get_hold(KEY) is None
    assert backend.acquire(KEY, Budget(5, 10)) == (0.0, False)


def test_a_new_hold_replaces_the_old_one(backend):
    backend.set_hold(KEY, until=None, reason="first")
    until = time.time() + 600
    backend.set_hold(KEY, until=until, reason="second")
    held = backend.get_hold(KEY)
    assert held is not None
    assert held.reason == "second"
    assert held.until is not None
    assert abs(held.until - datetime.fromtimestamp(until, tz=timezone.utc)) <= timedelta(microseconds=2)


def test_release_leaves_the_429_pause_alone(backend):
    backend.pause(KEY, 60)
    backend.set_hold(KEY, until=None, reason="held by operator")
    assert backend.clear_hold(KEY) is True
    wait, paused = backend.acquire(KEY, Budget(5, 10))
    assert paused
    assert 50 < wait <= 60


def test_the_budget_raises_at_once_without_sleeping(backend):
    slept: list[float] = []
    budget = RateBudget(backend, KEY, Budget(5, 10), sleep=slept.append)
    budget.hold(until=None)
    with pytest.raises(BudgetHeld, match="held until released: held by operator"):
        budget.wait(deadline=time.monotonic() + 3600)
    assert slept == []
    current = budget.current_hold()
    assert current is not None
    assert current.reason == Hold.DEFAULT_REASON
    assert budget.release() is True
    assert budget.current_hold() is None


def test_a_held_wait_in_progress_stops_at_its_next_ask(tmp_path):
    """A thread waiting for the budget is stopped when it asks again, not after the window."""
    backend = SqliteBackend(tmp_path / "budget")
    budget = RateBudget(backend, KEY, Budget(1, 10))
    budget.wait()

    def hold_while_sleeping(seconds: float) -> None:
        backend.set_hold(KEY, until=None, reason="stop")

    budget._sleep = hold_while_sleeping
    with pytest.raises(BudgetHeld):
        budget.wait()
    backend.close()


def test_the_local_hold_is_seen_by_a_second_backend_on_the_same_folder(tmp_path):
    """Two processes' backends on one folder (here two instances): one file, one hold."""
    first, second = SqliteBackend(tmp_path), SqliteBackend(tmp_path)
    first.set_hold(KEY, until=None, reason="maintenance")
    with pytest.raises(BudgetHeld):
        second.acquire(KEY, Budget(5, 10))
    assert second.clear_hold(KEY) is True
    assert first.acquire(KEY, Budget(5, 10)) == (0.0, False)
    first.close()
    second.close()
