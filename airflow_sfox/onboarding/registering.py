"""
The registration step of a chunk: ``POST /v1/enterprise/register-account`` for its queued users,
in the engine of :mod:`~airflow_sfox.onboarding.sender` (claims, the shared budget, the attempts
table, the circuit breaker).

The request is not idempotent, and sFOX documents neither its answer nor the answer for a
``user_id`` that exists. So any unclear outcome is settled by reading the user
(``GET /v1/enterprise/users/{user_id}``) before anything is posted again: a lost answer, a 5xx,
a 4xx (it may mean "exists"), a claim a killed try left, a row whose earlier read failed. The
hook's create is single-shot; the calls here never post twice without a read between.

- A 2xx, or an unclear post the read then finds: ``registered``, and the user's email row
  ``sent`` at that moment (sFOX emails the first code itself: no email request follows).
- A 4xx the read then finds: ``registered`` (it existed); its email step runs as for any user.
- A 4xx the read does not find: ``failed`` with sFOX's message, scrubbed of every field value,
  and the keyed hash of the fields sent: planned again only when they change, or by a re-drive.
- sFOX down (5xx and a read that fails too): ``queued``, marked uncertain (the next try reads
  first), for the breaker and Airflow's retries.

The fields are read from the source for the chunk's users when the step starts, held in memory
for the step only, and never logged, stored or returned.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from airflow_sfox.exceptions import (
    SfoxAuthError,
    SfoxError,
    SfoxNotFoundError,
    SfoxRateBudgetError,
)
from airflow_sfox.onboarding.model import REGISTRATION_SENDS, Channel, LedgerState
from airflow_sfox.onboarding.outcomes import Outcome
from airflow_sfox.onboarding.registration import checked_payload, fields_hmac, scrub_fields
from airflow_sfox.onboarding.sender import (
    PROGRESS_EVERY,
    ChunkStats,
    _Answer,
    _Call,
    _ChunkSender,
    _record_lost,
    run_step,
)

if TYPE_CHECKING:
    import threading

    from airflow_sfox.hooks.sfox import SfoxConnectHook, SfoxResult
    from airflow_sfox.onboarding.config import OnboardingSource
    from airflow_sfox.onboarding.model import RunRef
    from airflow_sfox.onboarding.outcomes import Claim
    from airflow_sfox.onboarding.warehouse import Warehouse

log = logging.getLogger(__name__)
#: Users whose source rows are read per query.
_READ_BATCH = 500
#: The ledger's reason of a registration settled by the read (no personal data).
FOUND_BY_READ = "sFOX lists the user (settled by a read after an unclear answer)"


class _Register(_Call):
    """
    One user's registration: read first when an earlier post may have landed, post the body
    (429 pauses waited out by :class:`_Call`), settle an unclear answer by a read.
    """

    def __init__(
        self,
        hook: SfoxConnectHook,
        user_id: str,
        stop: threading.Event,
        *,
        body: dict[str, Any] | str,
        read_first: bool,
        sender: _RegistrationSender,
        probe: bool = False,
    ) -> None:
        super().__init__(hook, user_id, Channel.REGISTRATION.value, stop, probe=probe)
        self.body, self.read_first, self.sender = body, read_first, sender

    def __call__(self) -> _Answer:
        if isinstance(self.body, str):  # the source row changed since the plan: not sendable now
            return self._done(LedgerState.REJECTED, None, self.body)
        if self.read_first:
            found = self.read(created=True)
            if found is not None:
                return found
        return super().__call__()

    def request(self) -> SfoxResult:
        assert isinstance(self.body, dict)
        return self.hook.create_user_result(self.body)

    def answered(self, result: SfoxResult) -> _Answer:
        self.sender.created.add(self.user_id)
        self.earlier += result.trail
        return self._done(LedgerState.REGISTERED, result.status_code, None)

    def settle(self, err: SfoxError) -> _Answer:
        if isinstance(err, SfoxAuthError):
            return super().settle(err)  # raises: the token is refused, the rest stays queued
        self.earlier += err.trail
        status = err.status_code
        if isinstance(err, SfoxRateBudgetError) or (status is None and not err.uncertain):
            # Nothing was sent (the budget's backend, a connection never made): try again later.
            return self._done(LedgerState.QUEUED, status, str(err), down=err)
        if status is not None and 200 <= status < 300:
            self.sender.created.add(self.user_id)  # created; only its body was unreadable
            return self._done(LedgerState.REGISTERED, status, None)
        unclear = status is None or status >= 500
        settled = self.read(created=unclear)
        if settled is not None:
            return settled
        if unclear:  # not created: sFOX is down; a post may go again, a read came between
            return self._done(LedgerState.QUEUED, status, str(err), down=err)
        self.sender.refused.add(self.user_id)
        return self._done(
            LedgerState.FAILED, status, f"sFOX refused the registration ({status}): {err.message}"
        )

    def read(self, *, created: bool) -> _Answer | None:
        """
        Read the user: ``registered`` when sFOX lists it (``created``: by our post, so its email
        code went out), ``None`` when sFOX does not know it, ``queued`` and uncertain when the
        read fails (the next call of this user reads first again).
        """
        try:
            result = self.hook.get_user_result(self.user_id)
        except SfoxNotFoundError as missing:
            self.earlier += missing.trail
            self.sender.unsettled.discard(self.user_id)
            return None
        except SfoxAuthError as refused:
            return super().settle(refused)
        except SfoxError as down:
            self.earlier += down.trail
            self.sender.unsettled.add(self.user_id)
            return self._done(
                LedgerState.QUEUED, down.status_code, f"unsettled: {down}", down=down, uncertain=True
            )
        self.sender.unsettled.discard(self.user_id)
        if created:
            self.sender.created.add(self.user_id)
        self.earlier += result.trail
        return self._done(LedgerState.REGISTERED, result.status_code, FOUND_BY_READ)

    def _done(
        self,
        state: LedgerState,
        status: int | None,
        error: str | None,
        *,
        down: SfoxError | None = None,
        uncertain: bool = False,
    ) -> _Answer:
        """The call's outcome: every request of it (posts and reads) in its trail, in order."""
        trail = tuple(self.earlier)
        outcome = Outcome(
            self.user_id, self.channel, state, status, error, len(trail), uncertain, self.started, trail
        )
        return _Answer(self.scrubbed(outcome), down=down)

    def outcome(
        self, state: LedgerState, answer: SfoxResult | SfoxError | None, error: str | None = None
    ) -> Outcome:
        return self.scrubbed(super().outcome(state, answer, error))

    def scrubbed(self, outcome: Outcome) -> Outcome:
        """The outcome with every value of the body out of its error and its requests' errors."""
        body = self.body if isinstance(self.body, dict) else {}
        trail = tuple(
            replace(a, error=scrub_fields(a.error, body)[:255]) if a.error else a for a in outcome.trail
        )
        error = outcome.error and scrub_fields(outcome.error, body)[:255]
        return replace(outcome, error=error, trail=trail)


