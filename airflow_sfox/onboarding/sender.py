"""
Sending: the queued work of one chunk, through one hook and a small thread pool.

Each user is claimed in the ledger just before its request goes out, and its outcome is
committed as it arrives (one commit per batch of whatever finished since the last one, which
also claims the next users), so a worker that dies leaves at most ``threads`` claims: the
requests in flight. The next try of the step (a task retry, or a later run) finds them,
records each as a ``lost`` attempt and marks it uncertain, and sends it again (at-least-once;
each such duplicate shows as a second request in sFOX's records) or holds it for review.
"""

from __future__ import annotations

import itertools
import logging
import math
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from airflow_sfox.exceptions import (
    SfoxAlreadyVerifiedError,
    SfoxAuthError,
    SfoxError,
    SfoxNotFoundError,
)
from airflow_sfox.hooks.sfox import DEFAULT_POOL_SIZE
from airflow_sfox.onboarding.model import LedgerState
from airflow_sfox.onboarding.warehouse import Outcome, utcnow

if TYPE_CHECKING:
    from airflow_sfox.hooks.sfox import SfoxConnectHook, SfoxResult
    from airflow_sfox.onboarding.warehouse import Warehouse

log = logging.getLogger(__name__)

#: Threads per chunk task when the budget is unknown or unpaced.
DEFAULT_THREADS = 8
#: Most threads per chunk task: as many as the hook's pool has connections.
MAX_THREADS = DEFAULT_POOL_SIZE
#: Latency the thread count is sized for: sFOX answers in 100-300 ms.
SIZING_LATENCY_SECONDS = 0.3


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

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {**asdict(self), "seconds": round(self.seconds, 3)}


class _Refused(Exception):
    """sFOX refused the token: the refused call's outcome (its row stays queued), and the error."""

    def __init__(self, outcome: Outcome, error: SfoxAuthError) -> None:
        super().__init__(str(error))
        self.outcome, self.error = outcome, error


def _outcome(hook: SfoxConnectHook, user_id: str, channel: str) -> Outcome:
    """Send one user's code; :class:`_Refused` when sFOX refuses the token."""
    started = utcnow()

    def outcome(
        state: LedgerState, answer: SfoxResult | SfoxError | None, error: str | None = None
    ) -> Outcome:
        if answer is None:
            return Outcome(user_id, channel, state, None, error, 0, False, started)
        return Outcome(
            user_id,
            channel,
            state,
            answer.status_code,
            error,
            answer.attempts,
            answer.uncertain,
            started,
            tuple(answer.trail),
        )

    try:
        result = hook.send_verification_result(user_id, channel)
    except SfoxAuthError as err:  # the token is wrong or revoked: stop the chunk, leave the rest queued
        raise _Refused(outcome(LedgerState.QUEUED, err, str(err)[:255]), err) from None
    except SfoxAlreadyVerifiedError as err:
        return outcome(LedgerState.ALREADY_VERIFIED, err)
    except SfoxNotFoundError as err:
        return outcome(LedgerState.NOT_REGISTERED, err, err.message)
    except SfoxError as err:
        return outcome(LedgerState.FAILED, err, str(err)[:255])
    except ValueError as err:  # the hook refused the user_id: validation should have caught it
        return outcome(LedgerState.REJECTED, None, str(err)[:255])
    return outcome(LedgerState.SENT, result)


