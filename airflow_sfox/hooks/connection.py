"""
The ``sfox`` connection: its settings, read and checked once, and its Airflow 3.1 form.

The extras are declared once, in :data:`airflow_sfox.get_provider_info.CONN_FIELDS` (Airflow
3.2+ reads them from there); their defaults, limits and the 3.1 form all derive from it.
Nothing here does I/O beyond reading Airflow's configuration.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import socket
import unicodedata
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_sfox._compat import mask_secret
from airflow_sfox.exceptions import SfoxConfigError
from airflow_sfox.get_provider_info import CONN_FIELDS, UI_FIELD_BEHAVIOUR
from airflow_sfox.ratelimit import BACKENDS, SFOX_LIMIT_REQUESTS, SFOX_LIMIT_WINDOW_SECONDS, Budget

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow.sdk import Connection

DEFAULT_BASE_URL = "https://api.sfox.com"
#: Defaults of the connection extras, taken from the form definition so the two never drift.
EXTRA_DEFAULTS: dict[str, Any] = {name: field["schema"]["default"] for name, field in CONN_FIELDS.items()}
#: In ``rate_limit_scope``, replaced by the machine's host name: one budget per machine, for
#: partners whose every worker host has an egress IP of its own.
HOSTNAME_PLACEHOLDER = "{hostname}"


@dataclass(frozen=True, kw_only=True)
class SfoxConnectionConfig:
    """
    The validated settings of one ``sfox`` connection.

    :param conn_id: the Airflow connection id (named in every error).
    :param base_url: where requests go, without a trailing slash.
    :param token: the Enterprise API token (never shown in ``repr``).
    :param timeouts: (connect, read) timeouts in seconds.
    :param budget: the rate budget; ``None`` (no client-side budget) only for a loopback host.
    :param max_retry_seconds: retry budget of one call.
    :param rate_limit_pause_seconds: pause after a 429 without a ``Retry-After``.
    :param outage_probe_seconds: wait before the first probe of an outage a batch sender saw.
    :param rate_limit_scope: the key every sender through one egress IP shares.
    :param rate_limit_backend: ``local``, ``redis`` or ``memory``; ``None``: not set (``local``).
    :param rate_limit_dir: folder of the ``local`` backend (``None``: the default folder).
    :param rate_limit_redis_conn_id: Airflow connection of the ``redis`` backend.
    :param per_host_scope: the named scope holds ``{hostname}``: one budget per machine.
    """

    conn_id: str
    base_url: str
    token: str = field(repr=False)
    timeouts: tuple[float, float]
    budget: Budget | None
    max_retry_seconds: float
    rate_limit_pause_seconds: float
    outage_probe_seconds: float
    rate_limit_scope: str
    rate_limit_backend: str | None = None
    rate_limit_dir: str | None = None
    rate_limit_redis_conn_id: str = "redis_default"
    per_host_scope: bool = False

    @property
    def loopback(self) -> bool:
        """Whether the host is a loopback address (the local sandbox): no sFOX behind it."""
        return is_loopback(urlsplit(self.base_url).hostname or "")

    @classmethod
    def from_connection(cls, conn: Connection, overrides: Mapping[str, Any]) -> SfoxConnectionConfig:
        """
        Read and check the connection's settings.

        :param conn: the Airflow connection.
        :param overrides: the hook's own arguments (``timeout``, ``rate_limit_requests``,
            ``max_retry_seconds``); ``None`` values are not set.
        :raises SfoxConfigError: naming the connection id and the field or extra at fault.
        """
        conn_id = conn.conn_id
        extras = _Extras(conn_id, {**(conn.extra_dejson or {}), **_set(overrides)})
        extras.check_known()
        base_url = _base_url(conn)
        loopback = is_loopback(urlsplit(base_url).hostname or "")
        budget = _budget(extras, loopback=loopback)
        named_scope = extras.text("rate_limit_scope")
        return cls(
            conn_id=conn_id,
            base_url=base_url,
            token=_token(conn),
            timeouts=(extras.number("connect_timeout"), extras.number("timeout")),
            budget=budget,
            max_retry_seconds=extras.number("max_retry_seconds"),
            rate_limit_pause_seconds=extras.number("rate_limit_pause_seconds"),
            outage_probe_seconds=extras.number("outage_probe_seconds"),
            rate_limit_scope=_scope(named_scope, base_url),
            rate_limit_backend=_backend(extras, loopback=loopback),
            rate_limit_dir=extras.text("rate_limit_dir"),
            rate_limit_redis_conn_id=extras.text("rate_limit_redis_conn_id") or "redis_default",
            per_host_scope=named_scope is not None and HOSTNAME_PLACEHOLDER in named_scope,
        )


def _set(overrides: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in overrides.items() if value is not None}


class _Extras:
    """The connection's extras (the hook's arguments win), checked against their schema."""

    def __init__(self, conn_id: str, values: Mapping[str, Any]) -> None:
        self.conn_id = conn_id
        self._values = values

    def given(self, name: str) -> Any:
        """The value set for ``name`` (``None``: not set, or an empty form field)."""
        value = self._values.get(name)
        return None if value == "" else value

    def check_known(self) -> None:
        """Refuse an extra the connection does not have: a misspelt budget would be ignored."""
        unknown = sorted(set(self._values) - set(CONN_FIELDS))
        if unknown:
            raise SfoxConfigError(
                f"Connection {self.conn_id!r}: unknown extra {unknown[0]!r}; "
                f"the sfox connection's extras are {', '.join(sorted(CONN_FIELDS))}."
            )

    def refuse(self, name: str, problem: str) -> SfoxConfigError:
        return SfoxConfigError(f"Connection {self.conn_id!r}: extra {name!r} {problem}.")

    def number(self, name: str) -> float:
        """A number within the field's schema (its default when not set)."""
        value = self.given(name)
        if value is None:
            return float(EXTRA_DEFAULTS[name])
        try:
            result = float(value)
        except (TypeError, ValueError):
            raise self.refuse(name, f"must be a number, got {value!r}") from None
        if not math.isfinite(result):
            raise self.refuse(name, f"must be finite, got {value!r}")
        schema = CONN_FIELDS[name]["schema"]
        if result < schema["minimum"]:
            raise self.refuse(name, f"must be >= {schema['minimum']}, got {value!r}")
        # rate_limit_requests above sFOX's limit gets its own message (see _budget).
        if "maximum" in schema and result > schema["maximum"] and name != "rate_limit_requests":
            raise self.refuse(name, f"must be <= {schema['maximum']}, got {value!r}")
        return result

    def text(self, name: str) -> str | None:
        """A non-empty string (its default when not set)."""
        value = self.given(name)
        if value is None:
            default = EXTRA_DEFAULTS[name]
            return None if default is None else str(default)
        if not isinstance(value, str) or not value.strip():
            raise self.refuse(name, f"must be a non-empty string, got {value!r}")
        return value.strip()


