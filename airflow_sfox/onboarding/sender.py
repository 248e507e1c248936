"""
Sending: the queued work of one chunk, through one hook and a small thread pool.

Outcomes are committed to the ledger as they arrive (one commit per batch of whatever
finished since the last one), so a worker that dies loses at most the outcomes of the
requests in flight: those users stay ``queued`` and are sent again by a retry or a later
run (at-least-once; each such duplicate shows as a second request in sFOX's records).
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
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
    from airflow_sfox.hooks.sfox import SfoxConnectHook
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
    requests: int = 0
    rate_limited: int = 0
    seconds: float = 0.0
    #: Thread-seconds spent waiting for the shared rate budget, and in 429 pauses.
    budget_wait_seconds: float = 0.0
    pause_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {**asdict(self), "seconds": round(self.seconds, 3)}


def _outcome(hook: SfoxConnectHook, user_id: str, channel: str) -> Outcome:
    started = utcnow()

    def outcome(
        state: LedgerState, status: int | None, error: str | None, attempts: int, uncertain: bool
    ) -> Outcome:
        return Outcome(user_id, channel, state, status, error, attempts, uncertain, started)

    try:
        result = hook.send_verification_result(user_id, channel)
    except SfoxAuthError:
        raise  # the token is wrong or revoked: stop the chunk, leave the rest queued
    except SfoxAlreadyVerifiedError as err:
        return outcome(LedgerState.ALREADY_VERIFIED, err.status_code, None, err.attempts, err.uncertain)
    except SfoxNotFoundError as err:
        return outcome(LedgerState.NOT_REGISTERED, err.status_code, err.message, err.attempts, err.uncertain)
    except SfoxError as err:
        return outcome(LedgerState.FAILED, err.status_code, str(err)[:255], err.attempts, err.uncertain)
    except ValueError as err:  # the hook refused the user_id: validation should have caught it
        return outcome(LedgerState.REJECTED, None, str(err)[:255], 0, False)
    return outcome(LedgerState.SENT, result.status_code, None, result.attempts, result.uncertain)


def send_chunk(
    warehouse: Warehouse,
    hook: SfoxConnectHook,
    *,
    run_id: str,
    chunk: dict[str, Any],
    channel: str,
    threads: int = DEFAULT_THREADS,
    progress_every: float = PROGRESS_EVERY,
) -> ChunkStats:
    """
    Send the queued ``channel`` codes of one chunk descriptor and record every outcome.

    :param warehouse: where the ledger is.
    :param hook: the sFOX hook (its rate budget, shared with every hook of the scope, bounds the rate).
    :param run_id: the run that planned the chunk.
    :param chunk: a descriptor made by the planner.
    :param channel: ``email`` or ``sms``.
    :param threads: concurrent requests.
    :param progress_every: seconds between progress log lines.
    :raises SfoxAuthError: the token was refused; outcomes so far are recorded first.
    """
    first, last = chunk["chunks"]
    user_ids = warehouse.queued(run_id, chunk["account_type"], channel, (first, last))
    stats = ChunkStats(channel=channel, label=chunk["label"], queued=len(user_ids))
    if not user_ids:
        log.info("%s %s: nothing queued", chunk["label"], channel)
        return stats
    # Each job puts exactly one item: an Outcome, the error that stops the chunk, or None
    # for a job skipped after the stop. The calling thread owns the DB connection.
    results: queue.Queue[Outcome | BaseException | None] = queue.Queue()
    stop = threading.Event()
    requests_before = hook.stats.as_dict()
    started = time.monotonic()

    # A request may start only while fewer than `threads` outcomes wait for their commit: if
    # the ledger stalls or dies, at most that many codes go out unrecorded.
    uncommitted = threading.Semaphore(threads)

    def work(user_id: str) -> None:
        uncommitted.acquire()
        if stop.is_set():
            results.put(None)
            return
        try:
            results.put(_outcome(hook, user_id, channel))
        except BaseException as err:  # noqa: BLE001 - handed to the calling thread, re-raised there
            stop.set()
            results.put(err)

    failure: BaseException | None = None
    next_progress = started + progress_every

    def record(conn: Any, batch: list[Outcome]) -> None:
        warehouse.record_outcomes(conn, batch)
        conn.commit()
        for outcome in batch:
            state = str(outcome.state)
            stats.outcomes[state] = stats.outcomes.get(state, 0) + 1
            stats.uncertain += outcome.uncertain

    with warehouse.connect() as conn:
        # The first request goes alone: a refused token then costs one request, not one per thread.
        record(conn, [_outcome(hook, user_ids[0], channel)])
        done = 1
        with ThreadPoolExecutor(threads, thread_name_prefix="sfox-send") as pool:
            try:
                for user_id in user_ids[1:]:
                    pool.submit(work, user_id)
                pending = len(user_ids) - 1
                while pending:
                    items = [results.get()]
                    while True:
                        try:
                            items.append(results.get_nowait())
                        except queue.Empty:
                            break
                    pending -= len(items)
                    batch = [item for item in items if isinstance(item, Outcome)]
                    failure = failure or next((i for i in items if isinstance(i, BaseException)), None)
                    record(conn, batch)
                    for _ in items:
                        uncommitted.release()
                    done += len(batch)
                    now = time.monotonic()
                    if now >= next_progress or not pending:
                        made = hook.stats.as_dict()["requests"] - requests_before["requests"]
                        _progress(chunk["label"], channel, done, len(user_ids), stats, made, now - started)
                        next_progress = now + progress_every
            except BaseException:
                # The ledger is gone (or the task is being killed): send nothing more that
                # could not be recorded; wake the jobs waiting for a slot so they end.
                stop.set()
                for _ in range(threads):
                    uncommitted.release()
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    stats.seconds = time.monotonic() - started
    after = hook.stats.as_dict()
    stats.requests = after["requests"] - requests_before["requests"]
    stats.rate_limited = after["rate_limited"] - requests_before["rate_limited"]
    for waited in ("budget_wait_seconds", "pause_seconds"):
        setattr(stats, waited, round(after[waited] - requests_before[waited], 3))
    if failure is not None:
        log.error(
            "%s %s stopped after %d of %d users: %s", chunk["label"], channel, done, len(user_ids), failure
        )
        raise failure
    return stats


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
