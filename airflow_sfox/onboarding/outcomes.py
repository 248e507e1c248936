"""
What a send request leaves in the ledger: its :class:`Outcome`, the :class:`Claim` a chunk step
puts on a queued user, and the rows both write (the ledger's update, the attempts table's rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from airflow_sfox.onboarding.model import DONE_STATES, FAILED_STATES, AttemptOutcome, LedgerState, RunRef
from airflow_sfox.onboarding.schema import Timestamp, UserId

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from sqlalchemy.sql.dml import Update

    from airflow_sfox.hooks.sfox import Attempt

#: Why a claimed request has no recorded answer.
LOST_ERROR = "in flight when its task died: the request may have reached sFOX"


@dataclass(frozen=True)
class Outcome:
    """
    The result of one send request, as the ledger records it.

    :param user_id: the user.
    :param channel: ``email`` or ``sms``.
    :param state: the new ledger state.
    :param status: the HTTP status of the last answer (``None``: no answer).
    :param error: a short reason, no personal data.
    :param attempts: HTTP requests made.
    :param uncertain: a code may have been sent without our knowing.
    :param requested_at: when the request started.
    :param trail: each HTTP request of the call (the hook's records), for the attempts table.
    """

    user_id: str
    channel: str
    state: str
    status: int | None
    error: str | None
    attempts: int
    uncertain: bool
    requested_at: datetime
    trail: tuple[Attempt, ...] = ()


@dataclass(frozen=True)
class Claim:
    """
    A queued user as a chunk step reads it, with the claim a try that died left on it.

    :param user_id: the user.
    :param run: the run whose try claimed it (``None``: not claimed).
    :param at: when it was claimed.
    :param uncertain: an earlier request of its row may have reached sFOX unseen (a registration
        is then settled by a read before anything is posted again).
    """

    user_id: str
    run: RunRef | None = None
    at: datetime | None = None
    uncertain: bool = False


def _final(outcome: Outcome) -> str:
    """The attempts-table outcome of a call's last request."""
    if outcome.state != LedgerState.QUEUED:
        return str(outcome.state)
    # Still queued: the token was refused, or sFOX was down (the call is tried again).
    return AttemptOutcome.REFUSED.value if outcome.status in (401, 403) else AttemptOutcome.RETRIED.value


def attempt_rows(outcome: Outcome, run: RunRef) -> list[dict[str, Any]]:
    """The attempts-table rows of one outcome: its last request has the outcome, earlier ones were retried."""
    last = len(outcome.trail)
    return [
        {
            "user_id": outcome.user_id,
            "channel": str(outcome.channel),
            **run._asdict(),
            "attempted_at": attempt.at,
            "attempt": number,
            "status": attempt.status,
            "outcome": _final(outcome) if number == last else AttemptOutcome.RETRIED.value,
            "uncertain": 1 if attempt.uncertain else 0,
            "error": attempt.error and attempt.error[:255],
        }
        for number, attempt in enumerate(outcome.trail, start=1)
    ]


def outcome_update(t: sa.Table) -> Update:
    """
    The ledger's UPDATE of one outcome (executed with :func:`outcome_params` per outcome): its
    state and counters, the claim released.

    :param t: the ledger table.
    """
    p = sa.bindparam
    return (
        sa.update(t)
        .where(t.c.user_id == p("o_user_id", type_=UserId()), t.c.channel == p("o_channel"))
        .values(
            state=p("o_state"),
            sends=t.c.sends + p("o_sent", type_=sa.Integer),
            attempts=t.c.attempts + p("o_attempts", type_=sa.Integer),
            uncertain=sa.case((p("o_uncertain", type_=sa.Integer) == 1, 1), else_=t.c.uncertain),
            failures=sa.case(
                (p("o_failed", type_=sa.Integer) == 1, t.c.failures + 1),
                (p("o_done", type_=sa.Integer) == 1, 0),
                else_=t.c.failures,
            ),
            last_status=p("o_status", type_=sa.Integer),
            last_error=p("o_error"),
            first_request_at=sa.func.coalesce(t.c.first_request_at, p("o_at", type_=Timestamp())),
            last_request_at=p("o_at2", type_=Timestamp()),
            last_sent_at=sa.func.coalesce(p("o_sent_at", type_=Timestamp()), t.c.last_sent_at),
            updated_at=p("o_at3", type_=Timestamp()),
            claimed_by=None,
            claimed_by_dag=None,
            claimed_at=None,
        )
    )


def outcome_params(o: Outcome) -> dict[str, Any]:
    """The parameters of :func:`outcome_update` for one outcome."""
    sent = o.state == LedgerState.SENT
    at = o.requested_at
    return {
        "o_user_id": o.user_id,
        "o_channel": str(o.channel),
        "o_state": str(o.state),
        "o_sent": 1 if sent else 0,
        "o_attempts": o.attempts,
        "o_uncertain": 1 if o.uncertain else 0,
        "o_failed": 1 if o.state in FAILED_STATES else 0,
        "o_done": 1 if o.state in DONE_STATES else 0,
        "o_status": o.status,
        "o_error": o.error,
        "o_at": at,
        "o_at2": at,
        "o_sent_at": at if sent else None,
        "o_at3": at,
    }


def lost_rows(claims: Sequence[Claim], *, channel: str, now: datetime) -> list[dict[str, Any]]:
    """The attempts-table rows of claims a dead try left: each a ``lost``, uncertain request."""
    return [
        {
            "user_id": claim.user_id,
            "channel": channel,
            "dag_id": claim.run.dag_id if claim.run else None,
            "run_id": claim.run.run_id if claim.run else None,
            "attempted_at": claim.at or now,
            "attempt": 1,
            "status": None,
            "outcome": AttemptOutcome.LOST.value,
            "uncertain": 1,
            "error": LOST_ERROR,
        }
        for claim in claims
    ]
