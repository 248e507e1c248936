"""
The circuit breaker of one chunk try, shared with its rate budget's scope.

A chunk stops when sFOX answers 5xx, times out or refuses connections for several users in a
row, or when the rate budget's backend refuses a call. An sFOX outage is then recorded in the
budget's backend for the whole scope (one egress IP), beside the 429 pause and the hold: the
scope's other chunk tasks, in any process, stop before spending a request on it, but for one
probe at a time, at most one per interval (the connection's ``outage_probe_seconds``, doubling
after each failed probe). A probe is one request with no per-call retries; its answer ends the
outage for the scope. The first detection keeps the streak: one user whose sends keep failing
never opens the scope's circuit.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from airflow_sfox.exceptions import SfoxError, SfoxRateBudgetError, SfoxRateLimitError, SfoxServerError
from airflow_sfox.ratelimit import BudgetUnavailable, RateBudget

if TYPE_CHECKING:
    import threading
    from collections.abc import Callable

    from airflow_sfox.ratelimit import Outage

log = logging.getLogger(__name__)


class ChunkBreaker:
    """
    The chunk's circuit breaker, shared with its budget scope. :data:`OUTAGE_STREAK` calls in a
    row ending in an outage, or one the rate budget's backend refused, open it; an sFOX outage
    is then recorded for the scope (:meth:`RateBudget.trip`). A try that finds the scope's
    outage recorded stops before any request, unless its probe is due: then its first call is
    the probe (one request, no per-call retries), whose answer ends the outage for the scope.
    Until a call is answered (at the start, and after each outage) one call goes at a time: a
    dead sFOX costs a few calls, not a pool's worth.

    :param budget: the scope's budget (``None``: this chunk's breaker only).
    :param first_probe: seconds from an outage to its first probe (doubling after each failed one).
    :param streak: calls in a row ending in an outage that open it.
    :param probe_wait: seconds a try waits for a probe that is not yet due before it stops.
    :param describe: the service an outage error names, and what is down in words.
    """

    def __init__(
        self,
        budget: RateBudget | None,
        *,
        first_probe: float,
        streak: int,
        probe_wait: float,
        describe: Callable[[SfoxError], tuple[str, str]],
    ) -> None:
        self.streak, self.probe_wait, self.describe = streak, probe_wait, describe
        self.in_a_row = 0
        self.answered = False
        self.tripped: SfoxError | None = None
        self.budget, self.first_probe = budget, first_probe
        if budget is not None:  # a call retrying a 5xx stops once the scope knows sFOX is down
            budget.stop_when_down = True
        #: the scope's outage, recorded by another sender, that stopped this try
        self.known: Outage | None = None
        #: this try probes the scope's outage: its next call is the probe
        self.probe = False

    def start(self, stop: threading.Event) -> None:
        """Before the first call: claim the scope's due probe, or stop on its outage."""
        deadline = time.monotonic() + self.probe_wait
        while self.budget is not None:
            found, self.probe = self._shared(lambda b: b.outage(claim=self.first_probe), (None, False))
            if found is None or self.probe:
                return
            # A probe due within a call's own retry budget is waited for, not given up.
            if time.monotonic() + found.probe_in > deadline or stop.wait(found.probe_in):
                self.known = found
                return

    def record(self, down: SfoxError | None) -> None:
        if self.probe and (down is None or isinstance(down, SfoxRateLimitError)):
            # Answered (a 429 is an answer too): sFOX is back, for every sender of the scope.
            self.probe = False
            self._shared(lambda b: b.close_outage(), None)
            log.info("sFOX answered the probe: the outage recorded for the scope is over")
        if down is None:
            self.in_a_row, self.answered = 0, True
            return
        self.in_a_row += 1
        if self.tripped is None and not self.probe and isinstance(down, SfoxServerError):
            # Recorded by a sender of the scope already (the hook refuses this chunk's calls then):
            # stop on it, record nothing more.
            self.known = self._shared(lambda b: b.outage()[0], None)
            if self.known is not None:
                return
        if self.tripped is None and (
            isinstance(down, SfoxRateBudgetError) or self.in_a_row >= self.streak or self.probe
        ):
            self.tripped = down
            if isinstance(down, SfoxServerError):  # not a 429 (its pause is shared already)
                self._shared(lambda b: b.trip(self.describe(down)[1], first_probe=self.first_probe), None)

    def _shared(self, ask: Any, otherwise: Any) -> Any:
        """Ask the scope's circuit; a lost backend is not hidden: the next request fails closed."""
        if self.budget is None:
            return otherwise
        try:
            return ask(self.budget)
        except BudgetUnavailable as err:
            log.debug("the scope's outage state cannot be read or written: %s", err)
            return otherwise

    @property
    def stopped(self) -> bool:
        return self.tripped is not None or self.known is not None

    @property
    def probing(self) -> bool:
        return self.in_a_row > 0 or not self.answered or self.probe

    def down(self) -> tuple[str, str, str]:
        """The service that stopped the chunk, what is down in words, and who saw it (for the log)."""
        if self.tripped is not None:
            return (*self.describe(self.tripped), "")
        known = self.known
        assert known is not None
        seen = (
            f" (recorded by a sender of scope {known.scope!r} since {known.since:%H:%M:%S} UTC; "
            f"next probe in {known.probe_in:.0f} s)"
        )
        return "sfox", known.down, seen


def sfox_answered(hook: Any) -> None:
    """sFOX answered a whole read (the plan's): end the outage the hook's scope recorded, if any."""
    budget = getattr(hook, "budget", None)  # the planner's tests read from stand-ins
    if isinstance(budget, RateBudget) and budget.close_outage():
        log.info("sFOX answered: the outage recorded for scope %r is over", budget.key)
