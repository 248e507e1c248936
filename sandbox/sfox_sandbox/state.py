"""In-memory state of the sandbox: users, verification codes, journal, rate limiter, RNG.

Everything here is plain Python and guarded by one :class:`threading.RLock`
(:attr:`SandboxState.lock`), so a test may read or change the state from its own thread
while the server thread serves requests. Read the journal under the lock, or use
:meth:`SandboxState.journal_entries` which returns a copy.

Memory is bounded per request: the journal is a ``deque`` holding the latest
``SandboxConfig.journal_size`` entries (default 1,000,000), and each user's code history
the latest ``SandboxConfig.code_history_size`` codes (default 20; counts stay exact). Users
themselves are kept until deactivated or reset.

Generated users (:meth:`SandboxState.generate_users`, for tests at 1,000,000 users) are kept
as ranges (:class:`GeneratedUsers`: a prefix, a first number, a count and two shares) and
built on access from their number; only those that change (verified, or replaced by a seed)
are stored as objects. Every route treats them as it treats seeded users.
"""

from __future__ import annotations

import itertools
import json
import random
import re
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from sfox_sandbox.events import AssetEvents
from sfox_sandbox.model import (
    ACCOUNT_ROLES,
    ACCOUNT_TYPES,
    ALREADY_VERIFIED,
    CHANNELS,
    CONTACT_FIELDS,
    EMAIL,
    LABELS,
    SMS,
    USER_NOT_FOUND,
    channels_for,
    not_available,
    prerequisite,
    requirements_for,
    status_of,
    verify_first,
)

if TYPE_CHECKING:
    from sfox_sandbox.config import FaultSettings, RateLimitSettings, SandboxConfig

_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_E164_RE = re.compile(r"^\+[1-9][0-9]{6,14}$")
_TRUE_STRINGS = {"1", "true", "t", "yes", "y"}
_FALSE_STRINGS = {"0", "false", "f", "no", "n", ""}
# Canonical copies of the short strings every journal entry repeats (saves ~100 B an entry).
_SHARED_STRINGS = {s: s for s in ("GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS", *CHANNELS)}


class StreamCut(Exception):
    """Raised by a streamed body to make the server reset the connection there (a fault)."""


class ApiError(Exception):
    """An sFOX-style error answer: HTTP ``status`` and ``{"error": message}``.

    :param status: HTTP status code.
    :param message: text of the ``error`` key.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class SandboxUser:
    """One end user as the sandbox stores it.

    ``requirements[channel]`` is ``True`` while that channel is STILL to be verified (sFOX's
    meaning); ``status`` is ``VERIFIED`` once no requirement is left.
    """

    user_id: str
    account_type: str
    account_role: str = "client"
    email: str | None = None
    phone_number: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    advisor_user_id: str | None = None
    requirements: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(CHANNELS, True))

    @property
    def status(self) -> str:
        """``PENDING`` while a requirement is left, else ``VERIFIED``."""
        return status_of(self.requirements)

    def to_api(self) -> dict[str, Any]:
        """Return the user object as sFOX's API shows it (role capitalised)."""
        return {
            "user_id": self.user_id,
            "account_type": self.account_type,
            "account_role": self.account_role.capitalize(),
            "email": self.email,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "phone_number": self.phone_number,
            "advisor_user_id": self.advisor_user_id,
            "status": self.status,
            "requirements": dict(self.requirements),
        }


@dataclass(slots=True)
class SentCode:
    """One verification code the sandbox "sent"."""

    channel: str
    code: str
    time: float


