"""Settings of the sFOX Connect sandbox: faults, rate limit, asset events and server options.

:class:`FaultSettings`, :class:`RateLimitSettings` and :class:`AssetEventSettings` can be
changed while the sandbox runs (``PUT /_sandbox/faults``, ``PUT /_sandbox/rate-limit``,
``PUT /_sandbox/asset-events``, or :meth:`~sfox_sandbox.server.SandboxServer.set_faults` /
:meth:`~sfox_sandbox.server.SandboxServer.set_rate_limit` /
:meth:`~sfox_sandbox.server.SandboxServer.set_asset_events`); :class:`SandboxConfig` is
fixed at start.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_TOKEN = "sandbox-token"  # noqa: S105 - well-known local test token
#: The header that carries the admin token (``SandboxConfig.admin_token``).
ADMIN_TOKEN_HEADER = "X-Sandbox-Admin-Token"  # noqa: S105 - a header name, not a secret
#: The asset the sandbox posts an event of when a user confirms their email.
DEFAULT_ASSET_URI = "sfox://api.sfox.com/email-verified"

_T = TypeVar("_T", "FaultSettings", "RateLimitSettings", "AssetEventSettings")
_CREDENTIALS = frozenset({"token", "username", "password"})


def _coerce(name: str, expected: type, value: Any) -> Any:
    """Check one settings value coming from JSON or Python and return it with the right type."""
    if expected is str:
        if value is None:
            return ""  # null clears a text setting
        if isinstance(value, str):
            return value
        raise ValueError(f"{name} must be a string")
    # bool is a subclass of int: never accept True as a number or 1 as a flag.
    if expected is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{name} must be a boolean")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite")
    if expected is int:
        if float(value) != int(value):
            raise ValueError(f"{name} must be an integer")
        return int(value)
    return float(value)


def _field_types(cls: type) -> dict[str, type]:
    """Resolved type of each field of a settings dataclass (``bool``, ``int``, ``float`` or ``str``).

    ``typing.get_type_hints`` evaluates the string annotations left by
    ``from __future__ import annotations``, so this does not depend on how they are spelled.
    """
    hints = typing.get_type_hints(cls)
    kinds: dict[str, type] = {}
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if kind not in (bool, int, float, str):
            raise TypeError(f"{cls.__name__}.{f.name}: settings fields must be bool, int, float or str")
        kinds[f.name] = kind
    return kinds


def _updated(current: _T, changes: Mapping[str, Any]) -> _T:
    """Return a copy of ``current`` with ``changes`` applied and validated (partial update)."""
    kinds = _field_types(type(current))
    clean: dict[str, Any] = {}
    for key, value in changes.items():
        if key not in kinds:
            raise ValueError(f"unknown setting {key!r}; known: {', '.join(sorted(kinds))}")
        clean[key] = _coerce(key, kinds[key], value)
    new = dataclasses.replace(current, **clean)
    new.validate()
    return new


@dataclass(frozen=True)
class FaultSettings:
    """Faults injected into ``/v1/`` requests (never into ``/_sandbox/`` admin routes).

    Shares are probabilities in ``[0, 1]`` whose sum must not exceed 1; one draw of the
    seedable RNG per request picks at most one of them.

    :param latency_ms: fixed delay added before every ``/v1/`` request is handled.
    :param jitter_ms: extra uniform random delay in ``[0, jitter_ms]`` on top of the latency.
    :param error_500_rate: share of requests answered 500 without being processed.
    :param error_503_rate: share of requests answered 503 without being processed.
    :param reset_rate: share of connections reset (TCP RST) without processing or answer.
    :param hang_rate: share of requests processed normally whose answer is held back
        ``hang_seconds``, i.e. longer than a client's read timeout.
    :param hang_seconds: how long a "hung" answer is held back.
    :param drop_rate: share of requests processed (state changed, code sent) after which the
        connection is reset instead of answered.
    """

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    error_500_rate: float = 0.0
    error_503_rate: float = 0.0
    reset_rate: float = 0.0
    hang_rate: float = 0.0
    hang_seconds: float = 30.0
    drop_rate: float = 0.0

    def validate(self) -> None:
        """Raise :class:`ValueError` when a value is out of range."""
        for name in ("latency_ms", "jitter_ms", "hang_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        shares = {name: getattr(self, name) for name in self.share_names()}
        for name, share in shares.items():
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if sum(shares.values()) > 1.0 + 1e-9:
            raise ValueError("the fault shares must not add up to more than 1")

    @staticmethod
    def share_names() -> tuple[str, ...]:
        """Names of the share fields, in the order the RNG draw is matched against them."""
        return ("reset_rate", "error_500_rate", "error_503_rate", "hang_rate", "drop_rate")

    def updated(self, changes: Mapping[str, Any]) -> FaultSettings:
        """Return a validated copy with ``changes`` applied; omitted fields keep their value.

        :param changes: field name to new value.
        :raises ValueError: on an unknown name, a wrong type or an out-of-range value.
        """
        return _updated(self, changes)

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a JSON-ready dict."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RateLimitSettings:
    """sFOX-like rate limit: ``limit`` requests per sliding ``window_seconds`` per client address.

    The request past the limit gets 429 and starts a block of ``block_seconds`` during which
    every ``/v1/`` request from that address gets 429. ``time_scale`` multiplies the window and
    the block (and only them): ``time_scale=0.01`` turns the 10 s window into 0.1 s and the
    60 s block into 0.6 s.

    :param limit: requests allowed per window; 0 disables the rate limit.
    :param window_seconds: length of the sliding window (before scaling).
    :param block_seconds: length of the block after the limit is passed (before scaling).
    :param time_scale: factor applied to ``window_seconds`` and ``block_seconds``.
    :param retry_after: send a ``Retry-After`` header (whole seconds, rounded up) on 429.
        Off by default because sFOX documents none.
    """

    limit: int = 250
    window_seconds: float = 10.0
    block_seconds: float = 60.0
    time_scale: float = 1.0
    retry_after: bool = False

    def validate(self) -> None:
        """Raise :class:`ValueError` when a value is out of range."""
        if self.limit < 0:
            raise ValueError("limit must be >= 0 (0 disables the rate limit)")
        if self.window_seconds <= 0:
            raise ValueError("window_seconds must be > 0")
        if self.block_seconds < 0:
            raise ValueError("block_seconds must be >= 0")
        if self.time_scale <= 0:
            raise ValueError("time_scale must be > 0")

    @property
    def window(self) -> float:
        """Scaled window length in real seconds."""
        return self.window_seconds * self.time_scale

    @property
    def block(self) -> float:
        """Scaled block length in real seconds."""
        return self.block_seconds * self.time_scale

    def updated(self, changes: Mapping[str, Any]) -> RateLimitSettings:
        """Return a validated copy with ``changes`` applied; omitted fields keep their value.

        :param changes: field name to new value.
        :raises ValueError: on an unknown name, a wrong type or an out-of-range value.
        """
        return _updated(self, changes)

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a JSON-ready dict."""
        return dataclasses.asdict(self)