def send_chunk(
    warehouse: Warehouse,
    hook: SfoxConnectHook,
    *,
    run_id: str,
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
    :param hook: the sFOX hook (its rate budget, shared with every hook of the scope, bounds the rate).
    :param run_id: the run that planned the chunk.
    :param chunk: a descriptor made by the planner.
    :param channel: ``email`` or ``sms``.
    :param threads: concurrent requests.
    :param hold_uncertain: hold the users a dead try left claimed instead of sending them again.
    :param progress_every: seconds between progress log lines.
    :raises SfoxAuthError: the token was refused; outcomes so far are recorded first.
    """
    first, last = chunk["chunks"]
    queued = warehouse.queued(run_id, chunk["account_type"], channel, (first, last))
    stats = ChunkStats(channel=channel, label=chunk["label"], queued=len(queued))
    if not queued:
        stats.note = "nothing queued: every user of this step was already recorded by an earlier try"
        log.info("%s %s: %s", chunk["label"], channel, stats.note)
        return stats
    lost = [claim for claim in queued if claim.run_id is not None]
    user_ids = [claim.user_id for claim in queued if claim.run_id is None or not hold_uncertain]
    requests_before = hook.stats.as_dict()
    started = time.monotonic()
    with warehouse.connect() as conn:
        if lost:
            warehouse.record_lost(conn, lost, channel=channel, hold=hold_uncertain)
            conn.commit()
            stats.lost = len(lost)
            if hold_uncertain:
                stats.outcomes[LedgerState.HELD.value] = len(lost)
            log.warning(
                "%s %s: %d users were being sent when an earlier try died; marked uncertain and %s",
                chunk["label"],
                channel,
                len(lost),
                "held for review (hold_uncertain)" if hold_uncertain else "sent again",
            )
        sender = _ChunkSender(warehouse, hook, conn, run_id=run_id, channel=channel, stats=stats)
        sender.resent = set() if hold_uncertain else {claim.user_id for claim in lost}
        failure = sender.send(user_ids, threads=threads, progress_every=progress_every, started=started)
    stats.seconds = time.monotonic() - started
    after = hook.stats.as_dict()
    stats.requests = after["requests"] - requests_before["requests"]
    stats.rate_limited = after["rate_limited"] - requests_before["rate_limited"]
    for waited in ("budget_wait_seconds", "pause_seconds"):
        setattr(stats, waited, round(after[waited] - requests_before[waited], 3))
    if failure is not None:
        log.error(
            "%s %s stopped after %d of %d users: %s",
            chunk["label"],
            channel,
            sender.done,
            len(user_ids),
            failure,
        )
        raise failure
    return stats


class _ChunkSender:
    """
    One chunk step's requests: claim, send on a thread pool, record. The calling thread owns
    the DB connection; each job puts exactly one item on ``results``: an Outcome, a refused
    token (recorded, then stops the chunk), another error (stops the chunk; the claim stays,
    since the request may have gone out), or None for a job skipped after the stop (its claim
    is released: nothing went out).
    """

    def __init__(
        self,
        warehouse: Warehouse,
        hook: SfoxConnectHook,
        conn: Any,
        *,
        run_id: str,
        channel: str,
        stats: ChunkStats,
    ) -> None:
        self.warehouse, self.hook, self.conn = warehouse, hook, conn
        self.run_id, self.channel, self.stats = run_id, channel, stats
        self.results: queue.Queue[tuple[str, Outcome | _Refused | BaseException | None]] = queue.Queue()
        self.stop = threading.Event()
        #: users sent again after a dead try's claim: their outcome is uncertain
        self.resent: set[str] = set()
        self.done = 0
        self.requests_before = hook.stats.as_dict()["requests"]

    def _work(self, user_id: str) -> None:
        if self.stop.is_set():
            self.results.put((user_id, None))
            return
        try:
            self.results.put((user_id, _outcome(self.hook, user_id, self.channel)))
        except BaseException as err:  # noqa: BLE001 - handed to the calling thread, re-raised there
            self.stop.set()
            self.results.put((user_id, err))

    def _commit(self, outcomes: list[Outcome], skipped: list[str], claim: list[str]) -> None:
        """Record outcomes, release the claims of skipped users, claim the next ones: one commit."""
        outcomes = [replace(o, uncertain=True) if o.user_id in self.resent else o for o in outcomes]
        warehouse, conn = self.warehouse, self.conn
        warehouse.record_outcomes(conn, outcomes, run_id=self.run_id)
        warehouse.unclaim(conn, skipped, channel=self.channel)
        warehouse.claim(conn, claim, channel=self.channel, run_id=self.run_id)
        conn.commit()
        for outcome in outcomes:
            if outcome.state == LedgerState.QUEUED:
                continue  # refused: not done
            state = str(outcome.state)
            self.stats.outcomes[state] = self.stats.outcomes.get(state, 0) + 1
            self.stats.uncertain += outcome.uncertain
            self.done += 1

    def send(
        self, user_ids: list[str], *, threads: int, progress_every: float, started: float
    ) -> BaseException | None:
        """Send every user; return the error that stopped the chunk (outcomes so far recorded)."""
        if not user_ids:
            return None
        todo = iter(user_ids)
        # The first request goes alone: a refused token then costs one request, not one per thread.
        self._commit([], [], [user_ids[0]])
        next(todo)
        try:
            first = _outcome(self.hook, user_ids[0], self.channel)
        except _Refused as refused:
            self._commit([refused.outcome], [], [])
            raise refused.error from None
        batch = list(itertools.islice(todo, threads))
        self._commit([first], [], batch)
        failure: BaseException | None = None
        next_progress = started + progress_every
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
                    outcomes, skipped, error = _sort(items)
                    failure = failure or error
                    # A slot freed is a claim for the next user, in the same commit.
                    batch = [] if self.stop.is_set() else list(itertools.islice(todo, len(items)))
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

    def _progress(self, total: int, elapsed: float) -> None:
        made = self.hook.stats.as_dict()["requests"] - self.requests_before
        _progress(self.stats.label, self.channel, self.done, total, self.stats, made, elapsed)


def _sort(
    items: list[tuple[str, Outcome | _Refused | BaseException | None]],
) -> tuple[list[Outcome], list[str], BaseException | None]:
    """Jobs' items -> outcomes to record (refused calls' too), users skipped, the first error."""
    outcomes: list[Outcome] = []
    skipped: list[str] = []
    error: BaseException | None = None
    for user_id, item in items:
        if item is None:
            skipped.append(user_id)
        elif isinstance(item, Outcome):
            outcomes.append(item)
        elif isinstance(item, _Refused):
            outcomes.append(item.outcome)
            error = error or item.error
        else:  # the request may have gone out: its claim stays for the next try
            error = error or item
    return outcomes, skipped, error


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
