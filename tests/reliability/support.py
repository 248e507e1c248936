"""
Shared pieces of the reliability suite and of ``benchmarks/soak.py``.

- sizes: ``SFOX_RELIABILITY_PROFILE=ci`` (default, scaled down for CI) or ``soak``;
- :func:`run_onboarding`: one onboarding run through the engine and its chunk task, as the
  DAG's tasks do it (plan -> each chunk's send task -> summarize), without a scheduler; a
  chunk task that fails stops its path, as Airflow would, and the summary hears what it said;
- :class:`Revoker`: the token revoked while a run sends (``PUT /_sandbox/token``);
- :class:`BurstOf429`: a 429 burst, made by setting a small, time-scaled rate limit on the
  sandbox for a moment while a run is sending;
- :func:`audit`: compares the warehouse ledger with the sandbox journal (the sandbox's record
  of every request and every code it sent) and explains each duplicate code.

No personal data ever needs to be read back: the audit works on user ids, states and counts.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import requests

from airflow_sfox.onboarding.sender import threads_for

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from sfox_sandbox import JournalEntry, SandboxServer

PROFILE = os.environ.get("SFOX_RELIABILITY_PROFILE", "ci")
if PROFILE not in ("ci", "soak"):
    raise ValueError(f"SFOX_RELIABILITY_PROFILE must be ci or soak, got {PROFILE!r}")
SOAK = PROFILE == "soak"

#: Users of the fault scenario (CI: a few hundred; soak: thousands).
FAULT_USERS = 3000 if SOAK else 300
#: Hypothesis examples of the heavy properties (a warehouse and HTTP per example); the cheap
#: ones follow the Hypothesis profile of the same name (see conftest.py).
HEAVY_EXAMPLES = 150 if SOAK else 12

#: Threads of one chunk task (SendVerificationBatchOperator's default): the in-flight bound.
THREADS = 8
#: Threads of a chunk task of the DAG on a 500 requests/s connection (the tests' budget): the
#: bound of requests in flight when a task is killed or its token refused.
DAG_THREADS = threads_for(500)
SEND_PATH = "/v1/enterprise/users/send-verification/"
#: The only requests onboarding may make: one bulk read, and sends to exactly one path segment.
ALLOWED_GET = "/v1/enterprise/users"
SEND_PATH_RE = re.compile(r"^/v1/enterprise/users/send-verification/[^/?#]+$")

#: The faults of issue 7: 10% 5xx, 2% resets, 2% timeouts, 1% "processed, answer dropped".
ISSUE_FAULTS: dict[str, float] = {
    "error_500_rate": 0.05,
    "error_503_rate": 0.05,
    "reset_rate": 0.02,
    "hang_rate": 0.02,
    "hang_seconds": 2.0,  # above the connection's 1 s read timeout: the client times out
    "drop_rate": 0.01,
}
#: Connection extras of the fault runs: a 1 s read timeout (hangs time out), no real pacing
#: limit (the sandbox's rate limit is what the 429 burst tests), short 429 pauses.
FAULT_CONN_EXTRA: dict[str, Any] = {
    "timeout": 1,
    "rate_limit_requests": 0,  # no client-side budget: allowed for the loopback sandbox only
    "rate_limit_pause_seconds": 1,
    "max_retry_seconds": 300,
}
#: Faults whose request was processed by sFOX but whose answer never reached us.
LOST_ANSWER_FAULTS = ("drop", "hang")


def run_onboarding(
    run_id: str,
    *,
    params: dict[str, Any] | None = None,
    warehouse_conn_id: str = "sfox_warehouse",
    sfox_conn_id: str = "sfox_default",
    threads: int = THREADS,
) -> dict[str, Any]:
    """
    One onboarding run as the DAG runs it: plan, each chunk's ``send_email`` task, summarize.

    Returns ``{"summary": ..., "chunks": [...], "error": str | None}``; a chunk task error
    stops the run there (as a failed task would), and the summary's own failure (run over
    the threshold, or incomplete) is returned as ``error``.
    """
    from airflow_sfox._compat import AirflowException, AirflowSkipException
    from airflow_sfox.onboarding.model import channels_for
    from airflow_sfox.onboarding.runs import plan_run, summarize_run
    from airflow_sfox.onboarding.schema import utcnow

    params = {"channels": ["email"], "chunk_size": 100, "failure_threshold": 0.2, **(params or {})}
    started_at = utcnow()
    planned = plan_run(
        params=params,
        run_id=run_id,
        dag_id="sfox_reliability",
        warehouse_conn_id=warehouse_conn_id,
        sfox_conn_id=sfox_conn_id,
        started_at=started_at,
    )
    chunks = []
    ti = FakeTI()
    task_errors: list[BaseException] = []
    for chunk in planned["chunks"]:
        # The DAG's path of the chunk's account type: a step per channel, in order.
        for channel in channels_for(chunk["account_type"]):
            task = chunk_task(
                "sfox_reliability",
                task_id=f"send_{channel}",
                chunk=chunk,
                verification_type=str(channel),
                warehouse_conn_id=warehouse_conn_id,
                sfox_conn_id=sfox_conn_id,
                threads=threads,
            )
            try:
                chunks.append(task.execute({"run_id": run_id, "ti": ti}))  # type: ignore[arg-type]
            except AirflowSkipException:  # no code of this channel due
                pass
            except AirflowException as err:  # the task failed: the next step of its path does not run
                task_errors.append(err)
                break
    error = None
    try:
        summary = summarize_run(
            counts=planned["counts"],
            params=params,
            run_id=run_id,
            dag_id="sfox_reliability",
            warehouse_conn_id=warehouse_conn_id,
            started_at=started_at,
            stops=ti.pushed.get("stopped", []),
        )
    except AirflowException as err:
        summary, error = None, str(err)
    return {
        "summary": summary,
        "chunks": chunks,
        "counts": planned["counts"],
        "error": error,
        "task_errors": task_errors,
    }


def chunk_task(dag_id: str, **kwargs: Any) -> Any:
    """A chunk step run by hand, on a DAG of its own: a step finds its run's rows by DAG and run id."""
    from airflow.sdk import DAG

    from airflow_sfox.onboarding.tasks import SendVerificationBatchOperator

    return SendVerificationBatchOperator(dag=DAG(dag_id=dag_id, schedule=None), **kwargs)


