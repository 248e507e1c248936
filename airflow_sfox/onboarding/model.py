"""
The vocabulary of onboarding, in one place: account types, channels, ledger states, run statuses,
and how a run is named (:class:`RunRef`).

Everything else (planner, sender, run summary, DAG factory, the UI page, the sandbox) imports
these names instead of spelling the strings. The module imports nothing but the standard
library, so the sandbox and the UI plugin can use it without loading Airflow's task SDK.

The enums subclass :class:`str`: a member compares equal to its value, is stored as its
value, and reads back from the warehouse as plain text (``LedgerState(text)`` turns it back).
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple


class _Text(str, Enum):
    """A ``str`` enum whose ``str()`` and f-string form is the bare value on every Python."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class AccountType(_Text):
    """sFOX's ``account_type``; sFOX's prose says "business account" for ``corporation``."""

    INDIVIDUAL = "individual"
    CORPORATION = "corporation"


class Channel(_Text):
    """
    A channel of the ledger: a verification channel (the ``type`` of ``POST
    .../send-verification/{user_id}``, see :data:`CHANNELS`), or :attr:`REGISTRATION`.
    """

    #: ``POST /v1/enterprise/register-account`` (opt-in): sFOX then emails the first code itself
    REGISTRATION = "registration"
    EMAIL = "email"
    SMS = "sms"


#: The channels each account type verifies, in order: a channel may be requested only once the
#: one before it is verified, and the last one verified makes the user VERIFIED.
#: Corporations verify their email only; individuals their email, then their phone (sms).
CHANNELS_BY_ACCOUNT_TYPE: dict[AccountType, tuple[Channel, ...]] = {
    AccountType.INDIVIDUAL: (Channel.EMAIL, Channel.SMS),
    AccountType.CORPORATION: (Channel.EMAIL,),
}
#: Every account type, in the order of :data:`CHANNELS_BY_ACCOUNT_TYPE`.
ACCOUNT_TYPES: tuple[AccountType, ...] = tuple(CHANNELS_BY_ACCOUNT_TYPE)
#: Every verification channel (a ``type`` of send-verification), in the order of
#: :data:`CHANNELS_BY_ACCOUNT_TYPE`.
CHANNELS: tuple[Channel, ...] = tuple(
    dict.fromkeys(channel for order in CHANNELS_BY_ACCOUNT_TYPE.values() for channel in order)
)
#: The verification channel whose first code sFOX sends itself when it registers a user: every
#: account type verifies it first. A registration recorded ``registered`` records it ``sent``.
REGISTRATION_SENDS: Channel = CHANNELS[0]
#: Every channel of the ledger, in the order a user goes through them: registration (for users
#: sFOX does not know yet, when the DAG registers them), then the verification channels.
LEDGER_CHANNELS: tuple[Channel, ...] = (Channel.REGISTRATION, *CHANNELS)


def channels_for(account_type: str) -> tuple[Channel, ...]:
    """
    The channels an account type verifies (empty for an unknown type).

    :param account_type: ``individual`` or ``corporation``.
    """
    try:
        return CHANNELS_BY_ACCOUNT_TYPE[AccountType(account_type)]
    except ValueError:
        return ()


def prerequisite(account_type: str, channel: str) -> Channel | None:
    """
    The channel that must be verified before ``channel`` may be requested, if any.

    :param account_type: ``individual`` or ``corporation``.
    :param channel: ``email`` or ``sms``.
    """
    order = channels_for(account_type)
    position = order.index(Channel(channel)) if channel in order else 0
    return order[position - 1] if position > 0 else None


class LedgerState(_Text):
    """The state of one (user_id, channel) row of the onboarding ledger."""

    #: planned by a run, not sent yet
    QUEUED = "queued"
    #: sFOX accepted the request: a code went out
    SENT = "sent"
    #: sFOX answered 422 "already verified", or listed the channel as verified before any send
    ALREADY_VERIFIED = "already_verified"
    #: sent earlier, and sFOX now lists the channel as verified
    VERIFIED = "verified"
    #: sFOX does not know the user (404); tried again by later runs after a growing wait
    NOT_REGISTERED = "not_registered"
    #: sFOX refused it, or retries ran out; tried again by later runs after a growing wait
    FAILED = "failed"
    #: failed or not registered ``max_tries`` times: planned again only by a re-drive
    GAVE_UP = "gave_up"
    #: its request was in flight when a task died, and ``hold_uncertain`` holds such rows for
    #: review instead of sending again: planned again only by a re-drive (``uncertain``)
    HELD = "held"
    #: the source row is invalid (``last_error`` says why); never sent
    REJECTED = "rejected"
    #: sFOX answered that the channel before it must be verified first (an sms asked before
    #: the email is verified): not a failure; due again once sFOX reports that one verified
    WAITING = "waiting"
    #: the ``registration`` channel only: sFOX created the user (answered 2xx, or a read after an
    #: unclear answer found it); never registered again
    REGISTERED = "registered"


