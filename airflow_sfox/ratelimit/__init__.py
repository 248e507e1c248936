"""
The sFOX rate budget: at most N request starts in any W seconds, shared by every process that
sends from one egress address, plus the shared pause after a 429.

sFOX allows 250 requests per 10 s per IP, then answers 429 and blocks the IP for 60 s. The
budget is a **sliding log**: every request start is written to a shared log, and a request may
start only while fewer than N starts lie in the last ``W + margin`` seconds. So no window of
W seconds ever holds more than N starts, and the whole budget is usable (no token bucket whose
burst lets ~2N through the first window, no fixed rate that leaves head-room unused).

The *margin* (:meth:`Budget.jitter_margin`) keeps a start in the log a little longer than W:
network and scheduling jitter bunch arrivals at the server (240 starts per 10 s were once seen
as 241-245 arrivals), so even a budget of exactly 250 per 10 s never meets a 429. A budget
under sFOX's limit covers part of the jitter with its own slack, so the margin is only what is
left: 0.5 s at 250 per 10 s (it costs under 5 % of the throughput), 0.08 s at 240, none at the
default 200.

The 429 pause lives in the same backend: the first 429 seen anywhere holds every request of
every process sharing the budget until the block ends. So does the operator's *hold*
(:class:`Hold`, the emergency stop): a pause with a reason, on the wall clock, that may be
open-ended; while it is in force no request starts (:class:`BudgetHeld` is raised at once).
And so does the *outage* (:class:`Outage`, the shared circuit breaker): once a sender sees sFOX
down, the scope's other senders spend nothing on it but one probe per interval (the interval
doubles after each failed probe, up to :data:`OUTAGE_PROBE_GROWTH` times the first).

Backends (chosen by :func:`airflow_sfox.hooks.budget.open_budget` from the connection):

- ``local`` (default): a SQLite file per scope (WAL, ``BEGIN IMMEDIATE``) under a folder,
  :data:`DEFAULT_DIR` unless the connection names one; every process of one machine shares it
  (LocalExecutor task processes, ``airflow dags test``, the triggerer), nothing to start. The
  clock is the hook's (``time.monotonic``: one clock for all processes of a Linux machine).
- ``redis``: a sorted set and a block-until key per scope on a Redis server, updated by Lua
  scripts (atomic) on the server's own ``TIME``, so client clocks may disagree: for workers on
  several machines behind one egress address.
- ``memory``: one process only (unit tests on a fake clock).

Every backend fails closed: when it cannot be reached, :class:`BudgetUnavailable` is raised and
no request is sent unpaced.
"""

from __future__ import annotations

from airflow_sfox.ratelimit.budget import (
    BACKENDS,
    DEFAULT_DIR,
    DEFAULT_MARGIN_SECONDS,
    MAX_PAUSE_SECONDS,
    MAX_WINDOW_SECONDS,
    OUTAGE_PROBE_GROWTH,
    SFOX_LIMIT_REQUESTS,
    SFOX_LIMIT_WINDOW_SECONDS,
    Budget,
    BudgetBackend,
    BudgetHeld,
    BudgetUnavailable,
    Hold,
    MemoryBackend,
    Outage,
    PauseTooLong,
    RateBudget,
    ScopeDown,
    Waited,
    next_probe_in,
)
from airflow_sfox.ratelimit.local import SqliteBackend, local_backend
from airflow_sfox.ratelimit.redis_backend import RedisBackend, redis_client_from_connection

__all__ = [
    "BACKENDS",
    "DEFAULT_DIR",
    "DEFAULT_MARGIN_SECONDS",
    "MAX_PAUSE_SECONDS",
    "MAX_WINDOW_SECONDS",
    "OUTAGE_PROBE_GROWTH",
    "SFOX_LIMIT_REQUESTS",
    "SFOX_LIMIT_WINDOW_SECONDS",
    "Budget",
    "BudgetBackend",
    "BudgetHeld",
    "BudgetUnavailable",
    "Hold",
    "MemoryBackend",
    "Outage",
    "PauseTooLong",
    "RateBudget",
    "RedisBackend",
    "ScopeDown",
    "SqliteBackend",
    "Waited",
    "local_backend",
    "next_probe_in",
    "redis_client_from_connection",
]
