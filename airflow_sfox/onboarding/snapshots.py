"""
sFOX's user list as the warehouse keeps it: the snapshot a plan joins with the source.

sFOX asks partners to keep reads of the whole list rare. With ``snapshot_max_age`` (the run
param ``snapshot_max_age_minutes``) above zero, a plan that reads the list keeps its snapshot as
the warehouse's shared one (recorded in ``<snapshot>_taken`` once complete), and the plans, the
follow-up runs and the email-verified watcher of that warehouse reuse it while it is younger than
their age instead of reading the list again. At zero (the default), each plan reads the list and
removes its snapshot when it ends, as before. Shared snapshots are removed once older than their
age and :data:`SNAPSHOT_GRACE` (time for a plan still reading one to finish).

A snapshot holds no email or phone (see :func:`~airflow_sfox.onboarding.schema.snapshot_row`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from airflow_sfox.onboarding.breaker import sfox_answered
from airflow_sfox.onboarding.model import CHANNELS
from airflow_sfox.onboarding.schema import utcnow

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from sqlalchemy.engine import Connection

    from airflow_sfox.hooks.sfox import SfoxConnectHook
    from airflow_sfox.onboarding.model import RunRef
    from airflow_sfox.onboarding.warehouse import Warehouse

#: How long a shared snapshot outlives its age: a plan reading it has that long to finish.
SNAPSHOT_GRACE = timedelta(hours=1)


def sfox_users(hook: SfoxConnectHook) -> Iterator[Mapping[str, Any]]:
    """
    sFOX's user objects, streamed when the hook can (``iter_users``), else the one list. Once
    all are read, sFOX has answered: an outage the scope's senders recorded is over.
    """
    yield from hook.iter_users() if hasattr(hook, "iter_users") else hook.list_users()
    sfox_answered(hook)


@dataclass(frozen=True)
class Snapshot:
    """
    The snapshot one plan joins.

    :param table: its table (a temporary one in a dry run that read the list).
    :param snapshot_id: its id in that table.
    :param shared: kept for the others when the plan ends (taken as, or reused from, the shared one).
    :param reused: taken by an earlier plan: this one read nothing from sFOX.
    """

    table: sa.Table
    snapshot_id: str
    shared: bool = False
    reused: bool = False


def open_snapshot(
    warehouse: Warehouse,
    hook: SfoxConnectHook,
    *,
    reader: Connection,
    writer: Connection,
    run: RunRef,
    dry_run: bool,
    max_age: timedelta,
) -> Snapshot:
    """
    The snapshot of a plan: the shared one when younger than ``max_age``, else sFOX's list read
    now (shared when ``max_age`` is above zero and the run is not a dry run).

    :param reader: the plan's reading connection (a dry run's temporary table lives there).
    :param writer: the plan's writing connection.
    """
    if max_age > timedelta(0):
        found = warehouse.fresh_snapshot(reader, max_age)
        if found is not None:
            return Snapshot(warehouse.snapshot_t, found, shared=True, reused=True)
    snapshot_id = uuid.uuid4().hex
    if dry_run:  # nothing written to the warehouse: the connection's own table
        table = warehouse.temporary_snapshot(reader)
        warehouse.write_snapshot(reader, sfox_users(hook), snapshot_id=snapshot_id, run=run, table=table)
        return Snapshot(table, snapshot_id)
    users = warehouse.write_snapshot(writer, sfox_users(hook), snapshot_id=snapshot_id, run=run)
    if max_age > timedelta(0):
        warehouse.mark_taken(writer, snapshot_id, run=run, users=users)
        return Snapshot(warehouse.snapshot_t, snapshot_id, shared=True)
    return Snapshot(warehouse.snapshot_t, snapshot_id)


def close_snapshot(
    warehouse: Warehouse, writer: Connection, snapshot: Snapshot, *, max_age: timedelta
) -> None:
    """Remove the plan's own snapshot (a shared one stays), and shared ones past their age."""
    mine = None if snapshot.shared else snapshot.snapshot_id
    warehouse.drop_snapshot(writer, mine, shared_before=utcnow() - max_age - SNAPSHOT_GRACE)


def shared_users(warehouse: Warehouse, max_age: timedelta) -> Iterator[dict[str, Any]] | None:
    """
    sFOX's users from the shared snapshot when it is younger than ``max_age``, as user objects
    (``user_id``, ``account_type``, ``status``, ``requirements``); ``None``: none is, read sFOX.
    """
    with warehouse.connect() as conn:
        found = warehouse.fresh_snapshot(conn, max_age) if max_age > timedelta(0) else None
    return None if found is None else _snapshot_users(warehouse, found)


def _snapshot_users(warehouse: Warehouse, snapshot_id: str) -> Iterator[dict[str, Any]]:
    t = warehouse.snapshot_t
    required = [t.c[f"{channel}_required"] for channel in CHANNELS]
    query = sa.select(t.c.user_id, t.c.account_type, t.c.status, *required).where(
        t.c.snapshot_id == snapshot_id
    )
    with warehouse.connect() as conn:
        for row in warehouse.stream(conn, query):
            user_id, account_type, status, *flags = tuple(row)
            requirements = {
                str(channel): bool(flag)
                for channel, flag in zip(CHANNELS, flags, strict=True)
                if flag is not None
            }
            yield {
                "user_id": user_id,
                "account_type": account_type,
                "status": status,
                "requirements": requirements,
            }