class FakeTI:
    """The task instance of a chunk task run by hand: records what it pushes to XCom, by key."""

    def __init__(self) -> None:
        self.pushed: dict[str, list[Any]] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed.setdefault(key, []).append(value)


def wait_for(predicate: Callable[[], bool], *, timeout: float, every: float = 0.02) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds passed; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(every)


def sends(server: SandboxServer, since: int = 0) -> list[JournalEntry]:
    """Journal entries of send-verification requests."""
    return [e for e in server.journal(since=since) if e.path.startswith(SEND_PATH)]


class Revoker:
    """
    Revokes the sandbox's token once ``after`` send requests reached it, through the admin
    API (``PUT /_sandbox/token`` with another token): from then on every ``/v1/`` request
    gets 401, exactly as sFOX answers a revoked key. ``revoked`` is set once it happened;
    :meth:`restore` puts ``token`` back (the sandbox fixture's reset does too).
    """

    #: The token the sandbox expects once revoked: no client knows it.
    REVOKED_TOKEN = "revoked-token-no-client-has"

    def __init__(self, server: SandboxServer, *, after: int, token: str) -> None:
        self.server = server
        self.after = after
        self.token = token
        self.revoked = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _set_token(self, token: str) -> None:
        resp = requests.put(f"{self.server.url}/_sandbox/token", json={"token": token}, timeout=10)
        resp.raise_for_status()

    def _run(self) -> None:
        if wait_for(lambda: len(sends(self.server)) >= self.after, timeout=300):
            self._set_token(self.REVOKED_TOKEN)
            self.revoked.set()

    def restore(self) -> None:
        self._thread.join(5)
        self._set_token(self.token)
        self.revoked.clear()


