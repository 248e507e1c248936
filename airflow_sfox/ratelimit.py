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

Backends (:func:`make_backend`):

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

import contextlib
import hashlib
import math
import os
import re
import sqlite3
import tempfile
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

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


# --- backends ----------------------------------------------------------------------------------


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


_LOCAL_BACKENDS: dict[tuple[int, str], SqliteBackend] = {}
_LOCAL_BACKENDS_LOCK = threading.Lock()


def local_backend(folder: str | os.PathLike[str]) -> SqliteBackend:
    """The process's one ``local`` backend (on ``time.monotonic``) for ``folder``."""
    key = (os.getpid(), os.path.abspath(folder))
    with _LOCAL_BACKENDS_LOCK:
        backend = _LOCAL_BACKENDS.get(key)
        if backend is None:
            backend = _LOCAL_BACKENDS[key] = SqliteBackend(folder)
        return backend


def _file_name(key: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", key)[:80]
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return f"budget-{safe}-{digest}.sqlite3"


class SqliteBackend(BudgetBackend):
    """
    One SQLite file per scope under ``folder``: table ``starts`` (the log) and table ``pause``
    (one row: the block-until time). Each decision is one ``BEGIN IMMEDIATE`` transaction,
    so processes take turns; the clock is read inside it, so the log stays in order.

    :param folder: where the files live (created if missing).
    :param clock: a clock every process sharing the folder shares (``time.monotonic`` on one
        Linux machine).
    """

    name = "local"

    def __init__(
        self,
        folder: str | os.PathLike[str],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.folder = Path(folder)
        self.where = str(self.folder)
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._conns: dict[str, sqlite3.Connection] = {}
        self._pid = os.getpid()

    def _conn(self, key: str) -> sqlite3.Connection:
        if self._pid != os.getpid():
            # A forked child (a task process) must not use its parent's SQLite connections.
            self._conns, self._pid = {}, os.getpid()
        conn = self._conns.get(key)
        if conn is None:
            path = self.folder / _file_name(key)
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("CREATE TABLE IF NOT EXISTS starts (t REAL NOT NULL)")
                conn.execute("CREATE INDEX IF NOT EXISTS starts_t ON starts (t)")
                conn.execute("CREATE TABLE IF NOT EXISTS pause (id INTEGER PRIMARY KEY, until REAL NOT NULL)")
                conn.execute("INSERT OR IGNORE INTO pause (id, until) VALUES (1, 0)")
                # The operator's hold, on the wall clock (it may name a date); no row: not held.
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS hold (id INTEGER PRIMARY KEY CHECK (id = 1), "
                    "until REAL, reason TEXT NOT NULL, since REAL NOT NULL)"
                )
            except (OSError, sqlite3.Error) as err:
                raise BudgetUnavailable(self.name, str(path), err) from None
            self._conns[key] = conn
        return conn

    @contextlib.contextmanager
    def _transaction(self, key: str) -> Any:
        with self._lock:  # one connection per scope and process: threads take turns
            conn = self._conn(key)
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn, self._clock()
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except sqlite3.Error as err:
                raise BudgetUnavailable(self.name, str(self.folder / _file_name(key)), err) from None

    def _pause_left(self, conn: sqlite3.Connection, now: float) -> float:
        (until,) = conn.execute("SELECT until FROM pause WHERE id = 1").fetchone()
        left = float(until) - now
        if left > MAX_PAUSE_SECONDS:  # stale: written on another clock (before a reboot)
            conn.execute("UPDATE pause SET until = 0 WHERE id = 1")
            return 0.0
        return max(0.0, left)

    def _hold(self, conn: sqlite3.Connection, key: str) -> Hold | None:
        row = conn.execute("SELECT until, reason, since FROM hold WHERE id = 1").fetchone()
        if row is None:
            return None
        until, reason, since = row
        if until is not None and until <= self._wall():
            conn.execute("DELETE FROM hold WHERE id = 1")
            return None
        return Hold.from_epoch(key, reason, since, until)

    def acquire(self, key: str, budget: Budget | None) -> tuple[float, bool]:
        with self._transaction(key) as (conn, now):
            held = self._hold(conn, key)
            if held is not None:
                raise BudgetHeld(held)
            pause = self._pause_left(conn, now)
            if pause > 0:
                return pause, True
            if budget is None:
                return 0.0, False
            keep = max(budget.span, MAX_WINDOW_SECONDS + DEFAULT_MARGIN_SECONDS)
            # Starts far in the future were written on another clock (before a reboot).
            conn.execute("DELETE FROM starts WHERE t <= ? OR t > ?", (now - keep, now + keep))
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM starts WHERE t > ?", (now - budget.span,)
            ).fetchone()
            if count < budget.requests:
                conn.execute("INSERT INTO starts (t) VALUES (?)", (now,))
                return 0.0, False
            (oldest,) = conn.execute(
                "SELECT t FROM starts WHERE t > ? ORDER BY t LIMIT 1 OFFSET ?",
                (now - budget.span, count - budget.requests),
            ).fetchone()
            return max(float(oldest) + budget.span - now, 1e-6), False

    def pause(self, key: str, seconds: float) -> None:
        with self._transaction(key) as (conn, now):
            conn.execute("UPDATE pause SET until = MAX(until, ?) WHERE id = 1", (now + seconds,))

    def paused_for(self, key: str) -> float:
        with self._transaction(key) as (conn, now):
            return self._pause_left(conn, now)

    def set_hold(self, key: str, *, until: float | None, reason: str) -> None:
        with self._transaction(key) as (conn, _):
            conn.execute(
                "INSERT OR REPLACE INTO hold (id, until, reason, since) VALUES (1, ?, ?, ?)",
                (until, reason, self._wall()),
            )

    def clear_hold(self, key: str) -> bool:
        with self._transaction(key) as (conn, _):
            return conn.execute("DELETE FROM hold WHERE id = 1").rowcount > 0

    def get_hold(self, key: str) -> Hold | None:
        with self._transaction(key) as (conn, _):
            return self._hold(conn, key)

    def close(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, {}
        for conn in conns.values():
            with contextlib.suppress(sqlite3.Error):
                conn.close()


#: KEYS: starts (sorted set), pause (string), hold (hash). ARGV: limit (0: none), span us, keep
#: us, member, longest pause us. Scores and the pause are microseconds of the server's TIME; the
#: hold's ``until`` (empty: until released) and ``since`` microseconds of the wall clock. Numbers
#: are passed to Redis as "%.0f" strings (Lua's own number-to-string keeps only 14 digits).
#: Returns {granted, wait us, 1: paused / 2: held [, until, reason, since]}.
_ACQUIRE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function s(x) return string.format('%.0f', x) end
local held = redis.call('HMGET', KEYS[3], 'until', 'reason', 'since')
if held[3] and (held[1] == '' or tonumber(held[1]) > now) then
  return {0, '0', 2, held[1], held[2], held[3]}
end
local pause = tonumber(redis.call('GET', KEYS[2]) or '0')
if pause > now and pause - now <= tonumber(ARGV[5]) then return {0, s(pause - now), 1} end
local limit = tonumber(ARGV[1])
if limit == 0 then return {1, '0', 0} end
local span = tonumber(ARGV[2])
local keep = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', s(now - keep))
local low = '(' .. s(now - span)
local count = redis.call('ZCOUNT', KEYS[1], low, '+inf')
if count < limit then
  redis.call('ZADD', KEYS[1], s(now), ARGV[4])
  redis.call('PEXPIRE', KEYS[1], s(math.ceil(keep / 1000) + 1000))
  return {1, '0', 0}
end
local slot = redis.call('ZRANGEBYSCORE', KEYS[1], low, '+inf', 'WITHSCORES', 'LIMIT', count - limit, 1)
return {0, s(tonumber(slot[2]) + span - now), 0}
"""

#: KEYS: pause. ARGV: seconds us. Extends the block-until time, never shortens it.
_PAUSE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function s(x) return string.format('%.0f', x) end
local want = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if want > current then
  redis.call('SET', KEYS[1], s(want), 'PX', s(math.ceil(tonumber(ARGV[1]) / 1000) + 1000))
end
return 1
"""

_PAUSED_FOR_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local pause = tonumber(redis.call('GET', KEYS[1]) or '0')
if pause > now then return string.format('%.0f', pause - now) end
return '0'
"""

_US = 1_000_000


class RedisBackend(BudgetBackend):
    """
    A sorted set of start times (``sfox-budget:{scope}:starts``) and a block-until key
    (``sfox-budget:{scope}:pause``) on a Redis server, changed only by Lua scripts on the
    server's ``TIME``.

    :param client: a ``redis.Redis`` client.
    :param where: what to name in errors (the Airflow connection id and host:port).
    """

    name = "redis"

    def __init__(self, client: Any, where: str) -> None:
        self.where = where
        self._client = client
        self._acquire = client.register_script(_ACQUIRE_LUA)
        self._pause = client.register_script(_PAUSE_LUA)
        self._paused_for = client.register_script(_PAUSED_FOR_LUA)

    @staticmethod
    def _keys(key: str) -> tuple[str, str, str]:
        tag = "{" + key + "}"  # one hash slot per scope on a Redis cluster
        return f"sfox-budget:{tag}:starts", f"sfox-budget:{tag}:pause", f"sfox-budget:{tag}:hold"

    def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        return self._call(lambda: script(keys=keys, args=args))

    def _call(self, command: Callable[[], Any]) -> Any:
        import redis

        try:
            return command()
        except redis.RedisError as err:
            raise BudgetUnavailable(self.name, self.where, err) from None

    def acquire(self, key: str, budget: Budget | None) -> tuple[float, bool]:
        starts, pause, hold = self._keys(key)
        if budget is None:
            limit, span = 0, 0
        else:
            limit, span = budget.requests, round(budget.span * _US)
        keep = round(max(budget.span if budget else 0.0, MAX_WINDOW_SECONDS + DEFAULT_MARGIN_SECONDS) * _US)
        member = uuid.uuid4().hex
        granted, wait, paused, *held = self._run(
            self._acquire,
            [starts, pause, hold],
            [limit, span, keep, member, round(MAX_PAUSE_SECONDS * _US)],
        )
        if int(paused) == 2:
            raise BudgetHeld(_stored_hold(key, *held))
        if int(granted):
            return 0.0, False
        return max(int(wait) / _US, 1e-6), bool(int(paused))

    def pause(self, key: str, seconds: float) -> None:
        self._run(self._pause, [self._keys(key)[1]], [round(seconds * _US)])

    def paused_for(self, key: str) -> float:
        return int(self._run(self._paused_for, [self._keys(key)[1]], [])) / _US

    def set_hold(self, key: str, *, until: float | None, reason: str) -> None:
        hold = self._keys(key)[2]
        pipe = self._client.pipeline(transaction=True)
        pipe.delete(hold)
        since = f"{time.time() * _US:.0f}"
        pipe.hset(
            hold,
            mapping={
                "until": "" if until is None else f"{until * _US:.0f}",
                "reason": reason,
                "since": since,
            },
        )
        if until is not None:  # gone by itself a day after it ends
            pipe.pexpireat(hold, round((until + 86400) * 1000))
        self._call(pipe.execute)

    def clear_hold(self, key: str) -> bool:
        return bool(self._call(lambda: self._client.delete(self._keys(key)[2])))

    def get_hold(self, key: str) -> Hold | None:
        until, reason, since = self._call(
            lambda: self._client.hmget(self._keys(key)[2], "until", "reason", "since")
        )
        if since is None:
            return None
        held = _stored_hold(key, until, reason, since)
        seconds, micros = self._call(self._client.time)
        if held.until is not None and held.until.timestamp() <= seconds + micros / _US:
            return None
        return held

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.close()


def _stored_hold(key: str, until: bytes | str, reason: bytes | str, since: bytes | str) -> Hold:
    """A hold as the Redis hash stores it (microseconds as strings; Redis answers bytes)."""

    def text(value: bytes | str) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)

    return Hold.from_epoch(
        key, text(reason), int(text(since)) / _US, int(text(until)) / _US if text(until) else None
    )


def redis_client_from_connection(conn: Any) -> Any:
    """
    A ``redis.Redis`` client for an Airflow ``redis`` connection: host, port (6379), login,
    password, and the extras ``db`` (0) and ``ssl`` (false), as the Redis provider reads them.
    """
    import redis

    extras = conn.extra_dejson or {}
    ssl = extras.get("ssl", False)
    return redis.Redis(
        host=conn.host or "localhost",
        port=int(conn.port or 6379),
        username=conn.login or None,
        password=conn.password or None,
        db=int(extras.get("db", 0) or 0),
        ssl=ssl is True or str(ssl).lower() == "true",
        socket_timeout=5,
        socket_connect_timeout=5,
    )


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