#: The kinds of refusal of ``register-account`` whose answer sFOX does not document.
REGISTER_ANSWER_KINDS: tuple[str, ...] = ("existing", "invalid")
#: The default texts of those answers (the sandbox's wording).
EXISTING_USER = "User already exists"
INVALID_FIELD = "{field} {reason}"


@dataclass(frozen=True)
class RegisterAnswer:
    """The answer to a ``register-account`` request sFOX refuses: ``status`` and ``{"error":
    text}``. sFOX documents neither for an existing ``user_id`` nor for a validation failure,
    so both are settings (``SandboxServer.set_register_answer``, ``PUT
    /_sandbox/register-answers/{kind}``, ``--register-{kind}-status`` / ``-error``).

    :param status: an HTTP error status, 400 to 599.
    :param error: the text; ``{field}`` and ``{reason}`` in it are replaced by the dotted path
        of the field at fault and what it must be (for an existing user: ``user_id`` and
        ``already exists``). Never the value sent.
    """

    status: int
    error: str

    def validate(self) -> None:
        """Raise :class:`ValueError` when the status or the text is unusable."""
        if isinstance(self.status, bool) or not isinstance(self.status, int) or not 400 <= self.status <= 599:
            raise ValueError("status must be an integer from 400 to 599")
        if not isinstance(self.error, str) or not self.error.strip() or not _visible(self.error, spaces=True):
            raise ValueError("error must be a non-empty text without control characters")

    def render(self, field: str, reason: str) -> str:
        """The error text for ``field`` and ``reason`` (plain replacement, no format syntax)."""
        return self.error.replace("{field}", field).replace("{reason}", reason)

    def to_dict(self) -> dict[str, Any]:
        """``{"status", "error"}``."""
        return {"status": self.status, "error": self.error}


def _visible(text: str, *, spaces: bool = False) -> bool:
    """Whether ``text`` holds only printable characters (and no white space unless ``spaces``)."""
    return all(c.isprintable() and (spaces or not c.isspace()) for c in text)