@dataclass(slots=True)
class JournalEntry:
    """One ``/v1/`` request as the sandbox saw it.

    ``status`` is the HTTP status answered, or ``"reset"`` (connection reset before
    processing) or ``"dropped"`` (processed, then the connection was reset instead of
    answered). ``fault`` names the injected fault, if any (``error_500``, ``error_503``,
    ``reset``, ``hang``, ``drop``). ``type`` is the verification channel of the request body,
    when it had one.
    """

    seq: int
    time: float
    method: str
    path: str
    user_id: str | None
    status: int | str
    code_sent: bool
    type: str | None
    client: str
    fault: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the entry as a JSON-ready dict."""
        return asdict(self)


class RateLimiter:
    """Sliding-window log per client address, with a block once the limit is passed."""

    def __init__(self) -> None:
        self._hits: dict[str, deque[float]] = {}
        self._blocked_until: dict[str, float] = {}

    def clear(self) -> None:
        """Forget every window and block."""
        self._hits.clear()
        self._blocked_until.clear()

    def check(self, key: str, now: float, settings: RateLimitSettings) -> float | None:
        """Count one request; return the seconds left in the block when it must get 429.

        :param key: client address.
        :param now: ``time.monotonic()`` of the request.
        :param settings: current rate-limit settings.
        """
        if settings.limit <= 0:
            return None
        until = self._blocked_until.get(key)
        if until is not None:
            if now < until:
                return until - now
            # Block over: start from an empty window, as after a real 60 s wait.
            del self._blocked_until[key]
            self._hits.pop(key, None)
        hits = self._hits.get(key)
        if hits is None:
            hits = self._hits[key] = deque()
        cutoff = now - settings.window
        while hits and hits[0] <= cutoff:
            hits.popleft()
        if len(hits) >= settings.limit:
            hits.clear()
            self._blocked_until[key] = now + settings.block
            return settings.block
        hits.append(now)
        return None

    def blocked(self, now: float) -> dict[str, float]:
        """Return client address to seconds left, for the blocks still running."""
        return {key: until - now for key, until in self._blocked_until.items() if until > now}


_MASK64 = (1 << 64) - 1


def _unit(number: int, salt: int) -> float:
    """A deterministic draw in [0, 1) for a user number (splitmix64)."""
    x = (number * 0x9E3779B97F4A7C15 + salt) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (x ^ (x >> 31)) / 2.0**64


#: Most users one generate call may create.
MAX_GENERATED = 100_000_000


@dataclass
class GeneratedUsers:
    """A range of synthetic users, kept in O(1) memory and built on access.

    User ``n`` (``start <= n < start + count``) is ``{prefix}{n}`` (no leading zeros), an
    individual with probability ``individual_share`` (else a corporation), email already
    verified with probability ``email_verified_share``; a client, email
    ``{prefix}{n}@example.com``, phone ``+1555`` plus 7 digits for individuals. The draws
    are a hash of ``n``: the same number is always the same user. ``changed`` holds the users
    of the range that changed since (by offset), which then win over the built ones.
    """

    prefix: str
    start: int
    count: int
    individual_share: float
    email_verified_share: float
    changed: dict[int, SandboxUser] = field(default_factory=dict)

    def offset_of(self, user_id: str) -> int | None:
        """The offset of ``user_id`` in this range, or ``None`` when it is not one of it."""
        if not user_id.startswith(self.prefix):
            return None
        digits = user_id[len(self.prefix) :]
        if not (digits.isascii() and digits.isdigit()) or (digits[0] == "0" and len(digits) > 1):
            return None
        offset = int(digits) - self.start
        return offset if 0 <= offset < self.count else None

    def build(self, offset: int) -> SandboxUser:
        """A fresh user object for ``offset`` (ignores ``changed``)."""
        number = self.start + offset
        individual = _unit(number, 1) < self.individual_share
        account_type = "individual" if individual else "corporation"
        requirements = requirements_for(account_type)
        if _unit(number, 2) < self.email_verified_share:
            requirements[EMAIL] = False
        user_id = f"{self.prefix}{number}"
        return SandboxUser(
            user_id=user_id,
            account_type=account_type,
            email=f"{user_id}@example.com",
            phone_number=f"+1555{number % 10_000_000:07d}" if individual else None,
            first_name="Generated",
            last_name=f"User{number}",
            requirements=requirements,
        )

    def get(self, offset: int) -> SandboxUser:
        """The user at ``offset``: its changed object if any, else a built one."""
        user = self.changed.get(offset)
        return user if user is not None else self.build(offset)

    def overlaps(self, other: GeneratedUsers) -> bool:
        """Whether some user_id could belong to both ranges."""
        if self.prefix == other.prefix:
            return self.start < other.start + other.count and other.start < self.start + self.count
        # "user-" and "user-1" would both claim "user-10": refuse nested prefixes.
        return self.prefix.startswith(other.prefix) or other.prefix.startswith(self.prefix)

    def to_dict(self) -> dict[str, Any]:
        """The range as a JSON-ready dict (without the changed users)."""
        return {
            "prefix": self.prefix,
            "start": self.start,
            "count": self.count,
            "individual_share": self.individual_share,
            "email_verified_share": self.email_verified_share,
            "first": f"{self.prefix}{self.start}",
            "last": f"{self.prefix}{self.start + self.count - 1}",
        }


#: Keys a paginated list may name its next page under; URL keys carry a path, others a cursor.
LIST_NEXT_KEYS = ("next", "next_url", "links.next", "next_cursor", "cursor", "meta.next_cursor")
_LIST_URL_KEYS = ("next", "next_url", "links.next")
#: Users serialised per piece of a streamed list body (one lock hold, ~250 KB).
LIST_BATCH = 1000


@dataclass(frozen=True)
class ListSettings:
    """How ``GET /v1/enterprise/users`` pages (``PUT /_sandbox/list``); off by default.

    :param page_size: users per page; ``0``: one answer with every user (sFOX's documented
        behaviour), streamed.
    :param next_key: where a page names the next one (see :data:`LIST_NEXT_KEYS`; dotted keys
        nest: ``links.next`` is ``{"links": {"next": ...}}``). URL keys hold a path
        ``/v1/enterprise/users?cursor=...``, the others the cursor itself; the client sends
        the cursor back as ``?cursor=``. The last page has no such key.
    :param next_first: put that key before ``data`` instead of after it.
    :param cut_after: a fault: reset the connection once this many users of a list body were
        sent (the body breaks off mid-stream); ``0``: off.
    """

    page_size: int = 0
    next_key: str = "next"
    next_first: bool = False
    cut_after: int = 0

    def updated(self, changes: Mapping[str, Any]) -> ListSettings:
        """A copy with a partial update applied; ``ValueError`` on an invalid one."""
        values = asdict(self)
        for key, value in changes.items():
            if key not in values:
                raise ValueError(f"unknown setting {key!r}; known: {', '.join(sorted(values))}")
            values[key] = value
        page_size, next_key, next_first = values["page_size"], values["next_key"], values["next_first"]
        for name in ("page_size", "cut_after"):
            value = values[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer")
        if next_key not in LIST_NEXT_KEYS:
            raise ValueError(f"next_key must be one of {', '.join(LIST_NEXT_KEYS)}")
        if not isinstance(next_first, bool):
            raise ValueError("next_first must be a boolean")
        return ListSettings(page_size, next_key, next_first, values["cut_after"])

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict."""
        return asdict(self)


