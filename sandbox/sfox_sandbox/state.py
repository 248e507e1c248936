"""In-memory state of the sandbox: users, codes, journal, settings, rate limiter and RNG.

Everything here is plain Python and guarded by one :class:`threading.RLock`
(:attr:`SandboxState.lock`), so a test may read or change the state from its own thread
while the server thread serves requests. Read the journal under the lock, or use
:meth:`SandboxState.journal_entries` which returns a copy.

Memory is bounded per request: the journal (:mod:`sfox_sandbox.journal`) holds the latest
``SandboxConfig.journal_size`` entries (default 1,000,000), and each user's code history
(:mod:`sfox_sandbox.codes`) the latest ``SandboxConfig.code_history_size`` codes (default 20;
counts stay exact). Users themselves are kept until deactivated or reset; generated ones as
ranges (:class:`~sfox_sandbox.users.GeneratedUsers`), built on access. Every route treats
them as it treats seeded users (register-account's per-user_id request counts hold one
number per user_id until reset). sFOX's rules come from :mod:`sfox_sandbox.model`, those of
a registration body from :mod:`sfox_sandbox.registration`.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sfox_sandbox.answers import ApiError, ApiResult, StreamCut, channel_of, must_be
from sfox_sandbox.codes import CodeBook, SentCode
from sfox_sandbox.events import AssetEvents
from sfox_sandbox.journal import Journal, JournalEntry
from sfox_sandbox.listing import LIST_BATCH, LIST_NEXT_KEYS, ListSettings, list_body
from sfox_sandbox.model import (
    ACCOUNT_ROLES,
    ALREADY_VERIFIED,
    CHANNELS,
    CONTACT_FIELDS,
    EMAIL,
    LABELS,
    USER_NOT_FOUND,
    channels_for,
    not_available,
    prerequisite,
    requirements_for,
    verify_first,
)
from sfox_sandbox.outage import Outage
from sfox_sandbox.ratelimit import RateLimiter
from sfox_sandbox.registrar import Registrar
from sfox_sandbox.users import MAX_GENERATED, GeneratedUsers, SandboxUser, user_from_seed

if TYPE_CHECKING:
    from collections import deque
    from collections.abc import Iterable, Iterator

    from sfox_sandbox.config import FaultSettings, RateLimitSettings, SandboxConfig

# Names other modules import from here (the state's parts moved to modules of their own).
__all__ = [
    "LIST_BATCH",
    "LIST_NEXT_KEYS",
    "MAX_GENERATED",
    "ApiError",
    "ApiResult",
    "GeneratedUsers",
    "JournalEntry",
    "ListSettings",
    "RateLimiter",
    "SandboxState",
    "SandboxUser",
    "SentCode",
    "StreamCut",
    "requirements_for",
    "user_from_seed",
]


def _auth_header(token: str) -> bytes:
    """The ``Authorization`` value of ``token`` as the sandbox compares it (scheme lower-cased)."""
    return f"bearer {token}".encode()


class SandboxState:
    """Users, codes, journal, settings, rate limiter and RNG of one sandbox.

    Public attributes (read them under :attr:`lock` when the server runs):

    - ``users``: ``dict[str, SandboxUser]`` by user_id, in insertion order: the seeded and
      registered users; generated ones are in ``generated`` (use :meth:`find_user`,
      :meth:`all_users` and :attr:`user_count` for both);
    - ``generated``: ``list[GeneratedUsers]``, the ranges of :meth:`generate_users`;
    - ``list_settings``: :class:`ListSettings`, pagination of the user list;
    - ``sent_codes``: ``dict[str, deque[SentCode]]`` the latest codes sent, by user_id
      (at most ``config.code_history_size`` each; :meth:`codes_for` has the exact counts);
    - ``journal``: ``deque[JournalEntry]`` the latest ``config.journal_size`` ``/v1/``
      requests, in arrival order, ``seq`` increasing by one from entry to entry;
    - ``faults`` / ``rate_limit``: current :class:`FaultSettings` / :class:`RateLimitSettings`;
    - ``auth_header``: the ``Authorization`` value ``/v1/`` requests must carry, as
      ``b"bearer <token>"`` (see :meth:`set_token`);
    - ``asset_events``: :class:`~sfox_sandbox.events.AssetEvents`, the Airflow asset events
      posted on email confirmations (it has its own lock);
    - ``outage``: the :class:`~sfox_sandbox.outage.Outage` window set, if any (read it with
      :meth:`current_outage`, which forgets one that ended);
    - ``unprocessable``: ``(user_id, channel)`` -> the 422 text its send-verification gets;
    - ``registrar``: :class:`~sfox_sandbox.registrar.Registrar`, register-account with its
      per-user_id request counts, faults and configured answers (under :attr:`lock`).

    :param config: start-up configuration; :meth:`reset` returns to it.
    """

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.lock = threading.RLock()
        self.users: dict[str, SandboxUser] = {}
        self.generated: list[GeneratedUsers] = []
        self.list_settings = ListSettings()
        self.codes = CodeBook(config.code_history_size)
        self._journal = Journal(config.journal_size)
        self.faults: FaultSettings = config.faults
        self.rate_limit: RateLimitSettings = config.rate_limit
        self.limiter = RateLimiter()
        self.rng = random.Random(config.random_seed)  # noqa: S311 - seedable test RNG, not crypto
        self.auth_header = _auth_header(config.token)
        self.asset_events = AssetEvents(config.asset_events)
        self.outage: Outage | None = None
        # (user_id, channel) -> the 422 text every send-verification of it gets.
        self.unprocessable: dict[tuple[str, str], str] = {}
        self.registrar = Registrar(config, self.lock)
        self.reset()

    # ----------------------------------------------------------------- admin side
    def reset(self) -> None:
        """Return to the start state: seed users, no codes, empty journal and windows,
        start-up token, faults, rate limit and asset-event settings (nothing queued, zero
        counters), RNG re-seeded."""
        seeds = [user_from_seed(obj) for obj in self.config.seed_users]
        with self.lock:
            self.users = {}
            self.generated = []
            self.list_settings = ListSettings()
            for user in seeds:
                self.users[user.user_id] = user
            self.codes = CodeBook(self.config.code_history_size)
            self._journal = Journal(self.config.journal_size)
            self.faults = self.config.faults
            self.rate_limit = self.config.rate_limit
            self.limiter.clear()
            self.rng.seed(self.config.random_seed)
            self.auth_header = _auth_header(self.config.token)
            self.asset_events.reset(self.config.asset_events)
            self.outage = None
            self.unprocessable = {}
            self.registrar.reset()

    def set_token(self, token: str) -> None:
        """Change the Enterprise token at run time: later ``/v1/`` requests with the old one
        get 401, as sFOX answers a revoked key. :meth:`reset` restores the start-up token.

        :param token: the new token.
        :raises ValueError: when it is not a non-empty string of visible characters.
        """
        if (
            not isinstance(token, str)
            or not token
            or not all(c.isprintable() and not c.isspace() for c in token)
        ):
            raise ValueError("token must be a non-empty string without spaces or control characters")
        with self.lock:
            self.auth_header = _auth_header(token)

    def seed_users(self, objs: Iterable[Mapping[str, Any]]) -> int:
        """Add or replace users from seed objects (all or none); return how many.

        :param objs: seed objects, see :func:`user_from_seed`.
        :raises ValueError: naming the index of the first invalid object.
        """
        users = []
        for index, obj in enumerate(objs):
            if not isinstance(obj, Mapping):
                raise ValueError(f"user #{index}: must be an object")
            try:
                users.append(user_from_seed(obj))
            except ValueError as exc:
                raise ValueError(f"user #{index}: {exc}") from None
        with self.lock:
            for user in users:
                self.store_user(user)
        return len(users)

    def store_user(self, user: SandboxUser) -> None:
        """Add or replace a user, in its generated range when it belongs to one. Hold the lock."""
        for block in self.generated:
            offset = block.offset_of(user.user_id)
            if offset is not None:
                block.changed[offset] = user
                return
        self.users[user.user_id] = user

    def generate_users(
        self,
        count: int,
        *,
        prefix: str = "user-",
        individual_share: float = 0.7,
        email_verified_share: float = 0.33,
        start: int = 0,
    ) -> GeneratedUsers:
        """Add ``count`` synthetic users ``{prefix}{start}`` .. ``{prefix}{start+count-1}``.

        Kept as one :class:`GeneratedUsers` range (O(1) memory until users change).

        :raises ValueError: an invalid argument, or a range that could share a user_id with
            an earlier range (same prefix and overlapping numbers, or nested prefixes) or
            with a seeded user.
        """
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_GENERATED:
            raise ValueError(f"count must be an integer from 1 to {MAX_GENERATED}")
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise ValueError("start must be a non-negative integer")
        if not isinstance(prefix, str) or not prefix or not prefix.isprintable():
            raise ValueError("prefix must be a non-empty string of printable characters")
        shares = {"individual_share": individual_share, "email_verified_share": email_verified_share}
        for name, share in shares.items():
            if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
                raise ValueError(f"{name} must be a number from 0 to 1")
        block = GeneratedUsers(prefix, start, count, float(individual_share), float(email_verified_share))
        with self.lock:
            for other in self.generated:
                if block.overlaps(other):
                    raise ValueError(
                        f"users {prefix}{start}.. could collide with the range {other.prefix}..."
                    )
            for user_id in self.users:
                if block.offset_of(user_id) is not None:
                    raise ValueError(f"user {user_id!r} exists already")
            self.generated.append(block)
        return block

    @property
    def user_count(self) -> int:
        """How many users the sandbox knows, seeded, registered and generated."""
        with self.lock:
            return len(self.users) + sum(block.count for block in self.generated)

    def find_user(self, user_id: str) -> SandboxUser | None:
        """The user ``user_id`` (a generated one is built, not stored), or ``None``."""
        with self.lock:
            user = self.users.get(user_id)
            if user is not None:
                return user
            for block in self.generated:
                offset = block.offset_of(user_id)
                if offset is not None:
                    return block.get(offset)
        return None

    def all_users(self) -> Iterator[SandboxUser]:
        """Every user in list order: seeded and registered ones, then each generated range."""
        with self.lock:
            explicit = list(self.users.values())
            blocks = list(self.generated)
        yield from explicit
        for block in blocks:
            for offset in range(block.count):
                with self.lock:
                    user = block.get(offset)
                yield user

    def set_list(self, changes: Mapping[str, Any]) -> ListSettings:
        """Apply a partial update of the list's pagination; return the new settings.

        :raises ValueError: on an invalid change (nothing is applied).
        """
        with self.lock:
            self.list_settings = self.list_settings.updated(changes)
            return self.list_settings

    def set_faults(self, changes: Mapping[str, Any]) -> FaultSettings:
        """Apply a partial fault update; return the new settings.

        :param changes: field name to value (see :class:`FaultSettings`).
        :raises ValueError: on an invalid change (nothing is applied).
        """
        with self.lock:
            self.faults = self.faults.updated(changes)
            return self.faults

    def set_rate_limit(self, changes: Mapping[str, Any]) -> RateLimitSettings:
        """Apply a partial rate-limit update; return the new settings.

        :param changes: field name to value (see :class:`RateLimitSettings`).
        :raises ValueError: on an invalid change (nothing is applied).
        """
        with self.lock:
            self.rate_limit = self.rate_limit.updated(changes)
            return self.rate_limit

    def set_outage(self, seconds: float, mode: str = "503") -> Outage:
        """Start an outage window of ``seconds`` sandbox seconds (scaled by the rate limit's
        ``time_scale``); it replaces any current one (see :mod:`sfox_sandbox.outage`).

        :raises ValueError: ``seconds`` not > 0, or ``mode`` not ``503`` / ``refuse``.
        """
        with self.lock:
            self.outage = Outage.start(seconds, mode, time_scale=self.rate_limit.time_scale)
            return self.outage

    def clear_outage(self) -> None:
        """End the outage window now, if one is open."""
        with self.lock:
            self.outage = None

    def current_outage(self) -> Outage | None:
        """The outage window open now, or ``None`` (an ended one is forgotten)."""
        with self.lock:
            if self.outage is not None and not self.outage.active():
                self.outage = None
            return self.outage

    def set_unprocessable(self, user_id: str, channel: str, text: str) -> dict[str, Any]:
        """Answer every send-verification of ``user_id`` and ``channel`` with 422 ``text``
        until cleared or reset; return :meth:`unprocessable_for`.

        :raises ApiError: 404 for an unknown user.
        :raises ValueError: an unknown channel, or ``text`` not a string.
        """
        if channel not in CHANNELS:
            raise ValueError(must_be("type", CHANNELS))
        if not isinstance(text, str):
            raise ValueError("error must be a string")
        with self.lock:
            self._user(user_id)
            self.unprocessable[(user_id, channel)] = text
            return self.unprocessable_for(user_id)

    def clear_unprocessable(self, user_id: str, channel: str | None = None) -> dict[str, Any]:
        """Stop :meth:`set_unprocessable` for one channel (``None``: both) of ``user_id``.

        :raises ValueError: an unknown channel.
        """
        if channel is not None and channel not in CHANNELS:
            raise ValueError(must_be("type", CHANNELS))
        with self.lock:
            for each in CHANNELS if channel is None else (channel,):
                self.unprocessable.pop((user_id, each), None)
            return self.unprocessable_for(user_id)

    def unprocessable_for(self, user_id: str) -> dict[str, Any]:
        """``{"user_id", "email": text or None, "sms": text or None}``."""
        with self.lock:
            return {"user_id": user_id, **{c: self.unprocessable.get((user_id, c)) for c in CHANNELS}}

    def reseed(self, seed: int | None) -> None:
        """Re-seed the RNG (codes, tokens, fault draws).

        :param seed: new seed, ``None`` for a random one.
        """
        with self.lock:
            self.rng.seed(seed)

    @property
    def sent_codes(self) -> dict[str, deque[SentCode]]:
        """The latest codes sent, by user_id (see :class:`~sfox_sandbox.codes.CodeBook`)."""
        return self.codes.sent

    @property
    def journal(self) -> deque[JournalEntry]:
        """The live journal: the latest ``config.journal_size`` ``/v1/`` requests, in order."""
        return self._journal.entries

    def codes_for(self, user_id: str) -> dict[str, Any]:
        """Return latest code and count per channel for one user.

        Shape: ``{"user_id", "email": {"latest", "count", "sent_at"}, "sms": {...},
        "history": [{"type", "code", "time"}]}``. ``count``, ``latest`` and ``sent_at`` are
        exact; ``history`` holds the latest ``config.code_history_size`` codes, oldest first.

        :param user_id: decoded user id.
        """
        with self.lock:
            return self.codes.summary(user_id)

    def journal_entries(self, since: int = 0, user_id: str | None = None) -> list[JournalEntry]:
        """Return a copy of the journal (the entries still kept, see ``journal_size``).

        :param since: keep entries whose ``seq`` is greater than this; costs O(entries
            returned), not O(journal size).
        :param user_id: keep entries of this decoded user id only.
        """
        with self.lock:
            entries = self._journal.since(since)
        if user_id is not None:
            entries = [e for e in entries if e.user_id == user_id]
        return entries

    def clear_journal(self) -> None:
        """Empty the journal (sequence numbers start again at 1)."""
        with self.lock:
            self._journal = Journal(self.config.journal_size)

    def record(self, **entry: Any) -> JournalEntry:
        """Append one journal entry under the lock (the keyword fields of
        :meth:`~sfox_sandbox.journal.Journal.record`; cheap: one deque append, and when the
        journal is full the oldest entry is dropped)."""
        with self.lock:
            return self._journal.record(**entry)

    # ------------------------------------------------------------ emulated API
    def _user(self, user_id: str, *, for_update: bool = False) -> SandboxUser:
        """The user ``user_id`` (404 if unknown); ``for_update`` stores a generated one, so that
        changes to the returned object last."""
        user = self.users.get(user_id)
        if user is not None:
            return user
        for block in self.generated:
            offset = block.offset_of(user_id)
            if offset is not None:
                user = block.get(offset)
                if for_update:
                    block.changed[offset] = user
                return user
        raise ApiError(404, USER_NOT_FOUND)

    def send_code(self, user_id: str, channel: str) -> str:
        """Send (record) a new 6-digit code of ``channel`` to ``user_id``; return it. Hold the lock."""
        code = f"{self.rng.randrange(1_000_000):06d}"
        self.codes.add(user_id, channel, code)
        return code

    def register_account(self, body: Mapping[str, Any]) -> ApiResult:
        """``POST /v1/enterprise/register-account`` (see :mod:`sfox_sandbox.registrar`)."""
        return self.registrar.register(self, body)

    def send_verification(self, user_id: str, body: Mapping[str, Any]) -> ApiResult:
        """``POST /v1/enterprise/users/send-verification/{user_id}``."""
        channel = channel_of(body)
        with self.lock:
            user = self._user(user_id)
            chosen = self.unprocessable.get((user_id, channel))
            if chosen is not None:
                raise ApiError(422, chosen, fault="unprocessable")
            self._check_channel(user, channel)
            before = prerequisite(user.account_type, channel)
            if before is not None and user.requirements[before]:
                raise ApiError(422, verify_first(before, channel))
            key = CONTACT_FIELDS[channel]
            target = getattr(user, key)
            if not target:
                raise ApiError(422, f"User has no {LABELS[channel].lower()}")
            self.send_code(user_id, channel)
        return ApiResult(200, {"data": {"user_id": user_id, "type": channel, key: target}}, code_sent=True)

    @staticmethod
    def _check_channel(user: SandboxUser, channel: str) -> None:
        if channel not in channels_for(user.account_type):
            raise ApiError(400, not_available(channel, user.account_type))
        if not user.requirements[channel]:
            raise ApiError(422, ALREADY_VERIFIED[channel])

    def verify(self, user_id: str, body: Mapping[str, Any]) -> ApiResult:
        """``POST /v1/enterprise/users/verify/{user_id}``: a wrong or unknown otp is 422."""
        channel = channel_of(body)
        otp = body.get("otp")
        if not isinstance(otp, str) or not otp:
            raise ApiError(400, "otp is required and must be a string")
        with self.lock:
            user = self._user(user_id, for_update=True)
            self._check_channel(user, channel)
            expected = self.codes.pending(user_id, channel)
            if expected is None:
                raise ApiError(422, "No verification code was requested")
            if otp != expected:
                raise ApiError(422, "Invalid verification code")
            self.codes.use(user_id, channel)
            user.requirements[channel] = False
            if channel == EMAIL:
                # Queued under the state lock, so events follow the confirmation order.
                self.asset_events.confirmed(user_id)
        return ApiResult(200, {"data": {"success": True, "user_id": user_id, "type": channel}})

    def get_user(self, user_id: str) -> ApiResult:
        """``GET /v1/enterprise/users/{user_id}``."""
        with self.lock:
            return ApiResult(200, {"data": self._user(user_id).to_api()})

    def get_users(self, account_role: str | None, cursor: str | None = None) -> ApiResult:
        """``GET /v1/enterprise/users[?accountRole=client|advisor][&cursor=...]``.

        The body is streamed in pieces of :data:`LIST_BATCH` users (the lock is held per
        piece, never across the whole list); pages follow :attr:`list_settings`.
        """
        role = None
        if account_role is not None:
            role = account_role.lower()
            if role not in ACCOUNT_ROLES:
                raise ApiError(400, 'Invalid accountRole: must be "client" or "advisor"')
        with self.lock:
            settings = self.list_settings
            explicit = list(self.users.values())
            blocks = list(self.generated)
        stream = list_body(self.lock, role, explicit, blocks, cursor, settings, account_role)
        return ApiResult(200, {}, stream=stream)
