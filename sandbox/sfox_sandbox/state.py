"""In-memory state of the sandbox: users, verification codes, journal, rate limiter, RNG.

Everything here is plain Python and guarded by one :class:`threading.RLock`
(:attr:`SandboxState.lock`), so a test may read or change the state from its own thread
while the server thread serves requests. Read the journal under the lock, or use
:meth:`SandboxState.journal_entries` which returns a copy.

Memory is bounded per request: the journal is a ``deque`` holding the latest
``SandboxConfig.journal_size`` entries (default 1,000,000), and each user's code history
the latest ``SandboxConfig.code_history_size`` codes (default 20; counts stay exact). Users
themselves are kept until deactivated or reset.
"""

from __future__ import annotations

import itertools
import random
import re
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

# The one vocabulary of account types and channels (stdlib only: no Airflow is loaded).
from airflow_sfox.onboarding.model import (
    ACCOUNT_TYPES,
    CHANNELS,
    Channel,
    channels_for,
    prerequisite,
)

if TYPE_CHECKING:
    from sfox_sandbox.config import FaultSettings, RateLimitSettings, SandboxConfig

ACCOUNT_ROLES = ("client", "advisor")
#: How the sandbox's answers name a channel ("Email already verified", "Phone already verified").
_LABELS: dict[Channel, str] = {Channel.EMAIL: "Email", Channel.SMS: "Phone"}
#: The user field a channel's code goes to, as sFOX's send-verification answer names it.
_CONTACT_FIELDS: dict[Channel, str] = {Channel.EMAIL: "email", Channel.SMS: "phone_number"}

_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_E164_RE = re.compile(r"^\+[1-9][0-9]{6,14}$")
_TRUE_STRINGS = {"1", "true", "t", "yes", "y"}
_FALSE_STRINGS = {"0", "false", "f", "no", "n", ""}
# Canonical copies of the short strings every journal entry repeats (saves ~100 B an entry).
_SHARED_STRINGS = {
    s: s for s in ("GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS", *(c.value for c in CHANNELS))
}


def requirements_for(account_type: str) -> dict[str, bool]:
    """A new user's ``requirements``: ``True`` for each channel its account type verifies.

    :param account_type: ``individual`` or ``corporation`` (see ``CHANNELS_BY_ACCOUNT_TYPE``).
    """
    needed = channels_for(account_type)
    return {channel.value: channel in needed for channel in CHANNELS}


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
    requirements: dict[str, bool] = field(default_factory=lambda: {c.value: True for c in CHANNELS})

    @property
    def status(self) -> str:
        """``PENDING`` while a requirement is left, else ``VERIFIED``."""
        return "PENDING" if any(self.requirements.values()) else "VERIFIED"

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
            flag = _flag(given, channel.value)
            if flag is not None:
                requirements[channel.value] = flag
    email_verified = _flag(obj, "email_verified")
    if email_verified is not None:
        requirements[Channel.EMAIL.value] = not email_verified
    phone_verified = _flag(obj, "phone_verified")
    if phone_verified is not None:
        requirements[Channel.SMS.value] = not phone_verified
    verified_by_type = channels_for(account_type)
    for channel in CHANNELS:
        if channel not in verified_by_type:
            requirements[channel.value] = False  # e.g. corporations verify email only
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


def _channel(body: Mapping[str, Any]) -> Channel:
    channel = body.get("type")
    if not isinstance(channel, str) or channel not in CHANNELS:
        raise ApiError(400, _must_be("type", CHANNELS))
    return Channel(channel)


@dataclass
class ApiResult:
    """Outcome of one emulated sFOX call: status, JSON body and journal facts."""

    status: int
    body: dict[str, Any]
    code_sent: bool = False
    # Channel of the code sent, when the request body does not name it (register-account).
    channel: str | None = None


