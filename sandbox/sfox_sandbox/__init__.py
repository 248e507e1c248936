"""Local emulator of the sFOX Connect (enterprise) API: a real HTTP server on 127.0.0.1.

It imports nothing from Airflow (it only speaks HTTP to one, to post asset events) and nothing
from the provider ``airflow_sfox``: only the standard library. Its model of sFOX (account
types, the channels each verifies and in which order, user states, error texts) is its own,
written from the API contract (:mod:`sfox_sandbox.model`), so that a provider that gets a rule
wrong fails its tests against the sandbox. ``python -m sfox_sandbox`` starts fast; see
:mod:`sfox_sandbox.__main__` for the command line and ``--help``. It is a distribution of its
own (``sfox-sandbox``), never part of the provider's wheel.

Public Python API
-----------------
- :class:`SandboxServer` ``(config: SandboxConfig | None = None)``: ``start(timeout=10.0)
  -> str`` (background thread; returns the URL once listening), ``stop(timeout=10.0)``,
  ``serve_forever(on_ready=None)``, context manager, ``url`` / ``host`` / ``port``,
  ``state`` (:class:`SandboxState`), ``set_faults(**changes) -> FaultSettings``,
  ``set_rate_limit(**changes) -> RateLimitSettings``, ``set_token(token)``,
  ``seed_users(users) -> int``, ``generate_users(count, *, prefix="user-", individual_share=0.7,
  email_verified_share=0.33, start=0) -> GeneratedUsers`` (synthetic users in O(1) memory),
  ``set_list(**changes) -> ListSettings`` (pagination of the user list, a mid-body cut fault),
  ``set_asset_events(**changes) -> AssetEventSettings`` / ``asset_events() -> dict``
  (post an Airflow asset event when a user confirms their email),
  ``set_outage(seconds, mode="503") -> dict`` / ``clear_outage()`` (every ``/v1/`` request
  answered 503 or refused for a while), ``set_unprocessable(user_id, channel, text) -> dict`` /
  ``clear_unprocessable(user_id, channel=None)`` (a chosen 422 text for one user's sends),
  ``set_register_fault(user_id, mode="lost", times=1, seconds=None) -> dict`` /
  ``clear_register_fault(user_id)`` (the next register-account requests of a user_id are
  carried out, then answered never, 503 or too late), ``set_register_answer(kind, status,
  text) -> dict`` (the answer to an ``existing`` user_id or an ``invalid`` body),
  ``register_requests() -> dict[str, int]`` (register-account requests per user_id),
  ``codes(user_id) -> dict``,
  ``journal(since=0, user_id=None) -> list[JournalEntry]``, ``clear_journal()``, ``reset()``.
- :class:`SandboxConfig`, :class:`FaultSettings`, :class:`RateLimitSettings`,
  :class:`AssetEventSettings`, :class:`RegisterAnswer`: settings.
- :class:`SandboxState`: users, codes, journal, settings (``state.journal`` is the live
  ``deque`` of :class:`JournalEntry`; hold ``state.lock`` while reading it from another
  thread, or use ``journal_entries()``).
- :func:`load_seed_file` ``(path) -> list[dict]``: JSON or CSV seed users.

Emulated routes (``Authorization: Bearer <token>``, ``{"data": ...}`` / ``{"error": ...}``)
-------------------------------------------------------------------------------------------
``POST /v1/enterprise/register-account`` (the fields sFOX documents as required per account
type are checked, see :mod:`sfox_sandbox.registration`; 200 and the PENDING user, and the
first email code sent unless ``register_sends_code=False``; an existing user_id or an invalid
body get configurable answers, 400 by default; see :mod:`sfox_sandbox.registrar`),
``POST /v1/enterprise/users/send-verification/{user_id}``,
``POST /v1/enterprise/users/verify/{user_id}``, ``GET /v1/enterprise/users/{user_id}``,
``GET /v1/enterprise/users[?accountRole=client|advisor][&cursor=...]`` (streamed, chunked;
paged only when ``set_list(page_size=N)`` asks): the routes the provider's hook calls.

Status codes: 401 missing/wrong token (checked before routing), 404 unknown user or route,
405 known path with another method, 400 malformed body, invalid ``type``/field, or sms for a
corporation, a registration refused (invalid body or existing user_id, by default), 422
invalid state: already verified (``Email already verified`` /
``Phone number has already been verified``), ``Email must be verified before phone``, wrong otp
(``Invalid verification code``), no code requested; 429 rate limited;
500/503 injected faults, or a whole outage window (``set_outage``); a 422 with any text for
one user's sends (``set_unprocessable``). ``user_id`` is one path segment: the raw path is
split on ``/``, then each segment percent-decoded (``a%2Fb`` is user ``a/b``).

Admin routes under ``/_sandbox/`` are listed in :mod:`sfox_sandbox.admin`. With an admin
token (``SandboxConfig.admin_token``, ``--admin-token`` or ``$SFOX_SANDBOX_ADMIN_TOKEN``; never
the API token) they need it in the ``X-Sandbox-Admin-Token`` header; without one they are open
on a loopback address and refused (403) on any other.

Resource bounds (all on :class:`SandboxConfig`, see there): the journal keeps the latest
``journal_size`` requests (default 1,000,000, about 350 MB; ``seq`` keeps counting); each user's code
history the latest ``code_history_size`` codes (default 20; counts stay exact); request
bodies are capped at ``max_body_bytes`` (413) and heads at 64 KiB (431); a started request
must make progress on every read within ``request_timeout`` (default 30 s, else 408 and
close) and an idle keep-alive connection is closed after ``idle_timeout`` (default 75 s).
"""

from __future__ import annotations

from sfox_sandbox.config import (
    AssetEventSettings,
    FaultSettings,
    RateLimitSettings,
    RegisterAnswer,
    SandboxConfig,
)
from sfox_sandbox.journal import JournalEntry
from sfox_sandbox.seed import load_seed_file
from sfox_sandbox.server import SandboxServer
from sfox_sandbox.state import SandboxState
from sfox_sandbox.users import SandboxUser

__version__ = "0.1.0"

__all__ = [
    "AssetEventSettings",
    "FaultSettings",
    "JournalEntry",
    "RateLimitSettings",
    "RegisterAnswer",
    "SandboxConfig",
    "SandboxServer",
    "SandboxState",
    "SandboxUser",
    "load_seed_file",
]
