"""
Planning: which users need which code, written to the ledger as ``queued`` work in chunks.

The planner streams the source table joined with the ledger, ordered by user_id (so
duplicates are adjacent and memory does not grow with the table), asks sFOX once for the
state of every end user (one ``GET /v1/enterprise/users``), validates each row and decides:

- email is due for a valid user without a successful email request (``sent``,
  ``already_verified`` or ``verified``), or whose code is still unverified after
  ``resend_after_hours`` and who has had fewer than ``max_sends`` codes;
- sms is due for an individual whose email sFOX reports verified and whose phone is still
  required, under the same rules;
- a channel sFOX reports verified is marked so without any request.

Due work is cut into chunks of ``chunk_size`` users of one account type; what the DAG maps
over are small descriptors of chunk ranges, never rows.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow_sfox.onboarding.validation import ACCOUNT_TYPES, SourceUser, as_text, ledger_key, validate_row
from airflow_sfox.onboarding.warehouse import DONE_STATES, USER_ID_COLUMN_LENGTH, check_identifier, utcnow

if TYPE_CHECKING:
    from collections.abc import Iterable

    from airflow_sfox.hooks.sfox import SfoxConnectHook
    from airflow_sfox.onboarding.warehouse import Warehouse

CHANNELS = ("email", "sms")
SOURCE_COLUMNS = ("user_id", "account_type", "email", "phone_number")
#: Ledger writes buffered before one commit while planning.
_WRITE_BATCH = 1000
#: Distinct rejection reasons reported (the rest are counted as "other").
_MAX_REASONS = 20


@dataclass
class OnboardingConfig:
    """
    The settings of one onboarding run (the DAG's params).

    :param source_table: table (or ``schema.table``) holding the users.
    :param source_query: a SELECT to use instead of ``source_table``.
    :param columns: source column for each of ``user_id``, ``account_type``, ``email``,
        ``phone_number`` when they are named differently.
    :param channels: which verifications to send.
    :param user_ids: only these users (``None``: everyone).
    :param max_users: at most this many users get a request in this run.
    :param chunk_size: users per chunk.
    :param max_chunks: most chunk descriptors (mapped task instances) per run; larger plans
        give each descriptor several chunks.
    :param resend_after_hours: resend a code still unverified after this long.
    :param max_sends: never send more codes than this per user and channel.
    :param failure_threshold: the run fails when failed plus rejected exceed this share.
    :param dry_run: plan and report, write and send nothing.
    """

    source_table: str = "sfox_users"
    source_query: str | None = None
    columns: dict[str, str] = field(default_factory=dict)
    channels: list[str] = field(default_factory=lambda: list(CHANNELS))
    user_ids: list[str] | None = None
    max_users: int | None = None
    chunk_size: int = 500
    max_chunks: int = 256
    resend_after_hours: float = 48.0
    max_sends: int = 3
    failure_threshold: float = 0.05
    dry_run: bool = False

    def __post_init__(self) -> None:
        check_identifier(self.source_table, "source_table")
        for logical, column in self.columns.items():
            if logical not in SOURCE_COLUMNS:
                raise ValueError(f"columns: unknown key {logical!r}; expected one of {SOURCE_COLUMNS}")
            check_identifier(column, f"columns[{logical!r}]")
        unknown = set(self.channels) - set(CHANNELS)
        if unknown or not self.channels:
            raise ValueError(f"channels must be a non-empty subset of {CHANNELS}, got {self.channels!r}")
        for name in ("chunk_size", "max_chunks", "max_sends"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.max_users is not None and self.max_users < 0:
            raise ValueError(f"max_users must be >= 0, got {self.max_users!r}")
        if self.resend_after_hours < 0:
            raise ValueError(f"resend_after_hours must be >= 0, got {self.resend_after_hours!r}")
        if not 0 <= self.failure_threshold <= 1:
            raise ValueError(f"failure_threshold must be between 0 and 1, got {self.failure_threshold!r}")
        if self.user_ids is not None:
            self.user_ids = [str(u) for u in self.user_ids]

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> OnboardingConfig:
        """Build from DAG params, ignoring params that are not settings of the run."""
        names = set(cls.__dataclass_fields__)
        values = {key: value for key, value in params.items() if key in names}
        for key in ("user_ids", "max_users", "source_query"):
            if values.get(key) in ("", [], None):
                values[key] = None
        return cls(**values)

    def column(self, logical: str) -> str:
        """The source column of a logical column."""
        return self.columns.get(logical, logical)


@dataclass
class SfoxDirectory:
    """What sFOX reports about end users: who has verified which channel."""

    email_verified: set[str] = field(default_factory=set)
    sms_verified: set[str] = field(default_factory=set)

    @classmethod
    def from_users(cls, users: Iterable[Mapping[str, Any]]) -> SfoxDirectory:
        """
        Read ``requirements`` (``true`` = still required) of sFOX user objects, tolerantly.

        :param users: the ``data`` of ``GET /v1/enterprise/users``.
        """
        directory = cls()
        for user in users:
            user_id = user.get("user_id")
            if user_id is None:
                continue
            user_id = str(user_id)
            requirements = user.get("requirements")
            verified_user = str(user.get("status", "")).upper() == "VERIFIED"
            if isinstance(requirements, Mapping):
                if requirements.get("email") is False or verified_user:
                    directory.email_verified.add(user_id)
                if requirements.get("sms") is False or verified_user:
                    directory.sms_verified.add(user_id)
            elif verified_user:
                directory.email_verified.add(user_id)
                directory.sms_verified.add(user_id)
        return directory


@dataclass
class _LedgerState:
    state: str | None
    sends: int
    last_sent_at: datetime | None


@dataclass
class Plan:
    """What a run will do: chunk descriptors for the DAG and counts for the report."""

    chunks: list[dict[str, Any]]
    counts: dict[str, Any]

    def as_xcom(self) -> dict[str, Any]:
        """A small JSON-ready dict (no rows, no personal data)."""
        return asdict(self)


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


def _same_user(a: object, b: object) -> bool:
    """Whether two adjacent source ids are one user (empty ids never are: each row is its own)."""
    if a is None or b is None or not as_text(a).strip():
        return False
    return as_text(a) == as_text(b)


def _descriptors(chunkers: list[_Chunker], max_chunks: int) -> list[dict[str, Any]]:
    total = sum(len(c.per_chunk) for c in chunkers)
    group = max(1, math.ceil(total / max_chunks))
    out: list[dict[str, Any]] = []
    for chunker in chunkers:
        for first in range(0, len(chunker.per_chunk), group):
            last = min(first + group, len(chunker.per_chunk)) - 1
            start = first * chunker.size + 1
            end = min((last + 1) * chunker.size, chunker.users)
            counts: Counter[str] = Counter()
            for c in chunker.per_chunk[first : last + 1]:
                counts.update(c)
            out.append(
                {
                    "account_type": chunker.account_type,
                    "chunks": [first, last],
                    "label": f"{chunker.account_type} {start}-{end}",
                    "users": end - start + 1,
                    "email": counts["email"],
                    "sms": counts["sms"],
                }
            )
    return out


def _source_sql(
    config: OnboardingConfig, warehouse: Warehouse, *, with_ledger: bool
) -> tuple[str, list[Any]]:
    cols = ", ".join(f"src.{config.column(c)} AS {c}" for c in SOURCE_COLUMNS)
    source = f"({config.source_query})" if config.source_query else config.source_table
    key = f"CAST(s.user_id AS VARCHAR({USER_ID_COLUMN_LENGTH}))"
    ledger = warehouse.ledger
    if with_ledger:
        sql = (
            f"SELECT s.user_id, s.account_type, s.email, s.phone_number, "
            f"e.state, e.sends, e.last_sent_at, m.state, m.sends, m.last_sent_at "
            f"FROM (SELECT {cols} FROM {source} src) s "
            f"LEFT JOIN {ledger} e ON e.user_id = {key} AND e.channel = 'email' "
            f"LEFT JOIN {ledger} m ON m.user_id = {key} AND m.channel = 'sms'"
        )
    else:  # a dry run before the first real run: no ledger yet, nothing sent yet
        sql = (
            f"SELECT s.user_id, s.account_type, s.email, s.phone_number, "
            f"NULL, NULL, NULL, NULL, NULL, NULL FROM (SELECT {cols} FROM {source} src) s"
        )
    params: list[Any] = []
    if config.user_ids is not None:
        if not config.user_ids:
            sql += " WHERE 1 = 0"
        else:
            sql += f" WHERE {key} IN ({', '.join([warehouse.ph] * len(config.user_ids))})"
            params.extend(config.user_ids)
    return sql + " ORDER BY s.user_id", params


class Planner:
    """
    Plans one run: see the module docstring.

    :param warehouse: the warehouse holding the source and the ledger.
    :param sfox: the hook used for the one bulk read of sFOX's end users.
    :param config: the run's settings.
    :param run_id: the Airflow run id, recorded in the ledger.
    :param now: the planning time (injectable for tests of the resend policy).
    """

    def __init__(
        self,
        warehouse: Warehouse,
        sfox: SfoxConnectHook,
        config: OnboardingConfig,
        *,
        run_id: str,
        now: datetime | None = None,
    ) -> None:
        self.warehouse = warehouse
        self.sfox = sfox
        self.config = config
        self.run_id = run_id
        self.now = now or utcnow()
        self.chunkers = {kind: _Chunker(kind, config.chunk_size) for kind in ACCOUNT_TYPES}
        self.counts: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self._writes: list[tuple[Any, ...]] = []

    def plan(self) -> Plan:
        """Plan the run, write it to the ledger (unless dry run), return the descriptors."""
        config = self.config
        if not config.dry_run:
            self.warehouse.create_tables()
        directory = SfoxDirectory.from_users(self.sfox.list_users())
        with_ledger = not config.dry_run or self.warehouse.has_ledger()
        sql, params = _source_sql(config, self.warehouse, with_ledger=with_ledger)
        with self.warehouse.connect() as reader, self.warehouse.connect() as writer:
            group: list[tuple[Any, ...]] = []
            for row in self.warehouse.stream(reader, sql, params):
                if group and not _same_user(row[0], group[0][0]):
                    if not self._plan_user(group, directory):
                        break
                    group = []
                    self._flush(writer, force=False)
                group.append(row)
            else:
                if group:
                    self._plan_user(group, directory)
            self._flush(writer, force=True)
        return self._result()

    def _plan_user(self, rows: list[tuple[Any, ...]], directory: SfoxDirectory) -> bool:
        """Decide one user's work; return False once ``max_users`` is reached."""
        config = self.config
        self.counts["source_rows"] += len(rows)
        raw_id, account_type, email, phone = rows[0][:4]
        email_state = _LedgerState(rows[0][4], int(rows[0][5] or 0), self.warehouse.parse_ts(rows[0][6]))
        sms_state = _LedgerState(rows[0][7], int(rows[0][8] or 0), self.warehouse.parse_ts(rows[0][9]))
        checked = (
            validate_row(raw_id, account_type, email, phone)
            if len(rows) == 1
            else f"user_id appears {len(rows)} times in the source"
        )
        if not isinstance(checked, SourceUser):
            self._reject(raw_id, checked, rows=len(rows), keep_state=email_state.state)
            return True
        user = checked
        self.counts["valid_users"] += 1

        due: list[str] = []
        if "email" in config.channels:
            due += self._decide(user, "email", email_state, user.user_id in directory.email_verified)
        if (
            "sms" in config.channels
            and user.account_type == "individual"
            and user.user_id in directory.email_verified
        ):
            due += self._decide(user, "sms", sms_state, user.user_id in directory.sms_verified)
        if not due:
            return True
        if config.max_users is not None and self._due_users() >= config.max_users:
            self.counts["deferred_by_max_users"] += 1
            return False
        chunk = self.chunkers[user.account_type].add(due)
        for channel in due:
            self.counts[f"due_{user.account_type}_{channel}"] += 1
            self._write(user.user_id, channel, user.account_type, "queued", chunk, None)
        return True

    def _decide(self, user: SourceUser, channel: str, ledger: _LedgerState, verified: bool) -> list[str]:
        """Return ``[channel]`` when a code is due, recording what sFOX already reports."""
        if verified:
            target = "verified" if ledger.state == "sent" else "already_verified"
            if ledger.state not in ("verified", "already_verified"):
                self.counts[f"marked_{target}"] += 1
                self._write(user.user_id, channel, user.account_type, target, None, None)
            return []
        if ledger.state not in DONE_STATES:
            return [channel]
        resend_after = timedelta(hours=self.config.resend_after_hours)
        if (
            ledger.state == "sent"
            and ledger.sends < self.config.max_sends
            and ledger.last_sent_at is not None
            and self.now - ledger.last_sent_at >= resend_after
        ):
            self.counts[f"resend_{channel}"] += 1
            return [channel]
        return []

    def _reject(self, raw_id: object, reason: str, *, rows: int, keep_state: str | None) -> None:
        self.counts["rejected"] += rows
        if len(self.reasons) < _MAX_REASONS or reason in self.reasons:
            self.reasons[reason] += rows
        else:
            self.reasons["other"] += rows
        if keep_state in DONE_STATES:
            return  # a code already went out: keep that record, the report counts the rejection
        if not as_text(raw_id).strip():
            reason = "user_id is empty (every such row is counted in the run's rejected rows)"
        self._write(ledger_key(raw_id), "email", None, "rejected", None, reason)

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
            self._writes.append((user_id, channel, account_type, state, self.run_id, chunk, error))

    def _flush(self, writer: Any, *, force: bool) -> None:
        if self._writes and (force or len(self._writes) >= _WRITE_BATCH):
            self.warehouse.upsert_plan(writer, self._writes)
            writer.commit()
            self._writes = []

    def _due_users(self) -> int:
        return sum(c.users for c in self.chunkers.values())

    def _result(self) -> Plan:
        counts: dict[str, Any] = {
            key: self.counts.get(key, 0) for key in ("source_rows", "valid_users", "rejected")
        }
        counts.update({k: v for k, v in sorted(self.counts.items()) if k not in counts})
        counts["planned_users"] = self._due_users()
        counts["rejected_reasons"] = dict(self.reasons.most_common())
        counts["dry_run"] = self.config.dry_run
        chunks = (
            [] if self.config.dry_run else _descriptors(list(self.chunkers.values()), self.config.max_chunks)
        )
        return Plan(chunks=chunks, counts=counts)
