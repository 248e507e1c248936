"""
Sending: the queued work of one chunk, through one hook and a small thread pool.

Each user is claimed in the ledger just before its request goes out, and its outcome is
committed as it arrives (one commit per batch of whatever finished since the last one, which
also claims the next users), so a worker that dies leaves at most ``threads`` claims: the
requests in flight. The next try of the step (a task retry, or a later run) finds them,
records each as a ``lost`` attempt and marks it uncertain, and sends it again (at-least-once;
each such duplicate shows as a second request in sFOX's records) or holds it for review.

An outage is never a user's failure. A circuit breaker over the chunk stops it when sFOX
answers 5xx, times out or refuses connections for :data:`OUTAGE_STREAK` users in a row, at
the first call the rate budget's backend refuses, or when the warehouse cannot be written:
the users not answered stay ``queued`` with their failure counts unchanged, and
:class:`ChunkStopped` names what is down, for Airflow's task retry to resume the chunk. An sFOX
outage is recorded for the whole budget scope (beside the 429 pause): the scope's other chunk
tasks then stop before any request, but for one probe per interval (the connection's
``outage_probe_seconds``, doubling), whose answer ends the outage for all.
"""

from __future__ import annotations

import collections
import logging
import math
import queue
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, NamedTuple

from airflow_sfox._compat import AirflowException
from airflow_sfox.exceptions import (
    SfoxAlreadyVerifiedError,
    SfoxAuthError,
    SfoxError,
    SfoxNotFoundError,
    SfoxRateBudgetError,
    SfoxRateLimitError,
    SfoxServerError,
)
from airflow_sfox.hooks.sfox import DEFAULT_POOL_SIZE
from airflow_sfox.onboarding.breaker import ChunkBreaker
from airflow_sfox.onboarding.model import LedgerState, prerequisite
from airflow_sfox.onboarding.outcomes import Outcome
from airflow_sfox.onboarding.schema import snapshot_verified, utcnow

if TYPE_CHECKING:
    from airflow_sfox.hooks.sfox import SfoxConnectHook, SfoxResult
    from airflow_sfox.onboarding.model import RunRef
    from airflow_sfox.onboarding.outcomes import Claim
    from airflow_sfox.onboarding.warehouse import Warehouse

log = logging.getLogger(__name__)

#: Threads per chunk task when the budget is unknown or unpaced.
DEFAULT_THREADS = 8
#: Most threads per chunk task: as many as the hook's pool has connections.
MAX_THREADS = DEFAULT_POOL_SIZE
#: Latency the thread count is sized for: sFOX answers in 100-300 ms.
SIZING_LATENCY_SECONDS = 0.3
#: The engine's per-call retry budget of 5xx and timeouts (the hook's ``max_retry_seconds``):
#: an outage stops the chunk within seconds, and Airflow's task retries ride it out.
ENGINE_MAX_RETRY_SECONDS = 5.0
#: Users in a row whose calls ended in a 5xx, a timeout or a refused connection: sFOX is down.
OUTAGE_STREAK = 3
#: Times a user whose call ended in an outage goes to the back of its chunk's line before a
#: persisting error of that one user (while others succeed) counts as its failure.
OUTAGE_REQUEUES = 2
#: Times one call waits out sFOX's 429 pause (a 429 is not an outage) before its user is
#: left queued for the next try.
RATE_LIMIT_WAITS = 5


def threads_for(requests_per_second: float) -> int:
    """
    Threads that keep a request budget busy at :data:`SIZING_LATENCY_SECONDS` of latency.

    The shared rate budget, not the thread count, holds the rate: spare threads only wait.

    :param requests_per_second: the paced rate (0: unpaced).
    """
    if requests_per_second <= 0:
        return DEFAULT_THREADS
    needed = math.ceil(requests_per_second * SIZING_LATENCY_SECONDS * 1.3)
    return max(4, min(MAX_THREADS, needed))


#: Seconds between two progress lines in the task log.
PROGRESS_EVERY = 10.0