def _token(conn: Connection) -> str:
    token = (conn.password or "").strip()
    if not token:
        raise SfoxConfigError(
            f"Connection {conn.conn_id!r} has no Enterprise API token: set it as the connection's password."
        )
    if any(char.isspace() or unicodedata.category(char) == "Cc" for char in token):
        # requests would echo the whole header (token included) in its error message.
        raise SfoxConfigError(
            f"Connection {conn.conn_id!r}: the Enterprise API token contains spaces or control characters."
        )
    mask_secret(token)
    return token


def _budget(extras: _Extras, *, loopback: bool) -> Budget | None:
    """
    The connection's rate budget (``None``: no client-side budget, loopback hosts only).

    For a real sFOX host the budget must allow 1 to 250 requests in any 10-s window and keep
    at least the jitter margin the budget itself computes; a loopback sandbox (on a faster
    clock, say) may set anything.
    """
    requests = extras.number("rate_limit_requests")
    if requests != int(requests):
        raise extras.refuse("rate_limit_requests", f"must be a whole number, got {requests!r}")
    if requests == 0:
        if loopback:
            return None
        raise extras.refuse(
            "rate_limit_requests",
            f"= 0 turns the client-side budget off, which is refused for a real sFOX host: set 1 to "
            f"{SFOX_LIMIT_REQUESTS} requests per {SFOX_LIMIT_WINDOW_SECONDS:g} s (sFOX blocks the whole "
            "egress IP for 60 s past its limit)",
        )
    budget = Budget(int(requests), extras.number("rate_limit_window_seconds"))
    worst = budget.per_sfox_window()
    if not loopback and worst > SFOX_LIMIT_REQUESTS:
        raise extras.refuse(
            "rate_limit_requests",
            f"= {budget.requests} per 'rate_limit_window_seconds' = {budget.window_seconds:g} s is above "
            f"sFOX's limit of {SFOX_LIMIT_REQUESTS} requests per {SFOX_LIMIT_WINDOW_SECONDS:g} s per IP: "
            f"it may put {worst} requests in one 10-s window (N x ceil(10 / W) must be <= "
            f"{SFOX_LIMIT_REQUESTS})",
        )
    if extras.given("rate_limit_margin_seconds") is None:
        return budget
    margin = extras.number("rate_limit_margin_seconds")
    least = budget.jitter_margin()
    if not loopback and margin < least:
        raise extras.refuse(
            "rate_limit_margin_seconds",
            f"= {margin:g} is below the jitter margin of {least:g} s that a budget of {budget.requests} "
            f"per {budget.window_seconds:g} s needs to stay under sFOX's limit: leave it empty or set "
            f"at least {least:g}",
        )
    return dataclasses.replace(budget, margin_seconds=margin)


