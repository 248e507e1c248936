"""The budget: its limit, the operator's hold, the backend interface, the budget as a hook asks it."""

from __future__ import annotations

import math
import os
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from collections.abc import Callable

#: sFOX's documented limit: requests per window, window seconds.
SFOX_LIMIT_REQUESTS = 250
SFOX_LIMIT_WINDOW_SECONDS = 10.0
#: Arrival jitter at the server the budget allows for: starts sent 10 s apart were seen as
#: little as 9.73 s apart at the server on a loaded 2-core machine.
DEFAULT_MARGIN_SECONDS = 0.5
#: Longest window accepted; starts are kept this long (plus the margin) so that connections
#: with different windows can share one scope.
MAX_WINDOW_SECONDS = 300.0
#: Longest pause honoured; a stored pause further ahead is stale (e.g. a clock reset by a reboot).
MAX_PAUSE_SECONDS = 3600.0
#: Folder of the ``local`` backend's files when the connection names none.
DEFAULT_DIR = os.path.join(tempfile.gettempdir(), "airflow-sfox-rate-limit")
BACKENDS = ("local", "redis", "memory")


class BudgetUnavailable(Exception):
    """The budget's backend cannot be reached or written: no request may be sent."""

    def __init__(self, backend: str, where: str, cause: BaseException | str) -> None:
        detail = cause if isinstance(cause, str) else f"{type(cause).__name__}: {cause}"
        super().__init__(f"the {backend!r} rate-limit backend ({where}) is unavailable: {detail}")
        self.backend = backend
        self.where = where


class ScopeDown(Exception):
    """sFOX is recorded down for the scope (:class:`Outage`): nothing is sent but its probe."""

    def __init__(self, outage: Outage) -> None:
        super().__init__(f"{outage.down}, seen by a sender of scope {outage.scope!r}; not sent")
        self.outage = outage