#: The channel needs no new code: it was requested successfully, or sFOX reports it verified.
DONE_STATES: frozenset[LedgerState] = frozenset(
    {LedgerState.SENT, LedgerState.ALREADY_VERIFIED, LedgerState.VERIFIED, LedgerState.REGISTERED}
)
#: sFOX reports the channel verified.
VERIFIED_STATES: frozenset[LedgerState] = frozenset({LedgerState.ALREADY_VERIFIED, LedgerState.VERIFIED})
#: Outcomes of this run's requests counted against its failure threshold, beside newly rejected
#: rows: sFOX refused the request, or does not know the user (404). Later runs try them again.
FAILED_STATES: frozenset[LedgerState] = frozenset({LedgerState.FAILED, LedgerState.NOT_REGISTERED})
#: Planned again only when a re-drive names them: retries ran out, or held for review.
REDRIVE_ONLY_STATES: frozenset[LedgerState] = frozenset({LedgerState.GAVE_UP, LedgerState.HELD})
#: The ``redrive`` choice for channels whose request's answer was lost: ``held`` ones, and
#: ``failed`` or ``not_registered`` ones marked uncertain.
UNCERTAIN = "uncertain"
#: What the ``redrive`` param may queue again at once: three ledger states, and ``uncertain``.
REDRIVE_CHOICES: tuple[str, ...] = (
    LedgerState.FAILED.value,
    LedgerState.GAVE_UP.value,
    LedgerState.NOT_REGISTERED.value,
    UNCERTAIN,
)


#: Short display text of each ledger state and of ``uncertain`` (the trigger form, the page).
STATE_LABELS: dict[str, str] = {
    LedgerState.QUEUED.value: "queued",
    LedgerState.SENT.value: "sent",
    LedgerState.ALREADY_VERIFIED.value: "already verified",
    LedgerState.VERIFIED.value: "verified",
    LedgerState.NOT_REGISTERED.value: "not registered",
    LedgerState.FAILED.value: "failed",
    LedgerState.GAVE_UP.value: "gave up",
    LedgerState.HELD.value: "held for review",
    LedgerState.REJECTED.value: "rejected",
    LedgerState.WAITING.value: "waiting for the channel before",
    LedgerState.REGISTERED.value: "registered",
    UNCERTAIN: "uncertain (answer lost)",
}


class AttemptOutcome(_Text):
    """What one HTTP request of the onboarding engine came to, as the attempts table records it."""

    #: the last request of a call: the call's ledger outcome
    SENT = "sent"
    ALREADY_VERIFIED = "already_verified"
    NOT_REGISTERED = "not_registered"
    FAILED = "failed"
    #: an earlier request of a call, retried by the hook (5xx, 429, connection error, timeout)
    RETRIED = "retried"
    #: claimed (about to be sent, perhaps sent) when its task died: recorded by the next try
    LOST = "lost"
    #: sFOX refused the token (401/403): the row stays queued
    REFUSED = "refused"
    #: sFOX asked for the channel before it to be verified first (see ``LedgerState.WAITING``)
    WAITING = "waiting"
    #: a registration sFOX created (2xx), or found by the read that settled an unclear answer
    REGISTERED = "registered"
    #: the read (``GET /v1/enterprise/users/{user_id}``) that settles an unclear registration
    READ = "read"


class EventSkip(_Text):
    """Why an id named by an event gets no sms from this run."""

    #: not a user id (empty, too long, control characters, not text)
    MALFORMED = "malformed"
    #: the ledger has no row of it: not a user of the onboarding source
    UNKNOWN = "unknown"
    #: a corporation: corporations verify their email only
    CORPORATION = "corporation"
    #: its email code was never requested (rejected, failed, still queued, ...)
    EMAIL_NOT_REQUESTED = "email_not_requested"
    #: its sms was requested already (sent, verified, or retried on the schedule after a failure)
    SMS_ALREADY_REQUESTED = "sms_already_requested"
    #: its sms is being sent by another run right now
    IN_FLIGHT = "in_flight"


class RunStatus(_Text):
    """The status of one onboarding run, as its run row records it."""

    RUNNING = "running"
    SUCCESS = "success"
    #: failures passed the threshold
    FAILED = "failed"
    #: planned work was left unsent (a chunk step failed or was killed)
    INCOMPLETE = "incomplete"
    #: sFOX refused the token: the run's other chunk steps send nothing
    AUTH_FAILED = "auth_failed"
    #: planning failed before anything was sent (bad source, sFOX unreachable, ...)
    PLAN_FAILED = "plan_failed"
    #: stopped by an outage (sFOX, the rate budget's backend, the warehouse) or killed: the
    #: users not answered stay queued, their failures unchanged, for the next run
    INTERRUPTED = "interrupted"


class RunRef(NamedTuple):
    """
    One run of one DAG: how every per-run record is keyed (run table, steps, ledger, attempts,
    claims, events, snapshots). Airflow's run ids are unique within a DAG only: two DAGs on one
    schedule get the same ``scheduled__<hour>`` run id every hour.

    :param dag_id: the DAG.
    :param run_id: the Airflow run id, within the DAG.
    """

    dag_id: str
    run_id: str

    def __str__(self) -> str:
        return f"{self.run_id} of {self.dag_id}"