@dataclass
class ChunkStats:
    """What one chunk task did, for XCom and the run summary (no personal data)."""

    channel: str
    label: str
    queued: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    uncertain: int = 0
    #: users an earlier try of this step left claimed (in flight when it died)
    lost: int = 0
    requests: int = 0
    rate_limited: int = 0
    seconds: float = 0.0
    #: Thread-seconds spent waiting for the shared rate budget, and in 429 pauses.
    budget_wait_seconds: float = 0.0
    pause_seconds: float = 0.0
    #: why the step sent nothing, when it sent nothing
    note: str | None = None
    #: users left queued when the step stopped (what was down: ``stopped``)
    left_queued: int = 0
    stopped: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {**asdict(self), "seconds": round(self.seconds, 3)}


class ChunkStopped(AirflowException):
    """
    A chunk step stopped because something it needs is down: sFOX (5xx, timeouts, refused
    connections), the rate budget's backend, or the warehouse. The users not answered stay
    queued, their failures unchanged; a retry of the task resumes them.

    :param down: what is down, with its status or where (no personal data, no token).
    :param stats: the step's figures so far (``left_queued``, ``stopped`` set).
    :param service: ``sfox``, ``rate budget`` or ``warehouse``.
    """

    def __init__(self, down: str, *, stats: ChunkStats, service: str) -> None:
        self.down, self.stats, self.service = down, stats, service
        stats.stopped = down
        super().__init__(
            f"{stats.label} {stats.channel} stopped: {down}. {stats.left_queued} users left queued, "
            "their failures unchanged; a retry of this task (or the next run) sends them."
        )

    def as_xcom(self) -> dict[str, Any]:
        """What the run's summary needs: what was down, and the step's figures."""
        return {"service": self.service, "down": self.down, **self.stats.as_dict()}


def outage_text(error: SfoxError) -> tuple[str, str]:
    """The service an outage error names, and what is down in words (scrubbed, no token)."""
    if isinstance(error, SfoxRateBudgetError):
        return "rate budget", f"the rate budget's backend is unavailable: {error.message}"
    status = f"HTTP {error.status_code}" if error.status_code is not None else error.message
    return "sfox", f"sFOX unavailable ({status})"


class _Refused(Exception):
    """sFOX refused the token: the refused call's outcome (its row stays queued), and the error."""

    def __init__(self, outcome: Outcome, error: SfoxAuthError) -> None:
        super().__init__(str(error))
        self.outcome, self.error = outcome, error


class _Answer(NamedTuple):
    """One user's call: its outcome, and the outage error it ended in (``None``: answered)."""

    outcome: Outcome
    down: SfoxError | None = None


