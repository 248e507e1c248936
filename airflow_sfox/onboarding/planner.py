"""
Planning: which users need which code, written to the ledger as ``queued`` work in chunks.

The planner streams sFOX's end users (one ``GET /v1/enterprise/users``) into the snapshot table,
then reads the source joined with the ledger and the snapshot **in SQL**, one row per distinct
user_id compared as exact text (an integer 777 and a text '777' are one user; a user_id found on
more than one source row is rejected), in user_id order, so memory does not grow with the table
or with sFOX's list. Every figure counts users, as the ledger does: a rejected user_id on several
rows is one rejected user, its other rows are ``duplicate_rows``. It validates each row and decides:

- each account type verifies the channels of
  :data:`~airflow_sfox.onboarding.model.CHANNELS_BY_ACCOUNT_TYPE`, in order: a channel is
  considered only once sFOX reports the one before it verified (sms after email);
- a channel is due for a valid user without a successful request (``sent``,
  ``already_verified`` or ``verified``), or whose code is still unverified after
  ``resend_after_hours`` and who has had fewer than ``max_sends`` codes;
- a channel sFOX reports verified is marked so without any request;
- a ``failed`` or ``not_registered`` channel is tried again once ``retry_wait_hours`` have
  passed since its last request (the n-th wait after the n-th failure in a row), until it has
  failed ``max_tries`` times in a row: then it is ``gave_up``, and only ``redrive`` queues it
  again (``redrive`` also queues ``failed``, ``not_registered`` and ``uncertain`` ones at once).

Due work is cut into chunks of ``chunk_size`` users of one account type; the DAG maps over small
descriptors of chunk ranges, never rows.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from airflow_sfox.onboarding.config import SOURCE_COLUMNS, OnboardingConfig, OnboardingSource
from airflow_sfox.onboarding.counts import ChunkDescriptor, chunk_descriptor, codes_due, due_key
from airflow_sfox.onboarding.model import (
    ACCOUNT_TYPES,
    CHANNELS,
    DONE_STATES,
    FAILED_STATES,
    LEDGER_CHANNELS,
    REDRIVE_ONLY_STATES,
    REGISTRATION_SENDS,
    UNCERTAIN,
    VERIFIED_STATES,
    AccountType,
    Channel,
    LedgerState,
    channels_for,
    prerequisite,
)
from airflow_sfox.onboarding.registration import checked_payload, fields_hmac, registration_secret
from airflow_sfox.onboarding.schema import snapshot_verified, utcnow
from airflow_sfox.onboarding.snapshots import close_snapshot, open_snapshot
from airflow_sfox.onboarding.validation import (
    REJECTED_CHANNEL,
    SourceUser,
    as_text,
    ledger_key,
    validate_row,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Dialect

    from airflow_sfox.hooks.sfox import SfoxConnectHook
    from airflow_sfox.onboarding.model import RunRef
    from airflow_sfox.onboarding.warehouse import Warehouse

#: The one ledger key of every empty user_id.
_EMPTY_KEY = ledger_key(None)
#: Ledger writes buffered before one commit while planning.
_WRITE_BATCH = 1000
#: Distinct rejection reasons reported (the rest are counted as "other").
_MAX_REASONS = 20


@dataclass
class _LedgerState:
    state: str | None
    sends: int
    last_sent_at: datetime | None
    failures: int = 0
    last_request_at: datetime | None = None
    uncertain: bool = False
    last_error: str | None = None


#: The ledger columns the planner reads per channel, in this order (see :class:`_LedgerState`).
_LEDGER_COLUMNS = ("state", "sends", "last_sent_at", "failures", "last_request_at", "uncertain", "last_error")
#: Where the snapshot's columns start in a row of :func:`planning_query` (after the user's five
#: and the ledger's per channel); the registration's follow them (see :meth:`Planner._register`).
_SNAPSHOT_AT = 5 + len(_LEDGER_COLUMNS) * len(CHANNELS)
_REGISTRATION_AT = _SNAPSHOT_AT + 1 + len(CHANNELS)
#: A retry is due once this share of its wait has passed since the last request.
RETRY_WAIT_SHARE = 0.9


@dataclass
class Plan:
    """What a run will do: chunk descriptors for the DAG and counts for the report."""

    chunks: list[ChunkDescriptor]
    counts: dict[str, Any]

    @property
    def steps(self) -> int:
        """Chunk steps that have codes to send: one per chunk and channel with work due."""
        return sum(1 for chunk in self.chunks for channel in LEDGER_CHANNELS if codes_due([chunk], channel))


class _Chunker:
    """Numbers the due users of one account type into chunks and counts channels per chunk."""

    def __init__(self, account_type: str, size: int) -> None:
        self.account_type = account_type
        self.size = size
        self.users = 0
        self.per_chunk: list[Counter[str]] = []

    def add(self, channels: list[str]) -> int:
        chunk = self.users // self.size
        if chunk == len(self.per_chunk):
            self.per_chunk.append(Counter())
        self.per_chunk[chunk].update(channels)
        self.users += 1
        return chunk


def _descriptors(chunkers: list[_Chunker], max_chunks: int, *, hold_uncertain: bool) -> list[ChunkDescriptor]:
    total = sum(len(c.per_chunk) for c in chunkers)
    group = max(1, math.ceil(total / max_chunks))
    out: list[ChunkDescriptor] = []
    for chunker in chunkers:
        for first in range(0, len(chunker.per_chunk), group):
            last = min(first + group, len(chunker.per_chunk)) - 1
            start = first * chunker.size
            counts: Counter[str] = Counter()
            for c in chunker.per_chunk[first : last + 1]:
                counts.update(c)
            out.append(
                chunk_descriptor(
                    chunker.account_type,
                    chunks=(first, last),
                    first_user=start + 1,
                    users=min((last + 1) * chunker.size, chunker.users) - start,
                    due=counts,
                    hold_uncertain=hold_uncertain,
                )
            )
    return out


def planning_query(
    config: OnboardingConfig,
    source: OnboardingSource,
    warehouse: Warehouse,
    dialect: Dialect,
    *,
    snapshot: sa.Table,
    snapshot_id: str,
    with_ledger: bool,
) -> sa.Select[Any]:
    """
    Source ⋈ ledger ⋈ snapshot, one row per distinct user_id (as exact text), in user_id order.

    Columns: ``user_id`` (text), ``rows`` (source rows with that id), ``account_type``, ``email``,
    ``phone_number``, then the ledger's :data:`_LEDGER_COLUMNS` per channel, then sFOX's ``status`` and
    ``<channel>_required`` per channel from the snapshot.
    """
    src, fields = source.subquery(), source.registration_columns()
    key = warehouse.support.text_key(src.c.user_id, dialect)
    grouped = sa.select(
        key.label("user_id"),
        sa.func.count().label("rows"),
        *(sa.func.min(src.c[c]).label(c) for c in SOURCE_COLUMNS[1:]),
        # As text: JSON and date columns have no MIN on every database.
        *(sa.func.min(sa.cast(src.c[alias], sa.Text)).label(alias) for alias in fields),
    )
    if config.user_ids is not None:
        grouped = grouped.where(key.in_(config.user_ids) if config.user_ids else sa.false())
    users = grouped.group_by(key).subquery("k")
    picked: list[Any] = []
    joined: Any = users
    for channel in CHANNELS:
        if with_ledger:
            ledger = warehouse.ledger_t.alias(f"l_{channel.value}")
            joined = joined.outerjoin(
                ledger, sa.and_(ledger.c.user_id == users.c.user_id, ledger.c.channel == channel.value)
            )
            picked += [ledger.c[name] for name in _LEDGER_COLUMNS]
        else:  # a dry run before the first real run: no ledger yet, nothing sent yet
            picked += [sa.null()] * len(_LEDGER_COLUMNS)
    snap = snapshot.alias("snap")
    joined = joined.outerjoin(
        snap, sa.and_(snap.c.snapshot_id == snapshot_id, snap.c.user_id == users.c.user_id)
    )
    picked += [snap.c.status, *(snap.c[f"{channel}_required"] for channel in CHANNELS)]
    if fields:  # registration: whether sFOX lists the user, the registration row, the fields
        picked.append(snap.c.user_id.is_not(None).label("listed"))
        if with_ledger:
            reg = warehouse.ledger_t.alias("l_registration")
            joined = joined.outerjoin(
                reg, sa.and_(reg.c.user_id == users.c.user_id, reg.c.channel == Channel.REGISTRATION.value)
            )
            # Unsettled: our post may have landed (claimed when a step died, or a read failed).
            unsettled = sa.or_(reg.c.claimed_by.is_not(None), reg.c.uncertain == 1)
            picked += [reg.c.fields_hmac, unsettled, *(reg.c[c] for c in _LEDGER_COLUMNS)]
        else:
            picked += [sa.null()] * (2 + len(_LEDGER_COLUMNS))
        picked += [users.c[alias] for alias in fields]
    columns = [c for c in users.c if c.name not in fields]
    return sa.select(*columns, *picked).select_from(joined).order_by(users.c.user_id)


class Planner:
    """
    Plans one run: see the module docstring.

    :param warehouse: the warehouse holding the source and the ledger.
    :param sfox: the hook used for the one bulk read of sFOX's end users.
    :param config: the run's settings.
    :param source: where the users come from (default: table ``sfox_users``).
    :param run: the run, recorded in the ledger.
    :param now: the planning time (injectable for tests of the resend policy).
    :param registration_key: the key of the registration fields' keyed hash (default, when the
        source registers users: :func:`~airflow_sfox.onboarding.registration.registration_secret`).
    """

    def __init__(
        self,
        warehouse: Warehouse,
        sfox: SfoxConnectHook,
        config: OnboardingConfig,
        *,
        source: OnboardingSource | None = None,
        run: RunRef,
        now: datetime | None = None,
        registration_key: bytes | None = None,
    ) -> None:
        self.warehouse = warehouse
        self.sfox = sfox
        self.config = config
        self.source = source or OnboardingSource()
        self.run = run
        self.now = now or utcnow()
        if self.source.registration is not None and not registration_key:
            registration_key = registration_secret(self.source.registration)  # an Airflow Variable
        self.registration_key = registration_key or b""
        self.chunkers = {kind: _Chunker(kind, config.chunk_size) for kind in ACCOUNT_TYPES}
        self.counts: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self._writes: list[tuple[Any, ...]] = []
        #: Ledger keys of rejected rows whose id needed a stand-in key, not looked up yet.
        self._stand_ins: list[str] = []
        #: Whether a row with an empty user_id was rejected already (they share one ledger row).
        self._empty_seen = False
        self._with_ledger = False
        #: Why the current user's channels are due (retry, resend, redrive): counted once queued.
        self._why_due: list[str] = []

    def check_source(self) -> None:
        """
        Check that the source has every column the planner reads, before any request to sFOX.

        :raises ValueError: naming each missing column and how to map it.
        """
        found = {name.lower() for name in self.warehouse.columns_of(self.source.sql())}
        missing = [c for c in SOURCE_COLUMNS if self.source.column(c).lower() not in found]
        self.source.check_registration_columns(found)
        if missing:
            shown = ", ".join(
                f"{c!r}" + (f" (mapped to {self.source.column(c)!r})" if c in self.source.columns else "")
                for c in missing
            )
            raise ValueError(
                f"the source {self.source.sql()[:80]} has no column {shown}; it has {sorted(found)}. "
                'Map source columns where the DAG is defined: OnboardingSource(columns={"phone_number": '
                '"mobile", ...}).'
            )

    def plan(self) -> Plan:
        """
        Plan the run, write it to the ledger (unless dry run), return the descriptors.

        sFOX's users are streamed into the snapshot table (a temporary one in a dry run), then
        the source, the ledger and the snapshot are joined in SQL and read one user at a time:
        nothing here holds all users. A run that erases users (``erase_user_ids``) erases them
        and plans nothing.
        """
        config = self.config
        if config.erase_user_ids:
            self.counts["erased_rows"] = (
                0 if config.dry_run else self.warehouse.erase_users(config.erase_user_ids)
            )
            return self._result()
        self.check_source()
        if not config.dry_run:
            self.warehouse.create_tables()
        with_ledger = self._with_ledger = not config.dry_run or self.warehouse.has_ledger()
        max_age = timedelta(minutes=config.snapshot_max_age_minutes)
        with self.warehouse.connect() as reader, self.warehouse.connect() as writer:
            snapshot = open_snapshot(
                self.warehouse,
                self.sfox,
                reader=reader,
                writer=writer,
                run=self.run,
                dry_run=config.dry_run,
                max_age=max_age,
            )
            self.counts["snapshot_reused"] = int(snapshot.reused)
            try:
                query = planning_query(
                    config,
                    self.source,
                    self.warehouse,
                    reader.dialect,
                    snapshot=snapshot.table,
                    snapshot_id=snapshot.snapshot_id,
                    with_ledger=with_ledger,
                )
                for row in self.warehouse.stream(reader, query):
                    if not self._plan_user(tuple(row)):
                        break
                    self._flush(writer, force=False)
                self._flush(writer, force=True)
            finally:
                if not config.dry_run:
                    writer.rollback()
                    close_snapshot(self.warehouse, writer, snapshot, max_age=max_age)
        return self._result()

    def _ledger_states(self, row: tuple[Any, ...]) -> dict[Channel, _LedgerState]:
        """The ledger columns of each channel, after the five user columns."""
        width = len(_LEDGER_COLUMNS)
        return {
            c: self._ledger_state(row[5 + width * i : 5 + width * (i + 1)]) for i, c in enumerate(CHANNELS)
        }

    def _ledger_state(self, columns: tuple[Any, ...]) -> _LedgerState:
        """One ledger row's :data:`_LEDGER_COLUMNS`, as read."""
        state, sends, sent_at, failures, requested_at, uncertain, error = columns
        parse = self.warehouse.parse_ts
        counts = (int(sends or 0), parse(sent_at), int(failures or 0), parse(requested_at))
        return _LedgerState(state, *counts, bool(uncertain), error)

    @staticmethod
    def _verified(row: tuple[Any, ...]) -> set[Channel]:
        """The channels the snapshot reports verified, from the columns after the ledger's."""
        status, *required = row[_SNAPSHOT_AT : _SNAPSHOT_AT + 1 + len(CHANNELS)]
        return {c for c, req in zip(CHANNELS, required, strict=True) if snapshot_verified(status, req)}

    def _plan_user(self, row: tuple[Any, ...]) -> bool:
        """Decide one user's work (one row of :func:`planning_query`); False once ``max_users`` is reached."""
        config = self.config
        user_id, rows, account_type, email, phone = row[:5]
        rows = int(rows)
        self.counts["source_rows"] += rows
        ledger = self._ledger_states(row)
        blank = not as_text(user_id).strip()
        checked = (
            validate_row(user_id, account_type, email, phone)
            if rows == 1 or blank
            else f"user_id appears {rows} times in the source"
        )
        if not isinstance(checked, SourceUser):
            # The row keeps its account type when that part of it was valid: the page counts it there.
            kind = as_text(account_type).strip().lower()
            known = kind if kind in ACCOUNT_TYPES else None
            self._reject(
                user_id, checked, rows=rows, keep_state=ledger[REJECTED_CHANNEL].state, account_type=known
            )
            return True
        user = checked
        self._why_due = []
        due: list[str] = []
        # Registering sends the first email code: only in runs that send email codes.
        if self.source.registration is not None and REGISTRATION_SENDS in config.channels:
            keep = ledger[REJECTED_CHANNEL].state
            registering = self._register(user, row, as_text(email), as_text(phone), keep_state=keep)
            if registering is None:
                return True  # rejected for its registration fields, or refused by sFOX as they are
            due = registering
        self.counts["valid_users"] += 1
        verified = self._verified(row)
        for channel in channels_for(user.account_type) if not due else ():
            before = prerequisite(user.account_type, channel)
            if before is not None and before not in verified:
                if channel in config.channels:
                    self.counts[f"awaiting_{before}_verification"] += 1
                continue  # e.g. sms waits until sFOX reports the email verified
            if channel in config.channels:
                due += self._decide(user, channel, ledger[channel], channel in verified)
        if not due:
            return True
        if config.max_users is not None and self._due_users() >= config.max_users:
            self.counts["deferred_by_max_users"] += 1
            return False
        self.counts.update(self._why_due)
        chunk = self.chunkers[AccountType(user.account_type)].add(due)
        for due_channel in due:
            self.counts[due_key(user.account_type, due_channel)] += 1
            self._write(user.user_id, due_channel, user.account_type, LedgerState.QUEUED, chunk, None)
        return True

    def _register(
        self, user: SourceUser, row: tuple[Any, ...], email: str, phone: str, *, keep_state: str | None
    ) -> list[str] | None:
        """
        A user with registration on: ``[registration]`` when it is due (its email code comes
        with it), ``[]`` when sFOX lists it or it is registered (its channels are planned as
        usual), ``None`` when nothing is due: its registration fields are rejected (recorded
        so), sFOX refused these same fields, or its failed tries wait or were given up.
        """
        listed, last_hmac, unsettled = row[_REGISTRATION_AT : _REGISTRATION_AT + 3]
        ledger = self._ledger_state(row[_REGISTRATION_AT + 3 : _REGISTRATION_AT + 3 + len(_LEDGER_COLUMNS)])
        state, values = ledger.state, row[_REGISTRATION_AT + 3 + len(_LEDGER_COLUMNS) :]
        registration = self.source.registration
        if listed and unsettled and state not in (None, LedgerState.REGISTERED):
            # Our post may have created it (a lost answer, a killed step): the step's read settles
            # it, and records the email code sFOX sent then, instead of an email request now.
            return self._due(Channel.REGISTRATION, "settle")
        if listed and state not in (None, LedgerState.REGISTERED):  # registered by someone else
            self.counts[f"marked_{LedgerState.REGISTERED}"] += 1
            marked = (LedgerState.REGISTERED, None, "sFOX lists the user")
            self._write(user.user_id, Channel.REGISTRATION, user.account_type, *marked)
        if listed or state == LedgerState.REGISTERED or registration is None:
            return []
        body = checked_payload(
            registration,
            user_id=user.user_id,
            account_type=user.account_type,
            email=email,
            phone_number=phone or None,
            values=dict(zip(registration.columns(), values, strict=True)),
            today=self.now.date(),
        )
        if isinstance(body, str):
            self._reject(user.user_id, body, rows=1, keep_state=keep_state, account_type=user.account_type)
            return None
        if self._redriven(ledger):
            return self._due(Channel.REGISTRATION, "redrive")
        if state not in (LedgerState.FAILED, LedgerState.GAVE_UP):
            return [str(Channel.REGISTRATION)]
        if last_hmac is None:  # no refusal: its own 5xx kept coming, a failure like any channel's
            due = self._retry(user, Channel.REGISTRATION, ledger) if state == LedgerState.FAILED else []
        elif fields_hmac(body, self.registration_key) != last_hmac:
            due = self._due(Channel.REGISTRATION, "changed")
        else:  # sFOX refused these very fields: again only once they change (no code either)
            self.counts["registration_refused_unchanged"] += 1
            due = []
        if not due:
            self.counts["valid_users"] += 1
        return due or None

    def _decide(self, user: SourceUser, channel: str, ledger: _LedgerState, verified: bool) -> list[str]:
        """Return ``[channel]`` when a code is due, recording what sFOX already reports."""
        if verified:
            target = (
                LedgerState.VERIFIED if ledger.state == LedgerState.SENT else LedgerState.ALREADY_VERIFIED
            )
            if ledger.state not in VERIFIED_STATES:
                self.counts[f"marked_{target}"] += 1
                self._write(user.user_id, channel, user.account_type, target, None, None)
            return []
        if self._redriven(ledger):
            return self._due(channel, "redrive")
        if ledger.state in REDRIVE_ONLY_STATES:
            return []
        if ledger.state in FAILED_STATES:
            return self._retry(user, channel, ledger)
        if ledger.state not in DONE_STATES:
            return [str(channel)]
        resend_after = timedelta(hours=self.config.resend_after_hours)
        if (
            ledger.state == LedgerState.SENT
            and ledger.sends < self.config.max_sends
            and ledger.last_sent_at is not None
            and self.now - ledger.last_sent_at >= resend_after
        ):
            return self._due(channel, "resend")
        return []

    def _due(self, channel: str, why: str) -> list[str]:
        """``[channel]``, counted as ``<why>_<channel>`` once the user is queued (not if deferred)."""
        self._why_due.append(f"{why}_{channel}")
        return [str(channel)]

    def _redriven(self, ledger: _LedgerState) -> bool:
        """Whether the ``redrive`` param queues this channel at once (uncertain: held, or failed ones)."""
        redrive = self.config.redrive
        lost = ledger.state == LedgerState.HELD or (ledger.uncertain and ledger.state in FAILED_STATES)
        uncertain = UNCERTAIN in redrive and lost
        return ledger.state in redrive or bool(uncertain)

    def _retry(self, user: SourceUser, channel: str, ledger: _LedgerState) -> list[str]:
        """A failed or not registered channel: due after its wait, ``gave_up`` after ``max_tries``."""
        failures = max(ledger.failures, 1)  # a failed row has failed at least once
        if failures >= self.config.max_tries:
            self.counts[f"gave_up_{channel}"] += 1
            why = f"gave up after {failures} tries in a row ending {ledger.state}: {ledger.last_error or '-'}"
            self._write(user.user_id, channel, user.account_type, LedgerState.GAVE_UP, None, why[:255])
            return []
        waits = self.config.retry_wait_hours
        # A try is stamped when its request went out, minutes after the run that planned it:
        # RETRY_WAIT_SHARE of the wait lets the hourly run an hour later pick it up.
        wait = timedelta(hours=float(waits[min(failures, len(waits)) - 1]) * RETRY_WAIT_SHARE)
        if ledger.last_request_at is not None and self.now - ledger.last_request_at < wait:
            self.counts[f"retry_waiting_{channel}"] += 1
            return []
        return self._due(channel, "retry")

    def _reject(
        self, raw_id: object, reason: str, *, rows: int, keep_state: str | None, account_type: str | None
    ) -> None:
        """
        Count one rejected user (one ledger key) and record why; its source rows beyond the first
        are counted as ``duplicate_rows``, so every figure counts users, as the ledger does.
        """
        key = ledger_key(raw_id)
        if key == _EMPTY_KEY:  # NULL, '' and '  ' are spellings of one empty id: one ledger row
            if self._empty_seen:
                self.counts["duplicate_rows"] += rows
                return
            self._empty_seen = True
        self.counts["duplicate_rows"] += rows - 1
        self.counts["rejected"] += 1
        # A row rejected by an earlier run (and still bad) is reported, not judged again.
        self.counts["rejected_known" if keep_state == LedgerState.REJECTED else "rejected_new"] += 1
        if key != as_text(raw_id) and keep_state is None and self._with_ledger:
            # Its ledger row is keyed by a stand-in the source join cannot find: looked up in
            # batches before the next write.
            self._stand_ins.append(key)
        if len(self.reasons) < _MAX_REASONS or reason in self.reasons:
            self.reasons[reason] += 1
        else:
            self.reasons["other"] += 1
        if keep_state in DONE_STATES:
            return  # a code already went out: keep that record, the report counts the rejection
        if not as_text(raw_id).strip():
            reason = "user_id is empty (every such row shares this one ledger row)"
        self._write(key, REJECTED_CHANNEL, account_type, LedgerState.REJECTED, None, reason)

    def _write(
        self,
        user_id: str,
        channel: str,
        account_type: str | None,
        state: str,
        chunk: int | None,
        error: str | None,
    ) -> None:
        if not self.config.dry_run:
            # Plain text for the driver: the enums are str subclasses, which some drivers refuse.
            row = (str(user_id), str(channel), account_type and str(account_type), str(state))
            self._writes.append((*row, chunk, error))

    def _flush(self, writer: Any, *, force: bool) -> None:
        if self._stand_ins and (force or len(self._stand_ins) >= _WRITE_BATCH or self._writes):
            known = self.warehouse.rejected_already(writer, self._stand_ins)
            moved = sum(1 for key in self._stand_ins if key in known)
            self.counts["rejected_new"] -= moved
            self.counts["rejected_known"] += moved
            self._stand_ins = []
        if self._writes and (force or len(self._writes) >= _WRITE_BATCH):
            self.warehouse.upsert_plan(writer, self._writes, run=self.run)
            writer.commit()
            self._writes = []

    def _due_users(self) -> int:
        return sum(c.users for c in self.chunkers.values())

    def _result(self) -> Plan:
        counts: dict[str, Any] = {
            key: self.counts.get(key, 0)
            for key in ("source_rows", "valid_users", "rejected", "duplicate_rows")
        }
        counts.update({k: v for k, v in sorted(self.counts.items()) if k not in counts})
        counts["planned_users"] = self._due_users()
        counts["rejected_reasons"] = dict(self.reasons.most_common())
        counts["dry_run"] = self.config.dry_run
        chunks = (
            []
            if self.config.dry_run
            else _descriptors(
                list(self.chunkers.values()),
                self.config.max_chunks,
                hold_uncertain=self.config.hold_uncertain,
            )
        )
        return Plan(chunks=chunks, counts=counts)
