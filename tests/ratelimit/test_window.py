"""The sliding log on a fake clock: no window over N, at the edges and under thread contention."""

from __future__ import annotations

import random
import threading

import pytest

from airflow_sfox.ratelimit import (
    DEFAULT_MARGIN_SECONDS,
    Budget,
    BudgetUnavailable,
    MemoryBackend,
    PauseTooLong,
    RateBudget,
    SqliteBackend,
)
from tests.helpers import most_in_window

KEY = "api.sfox.test"


class Clock:
    """A fake monotonic clock shared by threads; ``sleep`` advances it (never backwards)."""

    def __init__(self) -> None:
        self.now = 5000.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds

    def advance(self, seconds: float) -> None:
        self.sleep(seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["memory", "local"])
def backend(request, clock, tmp_path):
    if request.param == "memory":
        made = MemoryBackend(clock)
    else:
        made = SqliteBackend(tmp_path / "budget", clock=clock)
    yield made
    made.close()


def stored_starts(backend) -> list[float]:
    if isinstance(backend, MemoryBackend):
        return sorted(backend._starts[KEY])
    conn = backend._conn(KEY)
    return [t for (t,) in conn.execute("SELECT t FROM starts ORDER BY t")]


def test_whole_budget_at_once_then_one_span_later(backend, clock):
    budget = Budget(5, 10)
    rate = RateBudget(backend, KEY, budget, clock=clock, sleep=clock.sleep)
    for _ in range(5):
        assert rate.wait().budget_seconds == 0  # usable to the full N: no burst limit below N
    waited = rate.wait()
    assert waited.budget_seconds == pytest.approx(budget.span)
    assert waited.pause_seconds == 0


@pytest.mark.parametrize(
    ("requests", "window", "margin"),
    [
        (250, 10, DEFAULT_MARGIN_SECONDS),  # no slack: the whole jitter allowance
        (240, 10, 0.083333),  # 10 requests of slack at 24/s cover 0.42 s of it
        (200, 10, 0.0),  # the default: slack covers all of it
        (125, 5, DEFAULT_MARGIN_SECONDS),  # 250 in a 10-s window, two windows of 5 s
        (2, 10, 0.0),
        (2500, 10, DEFAULT_MARGIN_SECONDS),  # above sFOX's limit (a loopback sandbox): no more than all
    ],
)
def test_the_jitter_margin_is_what_sfox_slack_does_not_cover(requests, window, margin):
    budget = Budget(requests, window)
    assert budget.margin_seconds == pytest.approx(margin, abs=1e-6)
    assert Budget(requests, window, margin_seconds=0.25).margin_seconds == 0.25


def test_window_edges(backend, clock):
    budget = Budget(3, 10, margin_seconds=0.5)
    for offset in (0.0, 4.0, 9.0):  # three starts spread over the window
        clock.now = 5000.0 + offset
        assert backend.acquire(KEY, budget) == (0.0, False)
    clock.now = 5010.4  # the first start counts until 5010.5
    wait, paused = backend.acquire(KEY, budget)
    assert (round(wait, 6), paused) == (0.1, False)
    clock.now = 5010.5  # exactly one span after the first: it has left the log
    assert backend.acquire(KEY, budget) == (0.0, False)
    wait, _ = backend.acquire(KEY, budget)
    assert round(wait, 6) == 4.0  # next: when the start at 5004 leaves (5014.5)
    assert most_in_window(stored_starts(backend), 10.5) == 3


def test_no_window_over_n_under_thread_contention(backend, clock):
    budget = Budget(25, 10)
    rate = RateBudget(backend, KEY, budget, clock=clock, sleep=clock.sleep)
    rng = random.Random(3)
    starts_per_thread = 40

    def worker() -> None:
        for _ in range(starts_per_thread):
            rate.wait()
            clock.advance(rng.random() * 0.3)  # the request's own time, at random

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    starts = stored_starts(backend)
    assert len(starts) == 8 * starts_per_thread
    assert starts == sorted(starts)
    assert most_in_window(starts, budget.window_seconds) <= budget.requests
    assert most_in_window(starts, budget.span) <= budget.requests
    # usable: every span after the first holds close to the whole budget
    assert most_in_window(starts, budget.span + 1) >= budget.requests


def test_two_budgets_in_one_scope_each_hold_their_own_window(backend, clock):
    small, large = Budget(2, 5), Budget(4, 10)
    granted = [backend.acquire(KEY, large)[0] == 0 for _ in range(3)]
    assert granted == [True, True, True]
    assert backend.acquire(KEY, small)[0] > 0  # 3 in the last 5 s: over the small budget
    assert backend.acquire(KEY, large) == (0.0, False)
    assert backend.acquire(KEY, large)[0] > 0


def test_pause_holds_every_start_and_is_never_shortened(backend, clock):
    budget = Budget(100, 10)
    rate = RateBudget(backend, KEY, budget, clock=clock, sleep=clock.sleep)
    rate.pause(60)
    rate.pause(10)
    assert rate.paused_for == pytest.approx(60)
    waited = rate.wait()
    assert (waited.pause_seconds, waited.budget_seconds) == (pytest.approx(60), 0)
    assert rate.paused_for == 0
    unlimited = RateBudget(backend, KEY, None, clock=clock, sleep=clock.sleep)
    unlimited.pause(5)
    assert unlimited.wait().pause_seconds == pytest.approx(5)  # no budget: the pause still holds


def test_pause_past_the_deadline_raises_at_once(backend, clock):
    rate = RateBudget(backend, KEY, Budget(10, 10), clock=clock, sleep=clock.sleep)
    rate.pause(60)
    before = clock.now
    with pytest.raises(PauseTooLong):
        rate.wait(deadline=clock.now + 30)
    assert clock.now == before


def test_stale_entries_from_another_clock_are_dropped(tmp_path, clock):
    """A file written before a reboot (monotonic clock far ahead) does not block forever."""
    ahead = Clock()
    ahead.now = clock.now + 100_000
    old = SqliteBackend(tmp_path, clock=ahead)
    for _ in range(3):
        old.acquire(KEY, Budget(3, 10))
    old.pause(KEY, 600)
    old.close()
    fresh = SqliteBackend(tmp_path, clock=clock)
    assert fresh.paused_for(KEY) == 0
    assert fresh.acquire(KEY, Budget(3, 10)) == (0.0, False)


@pytest.mark.parametrize(
    ("budget", "worst"),
    [
        (Budget(250, 10), 250),
        (Budget(125, 5), 250),
        (Budget(62, 3), 248),
        (Budget(25, 1), 250),
        (Budget(100, 4), 300),
        (Budget(250, 30), 250),
        (Budget(84, 3.4), 252),
    ],
)
def test_most_per_sfox_window(budget, worst):
    assert budget.per_sfox_window() == worst


def test_unwritable_folder_is_a_clear_error(tmp_path, clock):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    backend = SqliteBackend(blocker / "sub", clock=clock)
    with pytest.raises(BudgetUnavailable, match="'local' rate-limit backend") as caught:
        backend.acquire(KEY, Budget(1, 10))
    assert str(blocker / "sub") in str(caught.value)
