"""
The chunk's circuit breaker and its budget scope (issue 20): the streak of the first detection
stays the chunk's own, an sFOX outage it finds is shared with the scope, a try that finds the
scope's outage stops or probes it once, and an answered probe ends it for all. On the memory
backend (one process; the backends themselves are tested in tests/ratelimit).
"""

from __future__ import annotations

import threading

import pytest

from airflow_sfox.exceptions import (
    SfoxConnectionError,
    SfoxRateBudgetError,
    SfoxRateLimitError,
    SfoxServerError,
)
from airflow_sfox.onboarding.breaker import ChunkBreaker
from airflow_sfox.onboarding.sender import OUTAGE_STREAK, outage_text
from airflow_sfox.ratelimit import MemoryBackend, RateBudget

OK = None
E503 = SfoxServerError("Service Unavailable", status_code=503)
E500 = SfoxServerError("Internal Server Error", status_code=500)
RESET = SfoxConnectionError("ConnectionResetError talking to https://api.sfox.test")
E429 = SfoxRateLimitError("Too Many Requests", status_code=429)
BUDGET = SfoxRateBudgetError("the 'redis' rate-limit backend is unavailable")
DOWN_503 = "sFOX unavailable (HTTP 503)"


def _breaker(budget: RateBudget, *, probe_wait: float = 0.0) -> ChunkBreaker:
    return ChunkBreaker(
        budget, first_probe=30.0, streak=OUTAGE_STREAK, probe_wait=probe_wait, describe=outage_text
    )


@pytest.fixture
def scope() -> RateBudget:
    return RateBudget(MemoryBackend(), "api.sfox.test", None)


@pytest.mark.parametrize(
    ("answers", "tripped", "shared"),
    [
        ([E503, E503, E503], True, DOWN_503),  # the streak: sFOX is down, for the scope too
        ([E500, RESET, E503], True, DOWN_503),  # any mix of 5xx, resets and timeouts
        ([E503, OK, E503, E503, OK, E503], False, None),  # one user's own error never trips
        ([E503], False, None),  # not on the first outage answer of a try
        ([E429, E429, E429], True, None),  # 429 waits out of budget: the chunk's stop only
        ([BUDGET], True, None),  # the budget's backend: the chunk's stop only
    ],
)
def test_the_streak_trips_the_chunk_and_an_sfox_outage_the_scope(scope, answers, tripped, shared):
    breaker = _breaker(scope)
    breaker.start(threading.Event())
    assert (breaker.stopped, breaker.probe) == (False, False)
    for answer in answers:
        breaker.record(answer)
    assert breaker.stopped is tripped
    found, _ = scope.outage()
    assert (found.down if found else None) == shared


def test_a_try_that_finds_the_scope_s_outage_stops_before_any_request(scope):
    scope.trip(DOWN_503, first_probe=30.0)
    breaker = _breaker(scope, probe_wait=0.5)  # the probe is 30 s away: not waited for
    breaker.start(threading.Event())
    assert breaker.stopped
    assert breaker.probe is False
    service, down, seen = breaker.down()
    assert (service, down) == ("sfox", DOWN_503)
    assert "recorded by a sender of scope 'api.sfox.test'" in seen


@pytest.mark.parametrize(
    ("probe_answer", "stopped", "outage_after"),
    [
        (OK, False, None),  # answered: over, for every sender of the scope
        (E429, False, None),  # a 429 is an answer: sFOX is up (its pause is shared already)
        (E503, True, 1),  # still down: stop at once, the next probe waits twice as long
        (RESET, True, 1),
    ],
)
def test_a_due_probe_is_one_call_whose_answer_decides_for_the_scope(
    scope, probe_answer, stopped, outage_after
):
    scope.trip(DOWN_503, first_probe=30.0)
    scope.backend._outages[scope.key][3] = 0.0  # its probe is due  # type: ignore[attr-defined]
    breaker = _breaker(scope)
    breaker.start(threading.Event())
    assert (breaker.stopped, breaker.probe, breaker.probing) == (False, True, True)
    other = _breaker(scope)  # a second try at the same moment: the probe is taken
    other.start(threading.Event())
    assert other.stopped
    breaker.record(probe_answer)
    assert breaker.stopped is stopped
    found, _ = scope.outage()
    assert (found.probes if found else None) == outage_after
    if found is not None:
        assert 30.0 < found.probe_in <= 60.0


def test_mid_streak_a_try_stops_on_what_another_sender_found(scope):
    breaker = _breaker(scope)
    breaker.start(threading.Event())
    breaker.record(E503)
    scope.trip(DOWN_503, first_probe=30.0)  # another process's streak ended first
    assert not breaker.stopped
    breaker.record(E503)
    assert breaker.stopped
    assert breaker.tripped is None  # nothing recorded twice: the scope's outage is unchanged
    assert scope.outage()[0].probes == 0  # type: ignore[union-attr]
