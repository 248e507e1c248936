"""The ``local`` backend: one SQLite file per scope, shared by every process of one machine."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_sfox.ratelimit.budget import (
    DEFAULT_MARGIN_SECONDS,
    MAX_PAUSE_SECONDS,
    MAX_WINDOW_SECONDS,
    Budget,
    BudgetBackend,
    BudgetHeld,
    BudgetUnavailable,
    Hold,
    Outage,
    next_probe_in,
)

if TYPE_CHECKING:
    from collections.abc import Callable

#: How long a process waits for another one's lock on a scope's file.
BUSY_TIMEOUT_SECONDS = 30.0
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS starts (t REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS starts_t ON starts (t)",
    "CREATE TABLE IF NOT EXISTS pause (id INTEGER PRIMARY KEY, until REAL NOT NULL)",
    "INSERT OR IGNORE INTO pause (id, until) VALUES (1, 0)",
    # The operator's hold, on the wall clock (it may name a date); no row: not held.
    "CREATE TABLE IF NOT EXISTS hold (id INTEGER PRIMARY KEY CHECK (id = 1), "
    "until REAL, reason TEXT NOT NULL, since REAL NOT NULL)",
    # sFOX seen down (the shared circuit): since on the wall clock, probe_at on the clock.
    "CREATE TABLE IF NOT EXISTS outage (id INTEGER PRIMARY KEY CHECK (id = 1), "
    "down TEXT NOT NULL, since REAL NOT NULL, probes INTEGER NOT NULL, probe_at REAL NOT NULL)",
)
#: SQLite's primary result code for "database is locked".
_SQLITE_BUSY = 5

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


def _use_wal(conn: sqlite3.Connection) -> None:
    """
    Switch a scope's file to WAL (a lasting property of the file), retrying a busy answer.

    Switching reads the file's header and then upgrades that read to a write, and SQLite does
    not call the busy handler for an upgrade (it could deadlock): when several processes open
    a new file at once, all but one get ``SQLITE_BUSY`` at once. Only this one-time switch is
    retried; once the file is in WAL the switch writes nothing.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    pause = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if not _busy(err) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def _busy(err: sqlite3.Error) -> bool:
    code = getattr(err, "sqlite_errorcode", None)  # Python 3.11+
    return "database is locked" in str(err) if code is None else code & 0xFF == _SQLITE_BUSY


def _set_up(conn: sqlite3.Connection) -> None:
    _use_wal(conn)
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("BEGIN IMMEDIATE")  # a write from the start: the busy timeout covers it
    for statement in _SCHEMA:
        conn.execute(statement)
    conn.execute("COMMIT")


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
                conn = sqlite3.connect(
                    path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
                )
                _set_up(conn)
            except (OSError, sqlite3.Error) as err:
                if conn is not None:
                    conn.close()
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

    def trip(self, key: str, *, down: str, first_probe: float) -> Outage:
        with self._transaction(key) as (conn, now):
            row = conn.execute("SELECT probes FROM outage WHERE id = 1").fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO outage (id, down, since, probes, probe_at) VALUES (1, ?, ?, 0, ?)",
                    (down, self._wall(), now + first_probe),
                )
            else:
                probes = int(row[0]) + 1
                conn.execute(
                    "UPDATE outage SET down = ?, probes = ?, probe_at = ? WHERE id = 1",
                    (down, probes, now + next_probe_in(first_probe, probes)),
                )
            found = self._outage(conn, key, now)
            assert found is not None
            return found

    def outage(self, key: str, *, claim: float | None = None) -> tuple[Outage | None, bool]:
        with self._transaction(key) as (conn, now):
            found = self._outage(conn, key, now)
            if found is None or claim is None or found.probe_in > 0:
                return found, False
            conn.execute("UPDATE outage SET probe_at = ? WHERE id = 1", (now + claim,))
            return found, True

    def _outage(self, conn: sqlite3.Connection, key: str, now: float) -> Outage | None:
        row = conn.execute("SELECT down, since, probes, probe_at FROM outage WHERE id = 1").fetchone()
        if row is None:
            return None
        down, since, probes, probe_at = row
        left = float(probe_at) - now
        if left > MAX_PAUSE_SECONDS:  # stale: written on another clock (before a reboot)
            left = 0.0
        return Outage.from_epoch(key, down, since, int(probes), max(0.0, left))

    def close_outage(self, key: str) -> bool:
        with self._transaction(key) as (conn, _):
            return conn.execute("DELETE FROM outage WHERE id = 1").rowcount > 0

    def close(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, {}
        for conn in conns.values():
            with contextlib.suppress(sqlite3.Error):
                conn.close()