class _Call:
    """One user's send: the hook's call, 429 pauses waited out, an unclear 422 asked about."""

    def __init__(
        self, hook: SfoxConnectHook, user_id: str, channel: str, stop: threading.Event, *, probe: bool = False
    ) -> None:
        self.hook, self.user_id, self.channel, self.stop = hook, user_id, channel, stop
        #: a probe of an outage: one request, no per-call retries
        self.retry = {"retry": False} if probe else {}
        self.started = utcnow()
        #: requests of the calls a 429 ended, before the last one
        self.earlier: list[Any] = []

    def outcome(
        self, state: LedgerState, answer: SfoxResult | SfoxError | None, error: str | None = None
    ) -> Outcome:
        trail = [*self.earlier, *(answer.trail if answer is not None else ())]
        uncertain = any(getattr(attempt, "uncertain", False) for attempt in trail) or bool(
            answer is not None and answer.uncertain
        )
        status = answer.status_code if answer is not None else None
        attempts = len(self.earlier) + (answer.attempts if answer is not None else 0)
        return Outcome(
            self.user_id, self.channel, state, status, error, attempts, uncertain, self.started, tuple(trail)
        )

    def __call__(self) -> _Answer:
        """Send; :class:`_Refused` when sFOX refuses the token."""
        waits = 0
        while True:
            try:
                result = self.request()
            except SfoxRateLimitError as err:  # the shared pause outlasted the call's retry budget
                waits += 1
                if waits > RATE_LIMIT_WAITS or self.stop.wait(self.hook.config.rate_limit_pause_seconds):
                    return _Answer(self.outcome(LedgerState.QUEUED, err, str(err)[:255]), down=err)
                self.earlier += err.trail
            except SfoxError as err:
                return self.settle(err)
            except ValueError as err:  # the hook refused the user_id: validation should have caught it
                return _Answer(self.outcome(LedgerState.REJECTED, None, str(err)[:255]))
            else:
                return self.answered(result)

    def request(self) -> SfoxResult:
        """The call's request (a subclass may send another)."""
        return self.hook.send_verification_result(self.user_id, self.channel, **self.retry)

    def answered(self, result: SfoxResult) -> _Answer:
        """The ledger outcome of a 2xx answer."""
        return _Answer(self.outcome(LedgerState.SENT, result))

    def settle(self, err: SfoxError) -> _Answer:
        """The ledger outcome of a call that ended in an error."""
        if isinstance(err, SfoxAuthError):  # the token is wrong or revoked: stop, leave the rest queued
            raise _Refused(self.outcome(LedgerState.QUEUED, err, str(err)[:255]), err) from None
        if isinstance(err, SfoxAlreadyVerifiedError):
            return _Answer(self.outcome(LedgerState.ALREADY_VERIFIED, err))
        if isinstance(err, SfoxNotFoundError):
            return _Answer(self.outcome(LedgerState.NOT_REGISTERED, err, err.message))
        if isinstance(err, (SfoxServerError, SfoxRateBudgetError)):  # down: not the user's failure
            return _Answer(self.outcome(LedgerState.QUEUED, err, str(err)[:255]), down=err)
        if err.status_code == 422:
            return self.ask_sfox(err)
        return _Answer(self.outcome(LedgerState.FAILED, err, str(err)[:255]))

    def ask_sfox(self, err: SfoxError) -> _Answer:
        """
        A 422 whose text is not a documented one: one read of the user settles it. The channel
        no longer required -> ``already_verified``; sms asked before the email is verified ->
        ``waiting`` (not a failure); still required -> ``failed`` with sFOX's message.
        """
        try:
            user = self.hook.get_user(self.user_id)
        except (SfoxServerError, SfoxRateBudgetError) as down:
            return _Answer(self.outcome(LedgerState.QUEUED, err, str(down)[:255]), down=down)
        except SfoxError as other:
            log.debug("reading the user after a 422 failed: %s", other)
            return _Answer(self.outcome(LedgerState.FAILED, err, str(err)[:255]))
        requirements = user.get("requirements")
        requirements = requirements if isinstance(requirements, dict) else {}
        if snapshot_verified(user.get("status"), requirements.get(self.channel)):
            return _Answer(
                self.outcome(LedgerState.ALREADY_VERIFIED, err, f"sFOX reports it verified: {err.message}")
            )
        before = prerequisite(str(user.get("account_type") or "individual"), self.channel)
        if before is not None and requirements.get(str(before)) is not False:
            why = f"waits for its {before} verification: {err.message}"
            return _Answer(self.outcome(LedgerState.WAITING, err, why[:255]))
        return _Answer(self.outcome(LedgerState.FAILED, err, str(err)[:255]))


def send_chunk(
    warehouse: Warehouse,
    hook: SfoxConnectHook,
    *,
    run: RunRef,
    chunk: dict[str, Any],
    channel: str,
    threads: int = DEFAULT_THREADS,
    hold_uncertain: bool = False,
    progress_every: float = PROGRESS_EVERY,
) -> ChunkStats:
    """
    Send the queued ``channel`` codes of one chunk descriptor and record every outcome.

    Each user is claimed in the ledger (committed) just before its request goes out, so at most
    ``threads`` claims are open at once. Claims left by a try that died are recorded first: each
    as a ``lost`` attempt, its row marked uncertain, then sent again (at-least-once) or, with
    ``hold_uncertain``, ``held`` for review.

    :param warehouse: where the ledger is.
    :param hook: the sFOX hook (its rate budget, shared with every hook of the scope, bounds the
        rate); give it a short ``max_retry_seconds`` (:data:`ENGINE_MAX_RETRY_SECONDS`).
    :param run: the run that planned the chunk.
    :param chunk: a descriptor made by the planner.
    :param channel: ``email`` or ``sms``.
    :param threads: concurrent requests.
    :param hold_uncertain: hold the users a dead try left claimed instead of sending them again.
    :param progress_every: seconds between progress log lines.
    :raises SfoxAuthError: the token was refused; outcomes so far are recorded first.
    :raises ChunkStopped: sFOX, the rate budget's backend or the warehouse is down.
    """

    def start(conn: Any, queued: list[Claim], stats: ChunkStats) -> tuple[_ChunkSender, list[str]]:
        user_ids = _record_lost(
            warehouse, conn, queued, stats, hold_uncertain=hold_uncertain, then="sent again"
        )
        sender = _ChunkSender(warehouse, hook, conn, run=run, channel=channel, stats=stats)
        sender.resent = set() if hold_uncertain else {c.user_id for c in queued if c.run is not None}
        return sender, user_ids

    return run_step(
        warehouse,
        hook,
        run=run,
        chunk=chunk,
        channel=channel,
        threads=threads,
        start=start,
        progress_every=progress_every,
    )