class SandboxState:
    """Users, codes, journal, settings, rate limiter and RNG of one sandbox.

    Public attributes (read them under :attr:`lock` when the server runs):

    - ``users``: ``dict[str, SandboxUser]`` by user_id, in insertion order;
    - ``sent_codes``: ``dict[str, deque[SentCode]]`` the latest codes sent, by user_id
      (at most ``config.code_history_size`` each; :meth:`codes_for` has the exact counts);
    - ``journal``: ``deque[JournalEntry]`` the latest ``config.journal_size`` ``/v1/``
      requests, in arrival order, ``seq`` increasing by one from entry to entry;
    - ``faults`` / ``rate_limit``: current :class:`FaultSettings` / :class:`RateLimitSettings`;
    - ``auth_header``: the ``Authorization`` value ``/v1/`` requests must carry, as
      ``b"bearer <token>"`` (see :meth:`set_token`).

    :param config: start-up configuration; :meth:`reset` returns to it.
    """

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.lock = threading.RLock()
        self.users: dict[str, SandboxUser] = {}
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
        self.reset()

    # ----------------------------------------------------------------- admin side
    def reset(self) -> None:
        """Return to the start state: seed users, no codes, empty journal and windows,
        start-up token, faults and rate limit, RNG re-seeded."""
        seeds = [user_from_seed(obj) for obj in self.config.seed_users]
        with self.lock:
            self.users = {}
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
                self.users[user.user_id] = user
        return len(users)

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
                key = (user_id, channel.value)
                latest = self._latest_code.get(key)
                out[channel.value] = {
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
    def _user(self, user_id: str) -> SandboxUser:
        user = self.users.get(user_id)
        if user is None:
            raise ApiError(404, "User not found")
        return user

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
        if phone is None and Channel.SMS in channels_for(account_type):
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
            if user_id in self.users:
                raise ApiError(422, "User already exists")
            self.users[user_id] = user
            sent = self.config.register_sends_code
            if sent:
                # sFOX emails the first OTP itself after registration.
                self._send_code(user_id, Channel.EMAIL.value)
            return ApiResult(
                200, {"data": user.to_api()}, code_sent=sent, channel=Channel.EMAIL.value if sent else None
            )

    def send_verification(self, user_id: str, body: Mapping[str, Any]) -> ApiResult:
        """``POST /v1/enterprise/users/send-verification/{user_id}``."""
        channel = _channel(body)
        with self.lock:
            user = self._user(user_id)
            self._check_channel(user, channel)
            before = prerequisite(user.account_type, channel)
            if before is not None and user.requirements[before.value]:
                raise ApiError(422, f"{_LABELS[before]} must be verified before {_LABELS[channel].lower()}")
            key = _CONTACT_FIELDS[channel]
            target = getattr(user, key)
            if not target:
                raise ApiError(422, f"User has no {_LABELS[channel].lower()}")
            self._send_code(user_id, channel.value)
        return ApiResult(
            200, {"data": {"user_id": user_id, "type": channel.value, key: target}}, code_sent=True
        )

    @staticmethod
    def _check_channel(user: SandboxUser, channel: Channel) -> None:
        if channel not in channels_for(user.account_type):
            raise ApiError(
                400, f"{channel.value.upper()} verification is not available for {user.account_type} accounts"
            )
        if not user.requirements[channel.value]:
            raise ApiError(422, f"{_LABELS[channel]} already verified")

    def verify(self, user_id: str, body: Mapping[str, Any]) -> ApiResult:
        """``POST /v1/enterprise/users/verify/{user_id}``: a wrong or unknown otp is 422."""
        channel = _channel(body)
        otp = body.get("otp")
        if not isinstance(otp, str) or not otp:
            raise ApiError(400, "otp is required and must be a string")
        with self.lock:
            user = self._user(user_id)
            self._check_channel(user, channel)
            expected = self._pending.get((user_id, channel.value))
            if expected is None:
                raise ApiError(422, "No verification code was requested")
            if otp != expected:
                raise ApiError(422, "Invalid verification code")
            del self._pending[(user_id, channel.value)]
            user.requirements[channel.value] = False
        return ApiResult(200, {"data": {"success": True, "user_id": user_id, "type": channel.value}})

    def get_user(self, user_id: str) -> ApiResult:
        """``GET /v1/enterprise/users/{user_id}``."""
        with self.lock:
            return ApiResult(200, {"data": self._user(user_id).to_api()})

    def get_users(self, account_role: str | None) -> ApiResult:
        """``GET /v1/enterprise/users[?accountRole=client|advisor]``."""
        role = None
        if account_role is not None:
            role = account_role.lower()
            if role not in ACCOUNT_ROLES:
                raise ApiError(400, 'Invalid accountRole: must be "client" or "advisor"')
        with self.lock:
            users = [u.to_api() for u in self.users.values() if role is None or u.account_role == role]
        return ApiResult(200, {"data": users})