def _backend(extras: _Extras, *, loopback: bool) -> str | None:
    """The backend the connection names (``None``: not named)."""
    if extras.given("rate_limit_backend") is None:
        return None
    backend = extras.text("rate_limit_backend")
    if backend not in BACKENDS:
        raise extras.refuse("rate_limit_backend", f"must be one of {BACKENDS}, got {backend!r}")
    if backend == "memory" and not loopback:
        raise extras.refuse(
            "rate_limit_backend",
            "= 'memory' keeps the budget in one process, which is refused for a real sFOX host: "
            "every task process would spend the whole budget; use 'local' or 'redis'",
        )
    return backend


def _scope(named: str | None, base_url: str) -> str:
    """
    The budget's scope: the base URL's host[:port], lower case, unless the connection names one.
    ``{hostname}`` in a named scope becomes this machine's host name (one budget per machine).
    """
    if named is not None:
        return named.replace(HOSTNAME_PLACEHOLDER, socket.gethostname().lower())
    parts = urlsplit(base_url)
    host = (parts.hostname or "").lower()
    return f"{host}:{parts.port}" if parts.port else host


def _base_url(conn: Connection) -> str:
    """Build the base URL from the connection's host (a URL with its scheme, or a bare host)."""
    host = (conn.host or "").strip()
    if not host:
        return DEFAULT_BASE_URL
    if "://" not in host:
        host = f"https://{host}"
    parts = urlsplit(host)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise SfoxConfigError(
            f"Connection {conn.conn_id!r}: host must be a base URL such as {DEFAULT_BASE_URL}, "
            f"got {conn.host!r}."
        )
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise SfoxConfigError(
            f"Connection {conn.conn_id!r}: https is required to send the API token; plain http is "
            f"allowed only for loopback hosts (the local sandbox), got host {parts.hostname!r}."
        )
    if parts.query or parts.fragment:
        raise SfoxConfigError(f"Connection {conn.conn_id!r}: base URL must have no query or fragment.")
    return host.rstrip("/")


def is_loopback(hostname: str) -> bool:
    """Whether ``hostname`` is ``localhost`` or a loopback IP address."""
    if hostname.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


# --- Airflow 3.1 connection form (3.2+ reads get_provider_info) -------------------------------


def connection_form_widgets() -> dict[str, Any]:
    """The extra fields of the connection form, for Airflow 3.1's UI."""
    from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
    from flask_babel import lazy_gettext
    from wtforms import StringField
    from wtforms.validators import Optional

    return {
        name: StringField(
            lazy_gettext(field["label"]),
            widget=BS3TextFieldWidget(),
            validators=[Optional()],
            description=field["description"]
            + ("" if field["schema"]["default"] is None else f" Default: {field['schema']['default']}."),
        )
        for name, field in CONN_FIELDS.items()
    }


def ui_field_behaviour() -> dict[str, Any]:
    """The relabelling and hidden fields of the connection form, for Airflow 3.1's UI."""
    return {
        "hidden_fields": list(UI_FIELD_BEHAVIOUR["hidden-fields"]),
        "relabeling": dict(UI_FIELD_BEHAVIOUR["relabeling"]),
        "placeholders": {
            **UI_FIELD_BEHAVIOUR["placeholders"],
            **{
                name: str(field["schema"]["default"])
                for name, field in CONN_FIELDS.items()
                if field["schema"]["default"] is not None
            },
        },
    }