class PauseTooLong(Exception):
    """A rate-limit pause lasts longer than the caller's retry budget."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"paused for another {seconds:.0f} s")
        self.seconds = seconds


@dataclass(frozen=True)
class Hold:
    """
    An operator's hold on a scope: no request starts until ``until`` (``None``: until released).

    :param scope: the budget scope held (one egress IP).
    :param reason: why, as the operator put it.
    :param since: when the hold was set (UTC).
    :param until: when it ends (UTC); ``None``: until released.
    """

    DEFAULT_REASON: ClassVar[str] = "held by operator"

    scope: str
    reason: str
    since: datetime
    until: datetime | None

    @classmethod
    def from_epoch(cls, scope: str, reason: str, since: float, until: float | None) -> Hold:
        """A hold from its stored form: wall-clock seconds since the epoch."""
        return cls(scope, reason, _utc(since), None if until is None else _utc(until))


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)


class BudgetHeld(Exception):
    """An operator holds the scope: no request may start (raised before anything is sent)."""

    def __init__(self, hold: Hold) -> None:
        until = hold.until.isoformat() if hold.until else "released"
        super().__init__(f"scope {hold.scope!r} is held until {until}: {hold.reason}")
        self.hold = hold


@dataclass(frozen=True)
class Outage:
    """
    sFOX seen down by a sender of a scope (the shared circuit breaker): until a probe is
    answered, the scope's other senders spend nothing on it.

    :param scope: the budget scope (one egress IP).
    :param down: what is down, with its status (``"sFOX unavailable (HTTP 503)"``).
    :param since: when it was first seen down (UTC).
    :param probes: probes that failed since (each doubles the wait for the next one).
    :param probe_in: seconds until the next probe may go (0: due now).
    """

    scope: str
    down: str
    since: datetime
    probes: int
    probe_in: float

    @classmethod
    def from_epoch(cls, scope: str, down: str, since: float, probes: int, probe_in: float) -> Outage:
        """An outage from its stored form (``since``: wall-clock seconds since the epoch)."""
        return cls(scope, down, _utc(since), probes, probe_in)


#: How long a budget that stops while its scope is down trusts its last look at the outage.
OUTAGE_CHECK_SECONDS = 0.5
#: The wait between two probes of an outage doubles after each failed probe, up to this many
#: times the first wait.
OUTAGE_PROBE_GROWTH = 8


def next_probe_in(first_probe: float, failed_probes: int) -> float:
    """Seconds from a failed probe (``failed_probes`` so far) to the next one."""
    return first_probe * min(2 ** min(failed_probes, 30), OUTAGE_PROBE_GROWTH)


@dataclass(frozen=True)
class Budget:
    """
    At most ``requests`` starts in any ``window_seconds``; a start counts for
    ``window_seconds + margin_seconds``.
    """

    requests: int
    window_seconds: float
    #: ``None``: :meth:`jitter_margin`, the jitter allowance that sFOX's slack does not cover.
    margin_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.margin_seconds is None:
            object.__setattr__(self, "margin_seconds", self.jitter_margin())

    def jitter_margin(self, jitter: float = DEFAULT_MARGIN_SECONDS) -> float:
        """
        How long a start stays in the log beyond the window, so arrivals bunched by ``jitter``
        seconds still stay within sFOX's limit.

        A budget below sFOX's limit already has slack: 240 per 10 s at 24/s leaves 10 requests,
        0.42 s, before the 251st. Only the jitter that slack does not cover costs a margin:
        0.5 s at 250 per 10 s, 0.08 s at 240, none at the default 200.
        """
        # A budget above sFOX's limit (a loopback sandbox on a faster clock) has no slack to
        # give: it gets the whole allowance, never more.
        slack_seconds = max(0.0, (SFOX_LIMIT_REQUESTS - self.per_sfox_window()) / self.rate)
        return round(max(0.0, jitter - slack_seconds), 6)

    @property
    def span(self) -> float:
        """Seconds a start stays in the log."""
        return self.window_seconds + float(self.margin_seconds or 0.0)

    @property
    def rate(self) -> float:
        """The budget as requests per second (N / W)."""
        return self.requests / self.window_seconds

    def per_sfox_window(self) -> int:
        """
        The most starts this budget may put in one of sFOX's 10-s windows: a 10-s window is
        covered by ``ceil(10 / W)`` windows of W seconds, each holding at most N.
        """
        return self.requests * math.ceil(SFOX_LIMIT_WINDOW_SECONDS / self.window_seconds - 1e-9)


class BudgetBackend(ABC):
    """A shared sliding log of request starts and a shared block-until time, per scope key."""

    #: The name used in the connection extras and in error messages.
    name: str
    #: Where it lives (a path, a host:port), for error messages.
    where: str

    @abstractmethod
    def acquire(self, key: str, budget: Budget | None) -> tuple[float, bool]:
        """
        Record one request start now if the budget (``None``: unlimited) and no pause allow it.

        :return: ``(0, False)`` when the start was recorded; otherwise the seconds to wait
            before asking again and whether the wait is a 429 pause.
        :raises BudgetUnavailable: the backend cannot be used.
        """

    @abstractmethod
    def pause(self, key: str, seconds: float) -> None:
        """Hold every request of the scope for ``seconds`` from now (never shortens a pause)."""

    @abstractmethod
    def paused_for(self, key: str) -> float:
        """Seconds left of the scope's pause (0 when not paused)."""

    @abstractmethod
    def set_hold(self, key: str, *, until: float | None, reason: str) -> None:
        """
        Hold the scope until ``until`` (wall-clock seconds since the epoch; ``None``: until
        released), replacing any hold: :meth:`acquire` then raises :class:`BudgetHeld`.
        """

    @abstractmethod
    def clear_hold(self, key: str) -> bool:
        """End the scope's hold; return whether one was in force."""

    @abstractmethod
    def get_hold(self, key: str) -> Hold | None:
        """The hold in force on the scope, if any (an expired one is not)."""

    @abstractmethod
    def trip(self, key: str, *, down: str, first_probe: float) -> Outage:
        """
        Record sFOX down for the scope: a new outage (its next probe ``first_probe`` seconds
        from now), or a failed probe of the one recorded (the wait doubles, see
        :func:`next_probe_in`).
        """

    @abstractmethod
    def outage(self, key: str, *, claim: float | None = None) -> tuple[Outage | None, bool]:
        """
        The scope's outage, if any, and whether the caller may probe it: with ``claim``, a due
        probe is claimed (the next claim waits ``claim`` seconds), so one sender probes at a time.
        """

    @abstractmethod
    def close_outage(self, key: str) -> bool:
        """sFOX answered: end the scope's outage; return whether one was recorded."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


def _slot_wait(starts: list[float], now: float, budget: Budget) -> float:
    """Given the in-window starts (ascending), the seconds until one more start fits."""
    oldest_to_expire = starts[len(starts) - budget.requests]
    return max(oldest_to_expire + budget.span - now, 1e-6)


class MemoryBackend(BudgetBackend):
    """One process only, on an injectable clock: for unit tests."""

    name = "memory"
    where = "this process"

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time
    ) -> None:
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._starts: dict[str, deque[float]] = {}
        self._paused_until: dict[str, float] = {}
        self._holds: dict[str, tuple[float | None, str, float]] = {}
        #: scope -> [down, since (wall), failed probes, probe at (clock)]
        self._outages: dict[str, list] = {}

    def acquire(self, key: str, budget: Budget | None) -> tuple[float, bool]:
        with self._lock:
            held = self._hold(key)
            if held is not None:
                raise BudgetHeld(held)
            now = self._clock()
            pause = self._paused_until.get(key, 0.0) - now
            if pause > 0:
                return pause, True
            if budget is None:
                return 0.0, False
            starts = self._starts.setdefault(key, deque())
            while starts and starts[0] <= now - max(budget.span, MAX_WINDOW_SECONDS):
                starts.popleft()
            in_window = [t for t in starts if t > now - budget.span]
            if len(in_window) < budget.requests:
                starts.append(now)
                return 0.0, False
            return _slot_wait(in_window, now, budget), False

    def pause(self, key: str, seconds: float) -> None:
        with self._lock:
            until = self._clock() + seconds
            self._paused_until[key] = max(self._paused_until.get(key, 0.0), until)

    def paused_for(self, key: str) -> float:
        with self._lock:
            return max(0.0, self._paused_until.get(key, 0.0) - self._clock())

    def _hold(self, key: str) -> Hold | None:
        stored = self._holds.get(key)
        if stored is None:
            return None
        until, reason, since = stored
        if until is not None and until <= self._wall():
            del self._holds[key]
            return None
        return Hold.from_epoch(key, reason, since, until)

    def set_hold(self, key: str, *, until: float | None, reason: str) -> None:
        with self._lock:
            self._holds[key] = (until, reason, self._wall())

    def clear_hold(self, key: str) -> bool:
        with self._lock:
            return self._holds.pop(key, None) is not None

    def get_hold(self, key: str) -> Hold | None:
        with self._lock:
            return self._hold(key)

    def trip(self, key: str, *, down: str, first_probe: float) -> Outage:
        with self._lock:
            now = self._clock()
            stored = self._outages.get(key)
            if stored is None:
                stored = self._outages[key] = [down, self._wall(), 0, now + first_probe]
            else:
                stored[0], stored[2] = down, stored[2] + 1
                stored[3] = now + next_probe_in(first_probe, stored[2])
            return self._outage(key, now)

    def outage(self, key: str, *, claim: float | None = None) -> tuple[Outage | None, bool]:
        with self._lock:
            now = self._clock()
            stored = self._outages.get(key)
            if stored is None:
                return None, False
            found = self._outage(key, now)
            if claim is None or found.probe_in > 0:
                return found, False
            stored[3] = now + claim
            return found, True

    def _outage(self, key: str, now: float) -> Outage:
        down, since, probes, probe_at = self._outages[key]
        return Outage.from_epoch(key, down, since, probes, max(0.0, probe_at - now))

    def close_outage(self, key: str) -> bool:
        with self._lock:
            return self._outages.pop(key, None) is not None


# --- the budget as a hook uses it ---------------------------------------------------------------


@dataclass
class Waited:
    """Seconds one :meth:`RateBudget.wait` spent waiting for the budget and for a 429 pause."""

    budget_seconds: float = 0.0
    pause_seconds: float = 0.0


class RateBudget:
    """
    The budget of one scope in one backend, as the hook's threads use it.

    :param backend: where the log and the pause live.
    :param key: the scope (one per egress address).
    :param budget: the limit; ``None`` for no client-side limit (the 429 pause still applies).
    :param clock: the caller's clock (for the retry deadline).
    :param sleep: sleep function, injectable for tests.
    """

    def __init__(
        self,
        backend: BudgetBackend,
        key: str,
        budget: Budget | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.backend = backend
        self.key = key
        self.budget = budget
        self._clock = clock
        self._sleep = sleep
        #: Refuse every start (:class:`ScopeDown`) while the scope's outage is recorded, but the
        #: probe this budget claimed: the onboarding engine's calls, so that a call retrying a
        #: 5xx stops once any sender of the scope knows sFOX is down.
        self.stop_when_down = False
        self._down_lock = threading.Lock()
        self._down: tuple[float, Outage | None] | None = None  # (looked at, what was seen)
        self._probe_claimed = False

    @property
    def rate(self) -> float:
        """Requests per second of the budget (N / W; 0: no limit)."""
        return self.budget.rate if self.budget else 0.0

    def wait(self, deadline: float | None = None) -> Waited:
        """
        Block until the caller may start one request (its start is then recorded).

        :param deadline: clock time after which the caller gives up: a pause that lasts past
            it raises :class:`PauseTooLong` at once instead of sleeping.
        :raises BudgetUnavailable: the backend cannot be used; nothing may be sent.
        :raises BudgetHeld: an operator holds the scope; nothing may be sent.
        """
        waited = Waited()
        if self.stop_when_down:
            self._refuse_when_down()
        while True:
            seconds, paused = self.backend.acquire(self.key, self.budget)
            if seconds <= 0:
                return waited
            if paused and deadline is not None and self._clock() + seconds > deadline:
                raise PauseTooLong(seconds)
            self._sleep(seconds)
            if paused:
                waited.pause_seconds += seconds
            else:
                waited.budget_seconds += seconds

    def pause(self, seconds: float) -> None:
        """Hold every request of the scope, in every process, for ``seconds`` from now."""
        self.backend.pause(self.key, min(seconds, MAX_PAUSE_SECONDS))

    @property
    def paused_for(self) -> float:
        """Seconds left of the scope's pause (0 when not paused)."""
        return self.backend.paused_for(self.key)

    def hold(self, *, until: datetime | None, reason: str = Hold.DEFAULT_REASON) -> None:
        """Hold every sender of the scope until ``until`` (aware; ``None``: until released)."""
        self.backend.set_hold(self.key, until=None if until is None else until.timestamp(), reason=reason)

    def release(self) -> bool:
        """End the scope's hold; return whether one was in force."""
        return self.backend.clear_hold(self.key)

    def current_hold(self) -> Hold | None:
        """The hold in force on the scope, if any."""
        return self.backend.get_hold(self.key)

    def trip(self, down: str, *, first_probe: float) -> Outage:
        """
        Tell every sender of the scope that sFOX is down (or that a probe failed): they spend
        nothing on it until a probe, at most one per interval, is answered.

        :param down: what is down, with its status (no personal data, no token).
        :param first_probe: seconds to the first probe; the wait doubles after each failed one.
        """
        found = self.backend.trip(self.key, down=down, first_probe=first_probe)
        self._saw(found, claimed=False)
        return found

    def outage(self, *, claim: float | None = None) -> tuple[Outage | None, bool]:
        """The scope's outage, and whether the caller got its probe (see :meth:`BudgetBackend.outage`)."""
        found, claimed = self.backend.outage(self.key, claim=claim)
        self._saw(found, claimed=claimed)
        return found, claimed

    def close_outage(self) -> bool:
        """sFOX answered a probe: every sender of the scope may send again."""
        closed = self.backend.close_outage(self.key)
        self._saw(None, claimed=False)
        return closed

    def _saw(self, found: Outage | None, *, claimed: bool) -> None:
        with self._down_lock:
            self._down, self._probe_claimed = (self._clock(), found), claimed

    def _refuse_when_down(self) -> None:
        """Raise :class:`ScopeDown` while the scope's outage is recorded, unless this budget probes it."""
        with self._down_lock:
            now = self._clock()
            if self._down is None or now - self._down[0] >= OUTAGE_CHECK_SECONDS:
                self._down = (now, self.backend.outage(self.key)[0])
            found, claimed = self._down[1], self._probe_claimed
        if found is not None and not claimed:
            raise ScopeDown(found)
