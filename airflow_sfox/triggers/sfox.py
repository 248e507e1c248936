"""
The email-verified watcher: asset events for partners whose backend cannot post them.

:class:`SfoxEmailVerifiedTrigger` runs in Airflow's triggerer as the watcher of the
email-verified asset (:func:`email_verified_watcher`). Every ``poll_interval`` seconds it reads
sFOX's user list once (``GET /v1/enterprise/users``, streamed, through
:class:`~airflow_sfox.hooks.sfox.SfoxConnectHook` and so within the connection's shared rate
budget) and emits one event, ``{"user_ids": [...]}``, per batch of individuals newly verified.

"Newly verified" is read from the onboarding ledger, which is the watcher's watermark: an
individual sFOX lists with a verified email whose ledger email row is ``sent`` (we requested
a code; nobody has recorded it verified yet) and whose sms row is not done. For each batch the
watcher marks those email rows ``verified`` (as the planner would) in one committed
transaction, then yields the event. So a restarted triggerer never emits a user twice; a crash
between the commit and Airflow storing the event loses that event, and the onboarding DAG's
scheduled run, which sends the sms once sFOX reports the email verified, is the safety net.

The time of the last poll is kept in the warehouse too, in ``<ledger>_watch`` (one row per
watcher, created when missing), so a restart waits for the rest of the interval instead of
polling at once. Everything that blocks (the hook, SQLAlchemy) runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from airflow.sdk import AssetWatcher
from airflow.triggers.base import BaseEventTrigger, TriggerEvent
from asgiref.sync import sync_to_async
from sqlalchemy.sql.elements import quoted_name

from airflow_sfox.assets.sfox import USER_IDS_KEY
from airflow_sfox.defaults import DEFAULT_SFOX_CONN_ID, DEFAULT_WAREHOUSE_CONN_ID, LEDGER_TABLE
from airflow_sfox.exceptions import SfoxAuthError, SfoxConfigError, SfoxError, scrub
from airflow_sfox.hooks.sfox import SfoxConnectHook
from airflow_sfox.onboarding.model import DONE_STATES, AccountType, Channel, LedgerState
from airflow_sfox.onboarding.schema import (
    Timestamp,
    check_identifier,
    snapshot_row,
    snapshot_verified,
    utcnow,
)
from airflow_sfox.onboarding.snapshots import shared_users
from airflow_sfox.onboarding.warehouse import Warehouse

#: Seconds between the end of one poll and the start of the next.
DEFAULT_POLL_INTERVAL = 300.0
#: Most user_ids in one event (a larger batch is split).
DEFAULT_MAX_USER_IDS_PER_EVENT = 1000
#: user_ids per ledger lookup (one ``IN`` list): memory stays bounded whatever sFOX's list holds.
LOOKUP_BATCH = 1000
#: The table of the watchers' last polls, beside the ledger: ``<ledger>_watch``.
WATCH_TABLE_SUFFIX = "_watch"
#: The ``AssetWatcher`` name :func:`email_verified_watcher` gives by default.
DEFAULT_WATCHER_NAME = "sfox_email_verified_poll"
#: Longest reason kept in the watch table.
ERROR_LENGTH = 255

# The loop's clock (epoch seconds) and sleep. Tests replace these module attributes: they are
# no trigger kwargs, so neither serialize() nor Airflow's trigger hash sees them.
_now: Callable[[], float] = time.time
_sleep: Callable[[float], Any] = asyncio.sleep


class SfoxEmailVerifiedTrigger(BaseEventTrigger):
    """
    Poll sFOX's user list and emit an event for the individuals whose email is newly verified.

    Every argument is JSON-serializable: the triggerer rebuilds the trigger from
    :meth:`serialize`. Nothing is read in ``__init__``.

    :param sfox_conn_id: the ``sfox`` connection (its rate budget applies: one list per poll).
    :param warehouse_conn_id: the SQL connection of the warehouse holding the ledger.
    :param warehouse_schema: the schema of the onboarding tables (``None``: the connection's).
    :param ledger_table: the onboarding ledger (or ``schema.table``), as the onboarding DAG names it.
    :param poll_interval: seconds between the end of one poll and the start of the next.
    :param max_user_ids_per_event: most user_ids in one event.
    :param snapshot_max_age: seconds a shared snapshot of sFOX's list in the warehouse (taken by
        an onboarding plan with ``snapshot_max_age_minutes``) is used instead of reading the list
        (0: read it every poll).
    """

    def __init__(
        self,
        *,
        sfox_conn_id: str = DEFAULT_SFOX_CONN_ID,
        warehouse_conn_id: str = DEFAULT_WAREHOUSE_CONN_ID,
        warehouse_schema: str | None = None,
        ledger_table: str = LEDGER_TABLE,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_user_ids_per_event: int = DEFAULT_MAX_USER_IDS_PER_EVENT,
        snapshot_max_age: float = 0.0,
    ) -> None:
        super().__init__()
        self.sfox_conn_id = _text(sfox_conn_id, "sfox_conn_id")
        self.warehouse_conn_id = _text(warehouse_conn_id, "warehouse_conn_id")
        if warehouse_schema is not None and "." in check_identifier(warehouse_schema, "warehouse_schema"):
            raise ValueError(f"warehouse_schema must be a plain SQL identifier, got {warehouse_schema!r}")
        self.warehouse_schema = warehouse_schema
        self.ledger_table = check_identifier(ledger_table, "ledger_table")
        self.poll_interval = _positive(poll_interval)
        self.max_user_ids_per_event = _count(max_user_ids_per_event)
        if (
            isinstance(snapshot_max_age, bool)
            or not isinstance(snapshot_max_age, (int, float))
            or snapshot_max_age < 0
        ):
            raise ValueError(f"snapshot_max_age must be a number of seconds >= 0, got {snapshot_max_age!r}")
        self.snapshot_max_age = float(snapshot_max_age)
        self._warehouse: Warehouse | None = None  # built in the worker thread: it reads a connection
        self._watch_ready = False

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The classpath and the keyword arguments the triggerer rebuilds this trigger from."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "sfox_conn_id": self.sfox_conn_id,
                "warehouse_conn_id": self.warehouse_conn_id,
                "warehouse_schema": self.warehouse_schema,
                "ledger_table": self.ledger_table,
                "poll_interval": self.poll_interval,
                "max_user_ids_per_event": self.max_user_ids_per_event,
                "snapshot_max_age": self.snapshot_max_age,
            },
        )

    @property
    def watcher_key(self) -> str:
        """
        This watcher's row in the watch table: a hash of what it watches (the sFOX connection
        and the ledger), so a new ``poll_interval`` keeps the last poll's time.
        """
        watched = [self.sfox_conn_id, self.warehouse_conn_id, self.warehouse_schema, self.ledger_table]
        return hashlib.sha256(json.dumps(watched).encode()).hexdigest()[:32]

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Sleep for what is left of the interval since the last poll, then poll every interval."""
        delay = await self._first_delay()
        while True:
            if delay > 0:
                await _sleep(delay)
            async for user_ids in self._poll():
                yield TriggerEvent({USER_IDS_KEY: user_ids})
            delay = self.poll_interval

    # --- the loop's steps (on the event loop) -------------------------------------------------

    async def _first_delay(self) -> float:
        """Seconds until ``last poll + poll_interval`` (0: no poll recorded, or it is due)."""
        try:
            last = await sync_to_async(self._last_poll, thread_sensitive=False)()
        except Exception as err:  # noqa: BLE001 - the warehouse is down: the poll will say why
            self.log.warning("sFOX email-verified watcher: last poll unknown (%s); polling now", _reason(err))
            self._forget_warehouse()
            return 0.0
        if last is None:
            return 0.0
        return min(max(0.0, last + self.poll_interval - _now()), self.poll_interval)

    async def _poll(self) -> AsyncIterator[list[str]]:
        """
        One poll, in a worker thread; yields each batch of user_ids as soon as the thread has
        committed its marks. A failed poll is logged, never raised: the next one retries.
        """
        loop = asyncio.get_running_loop()
        found: asyncio.Queue[list[str]] = asyncio.Queue()
        stop = threading.Event()

        def emit(user_ids: list[str]) -> None:
            loop.call_soon_threadsafe(found.put_nowait, user_ids)

        work = asyncio.ensure_future(sync_to_async(self._poll_sync, thread_sensitive=False)(emit, stop))
        getter: asyncio.Future[list[str]] | None = None
        try:
            while not work.done():
                getter = asyncio.ensure_future(found.get())
                await asyncio.wait({getter, work}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield getter.result()
                else:
                    getter.cancel()  # an item put meanwhile stays in the queue
            while not found.empty():
                yield found.get_nowait()
            failure = work.exception()
            if failure is not None:
                self._log_failure(failure)
                self._forget_warehouse()  # its connection may have been fixed by the next poll
        finally:
            stop.set()  # cancelled (the asset lost its watcher): the thread stops at its next user
            if getter is not None:
                getter.cancel()

    def _log_failure(self, err: BaseException) -> None:
        """Log a failed poll without personal data; a refused token loudly, every poll."""
        if isinstance(err, (SfoxAuthError, SfoxConfigError)):
            self.log.error(
                "sFOX email-verified watcher: connection %r cannot be used (%s): no events until it is "
                "fixed; next poll in %gs",
                self.sfox_conn_id,
                _reason(err),
                self.poll_interval,
            )
        else:
            self.log.warning(
                "sFOX email-verified watcher: poll failed (%s); next poll in %gs",
                _reason(err),
                self.poll_interval,
            )

    # --- one poll (in a worker thread) --------------------------------------------------------

    def _poll_sync(self, emit: Callable[[list[str]], None], stop: threading.Event) -> int:
        """Read sFOX's list once, mark and emit the newly verified, record the poll; the users emitted."""
        warehouse = self._get_warehouse()
        if not warehouse.has_ledger():
            self.log.info("sFOX email-verified watcher: no ledger %s yet: nothing to watch", warehouse.ledger)
            return 0
        error: Exception | None = None
        try:
            return self._scan(warehouse, emit, stop)
        except Exception as err:
            error = err
            raise
        finally:
            self._record_poll(warehouse, error)

    def _scan(self, warehouse: Warehouse, emit: Callable[[list[str]], None], stop: threading.Event) -> int:
        emitted = 0
        with SfoxConnectHook(sfox_conn_id=self.sfox_conn_id) as hook:
            # The warehouse's shared snapshot of the list while fresh (a plan took it), else sFOX's.
            users = shared_users(warehouse, timedelta(seconds=self.snapshot_max_age))
            candidates = _verified_individuals(_until(stop, hook.iter_users() if users is None else users))
            awaiting = itertools.chain.from_iterable(
                _awaiting(warehouse, batch) for batch in _batches(candidates, LOOKUP_BATCH)
            )
            for batch in _batches(awaiting, self.max_user_ids_per_event):
                if stop.is_set():
                    break
                marked = _mark_verified(warehouse, batch)
                if marked:
                    emit(marked)
                    emitted += len(marked)
        # Quiet polls (most of them) log at DEBUG: one line per interval would drown the log.
        level = logging.INFO if emitted else logging.DEBUG
        self.log.log(level, "sFOX email-verified watcher: %d users newly verified, emitted", emitted)
        return emitted

    def _get_warehouse(self) -> Warehouse:
        if self._warehouse is None:
            self._warehouse = Warehouse.from_conn_id(
                self.warehouse_conn_id, ledger_table=self.ledger_table, schema=self.warehouse_schema
            )
        return self._warehouse

    def _forget_warehouse(self) -> None:
        self._warehouse, self._watch_ready = None, False

    def _last_poll(self) -> float | None:
        """When this watcher's last poll ended (epoch seconds), as the watch table says."""
        warehouse = self._get_warehouse()
        table = watch_table(warehouse)
        with warehouse.connect() as conn:
            if not sa.inspect(conn).has_table(table.name, schema=table.schema):
                return None
            at = conn.execute(
                sa.select(table.c.last_poll_at).where(table.c.watcher == self.watcher_key)
            ).scalar_one_or_none()
        return None if at is None else at.timestamp()

    def _record_poll(self, warehouse: Warehouse, error: Exception | None) -> None:
        """Write the poll's end time (and why it failed) to the watch table; a failure here is only logged."""
        table = watch_table(warehouse)
        row = {
            "watcher": self.watcher_key,
            "sfox_conn_id": self.sfox_conn_id,
            "last_poll_at": datetime.fromtimestamp(_now(), timezone.utc),
            "last_error": None if error is None else _reason(error)[:ERROR_LENGTH],
        }
        try:
            with warehouse.engine.begin() as conn:
                if not self._watch_ready:
                    table.create(conn, checkfirst=True)
                conn.execute(warehouse.upsert(table, ("watcher",), [c for c in row if c != "watcher"]), [row])
            self._watch_ready = True
        except Exception as err:  # noqa: BLE001 - the poll's outcome stands; the next one retries
            self.log.warning("sFOX email-verified watcher: could not record the poll (%s)", _reason(err))


def email_verified_watcher(*, name: str = DEFAULT_WATCHER_NAME, **trigger_kwargs: Any) -> AssetWatcher:
    """
    The watcher of the email-verified asset, for DAG files::

        EMAIL_VERIFIED = email_verified_asset(
            "api.sfox.com", watchers=[email_verified_watcher(sfox_conn_id="sfox_default")]
        )

    Build the asset once (in a module the DAG files import) and use that object everywhere:
    a DAG file that names the asset without this watcher removes it.

    :param name: the watcher's name in Airflow.
    :param trigger_kwargs: the arguments of :class:`SfoxEmailVerifiedTrigger` (``sfox_conn_id``,
        ``warehouse_conn_id``, ``warehouse_schema``, ``ledger_table``, ``poll_interval``,
        ``max_user_ids_per_event``).
    """
    return AssetWatcher(name=name, trigger=SfoxEmailVerifiedTrigger(**trigger_kwargs))


def watch_table(warehouse: Warehouse) -> sa.Table:
    """``<ledger>_watch``: one row per watcher, the end of its last poll and why it failed."""
    ledger = warehouse.ledger_t
    return sa.Table(
        quoted_name(f"{ledger.name}{WATCH_TABLE_SUFFIX}", False),
        sa.MetaData(),
        sa.Column("watcher", sa.String(32), primary_key=True),
        sa.Column("sfox_conn_id", sa.String(250)),
        sa.Column("last_poll_at", Timestamp(), nullable=False),
        sa.Column("last_error", sa.String(ERROR_LENGTH)),
        schema=ledger.schema,
        mysql_charset="utf8mb4",
    )


# --- the ledger ---------------------------------------------------------------------------------


def _awaiting_query(warehouse: Warehouse, user_ids: list[str]) -> sa.Select[tuple[str]]:
    """Which of these users have a ``sent`` email row and no sms row done (none verified yet)."""
    t = warehouse.ledger_t
    sms = t.alias("sms")
    sms_done = (
        sa.exists()
        .where(sms.c.user_id == t.c.user_id, sms.c.channel == Channel.SMS.value)
        .where(sms.c.state.in_([state.value for state in DONE_STATES]))
    )
    return sa.select(t.c.user_id).where(
        t.c.channel == Channel.EMAIL.value,
        t.c.state == LedgerState.SENT.value,
        t.c.user_id.in_(user_ids),
        ~sms_done,
    )


def _awaiting(warehouse: Warehouse, user_ids: list[str]) -> list[str]:
    """The users of one lookup batch that are newly verified (read only; marked later)."""
    with warehouse.connect() as conn:
        return [str(uid) for uid in conn.execute(_awaiting_query(warehouse, user_ids)).scalars()]


def _mark_verified(warehouse: Warehouse, user_ids: list[str]) -> list[str]:
    """
    Mark the email rows of these users ``verified`` where they are still awaiting, in one
    committed transaction; return those marked. The rows are locked while read (PostgreSQL,
    MariaDB), so a planner or a second watcher marking them meanwhile is never counted twice.
    """
    t = warehouse.ledger_t
    with warehouse.connect() as conn:
        query = _awaiting_query(warehouse, list(dict.fromkeys(user_ids))).with_for_update()
        marked = [str(uid) for uid in conn.execute(query).scalars()]
        if marked:
            keys = sa.and_(
                t.c.channel == Channel.EMAIL.value,
                t.c.state == LedgerState.SENT.value,
                t.c.user_id.in_(marked),
            )
            verified = {"state": LedgerState.VERIFIED.value, "updated_at": utcnow()}
            conn.execute(sa.update(t).where(keys).values(verified))
        conn.commit()
    return marked


# --- sFOX's list --------------------------------------------------------------------------------


def _verified_individuals(users: Iterable[Any]) -> Iterator[str]:
    """The user_ids of the individuals sFOX lists with a verified email (read as the planner reads them)."""
    for user in users:
        row = snapshot_row(user) if isinstance(user, Mapping) else None
        if (
            row is not None
            and str(row["account_type"] or "").lower() == AccountType.INDIVIDUAL.value
            and snapshot_verified(row["status"], row[f"{Channel.EMAIL}_required"])
        ):
            yield row["user_id"]


def _until(stop: threading.Event, items: Iterable[Any]) -> Iterator[Any]:
    """The items, until ``stop`` is set."""
    for item in items:
        if stop.is_set():
            return
        yield item


def _batches(items: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


# --- arguments and messages ---------------------------------------------------------------------


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    return value


def _positive(value: Any) -> float:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or value <= 0:
        raise ValueError(f"poll_interval must be a number of seconds > 0, got {value!r}")
    return float(value)


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"max_user_ids_per_event must be a whole number >= 1, got {value!r}")
    return value


def _reason(err: BaseException) -> str:
    """An error as one line without personal data (the hook's errors are scrubbed already)."""
    text = str(err) if isinstance(err, SfoxError) else f"{type(err).__name__}: {err}"
    return scrub(text, limit=500)
