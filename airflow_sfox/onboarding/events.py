"""
Event-driven sms: the users named by "email verified" asset events get their sms code at once.

A partner's backend knows the moment a user confirms their email code; it posts an event of
the email-verified asset (:func:`~airflow_sfox.assets.sfox.email_verified_asset`) with the
user_ids in ``extra``, and the follow-up DAG (:func:`~airflow_sfox.onboarding.dag.email_verified_dag`)
sends those users' sms through the same engine as the hourly runs: the ledger, its claims and
attempts, and the shared rate budget. The event's word that the email is verified is trusted;
if sFOX disagrees, its refusal is recorded like any other outcome.

A user is queued when the ledger knows it under an account type that verifies a channel right
after its email (:data:`AFTER_EMAIL`, from the model's channel rule), whose email code went out
(or whose email sFOX reported verified) and whose next channel was never requested. Any other
id is skipped and counted by reason, never sent: see :class:`~airflow_sfox.onboarding.model.EventSkip`.

Each event is judged once, by the first run that reads it: Airflow may hand an event to a later
run again (its look-ahead, see :func:`~airflow_sfox.onboarding.dag.email_verified_dag`, and its
coalescing), so a run records the keys of the events it read (:func:`event_key`) in
``<ledger>_events``, in the transaction that queues their users, and skips the events found
there. Ids that are no user id are the poster's error: reported, never counted against a run.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timezone
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from airflow_sfox.assets.sfox import USER_IDS_KEY
from airflow_sfox.onboarding.counts import ChunkDescriptor, chunk_descriptor, due_key
from airflow_sfox.onboarding.model import (
    ACCOUNT_TYPES,
    DONE_STATES,
    AccountType,
    Channel,
    EventSkip,
    LedgerState,
    channels_for,
    prerequisite,
)
from airflow_sfox.onboarding.validation import as_text, user_id_problem

if TYPE_CHECKING:
    from airflow_sfox.onboarding.model import RunRef
    from airflow_sfox.onboarding.warehouse import Warehouse

log = logging.getLogger(__name__)

#: user_ids read from the ledger per query.
LOOKUP_BATCH = 1000
#: The channel each account type verifies right after its email: what an event's user gets.
AFTER_EMAIL: dict[AccountType, Channel] = {
    kind: channel
    for kind in ACCOUNT_TYPES
    for channel in channels_for(kind)
    if prerequisite(kind, channel) == Channel.EMAIL
}
#: Why an event holds no list of ids.
NO_LIST = f"{USER_IDS_KEY} is not a list"
#: An event as a run receives it: its key (``None``: no event, e.g. ids given by hand) and extra.
EventPair = tuple[str | None, Mapping[str, Any] | None]


def event_key(event: Any) -> str:
    """
    One asset event's key: the same whether Airflow hands it over as a triggering event or as
    an inlet event, on every supported version.

    Triggering events carry no id (on 3.1 and 3.3 alike), inlet events do: so the key is what
    both carry, the asset's URI, the event's timestamp and its source (DAG, run, task, map
    index), hashed.

    :param event: a ``triggering_asset_events`` or ``inlet_events`` entry.
    """
    stamp = event.timestamp.astimezone(timezone.utc).isoformat(timespec="microseconds")
    map_index = getattr(event, "source_map_index", None)
    source = [getattr(event, f"source_{name}", None) for name in ("dag_id", "run_id", "task_id")]
    # Not mapped: -1 in one model, None in the other.
    parts = [event.asset.uri, stamp, *source, -1 if map_index is None else map_index]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def event_user_ids(extras: Iterable[Mapping[str, Any] | None]) -> tuple[list[str], Counter[str]]:
    """
    The user_ids of events' ``extra``, in order, each once; and the malformed ones by reason.

    A posted event's extra holds ``user_ids``; a watcher's holds them under ``payload``. A
    reason names what is wrong, never the id.

    :param extras: each event's ``extra``.
    """
    seen: dict[str, None] = {}
    malformed: Counter[str] = Counter()
    for extra in extras:
        extra = extra if isinstance(extra, Mapping) else {}
        payload = extra.get("payload")
        ids = extra.get(USER_IDS_KEY, payload.get(USER_IDS_KEY) if isinstance(payload, Mapping) else None)
        if not isinstance(ids, list):
            malformed[NO_LIST] += 1  # an event without a list of ids
            continue
        for uid in ids:
            if not isinstance(uid, str | int) or isinstance(uid, bool):
                malformed["user_id is not text"] += 1
            elif problem := user_id_problem(as_text(uid)):
                malformed[problem] += 1
            else:
                seen.setdefault(as_text(uid), None)
    return list(seen), malformed


@dataclass
class EventPlan:
    """
    What a run of events queued, and what it skipped.

    :param events: events this run judged (new to the ledger's events table).
    :param events_seen: events an earlier run judged already: skipped, not counted again.
    :param user_ids: the well-formed ids the new events (and the ids given by hand) name, each once.
    :param malformed: ids that are no user id (and events without a list of ids), by reason.
    :param due: the users queued, per account type, in chunk order.
    :param skips: the other well-formed ids, by :class:`~airflow_sfox.onboarding.model.EventSkip`.
    """

    events: int = 0
    events_seen: int = 0
    user_ids: list[str] = field(default_factory=list)
    malformed: Counter[str] = field(default_factory=Counter)
    due: dict[AccountType, list[str]] = field(default_factory=dict)
    skips: Counter[str] = field(default_factory=Counter)

    @property
    def queued(self) -> int:
        """Users queued."""
        return sum(len(users) for users in self.due.values())

    def counts(self, *, dry_run: bool) -> dict[str, Any]:
        """
        The run's counts, in the shape of a plan's: malformed ids are counted on their own
        (``malformed_ids``), never as rejected rows, so they never count against the run.
        """
        malformed = sum(self.malformed.values())
        return {
            "source_rows": len(self.user_ids) + malformed,
            "valid_users": len(self.user_ids),
            "rejected": 0,
            "duplicate_rows": 0,
            "events": self.events,
            "events_seen": self.events_seen,
            "malformed_ids": malformed,
            "malformed_reasons": dict(self.malformed.most_common()),
            "planned_users": self.queued,
            **{due_key(kind, channel): len(self.due.get(kind, ())) for kind, channel in AFTER_EMAIL.items()},
            **{f"skipped_{why}": n for why, n in sorted(self.skips.items()) if n},
            "rejected_reasons": {},
            "dry_run": dry_run,
        }

    def log(self, *, dry_run: bool) -> None:
        """Say what the run's events held: one line, and one more for malformed ids."""
        log.info(
            "%d events named %d user ids: %d queued%s; skipped: %s; events an earlier run judged, "
            "skipped: %d",
            self.events,
            len(self.user_ids),
            self.queued,
            " (dry run: nothing written or sent)" if dry_run else "",
            ", ".join(f"{why} {n}" for why, n in sorted(self.skips.items()) if n) or "none",
            self.events_seen,
        )
        if self.malformed:
            log.warning(
                "%d malformed ids in these events, skipped and not counted against the run (the "
                "poster's error): %s",
                sum(self.malformed.values()),
                ", ".join(f"{why}: {n}" for why, n in self.malformed.most_common()),
            )

    def chunks(self, chunk_size: int, *, hold_uncertain: bool) -> list[ChunkDescriptor]:
        """The chunk descriptors of the queued users (chunk ``i`` of a type: from ``i * chunk_size``)."""
        out = []
        for kind, users in self.due.items():
            for chunk, first in enumerate(range(0, len(users), chunk_size)):
                size = min(chunk_size, len(users) - first)
                out.append(
                    chunk_descriptor(
                        kind,
                        chunks=(chunk, chunk),
                        first_user=first + 1,
                        users=size,
                        due={AFTER_EMAIL[kind].value: size},
                        hold_uncertain=hold_uncertain,
                    )
                )
        return out


def plan_events(
    warehouse: Warehouse,
    events: Iterable[EventPair],
    *,
    run: RunRef,
    chunk_size: int,
    dry_run: bool,
) -> EventPlan:
    """
    Judge the events no earlier run judged: queue the next channel of the users they name, and
    record their keys, in one transaction (a dry run decides and counts, and writes nothing).

    :param warehouse: where the ledger is.
    :param events: ``(key, extra)`` of each event handed to the run (key ``None``: ids by hand).
    :param run: the run that will send them (their ledger rows' ``dag_id`` and ``run_id``).
    :param chunk_size: users per chunk (their rows' ``chunk``: ``position // chunk_size``).
    :param dry_run: decide and count, write nothing.
    """
    pairs = list(events)
    with warehouse.connect() as conn:
        seen = warehouse.seen_events(conn, [key for key, _ in pairs if key is not None])
        fresh: dict[str, None] = {}
        extras = []
        for key, extra in pairs:
            if key is None or (key not in seen and key not in fresh):
                extras.append(extra)
                if key is not None:
                    fresh[key] = None
        user_ids, malformed = event_user_ids(extras)
        plan = EventPlan(
            events=len(fresh), events_seen=len(pairs) - len(extras), user_ids=user_ids, malformed=malformed
        )
        for start in range(0, len(user_ids), LOOKUP_BATCH):
            _judge(plan, _ledger_rows(warehouse, conn, user_ids[start : start + LOOKUP_BATCH]))
        if not dry_run:
            rows = [
                (
                    uid,
                    AFTER_EMAIL[kind].value,
                    kind.value,
                    LedgerState.QUEUED.value,
                    i // chunk_size,
                    None,
                )
                for kind, users in plan.due.items()
                for i, uid in enumerate(users)
            ]
            warehouse.upsert_plan(conn, rows, run=run)
            warehouse.record_events(conn, list(fresh), run=run)
            conn.commit()
    return plan


def _judge(plan: EventPlan, rows: dict[str, dict[str, Any]]) -> None:
    """Queue or skip each id of one batch, from its ledger rows (by channel)."""
    for uid, channels in rows.items():
        why, kind = _skip(channels)
        if why is not None:
            plan.skips[why.value] += 1
        elif kind is not None:
            plan.due.setdefault(kind, []).append(uid)


def _ledger_rows(warehouse: Warehouse, conn: Any, user_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Each id's ledger rows by channel, in the order of ``user_ids`` (an id the ledger lacks: none)."""
    t = warehouse.ledger_t
    statement = sa.select(t.c.user_id, t.c.channel, t.c.account_type, t.c.state, t.c.claimed_by).where(
        t.c.user_id.in_(user_ids)
    )
    found: dict[str, dict[str, Any]] = {uid: {} for uid in user_ids}
    for row in conn.execute(statement):
        found[str(row.user_id)][str(row.channel)] = row
    return found


def _skip(channels: Mapping[str, Any]) -> tuple[EventSkip | None, AccountType | None]:
    """
    Why this user gets no code now (``None``: its next channel is due, and its account type),
    from its ledger rows by channel.
    """
    email = channels.get(Channel.EMAIL.value)
    if email is None:
        return EventSkip.UNKNOWN, None
    kind = AccountType(email.account_type) if email.account_type in AFTER_EMAIL else None
    if kind is None:  # its account type verifies nothing after its email
        return EventSkip.CORPORATION, None
    if email.state not in DONE_STATES:
        return EventSkip.EMAIL_NOT_REQUESTED, None
    after = channels.get(AFTER_EMAIL[kind].value)
    if after is None:
        return None, kind
    if after.claimed_by is not None:
        return EventSkip.IN_FLIGHT, None
    # Queued by an hourly run but not sent yet: this run takes it over (the sender reads its rows
    # by run, so exactly one of the two sends it). Waiting: sFOX refused it before the email
    # was verified, which the event now says it is. Anything else was requested already.
    if after.state in (LedgerState.QUEUED, LedgerState.WAITING):
        return None, kind
    return EventSkip.SMS_ALREADY_REQUESTED, None