@dataclass(frozen=True)
class AssetEventSettings:
    """Posting an Airflow asset event when a user confirms their email; off by default.

    On a successful ``POST /v1/enterprise/users/verify/{user_id}`` of type ``email``, the
    sandbox posts ``{"asset_id": N, "extra": {"user_ids": [...]}}`` to
    ``{airflow_url}/api/v2/assets/events``, off the request path (see
    :mod:`sfox_sandbox.events`). The secrets never leave the sandbox: :meth:`to_dict` masks
    them and ``repr`` leaves them out.

    :param enabled: post at all. Needs ``airflow_url``, ``asset_uri`` and either ``token`` or
        ``username`` and ``password``.
    :param airflow_url: base URL of Airflow's API server, e.g. ``http://127.0.0.1:8080``.
    :param asset_uri: URI of the asset, matched exactly (Airflow's ``uri_pattern`` search is
        a substring match).
    :param token: a JWT sent as ``Authorization: Bearer <token>``.
    :param username: with ``password``: the sandbox gets its token from ``POST
        {airflow_url}/auth/token``, and a new one when Airflow answers 401.
    :param password: see ``username``.
    :param batch_ms: ``0``: one event per confirmation; ``> 0``: the confirmations within
        this many milliseconds of the first one go in one event.
    :param timeout_seconds: timeout of each HTTP call to Airflow.
    :param retries: further attempts after a connection error, a timeout, 429 or 5xx.
    :param backoff_ms: wait before the first retry, doubled for each further one.
    """

    enabled: bool = False
    airflow_url: str = ""
    asset_uri: str = DEFAULT_ASSET_URI
    token: str = field(default="", repr=False)
    username: str = ""
    password: str = field(default="", repr=False)
    batch_ms: float = 0.0
    timeout_seconds: float = 5.0
    retries: int = 3
    backoff_ms: float = 200.0

    def validate(self) -> None:
        """Raise :class:`ValueError` naming the field when a value is invalid or missing."""
        if self.airflow_url:
            _check_airflow_url(self.airflow_url)
        for name in ("asset_uri", "token", "username"):
            if not _visible(getattr(self, name)):
                raise ValueError(f"{name} must hold no spaces or control characters")
        if not _visible(self.password, spaces=True):
            raise ValueError("password must hold no control characters")
        if bool(self.username) != bool(self.password):
            raise ValueError("username and password go together: give both or neither")
        if self.batch_ms < 0:
            raise ValueError("batch_ms must be >= 0 (0 posts one event per confirmation)")
        if self.timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be > 0")
        if not 0 <= self.retries <= 10:
            raise ValueError("retries must be between 0 and 10")
        if self.backoff_ms < 0:
            raise ValueError("backoff_ms must be >= 0")
        if self.enabled:
            if not self.airflow_url:
                raise ValueError(
                    "enabled needs airflow_url (Airflow's API server, e.g. http://127.0.0.1:8080)"
                )
            if not self.asset_uri:
                raise ValueError("enabled needs asset_uri")
            if not self.token and not self.username:
                raise ValueError(
                    "enabled needs a token, or a username and password (given again whenever "
                    "airflow_url changes)"
                )

    @property
    def base_url(self) -> str:
        """``airflow_url`` without a trailing slash."""
        return self.airflow_url.rstrip("/")

    def updated(self, changes: Mapping[str, Any]) -> AssetEventSettings:
        """Return a validated copy with ``changes`` applied; omitted fields keep their value,
        except the credentials when ``airflow_url`` changes: they are dropped unless given
        again, so that no one who can reach the admin routes can send the token elsewhere.

        :param changes: field name to new value (``null`` clears a text field).
        :raises ValueError: on an unknown name, a wrong type or an invalid value.
        """
        url = changes.get("airflow_url", self.airflow_url)
        moved = isinstance(url, str) and url.rstrip("/") != self.base_url
        if moved and not _CREDENTIALS & changes.keys():
            changes = {**changes, **dict.fromkeys(_CREDENTIALS, "")}
        return _updated(self, changes)

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a JSON-ready dict, ``token`` and ``password`` masked."""
        data = dataclasses.asdict(self)
        for secret in ("token", "password"):
            data[secret] = "***" if data[secret] else None
        return data


def _check_airflow_url(url: str) -> None:
    """Raise :class:`ValueError` unless ``url`` is a plain ``http(s)://host[:port][/path]``."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError("airflow_url is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("airflow_url must be an http:// or https:// URL with a host")
    if "@" in parts.netloc:
        # A URL with credentials would end up in error messages: use username/password.
        raise ValueError("airflow_url must not hold credentials: use username and password")
    if parts.query or parts.fragment or not _visible(url):
        raise ValueError("airflow_url must have no query, fragment, spaces or control characters")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) only accepts local connections.

    :param host: the address the sandbox listens on.
    """
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # another host name: may resolve to anything


@dataclass
class SandboxConfig:
    """Start-up configuration of a sandbox server.

    :param host: address to listen on; keep the loopback default unless in a container.
    :param port: TCP port; 0 picks a free port (read it back from ``SandboxServer.url``).
    :param token: the Enterprise token clients must send as ``Authorization: Bearer <token>``.
    :param admin_token: when set, every ``/_sandbox/`` admin route needs it in the
        ``X-Sandbox-Admin-Token`` header (401 otherwise); it must differ from ``token``. When
        empty, the admin routes are open on a loopback ``host`` and refused (403) on any other.
    :param faults: initial fault settings (``reset`` restores them).
    :param rate_limit: initial rate-limit settings (``reset`` restores them).
    :param asset_events: initial asset-event settings (``reset`` restores them).
    :param seed_users: user objects loaded at start and after every reset (see
        :func:`sfox_sandbox.state.user_from_seed` for the accepted keys).
    :param random_seed: seed of the RNG behind codes, tokens and fault draws; ``None`` for a
        random seed.
    :param register_sends_code: like sFOX, ``register-account`` sends an email code at once.
    :param register_existing: the answer to a ``register-account`` of a ``user_id`` that
        exists (default ``400 {"error": "User already exists"}``; undocumented by sFOX).
    :param register_invalid: the answer to a ``register-account`` body that fails the
        documented checks (default ``400 {"error": "<field> <reason>"}``; undocumented).
    :param max_body_bytes: larger request bodies get 413.
    :param journal_size: the journal keeps the latest this many ``/v1/`` requests (older
        entries are dropped; ``seq`` numbers keep counting, so ``since`` still works).
        Each entry costs roughly 300-400 bytes (more with long paths or user ids): the
        default of 1,000,000 caps the journal at about 350 MB. 0 keeps no entry.
    :param code_history_size: per user, the ``history`` of codes keeps the latest this many
        codes; the per-channel ``latest``, ``sent_at`` and ``count`` stay exact.
    :param request_timeout: seconds one read of a started request (rest of the head, body)
        or one write of an answer may take; past it the connection is closed (with a 408
        answer when a request was started and nothing is pending).
    :param idle_timeout: seconds a keep-alive connection may wait for the first byte of its
        next request before it is closed.
    """

    host: str = "127.0.0.1"
    port: int = 0
    token: str = DEFAULT_TOKEN
    admin_token: str = ""
    faults: FaultSettings = field(default_factory=FaultSettings)
    rate_limit: RateLimitSettings = field(default_factory=RateLimitSettings)
    asset_events: AssetEventSettings = field(default_factory=AssetEventSettings)
    seed_users: list[dict[str, Any]] = field(default_factory=list)
    random_seed: int | None = None
    register_sends_code: bool = True
    register_existing: RegisterAnswer = field(default_factory=lambda: RegisterAnswer(400, EXISTING_USER))
    register_invalid: RegisterAnswer = field(default_factory=lambda: RegisterAnswer(400, INVALID_FIELD))
    max_body_bytes: int = 1024 * 1024
    journal_size: int = 1_000_000
    code_history_size: int = 20
    request_timeout: float = 30.0
    idle_timeout: float = 75.0

    def validate(self) -> None:
        """Raise :class:`ValueError` when a value is out of range (settings included)."""
        self.faults.validate()
        self.rate_limit.validate()
        self.asset_events.validate()
        self.register_existing.validate()
        self.register_invalid.validate()
        if self.admin_token:
            if not _visible(self.admin_token):
                raise ValueError("admin_token must hold no spaces or control characters")
            if self.admin_token == self.token:
                raise ValueError("admin_token must differ from the API token")
        for name in ("max_body_bytes", "journal_size", "code_history_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0")
        for name in ("request_timeout", "idle_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a number > 0")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite")

    def __repr__(self) -> str:
        # Never show the token, even in a traceback or a debug log.
        return (
            f"SandboxConfig(host={self.host!r}, port={self.port}, token='***', "
            f"admin_token={'***' if self.admin_token else None!r}, "
            f"faults={self.faults!r}, rate_limit={self.rate_limit!r}, "
            f"asset_events={self.asset_events!r}, "
            f"seed_users=<{len(self.seed_users)} users>, random_seed={self.random_seed!r}, "
            f"register_sends_code={self.register_sends_code}, "
            f"register_existing={self.register_existing!r}, register_invalid={self.register_invalid!r}, "
            f"max_body_bytes={self.max_body_bytes}, journal_size={self.journal_size}, "
            f"code_history_size={self.code_history_size}, "
            f"request_timeout={self.request_timeout}, idle_timeout={self.idle_timeout})"
        )