class BurstOf429:
    """
    A 429 burst while a run sends: once ``after`` send requests reached the sandbox, a small,
    time-scaled rate limit is set (4 requests per 0.5 s, then blocked for 1 s); it is
    lifted again once ``min_429`` requests were refused or ``hold`` seconds passed.

    Use as a context manager around the run; ``seen`` is the number of 429 answers.
    """

    def __init__(self, server: SandboxServer, *, after: int, min_429: int = 10, hold: float = 4.0) -> None:
        self.server = server
        self.after = after
        self.min_429 = min_429
        self.hold = hold
        self.started = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="burst-of-429", daemon=True)

    def _run(self) -> None:
        server = self.server
        if not wait_for(lambda: len(sends(server)) >= self.after or self._done.is_set(), timeout=600):
            return
        if self._done.is_set():
            return
        # 4 requests per 0.5 s (any client faster than 8 requests/s hits it), then 1 s blocked.
        server.set_rate_limit(limit=4, window_seconds=10, block_seconds=20, time_scale=0.05)
        self.started.set()
        wait_for(
            lambda: (
                self._done.is_set() or sum(1 for e in server.journal() if e.status == 429) >= self.min_429
            ),
            timeout=self.hold,
            every=0.05,
        )
        server.set_rate_limit(limit=0)

    def __enter__(self) -> BurstOf429:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(30)
        self.server.set_rate_limit(limit=0)