def _opt_str(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string")
    return value


def _flag(obj: Mapping[str, Any], key: str) -> bool | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE_STRINGS | _FALSE_STRINGS:
        return value.strip().lower() in _TRUE_STRINGS
    raise ValueError(f"{key} must be a boolean")


def user_from_seed(obj: Mapping[str, Any]) -> SandboxUser:
    """Build a user from a seed object (JSON object or CSV row). Unknown keys are ignored.

    Keys: ``user_id`` and ``account_type`` (required); ``account_role`` (``client`` by
    default), ``email``, ``phone_number``, ``first_name``, ``last_name``, ``advisor_user_id``
    (optional); to seed a partly or fully verified user, either ``requirements``
    (``{"email": bool, "sms": bool}``, true = still required) or ``email_verified`` /
    ``phone_verified`` (booleans, or strings such as ``true``/``1`` in CSV). Seeds are
    trusted: email and phone formats are not checked.

    :param obj: the seed object.
    :raises ValueError: when a required key is missing or a value has the wrong type.
    """
    user_id = obj.get("user_id")
    if not isinstance(user_id, str) or not user_id:
        raise ValueError("user_id must be a non-empty string")
    account_type = str(obj.get("account_type") or "").strip().lower()
    if account_type not in ACCOUNT_TYPES:
        raise ValueError(f"account_type must be one of {', '.join(ACCOUNT_TYPES)}")
    account_role = str(obj.get("account_role") or "client").strip().lower()
    if account_role not in ACCOUNT_ROLES:
        raise ValueError(f"account_role must be one of {', '.join(ACCOUNT_ROLES)}")
    requirements = requirements_for(account_type)
    given = obj.get("requirements")
    if given is not None:
        if not isinstance(given, Mapping):
            raise ValueError("requirements must be an object")
        for channel in CHANNELS:
            flag = _flag(given, channel)
            if flag is not None:
                requirements[channel] = flag
    email_verified = _flag(obj, "email_verified")
    if email_verified is not None:
        requirements[EMAIL] = not email_verified
    phone_verified = _flag(obj, "phone_verified")
    if phone_verified is not None:
        requirements[SMS] = not phone_verified
    verified_by_type = channels_for(account_type)
    for channel in CHANNELS:
        if channel not in verified_by_type:
            requirements[channel] = False  # e.g. corporations verify email only
    return SandboxUser(
        user_id=user_id,
        account_type=account_type,
        account_role=account_role,
        email=_opt_str(obj, "email"),
        phone_number=_opt_str(obj, "phone_number"),
        first_name=_opt_str(obj, "first_name"),
        last_name=_opt_str(obj, "last_name"),
        advisor_user_id=_opt_str(obj, "advisor_user_id"),
        requirements=requirements,
    )


def _auth_header(token: str) -> bytes:
    """The ``Authorization`` value of ``token`` as the sandbox compares it (scheme lower-cased)."""
    return f"bearer {token}".encode()


def _required_str(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, f"{key} is required")
    return value


def _must_be(name: str, choices: Iterable[str]) -> str:
    """``Invalid <name>: must be "a" or "b"``."""
    return f"Invalid {name}: must be " + " or ".join(f'"{choice}"' for choice in choices)


def _channel(body: Mapping[str, Any]) -> str:
    channel = body.get("type")
    if not isinstance(channel, str) or channel not in CHANNELS:
        raise ApiError(400, _must_be("type", CHANNELS))
    return channel


@dataclass
class ApiResult:
    """Outcome of one emulated sFOX call: status, JSON body and journal facts."""

    status: int
    body: dict[str, Any]
    code_sent: bool = False
    # Channel of the code sent, when the request body does not name it (register-account).
    channel: str | None = None
    # A body produced in pieces (the user list), sent instead of ``body``.
    stream: Iterator[bytes] | None = None


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
      posted on email confirmations (it has its own lock).

    :param config: start-up configuration; :meth:`reset` returns to it.
    """

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.lock = threading.RLock()
        self.users: dict[str, SandboxUser] = {}
        self.generated: list[GeneratedUsers] = []
        self.list_settings = ListSettings()
        self.sent_codes: dict[str, deque[SentCode]] = {}
        # Exact number of codes sent and the latest one, per (user_id, channel).
        self._code_counts: dict[tuple[str, str], int] = {}
        self._latest_code: dict[tuple[str, str], SentCode] = {}
        self.journal: deque[JournalEntry] = deque(maxlen=config.journal_size)
        self.faults: FaultSettings = config.faults
        self.rate_limit: RateLimitSettings = config.rate_limit
        self.limiter = RateLimiter()
        self.rng = random.Random(config.random_seed)  # noqa: S311 - seedable test RNG, not crypto
        # Latest code not yet used, per (user_id, channel): the one verify accepts.
        self._pending: dict[tuple[str, str], str] = {}
        self._seq = 0
        self.auth_header = _auth_header(config.token)
        self.asset_events = AssetEvents(config.asset_events)
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
            self.sent_codes = {}
            self._code_counts = {}
            self._latest_code = {}
            self._pending = {}
            self.journal = deque(maxlen=self.config.journal_size)
            self._seq = 0
            self.faults = self.config.faults
            self.rate_limit = self.config.rate_limit
            self.limiter.clear()
            self.rng.seed(self.config.random_seed)
            self.auth_header = _auth_header(self.config.token)
            self.asset_events.reset(self.config.asset_events)

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
                self._store(user)
        return len(users)

    def _store(self, user: SandboxUser) -> None:
        """Add or replace a user, in its generated range when it belongs to one."""
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

    def reseed(self, seed: int | None) -> None:
        """Re-seed the RNG (codes, tokens, fault draws).

        :param seed: new seed, ``None`` for a random one.
        """
        with self.lock:
            self.rng.seed(seed)

    def codes_for(self, user_id: str) -> dict[str, Any]:
        """Return latest code and count per channel for one user.

        Shape: ``{"user_id", "email": {"latest", "count", "sent_at"}, "sms": {...},
        "history": [{"type", "code", "time"}]}``. ``count``, ``latest`` and ``sent_at`` are
        exact; ``history`` holds the latest ``config.code_history_size`` codes, oldest first.

        :param user_id: decoded user id.
        """
        out: dict[str, Any] = {"user_id": user_id}
        with self.lock:
            sent = list(self.sent_codes.get(user_id, ()))
            for channel in CHANNELS:
                key = (user_id, channel)
                latest = self._latest_code.get(key)
                out[channel] = {
                    "latest": latest.code if latest else None,
                    "count": self._code_counts.get(key, 0),
                    "sent_at": latest.time if latest else None,
                }
        out["history"] = [{"type": s.channel, "code": s.code, "time": s.time} for s in sent]
        return out

    def journal_entries(self, since: int = 0, user_id: str | None = None) -> list[JournalEntry]:
        """Return a copy of the journal (the entries still kept, see ``journal_size``).

        :param since: keep entries whose ``seq`` is greater than this; costs O(entries
            returned), not O(journal size).
        :param user_id: keep entries of this decoded user id only.
        """
        with self.lock:
            # seq grows by one per entry and entries leave only from the left, so the last
            # ``self._seq - since`` entries are exactly those with ``seq > since``.
            wanted = self._seq - since
            if wanted <= 0:
                return []
            if wanted >= len(self.journal):
                entries = list(self.journal)
            else:
                entries = list(itertools.islice(reversed(self.journal), wanted))
                entries.reverse()
        if user_id is not None:
            entries = [e for e in entries if e.user_id == user_id]
        return entries

    def clear_journal(self) -> None:
        """Empty the journal (sequence numbers start again at 1)."""
        with self.lock:
            self.journal = deque(maxlen=self.config.journal_size)
            self._seq = 0

    def record(
        self,
        *,
        method: str,
        path: str,
        user_id: str | None,
        status: int | str,
        code_sent: bool,
        channel: str | None,
        client: str,
        fault: str | None = None,
    ) -> JournalEntry:
        """Append one journal entry (cheap: one deque append under the lock; when the journal
        is full the oldest entry is dropped)."""
        with self.lock:
            self._seq += 1
            entry = JournalEntry(
                seq=self._seq,
                time=time.time(),
                method=_SHARED_STRINGS.get(method, method),
                path=path,
                user_id=user_id,
                status=status,
                code_sent=code_sent,
                type=_SHARED_STRINGS.get(channel, channel) if channel is not None else None,
                client=client,
                fault=fault,
            )
            self.journal.append(entry)
        return entry

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

    def _send_code(self, user_id: str, channel: str) -> str:
        code = f"{self.rng.randrange(1_000_000):06d}"
        sent = SentCode(channel, code, time.time())
        history = self.sent_codes.get(user_id)
        if history is None:
            history = self.sent_codes[user_id] = deque(maxlen=self.config.code_history_size)
        history.append(sent)
        key = (user_id, channel)
        self._code_counts[key] = self._code_counts.get(key, 0) + 1
        self._latest_code[key] = sent
        self._pending[key] = code
        return code

    def register_account(self, body: Mapping[str, Any]) -> ApiResult:
        """``POST /v1/enterprise/register-account``: create a PENDING user (200 + user)."""
        user_id = _required_str(body, "user_id")
        account_type = body.get("account_type")
        if not isinstance(account_type, str) or account_type not in ACCOUNT_TYPES:
            raise ApiError(400, _must_be("account_type", ACCOUNT_TYPES))
        role = body.get("account_role", "client")
        if not isinstance(role, str) or role.lower() not in ACCOUNT_ROLES:
            raise ApiError(400, 'Invalid account_role: must be "client" or "advisor"')
        email = _required_str(body, "email")
        if not _EMAIL_RE.match(email):
            raise ApiError(400, "Invalid email")
        first_name = _required_str(body, "first_name")
        last_name = _required_str(body, "last_name")
        phone = body.get("phone_number")
        if phone is None and SMS in channels_for(account_type):
            raise ApiError(400, "phone_number is required")
        if phone is not None and (not isinstance(phone, str) or not _E164_RE.match(phone)):
            raise ApiError(400, "Invalid phone_number: must be E.164")
        advisor = body.get("advisor_user_id")
        if advisor is not None and not isinstance(advisor, str):
            raise ApiError(400, "Invalid advisor_user_id")
        user = SandboxUser(
            user_id=user_id,
            account_type=account_type,
            account_role=role.lower(),
            email=email,
            phone_number=phone,
            first_name=first_name,
            last_name=last_name,
            advisor_user_id=advisor,
            requirements=requirements_for(account_type),
        )
        with self.lock:
            if self.find_user(user_id) is not None:
                raise ApiError(422, "User already exists")
            self._store(user)
            sent = self.config.register_sends_code
            if sent:
                # sFOX emails the first OTP itself after registration.
                self._send_code(user_id, EMAIL)
            return ApiResult(200, {"data": user.to_api()}, code_sent=sent, channel=EMAIL if sent else None)

    def send_verification(self, user_id: str, body: Mapping[str, Any]) -> ApiResult:
        """``POST /v1/enterprise/users/send-verification/{user_id}``."""
        channel = _channel(body)
        with self.lock:
            user = self._user(user_id)
            self._check_channel(user, channel)
            before = prerequisite(user.account_type, channel)
            if before is not None and user.requirements[before]:
                raise ApiError(422, verify_first(before, channel))
            key = CONTACT_FIELDS[channel]
            target = getattr(user, key)
            if not target:
                raise ApiError(422, f"User has no {LABELS[channel].lower()}")
            self._send_code(user_id, channel)
        return ApiResult(200, {"data": {"user_id": user_id, "type": channel, key: target}}, code_sent=True)

    @staticmethod
    def _check_channel(user: SandboxUser, channel: str) -> None:
        if channel not in channels_for(user.account_type):
            raise ApiError(400, not_available(channel, user.account_type))
        if not user.requirements[channel]:
            raise ApiError(422, ALREADY_VERIFIED[channel])

    def verify(self, user_id: str, body: Mapping[str, Any]) -> ApiResult:
        """``POST /v1/enterprise/users/verify/{user_id}``: a wrong or unknown otp is 422."""
        channel = _channel(body)
        otp = body.get("otp")
        if not isinstance(otp, str) or not otp:
            raise ApiError(400, "otp is required and must be a string")
        with self.lock:
            user = self._user(user_id, for_update=True)
            self._check_channel(user, channel)
            expected = self._pending.get((user_id, channel))
            if expected is None:
                raise ApiError(422, "No verification code was requested")
            if otp != expected:
                raise ApiError(422, "Invalid verification code")
            del self._pending[(user_id, channel)]
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
        position = _parse_cursor(cursor)
        with self.lock:
            settings = self.list_settings
            explicit = list(self.users.values())
            blocks = list(self.generated)
        if position[0] > len(blocks):
            raise ApiError(400, "Invalid cursor")
        walk = _ListWalk(self, role, explicit, blocks)
        if settings.page_size:
            stream = self._page(walk, position, settings, account_role)
        else:
            stream = self._whole(walk, position)
        return ApiResult(200, {}, stream=_cut(stream, settings.cut_after) if settings.cut_after else stream)

    @staticmethod
    def _whole(walk: _ListWalk, position: tuple[int, int]) -> Iterator[bytes]:
        yield b'{"data":['
        separator = b""
        at: tuple[int, int] | None = position
        while at is not None:
            parts, at = walk.batch(at, LIST_BATCH)
            if parts:
                yield separator + b",".join(parts)
                separator = b","
        yield b"]}"

    @staticmethod
    def _page(
        walk: _ListWalk, position: tuple[int, int], settings: ListSettings, account_role: str | None
    ) -> Iterator[bytes]:
        parts, at = walk.batch(position, settings.page_size)
        if at is not None and not walk.batch(at, 1)[0]:
            at = None  # nothing after this page
        key_json = b""
        if at is not None:
            cursor = f"{at[0]}.{at[1]}"
            value: str = cursor
            if settings.next_key in _LIST_URL_KEYS:
                value = "/v1/enterprise/users?" + (f"accountRole={account_role}&" if account_role else "")
                value += f"cursor={cursor}"
            head, _, tail = settings.next_key.partition(".")
            named: Any = {tail: value} if tail else value
            key_json = json.dumps(head).encode() + b":" + json.dumps(named, separators=(",", ":")).encode()
        if settings.next_first and key_json:
            yield b"{" + key_json + b',"data":['
        else:
            yield b'{"data":['
        for start in range(0, len(parts), LIST_BATCH):
            yield (b"," if start else b"") + b",".join(parts[start : start + LIST_BATCH])
        yield b"]}" if settings.next_first or not key_json else b"]," + key_json + b"}"


def _cut(pieces: Iterator[bytes], users: int) -> Iterator[bytes]:
    """Pass a list body on until ``users`` users went out (counted by ``"user_id"``), then
    raise :class:`StreamCut` in the middle of the next user."""
    sent = 0
    for piece in pieces:
        count = piece.count(b'"user_id":')
        if sent + count >= users:
            at = -1
            for _ in range(users - sent + 1):  # the first user past the limit, if in this piece
                at = piece.find(b'"user_id":', at + 1)
            yield piece[: at + 5] if at >= 0 else piece
            raise StreamCut
        sent += count
        yield piece


def _parse_cursor(cursor: str | None) -> tuple[int, int]:
    """``"<segment>.<offset>"`` (segment 0: seeded users, k: the k-th generated range)."""
    if cursor is None:
        return (0, 0)
    segment, dot, offset = cursor.partition(".")
    if not (dot and segment.isascii() and segment.isdigit() and offset.isascii() and offset.isdigit()):
        raise ApiError(400, "Invalid cursor")
    return (int(segment), int(offset))


class _ListWalk:
    """One request's walk over the user list, from snapshots of the seeded users and ranges."""

    def __init__(
        self,
        state: SandboxState,
        role: str | None,
        explicit: list[SandboxUser],
        blocks: list[GeneratedUsers],
    ) -> None:
        self.state = state
        self.role = role
        self.explicit = explicit
        self.blocks = blocks

    def batch(self, at: tuple[int, int], limit: int) -> tuple[list[bytes], tuple[int, int] | None]:
        """Up to ``limit`` users' JSON from position ``at``; return them and the position after
        the last one (``None`` at the end of the list)."""
        role = self.role
        parts: list[bytes] = []
        segment, offset = at
        dumps = json.JSONEncoder(separators=(",", ":")).encode
        with self.state.lock:
            while segment <= len(self.blocks):
                if segment == 0:
                    source = self.explicit
                    while offset < len(source) and len(parts) < limit:
                        user = source[offset]
                        offset += 1
                        if role is None or user.account_role == role:
                            parts.append(dumps(user.to_api()).encode())
                else:
                    block = self.blocks[segment - 1]
                    if role == "advisor":
                        # Generated users are clients: only changed ones may be advisors.
                        for changed in sorted(k for k in block.changed if k >= offset):
                            if len(parts) >= limit:
                                break
                            offset = changed + 1
                            if block.changed[changed].account_role == role:
                                parts.append(dumps(block.changed[changed].to_api()).encode())
                        else:
                            offset = block.count
                    else:
                        while offset < block.count and len(parts) < limit:
                            user = block.get(offset)
                            offset += 1
                            if role is None or user.account_role == role:
                                parts.append(dumps(user.to_api()).encode())
                if len(parts) >= limit:
                    return parts, (segment, offset)
                segment, offset = segment + 1, 0
        return parts, None