class _RegistrationSender(_ChunkSender):
    """A chunk step of registrations: :class:`_ChunkSender` with :class:`_Register` calls."""

    def __init__(
        self, *args: Any, bodies: dict[str, dict[str, Any] | str], key: bytes, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.bodies, self.key = bodies, key
        self.account_type = ""
        #: users to read before posting (an earlier post may have landed)
        self.unsettled: set[str] = set()
        #: users our post created (their email code went out), and users sFOX refused
        self.created: set[str] = set()
        self.refused: set[str] = set()

    def call(self, user_id: str) -> _Call:
        body = self.bodies.get(user_id, "user_id is no longer in the source")
        read_first = user_id in self.unsettled
        return _Register(
            self.hook,
            user_id,
            self.stop,
            body=body,
            read_first=read_first,
            sender=self,
            probe=self.breaker.probe,
        )

    def _commit(self, outcomes: list[Outcome], skipped: list[str], claim: list[str]) -> None:
        """Write the fields' hashes and the emails sFOX sent, then the outcomes: one commit."""
        hashes: dict[str, str | None] = {}
        sent: list[Outcome] = []
        for outcome in outcomes:
            body = self.bodies.get(outcome.user_id)
            if outcome.state == LedgerState.QUEUED or not isinstance(body, dict):
                continue
            keep = outcome.state == LedgerState.REGISTERED or outcome.user_id in self.refused
            hashes[outcome.user_id] = fields_hmac(body, self.key) if keep else None
            if outcome.state == LedgerState.REGISTERED and outcome.user_id in self.created:
                sent.append(
                    Outcome(
                        outcome.user_id,
                        REGISTRATION_SENDS.value,
                        LedgerState.SENT,
                        outcome.status,
                        None,
                        0,
                        False,
                        outcome.requested_at,
                    )
                )
        self.warehouse.record_registered(
            self.conn, sent, hashes, account_type=self.account_type, run=self.run
        )
        super()._commit(outcomes, skipped, claim)


def source_bodies(
    warehouse: Warehouse, source: OnboardingSource, user_ids: list[str]
) -> dict[str, dict[str, Any] | str]:
    """
    The register-account body of each user, from its source row now (or why it cannot be
    sent); users missing from the source are left out.
    """
    registration = source.registration
    assert registration is not None
    src, fields = source.subquery(), source.registration_columns()
    paths = list(registration.columns())
    bodies: dict[str, dict[str, Any] | str] = {}
    with warehouse.connect() as conn:
        key = warehouse.support.text_key(src.c.user_id, conn.dialect)
        columns = [src.c.account_type, src.c.email, src.c.phone_number]
        texts = [sa.cast(src.c[alias], sa.Text) for alias in fields]
        for start in range(0, len(user_ids), _READ_BATCH):
            batch = user_ids[start : start + _READ_BATCH]
            query = sa.select(key, *columns, *texts).where(key.in_(batch))
            for uid, kind, email, phone, *values in conn.execute(query):
                bodies[str(uid)] = checked_payload(
                    registration,
                    user_id=str(uid),
                    account_type=str(kind).strip().lower(),
                    email=str(email or ""),
                    phone_number=str(phone).strip() if phone else None,
                    values=dict(zip(paths, values, strict=True)),
                )
    return bodies


def register_chunk(
    warehouse: Warehouse,
    hook: SfoxConnectHook,
    *,
    run: RunRef,
    chunk: dict[str, Any],
    source: OnboardingSource,
    key: bytes,
    threads: int,
    progress_every: float = PROGRESS_EVERY,
) -> ChunkStats:
    """
    Register the queued users of one chunk descriptor and record every outcome (see the module).

    Claims a dead try left are recorded as ``lost`` attempts and their users read before any
    post; so are rows an earlier read could not settle (marked uncertain).

    :param source: the source, with its registration mapping.
    :param key: the key of the fields' keyed hash.
    :raises SfoxAuthError: the token was refused; outcomes so far are recorded first.
    :raises ChunkStopped: sFOX, the rate budget's backend or the warehouse is down.
    """

    def start(conn: Any, queued: list[Claim], stats: ChunkStats) -> tuple[_RegistrationSender, list[str]]:
        user_ids = [claim.user_id for claim in queued]
        bodies = source_bodies(warehouse, source, user_ids)
        _record_lost(warehouse, conn, queued, stats, hold_uncertain=False, then="read before any new post")
        sender = _RegistrationSender(
            warehouse, hook, conn, run=run, channel=stats.channel, stats=stats, bodies=bodies, key=key
        )
        sender.account_type = str(chunk["account_type"])
        sender.unsettled = {c.user_id for c in queued if c.uncertain or c.run is not None}
        return sender, user_ids

    return run_step(
        warehouse,
        hook,
        run=run,
        chunk=chunk,
        channel=Channel.REGISTRATION.value,
        threads=threads,
        start=start,
        progress_every=progress_every,
    )
