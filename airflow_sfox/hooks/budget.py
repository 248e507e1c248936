"""
The shared rate budget of an ``sfox`` connection: which backend keeps it, whether that backend
can be trusted on this deployment, and the operator's hold (the emergency stop).

A hold stops every sender of one budget scope (one egress IP), in every process that shares
the backend, until a time or until released: :func:`hold`, :func:`release`,
:func:`current_hold` (what the "sFOX onboarding" page shows), and the ``python -m airflow_sfox``
commands built on them.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow_sfox._compat import BaseHook
from airflow_sfox.exceptions import SfoxConfigError, SfoxRateBudgetError
from airflow_sfox.hooks.connection import SfoxConnectionConfig
from airflow_sfox.ratelimit import (
    DEFAULT_DIR,
    BudgetBackend,
    Hold,
    MemoryBackend,
    RateBudget,
    RedisBackend,
    SqliteBackend,
    local_backend,
    redis_client_from_connection,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow.sdk import Connection

log = logging.getLogger(__name__)

#: Executors whose tasks run on several machines (matched in the class name of each entry of
#: ``[core] executor``): one machine's ``local`` budget cannot see the others' requests.
MULTI_MACHINE_EXECUTORS = ("Celery", "Kubernetes", "Edge")


def multi_machine_executors(executor: str | None = None) -> list[str]:
    """
    The entries of ``[core] executor`` that run tasks on several machines.

    Airflow's multi-executor setting is a comma-separated list whose entries are a core name
    (``CeleryExecutor``), a class path, or ``alias:module.Class``.

    :param executor: the setting to read (default: Airflow's configuration).
    """
    if executor is None:
        from airflow.configuration import conf

        executor = conf.get("core", "executor", fallback="") or ""
    found = []
    for entry in executor.split(","):
        entry = entry.strip()
        class_name = entry.rsplit(":", 1)[-1].rsplit(".", 1)[-1]
        if any(kind in class_name for kind in MULTI_MACHINE_EXECUTORS):
            found.append(entry)
    return found


def check_local_backend(config: SfoxConnectionConfig) -> None:
    """
    Refuse the ``local`` backend for a real sFOX host when tasks run on several machines, unless
    the scope is per machine (``{hostname}`` in ``rate_limit_scope``: each host has its own
    egress IP, so each machine's budget is the whole truth for its IP).

    :raises SfoxConfigError: naming the connection, the extra and the executor.
    """
    if config.loopback or config.per_host_scope:
        return
    spread = multi_machine_executors()
    if spread:
        raise SfoxConfigError(
            f"Connection {config.conn_id!r}: extra 'rate_limit_backend' is 'local' (a SQLite file on one "
            f"machine) but [core] executor runs tasks on several machines ({', '.join(spread)}): workers "
            "behind one egress IP would each spend sFOX's whole limit. Set 'rate_limit_backend' to "
            "'redis' (and 'rate_limit_redis_conn_id'), or, when every worker host has an egress IP of "
            "its own, a per-host 'rate_limit_scope' holding {hostname} (e.g. 'sfox-{hostname}')."
        )


def open_budget(
    config: SfoxConnectionConfig,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    check: bool = True,
) -> RateBudget:
    """
    The connection's shared budget. Reads Airflow's configuration and the Redis connection; no
    request is made to the backend until the budget is first asked.

    :param config: the connection's settings.
    :param clock: the caller's monotonic clock; a clock of its own keeps the budget in memory
        unless the connection names a backend (a shared budget needs a clock all share).
    :param sleep: sleep function, injectable for tests.
    :param check: refuse a ``local`` backend that cannot see every sender (off for holds: a
        hold is always safe).
    """
    name = config.rate_limit_backend
    if name is None:
        name = "local" if clock is time.monotonic else "memory"
    backend: BudgetBackend
    if name == "memory":
        backend = MemoryBackend(clock)
    elif name == "local":
        if check:
            check_local_backend(config)
        folder = config.rate_limit_dir or DEFAULT_DIR
        # One SQLite connection per scope and process, on the clock every process shares.
        backend = local_backend(folder) if clock is time.monotonic else SqliteBackend(folder, clock=clock)
    else:
        backend = _redis_backend(config)
    return RateBudget(backend, config.rate_limit_scope, config.budget, clock=clock, sleep=sleep)


def _redis_backend(config: SfoxConnectionConfig) -> RedisBackend:
    redis_conn_id = config.rate_limit_redis_conn_id
    try:
        import redis  # noqa: F401 - an optional dependency
    except ImportError:
        raise SfoxConfigError(
            f"Connection {config.conn_id!r}: rate_limit_backend 'redis' needs the redis package: "
            "pip install 'airflow-provider-sfox[redis]'."
        ) from None
    try:
        redis_conn = BaseHook.get_connection(redis_conn_id)
        client = redis_client_from_connection(redis_conn)
    except Exception as err:  # noqa: BLE001 - not found, bad URI, ...: all fail closed
        raise SfoxRateBudgetError(
            f"sFOX rate budget of connection {config.conn_id!r}: the 'redis' backend's Airflow "
            f"connection {redis_conn_id!r} cannot be read ({type(err).__name__}); no request was sent."
        ) from None
    address = f"{redis_conn.host or 'localhost'}:{redis_conn.port or 6379}"
    return RedisBackend(client, f"Airflow connection {redis_conn_id!r}, {address}")


# --- the operator's hold -----------------------------------------------------------------------


def _budget_of(conn_id: str, scope: str | None) -> RateBudget:
    conn: Connection = BaseHook.get_connection(conn_id)
    config = SfoxConnectionConfig.from_connection(conn, {})
    if scope is not None:
        config = dataclasses.replace(config, rate_limit_scope=scope)
    return open_budget(config, check=False)


def hold(
    conn_id: str, *, until: datetime | None = None, reason: str | None = None, scope: str | None = None
) -> dict[str, Any]:
    """
    Hold every sender of the connection's budget scope (one egress IP), in every process that
    shares its backend, until ``until`` or until :func:`release`. A held request is never sent
    and never counted against a user: the hook raises :class:`~airflow_sfox.exceptions.SfoxHeldError`.

    With the ``local`` backend the hold covers the machine where it is set (its folder); with a
    per-host scope (``{hostname}``) name the other machines' scopes with ``scope``.

    :param conn_id: the ``sfox`` connection (its scope and backend are the hook's).
    :param until: when the hold ends (timezone-aware); ``None``: until released.
    :param reason: shown with the hold (no personal data); default ``"held by operator"``.
    :param scope: another scope of the connection's backend (default: the connection's own, as
        the hook computes it; a per-host ``{hostname}`` scope is this machine's).
    :return: the hold now in force, as :func:`current_hold` shows it.
    """
    if until is not None and until.tzinfo is None:
        raise ValueError("until must be timezone-aware (e.g. 2026-12-06T18:00:00+00:00)")
    if until is not None and until <= datetime.now(timezone.utc):
        raise ValueError(f"until {until.isoformat()} is in the past")
    budget = _budget_of(conn_id, scope)
    try:
        budget.hold(until=until, reason=reason or Hold.DEFAULT_REASON)
        held = budget.current_hold()
    finally:
        budget.backend.close()
    assert held is not None
    return _as_dict(held, budget)


def release(conn_id: str, *, scope: str | None = None) -> bool:
    """
    End the hold of the connection's budget scope; senders resume on their next request.

    :param scope: another scope of the connection's backend (see :func:`hold`).
    :return: whether a hold was in force.
    """
    budget = _budget_of(conn_id, scope)
    try:
        return budget.release()
    finally:
        budget.backend.close()


def current_hold(conn_id: str, *, scope: str | None = None) -> dict[str, Any] | None:
    """
    The hold in force on the connection's budget scope, for the UI page and ``status``:
    ``{"scope", "reason", "since", "until", "backend", "where"}`` (times as ISO 8601 UTC,
    ``until`` ``None`` when open-ended), or ``None`` when senders are free.

    :param scope: another scope of the connection's backend (see :func:`hold`).
    """
    budget = _budget_of(conn_id, scope)
    try:
        held = budget.current_hold()
    finally:
        budget.backend.close()
    return None if held is None else _as_dict(held, budget)


def recorded_outage(conn_id: str, *, scope: str | None = None) -> dict[str, Any] | None:
    """
    The sFOX outage the connection's budget scope has recorded (the chunks' shared circuit
    breaker), for ``status``: ``{"scope", "down", "since", "probes", "probe_in"}`` (``since``
    ISO 8601 UTC; ``probe_in``: seconds until a sender may probe), or ``None``. Claims no probe.

    :param scope: another scope of the connection's backend (see :func:`hold`).
    """
    budget = _budget_of(conn_id, scope)
    try:
        found, _ = budget.outage()
    finally:
        budget.backend.close()
    if found is None:
        return None
    since = found.since.isoformat()
    return {
        "scope": found.scope,
        "down": found.down,
        "since": since,
        "probes": found.probes,
        "probe_in": found.probe_in,
    }


class HoldWatch:
    """
    The hold of one connection's budget scope, read on every poll of the "sFOX onboarding"
    page: the connection is read and the backend opened once per process (one Redis client,
    not one per poll), and a read that fails is logged once at WARNING, naming the connection,
    until a read succeeds again (the page then shows no hold).

    :param conn_id: the ``sfox`` connection whose scope is watched.
    """

    def __init__(self, conn_id: str) -> None:
        self.conn_id = conn_id
        self._lock = threading.Lock()
        self._budget: RateBudget | None = None
        self._failing = False

    def read(self) -> dict[str, Any] | None:
        """The hold in force (as :func:`current_hold` shows it), ``None`` when free or unreadable."""
        with self._lock:
            try:
                if self._budget is None:
                    self._budget = _budget_of(self.conn_id, None)
                held = self._budget.current_hold()
            except Exception as err:  # noqa: BLE001 - not found, bad extras, backend down: no banner
                self._budget = None  # the connection is read again next time (it may be fixed)
                if not self._failing:
                    log.warning(
                        "Cannot read the operator's hold of sFOX connection %r (%s: %s); the onboarding "
                        "page shows no hold until it can",
                        self.conn_id,
                        type(err).__name__,
                        err,
                    )
                self._failing = True
                return None
            if self._failing:
                log.info("The operator's hold of sFOX connection %r can be read again", self.conn_id)
                self._failing = False
            return None if held is None else _as_dict(held, self._budget)


_WATCHES: dict[str, HoldWatch] = {}
_WATCHES_LOCK = threading.Lock()


def watched_hold(conn_id: str) -> dict[str, Any] | None:
    """The hold of ``conn_id``'s scope through this process's one :class:`HoldWatch` of it."""
    with _WATCHES_LOCK:
        watch = _WATCHES.setdefault(conn_id, HoldWatch(conn_id))
    return watch.read()


def _as_dict(held: Hold, budget: RateBudget) -> dict[str, Any]:
    return {
        "scope": held.scope,
        "reason": held.reason,
        "since": held.since.isoformat(),
        "until": held.until.isoformat() if held.until else None,
        "backend": budget.backend.name,
        "where": budget.backend.where,
    }