@dataclass
class Audit:
    """The ledger compared with the sandbox journal (see :func:`audit`)."""

    valid_users: int
    requests: int
    codes: int
    statuses: Counter[str]
    faults: Counter[str]
    missed: list[str]
    not_done_in_ledger: list[str]
    #: user_id -> email codes sFOX sent, for users who got more than one.
    duplicates: dict[str, int]
    #: duplicates the ledger marks uncertain (uncertain = 1).
    duplicates_marked_uncertain: list[str]
    #: duplicates where an earlier answer was lost (dropped or timed out) for every extra code.
    duplicates_with_lost_answer: list[str]
    uncertain_rows: int
    #: users whose ledger ``attempts`` differ from the requests the sandbox journaled for them.
    attempts_mismatch: dict[str, tuple[int, int]]
    #: requests other than the one bulk GET and sends to one path segment.
    stray_requests: list[str]
    lost_answers: int = 0
    #: where the attempts table disagrees (see :func:`attempts_disagree`), when it was given
    attempts_table: dict[str, list[str]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def unexplained_duplicates(self) -> list[str]:
        """Duplicates neither marked uncertain nor caused by a lost answer."""
        marked = set(self.duplicates_marked_uncertain) & set(self.duplicates_with_lost_answer)
        return sorted(set(self.duplicates) - marked)

    def summary(self) -> dict[str, Any]:
        """Counts only (no user ids): for reports and assertion messages."""
        return {
            "valid_users": self.valid_users,
            "requests": self.requests,
            "codes": self.codes,
            "statuses": dict(self.statuses),
            "faults": dict(self.faults),
            "lost_answers": self.lost_answers,
            "missed": len(self.missed),
            "not_done_in_ledger": len(self.not_done_in_ledger),
            "duplicates": len(self.duplicates),
            "duplicates_marked_uncertain": len(self.duplicates_marked_uncertain),
            "duplicates_with_lost_answer": len(self.duplicates_with_lost_answer),
            "unexplained_duplicates": len(self.unexplained_duplicates),
            "uncertain_rows": self.uncertain_rows,
            "attempts_mismatch": len(self.attempts_mismatch),
            "stray_requests": len(self.stray_requests),
            "attempts_table": {check: len(uids) for check, uids in self.attempts_table.items()},
        }


def audit(
    journal: Iterable[JournalEntry],
    ledger: dict[tuple[str, str], dict[str, Any]],
    valid_user_ids: Iterable[str],
    *,
    channel: str = "email",
    attempts: Iterable[dict[str, Any]] | None = None,
) -> Audit:
    """
    Compare the ledger (``{(user_id, channel): row}``) with the sandbox journal.

    :param journal: every request the sandbox saw during the runs.
    :param ledger: the warehouse ledger (rows with ``state``, ``attempts``, ``uncertain``).
    :param valid_user_ids: the users that must end with a code.
    :param channel: the channel audited.
    :param attempts: the attempts table's rows, to compare with both.
    """
    valid = list(valid_user_ids)
    entries = list(journal)
    stray = [e.path for e in entries if not _allowed(e)]
    send_entries = [e for e in entries if e.path.startswith(SEND_PATH) and e.type == channel]
    codes = Counter(e.user_id for e in send_entries if e.code_sent)
    requests = Counter(e.user_id for e in send_entries)
    lost = Counter(e.user_id for e in send_entries if e.code_sent and e.fault in LOST_ANSWER_FAULTS)
    duplicates = {u: n for u, n in codes.items() if n > 1}
    rows = {uid: row for (uid, ch), row in ledger.items() if ch == channel}
    done_states = ("sent", "already_verified", "verified")
    mismatch = {
        uid: (int(row["attempts"]), requests.get(uid, 0))
        for uid, row in rows.items()
        if row["state"] != "rejected" and int(row["attempts"]) != requests.get(uid, 0)
    }
    return Audit(
        valid_users=len(valid),
        requests=len(send_entries),
        codes=sum(codes.values()),
        statuses=Counter(str(e.status) for e in send_entries),
        faults=Counter(e.fault for e in send_entries if e.fault),
        missed=sorted(u for u in valid if codes.get(u, 0) == 0),
        not_done_in_ledger=sorted(u for u in valid if rows.get(u, {}).get("state") not in done_states),
        duplicates=duplicates,
        duplicates_marked_uncertain=sorted(u for u in duplicates if rows.get(u, {}).get("uncertain") == 1),
        duplicates_with_lost_answer=sorted(u for u, n in duplicates.items() if lost.get(u, 0) >= n - 1),
        uncertain_rows=sum(1 for row in rows.values() if row.get("uncertain") == 1),
        attempts_mismatch=mismatch,
        stray_requests=stray,
        lost_answers=sum(lost.values()),
        attempts_table={} if attempts is None else attempts_disagree(attempts, rows, requests, channel),
    )


def attempts_disagree(
    attempts: Iterable[dict[str, Any]],
    rows: dict[str, dict[str, Any]],
    requests: Counter[str],
    channel: str,
) -> dict[str, list[str]]:
    """
    The users for whom the attempts table disagrees with the ledger's counters or the journal.

    ``journal``: sFOX saw fewer requests than the rows that had an answer or more than all rows
    (a ``lost`` row is a request claimed when its task died: it may or may not have gone out);
    ``attempts``, ``sends``, ``uncertain``: the ledger's counter is not the rows' count, the
    ``sent`` rows' count, or whether any row is uncertain.
    """
    trail: dict[str, list[dict[str, Any]]] = {}
    for row in attempts:
        if row["channel"] == channel:
            trail.setdefault(row["user_id"], []).append(row)
    checks: dict[str, list[str]] = {"journal": [], "attempts": [], "sends": [], "uncertain": []}
    for uid in sorted(set(trail) | set(rows) | set(requests)):
        mine, row = trail.get(uid, []), rows.get(uid, {})
        answered = sum(1 for a in mine if a["outcome"] != "lost")
        if not answered <= requests.get(uid, 0) <= len(mine):
            checks["journal"].append(uid)
        if int(row.get("attempts") or 0) != len(mine):
            checks["attempts"].append(uid)
        if int(row.get("sends") or 0) != sum(1 for a in mine if a["outcome"] == "sent"):
            checks["sends"].append(uid)
        if mine and int(row.get("uncertain") or 0) != max(int(a["uncertain"]) for a in mine):
            checks["uncertain"].append(uid)
    return {check: uids for check, uids in checks.items() if uids}


def _allowed(entry: JournalEntry) -> bool:
    path = entry.path
    if entry.method == "GET":
        return path == ALLOWED_GET
    if entry.method == "POST" and SEND_PATH_RE.match(path):
        return entry.user_id is not None and entry.user_id == unquote(path.rsplit("/", 1)[1])
    return False


def sqlite_ledger(path: str) -> dict[tuple[str, str], dict[str, Any]]:
    """The ledger of a SQLite warehouse file, keyed by (user_id, channel)."""
    with sqlite3.connect(path) as conn:
        cursor = conn.execute(
            "SELECT user_id, channel, state, sends, attempts, uncertain, last_status, last_error, run_id "
            "FROM sfox_onboarding_ledger"
        )
        keys = ("state", "sends", "attempts", "uncertain", "last_status", "last_error", "run_id")
        return {(r[0], r[1]): dict(zip(keys, r[2:], strict=True)) for r in cursor.fetchall()}
