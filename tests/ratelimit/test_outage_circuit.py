"""
The shared circuit breaker in each budget backend: once a sender sees sFOX down, every sender of
the scope knows it, one probe at a time goes out, the wait between probes doubles, and an
answered probe ends it. Beside the 429 pause and the hold, never mixed with them.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from airflow_sfox.ratelimit import (
    OUTAGE_PROBE_GROWTH,
    Budget,
    MemoryBackend,
    Outage,
    RateBudget,
    RedisBackend,
    ScopeDown,
    SqliteBackend,
    next_probe_in,
)

KEY = "api.sfox.test"
OTHER = "other-egress"
DOWN = "sFOX unavailable (HTTP 503)"
#: The first wait between probes in these tests (real clocks: Redis keeps its own time).
FIRST = 0.4


@pytest.mark.parametrize(
    ("failed_probes", "times_first"),
    [(0, 1), (1, 2), (2, 4), (3, 8), (4, OUTAGE_PROBE_GROWTH), (50, OUTAGE_PROBE_GROWTH)],
)
def test_the_wait_between_probes_doubles_up_to_its_cap(failed_probes, times_first):
    assert next_probe_in(30.0, failed_probes) == 30.0 * times_first


def test_no_outage_by_default(backend):
    assert backend.outage(KEY) == (None, False)
    assert backend.outage(KEY, claim=FIRST) == (None, False)  # nothing to probe
    assert backend.close_outage(KEY) is False


def test_a_trip_is_seen_by_the_scope_only_and_leaves_the_budget_alone(backend):
    before = datetime.now(timezone.utc)
    tripped = backend.trip(KEY, down=DOWN, first_probe=FIRST)

    found, claimed = backend.outage(KEY, claim=FIRST)
    assert isinstance(found, Outage)
    assert claimed is False  # the first probe waits its interval
    assert (found.scope, found.down, found.probes) == (KEY, DOWN, 0)
    assert 0 < found.probe_in <= FIRST + 1e-6
    assert found.since == tripped.since
    assert found.since >= before - timedelta(seconds=1)
    assert backend.outage(OTHER) == (None, False)  # another egress IP is not down
    # Not a pause, not a hold: the budget itself still grants starts.
    assert backend.acquire(KEY, Budget(5, 10)) == (0.0, False)
    assert backend.paused_for(KEY) == 0
    assert backend.get_hold(KEY) is None


@pytest.mark.parametrize(
    ("failed_probes", "times_first"),
    [(1, 2), (2, 4), (4, OUTAGE_PROBE_GROWTH)],
)
def test_each_failed_probe_doubles_the_wait_and_keeps_since(backend, failed_probes, times_first):
    first = backend.trip(KEY, down="sFOX unavailable (HTTP 502)", first_probe=FIRST)
    for _ in range(failed_probes):
        last = backend.trip(KEY, down=DOWN, first_probe=FIRST)
    assert (last.probes, last.down, last.since) == (failed_probes, DOWN, first.since)
    assert FIRST * (times_first - 1) < last.probe_in <= FIRST * times_first + 1e-6
    found, _ = backend.outage(KEY)
    assert found is not None
    assert found.probes == failed_probes


def test_one_probe_per_interval_then_an_answer_ends_the_outage(backend):
    backend.trip(KEY, down=DOWN, first_probe=FIRST)
    time.sleep(FIRST + 0.05)
    found, claimed = backend.outage(KEY, claim=FIRST)
    assert claimed is True
    assert found is not None
    assert found.probe_in == 0
    again, claimed_again = backend.outage(KEY, claim=FIRST)  # the probe is out: nobody else
    assert claimed_again is False
    assert again is not None
    assert 0 < again.probe_in <= FIRST + 1e-6
    assert backend.outage(KEY)[1] is False  # a read never claims

    assert backend.close_outage(KEY) is True
    assert backend.outage(KEY, claim=FIRST) == (None, False)
    assert backend.close_outage(KEY) is False


def _clone(backend, tmp_path):
    """A second backend on the same store, as another process would open it."""
    if isinstance(backend, MemoryBackend):
        return backend  # one process only
    if isinstance(backend, SqliteBackend):
        return SqliteBackend(tmp_path / "budget")
    import redis

    assert isinstance(backend, RedisBackend)
    return RedisBackend(redis.Redis(connection_pool=backend._client.connection_pool), "test redis")


def test_of_many_senders_asking_at_once_exactly_one_gets_the_probe(backend, tmp_path):
    senders = [_clone(backend, tmp_path) for _ in range(8)]
    senders[0].trip(KEY, down=DOWN, first_probe=FIRST)
    time.sleep(FIRST + 0.05)
    start = threading.Barrier(len(senders))
    claims: list[bool] = []

    def ask(sender) -> None:
        start.wait()
        claims.append(sender.outage(KEY, claim=FIRST)[1])

    threads = [threading.Thread(target=ask, args=(sender,)) for sender in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claims) == [False] * 7 + [True]


def test_the_rate_budget_speaks_for_its_scope(backend):
    budget = RateBudget(backend, KEY, Budget(5, 10))
    other = RateBudget(backend, OTHER, Budget(5, 10))
    budget.trip(DOWN, first_probe=FIRST)
    found, claimed = other.outage(claim=FIRST)
    assert (found, claimed) == (None, False)
    found, claimed = budget.outage(claim=FIRST)
    assert found is not None
    assert (found.down, claimed) == (DOWN, False)
    assert budget.close_outage() is True
    assert budget.outage() == (None, False)


def _stopping(backend) -> RateBudget:
    budget = RateBudget(backend, KEY, Budget(50, 10))
    budget.stop_when_down = True  # as the onboarding engine's chunk calls ask it
    return budget


def test_a_budget_that_stops_when_down_refuses_every_start_but_its_probe(backend):
    sender = _stopping(backend)
    sender.wait()  # nothing recorded: free
    RateBudget(backend, KEY, None).trip(DOWN, first_probe=FIRST)  # another sender saw sFOX down

    with pytest.raises(ScopeDown) as refused:
        _stopping(backend).wait()
    assert refused.value.outage.down == DOWN
    assert DOWN in str(refused.value)
    RateBudget(backend, KEY, Budget(50, 10)).wait()  # the operator's or a plan's calls go on
    other_scope = RateBudget(backend, OTHER, Budget(50, 10))
    other_scope.stop_when_down = True
    other_scope.wait()  # another egress IP is not down

    time.sleep(FIRST + 0.05)
    prober, other = _stopping(backend), _stopping(backend)
    assert prober.outage(claim=FIRST)[1] is True
    prober.wait()  # its probe goes out
    with pytest.raises(ScopeDown):
        other.wait()  # nobody else's
    assert prober.close_outage() is True
    _stopping(backend).wait()