#: How a step starts sending on its connection, once it has its queued claims: it records the
#: claims a dead try left and returns its sender and the users to send, in order.
StepStart = Callable[[Any, "list[Claim]", "ChunkStats"], "tuple[_ChunkSender, list[str]]"]


def run_step(
    warehouse: Warehouse,
    hook: SfoxConnectHook,
    *,
    run: RunRef,
    chunk: dict[str, Any],
    channel: str,
    threads: int,
    start: StepStart,
    progress_every: float = PROGRESS_EVERY,
) -> ChunkStats:
    """
    The frame of every chunk step (:func:`send_chunk`, and registering's ``register_chunk``): its
    queued claims, one connection, ``start``, the sending; its figures, done or stopped.

    :param start: records what a dead try left and makes the step's sender (see :data:`StepStart`).
    :raises ChunkStopped: the warehouse could not be read or written (or see the sender's stops).
    """
    import sqlalchemy.exc

    stats = ChunkStats(channel=channel, label=chunk["label"])
    requests_before, started = hook.stats.as_dict(), time.monotonic()
    sender: _ChunkSender | None = None
    try:
        queued = queued_claims(warehouse, run, chunk, stats)
        if not queued:
            return stats
        with warehouse.connect() as conn:
            sender, user_ids = start(conn, queued, stats)
            failure = sender.send(user_ids, threads=threads, progress_every=progress_every, started=started)
    except sqlalchemy.exc.SQLAlchemyError as err:
        stats.left_queued = stats.queued - (sender.done if sender else 0)
        _figures(stats, hook, requests_before, started)
        raise _warehouse_down(warehouse, stats, err) from err
    _figures(stats, hook, requests_before, started)
    sender.finish(failure, total=len(user_ids))
    return stats


def queued_claims(warehouse: Warehouse, run: RunRef, chunk: dict[str, Any], stats: ChunkStats) -> list[Claim]:
    """The step's queued users with their claims (:meth:`Warehouse.queued`); none: the step says why."""
    queued = warehouse.queued(run, chunk["account_type"], stats.channel, tuple(chunk["chunks"]))
    stats.queued = len(queued)
    if not queued:
        stats.note = "nothing queued: every user of this step was already recorded by an earlier try"
        log.info("%s %s: %s", chunk["label"], stats.channel, stats.note)
    return queued


def _warehouse_down(warehouse: Warehouse, stats: ChunkStats, err: Exception) -> ChunkStopped:
    """The stop of a chunk whose ledger cannot be read or written (the driver's error, by type)."""
    hook = warehouse.hook
    conn_id = str(getattr(hook, str(getattr(hook, "conn_name_attr", "")), None) or type(hook).__name__)
    cause = type(getattr(err, "orig", None) or err).__name__  # its text may quote the data
    down = f"the warehouse (connection {conn_id!r}) is unreachable: {cause}"
    log.error("%s %s: %s", stats.label, stats.channel, down)
    return ChunkStopped(down, stats=stats, service="warehouse")


def _record_lost(
    warehouse: Warehouse, conn: Any, queued: list[Any], stats: ChunkStats, *, hold_uncertain: bool, then: str
) -> list[str]:
    """Record the claims a dead try left (:meth:`Warehouse.record_lost`); the users to send (``then``)."""
    lost = [claim for claim in queued if claim.run is not None]
    if lost:
        warehouse.record_lost(conn, lost, channel=stats.channel, hold=hold_uncertain)
        conn.commit()
        stats.lost = len(lost)
        if hold_uncertain:
            stats.outcomes[LedgerState.HELD.value] = len(lost)
        log.warning(
            "%s %s: %d users were being sent when an earlier try died; marked uncertain and %s",
            stats.label,
            stats.channel,
            len(lost),
            "held for review (hold_uncertain)" if hold_uncertain else then,
        )
    return [claim.user_id for claim in queued if claim.run is None or not hold_uncertain]


