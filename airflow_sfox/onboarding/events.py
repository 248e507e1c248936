"""
Event-driven sms: the users named by "email verified" asset events get their sms code at once.

A partner's backend knows the moment a user confirms their email code; it posts an event of
the email-verified asset (:func:`~airflow_sfox.assets.sfox.email_verified_asset`) with the
user_ids in ``extra``, and the follow-up DAG (:func:`~airflow_sfox.onboarding.dag.email_verified_dag`)
sends those users' sms through the same engine as the hourly runs: the ledger, its claims and
attempts, and the shared rate budget. The event's word that the email is verified is trusted;
if sFOX disagrees, its refusal is recorded like any other outcome.

A user is queued when the ledger knows it as an individual whose email code went out (or
whose email sFOX reported verified) and whose sms was never requested. Any other id is
skipped and counted by reason, never sent: see :class:`~airflow_sfox.onboarding.model.EventSkip`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from airflow_sfox.assets.sfox import USER_IDS_KEY
from airflow_sfox.onboarding.model import DONE_STATES, AccountType, Channel, EventSkip, LedgerState
from airflow_sfox.onboarding.validation import as_text, user_id_problem

if TYPE_CHECKING:
    from airflow_sfox.onboarding.warehouse import Warehouse

log = logging.getLogger(__name__)

#: user_ids read from the ledger per query.
LOOKUP_BATCH = 1000


def event_user_ids(extras: Iterable[Mapping[str, Any] | None]) -> tuple[list[str], int]:
    """
    The user_ids of events' ``extra``, in order, each once; and how many entries were malformed.

    A posted event's extra holds ``user_ids``; a watcher's holds them under ``payload``.

    :param extras: each event's ``extra``.
    """
    seen: dict[str, None] = {}
    malformed = 0
    for extra in extras:
        extra = extra if isinstance(extra, Mapping) else {}
        payload = extra.get("payload")
        ids = extra.get(USER_IDS_KEY, payload.get(USER_IDS_KEY) if isinstance(payload, Mapping) else None)
        if not isinstance(ids, list):
            malformed += 1  # an event without a list of ids
            continue
        for uid in ids:
            if not isinstance(uid, str | int) or isinstance(uid, bool) or user_id_problem(as_text(uid)):
                malformed += 1
            else:
                seen.setdefault(as_text(uid), None)
    return list(seen), malformed


def queue_event_sms(
    warehouse: Warehouse, *, run_id: str, user_ids: list[str], chunk_size: int, dry_run: bool
) -> tuple[list[str], Counter[str]]:
    """
    Queue the sms of the users who may get one now; return them (in order) and the skips.

    :param warehouse: where the ledger is.
    :param run_id: the run that will send them (their ledger rows' ``run_id``).
    :param user_ids: well-formed ids, each once.
    :param chunk_size: users per chunk (their rows' ``chunk``: ``position // chunk_size``).
    :param dry_run: decide and count, write nothing.
    """
    due: list[str] = []
    skips: Counter[str] = Counter()
    with warehouse.connect() as conn:
        for start in range(0, len(user_ids), LOOKUP_BATCH):
            batch = user_ids[start : start + LOOKUP_BATCH]
            rows = _ledger_rows(warehouse, conn, batch)
            for uid in batch:
                why = _skip(rows.get((uid, Channel.EMAIL.value)), rows.get((uid, Channel.SMS.value)))
                if why is None:
                    due.append(uid)
                else:
                    skips[why.value] += 1
        if not dry_run and due:
            queued = LedgerState.QUEUED.value
            individual, sms = AccountType.INDIVIDUAL.value, Channel.SMS.value
            plan = [
                (uid, sms, individual, queued, run_id, i // chunk_size, None) for i, uid in enumerate(due)
            ]
            warehouse.upsert_plan(conn, plan)
            conn.commit()
    return due, skips


def _ledger_rows(warehouse: Warehouse, conn: Any, user_ids: list[str]) -> dict[tuple[str, str], Any]:
    t = warehouse.ledger_t
    statement = sa.select(t.c.user_id, t.c.channel, t.c.account_type, t.c.state, t.c.claimed_by).where(
        t.c.user_id.in_(user_ids)
    )
    return {(str(row.user_id), str(row.channel)): row for row in conn.execute(statement)}


def _skip(email: Any, sms: Any) -> EventSkip | None:
    """Why this user gets no sms now (``None``: it is due), from its email and sms ledger rows."""
    if email is None:
        return EventSkip.UNKNOWN
    if email.account_type != AccountType.INDIVIDUAL:
        return EventSkip.CORPORATION
    if email.state not in DONE_STATES:
        return EventSkip.EMAIL_NOT_REQUESTED
    if sms is None:
        return None
    if sms.claimed_by is not None:
        return EventSkip.IN_FLIGHT
    # Queued by an hourly run but not sent yet: this run takes it over (the sender reads its rows
    # by run id, so exactly one of the two sends it). Anything else was requested already.
    return None if sms.state == LedgerState.QUEUED else EventSkip.SMS_ALREADY_REQUESTED


def chunk_descriptors(due: int, chunk_size: int, *, hold_uncertain: bool) -> list[dict[str, Any]]:
    """
    The chunk descriptors of ``due`` queued sms, in the planner's shape, for the sender.

    :param due: users queued, in chunks of ``chunk_size`` (chunk ``i`` holds positions ``i * chunk_size``...).
    """
    out = []
    for chunk, first in enumerate(range(0, due, chunk_size)):
        users = min(chunk_size, due - first)
        out.append(
            {
                "account_type": AccountType.INDIVIDUAL.value,
                "chunks": [chunk, chunk],
                "label": f"{AccountType.INDIVIDUAL} {first + 1}-{first + users}",
                "users": users,
                "hold_uncertain": hold_uncertain,
                Channel.EMAIL.value: 0,
                Channel.SMS.value: users,
            }
        )
    return out