def _figures(stats: ChunkStats, hook: SfoxConnectHook, before: dict[str, Any], started: float) -> None:
    """The step's request figures: the hook's counters since ``before``."""
    stats.seconds = time.monotonic() - started
    after = hook.stats.as_dict()
    stats.requests = after["requests"] - before["requests"]
    stats.rate_limited = after["rate_limited"] - before["rate_limited"]
    for waited in ("budget_wait_seconds", "pause_seconds"):
        setattr(stats, waited, round(after[waited] - before[waited], 3))


_Item = _Answer | _Refused | BaseException | None


class _ChunkSender:
    """
    One chunk step's requests: claim, send on a thread pool, record. The calling thread owns
    the DB connection; each job puts exactly one item on ``results``: an answer (with the outage
    it ended in, if any), a refused token (recorded, then stops the chunk), another error (stops
    the chunk; the claim stays, since the request may have gone out), or None for a job skipped
    after the stop (its claim is released: nothing went out).
    """

    def __init__(
        self,
        warehouse: Warehouse,
        hook: SfoxConnectHook,
        conn: Any,
        *,
        run: RunRef,
        channel: str,
        stats: ChunkStats,
    ) -> None:
        self.warehouse, self.hook, self.conn = warehouse, hook, conn
        self.run, self.channel, self.stats = run, channel, stats
        self.results: queue.Queue[tuple[str, _Item]] = queue.Queue()
        self.stop = threading.Event()
        self.breaker = ChunkBreaker(
            hook.budget,
            first_probe=hook.config.outage_probe_seconds,
            streak=OUTAGE_STREAK,
            probe_wait=ENGINE_MAX_RETRY_SECONDS,
            describe=outage_text,
        )
        #: users sent again after a dead try's claim: their outcome is uncertain
        self.resent: set[str] = set()
        #: users whose call ended in an outage, and how often they went back in line
        self.requeued: collections.Counter[str] = collections.Counter()
        self.done = 0
        self.requests_before = hook.stats.as_dict()["requests"]

    def _work(self, user_id: str) -> None:
        if self.stop.is_set():
            self.results.put((user_id, None))
            return
        try:
            self.results.put((user_id, self.call(user_id)()))
        except BaseException as err:  # noqa: BLE001 - handed to the calling thread, re-raised there
            self.stop.set()
            self.results.put((user_id, err))

    def call(self, user_id: str) -> _Call:
        """One user's call (a subclass may make another kind)."""
        return _Call(self.hook, user_id, self.channel, self.stop, probe=self.breaker.probe)

    def _commit(self, outcomes: list[Outcome], skipped: list[str], claim: list[str]) -> None:
        """Record outcomes, release the claims of skipped users, claim the next ones: one commit."""
        outcomes = [replace(o, uncertain=True) if o.user_id in self.resent else o for o in outcomes]
        warehouse, conn = self.warehouse, self.conn
        warehouse.record_outcomes(conn, outcomes, run=self.run)
        warehouse.unclaim(conn, skipped, channel=self.channel)
        warehouse.claim(conn, claim, channel=self.channel, run=self.run)
        conn.commit()
        for outcome in outcomes:
            if outcome.state == LedgerState.QUEUED:
                continue  # refused, or sFOX down: not done
            state = str(outcome.state)
            self.stats.outcomes[state] = self.stats.outcomes.get(state, 0) + 1
            self.stats.uncertain += outcome.uncertain
            self.done += 1

    def finish(self, failure: BaseException | None, *, total: int) -> None:
        """Raise what stopped the chunk: an error, or the breaker (:class:`ChunkStopped`)."""
        stats = self.stats
        if failure is not None:
            log.error(
                "%s %s stopped after %d of %d users: %s", stats.label, self.channel, self.done, total, failure
            )
            raise failure
        if self.breaker.stopped:
            stats.left_queued = total - self.done
            service, down, seen = self.breaker.down()
            log.error(
                "%s %s: %s%s; %d users left queued", stats.label, self.channel, down, seen, stats.left_queued
            )
            raise ChunkStopped(down, stats=stats, service=service)

    def _next(self, todo: collections.deque[str], threads: int, in_flight: int) -> list[str]:
        """The users to claim now: one at a time while probing, else enough to fill the pool."""
        if self.stop.is_set() or self.breaker.stopped:
            return []
        room = (0 if in_flight else 1) if self.breaker.probing else threads - in_flight
        if self.breaker.probe and room and len(todo) > 1:
            todo.rotate(-random.randrange(len(todo)))  # noqa: S311 - the same user never blocks the probe
        return [todo.popleft() for _ in range(min(room, len(todo)))]

    def send(
        self, user_ids: list[str], *, threads: int, progress_every: float, started: float
    ) -> BaseException | None:
        """Send every user; return the error that stopped the chunk (outcomes so far recorded)."""
        todo = collections.deque(user_ids)
        failure: BaseException | None = None
        next_progress = started + progress_every
        self.breaker.start(self.stop)
        batch = self._next(todo, threads, 0)
        self._commit([], [], batch)
        with ThreadPoolExecutor(threads, thread_name_prefix="sfox-send") as pool:
            try:
                in_flight = 0
                while batch or in_flight:
                    for user_id in batch:
                        pool.submit(self._work, user_id)
                    in_flight += len(batch)
                    items = [self.results.get()]
                    while True:
                        try:
                            items.append(self.results.get_nowait())
                        except queue.Empty:
                            break
                    in_flight -= len(items)
                    outcomes, skipped, error = self._sort(items, todo)
                    failure = failure or error
                    # A slot freed is a claim for the next user, in the same commit.
                    batch = self._next(todo, threads, in_flight)
                    self._commit(outcomes, skipped, batch)
                    now = time.monotonic()
                    if now >= next_progress or not (batch or in_flight):
                        self._progress(len(user_ids), now - started)
                        next_progress = now + progress_every
            except BaseException:
                # The ledger is gone (or the task is being killed): send nothing more that
                # could not be recorded; the claims stay for the next try to find.
                self.stop.set()
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        return failure

    def _sort(
        self, items: list[tuple[str, _Item]], todo: collections.deque[str]
    ) -> tuple[list[Outcome], list[str], BaseException | None]:
        """Jobs' items -> outcomes to record (refused calls' too), users skipped, the first error."""
        outcomes: list[Outcome] = []
        skipped: list[str] = []
        error: BaseException | None = None
        for user_id, item in items:
            if item is None:
                skipped.append(user_id)
            elif isinstance(item, _Answer):
                outcomes.append(self._judge(item, todo))
            elif isinstance(item, _Refused):
                outcomes.append(item.outcome)
                error = error or item.error
            else:  # the request may have gone out: its claim stays for the next try
                error = error or item
        if self.breaker.stopped:
            self.stop.set()
        return outcomes, skipped, error

    def _judge(self, answer: _Answer, todo: collections.deque[str]) -> Outcome:
        """Feed the breaker; a user whose call ended in an outage goes back in line, a few times."""
        self.breaker.record(answer.down)
        outcome = answer.outcome
        if answer.down is None or self.breaker.stopped:
            return outcome
        if self.requeued[outcome.user_id] < OUTAGE_REQUEUES:
            self.requeued[outcome.user_id] += 1
            todo.append(outcome.user_id)
            return outcome
        # Only this user's calls keep failing while others are answered: its own failure.
        return replace(outcome, state=LedgerState.FAILED)

    def _progress(self, total: int, elapsed: float) -> None:
        made = self.hook.stats.as_dict()["requests"] - self.requests_before
        _progress(self.stats.label, self.channel, self.done, total, self.stats, made, elapsed)


def _progress(
    label: str, channel: str, done: int, total: int, stats: ChunkStats, requests: int, elapsed: float
) -> None:
    users_per_second = done / elapsed if elapsed > 0 else 0.0
    eta = f"{(total - done) / users_per_second:.0f} s" if users_per_second > 0 else "unknown"
    log.info(
        "%s %s: %d/%d done, %.1f requests/s, %d failed, ETA %s",
        label,
        channel,
        done,
        total,
        requests / elapsed if elapsed > 0 else 0.0,
        stats.outcomes.get(LedgerState.FAILED.value, 0),
        eta,
    )
