"""
Registering the users sFOX does not know yet (opt-in): which source columns make the body of
``POST /v1/enterprise/register-account``, how a row's fields are checked before any request,
and the keyed hash that tells whether they changed since sFOX refused them.

What sFOX documents (``sfox-connect-api.md``, "Registering end users"): the body fields
``account_type``, ``account_role`` (``client``/``advisor``), ``user_id``, ``first_name``,
``last_name``, ``email``, ``phone_country_code`` (ISO 3166-1 alpha-2), ``phone_number``
(E.164), ``account_purpose`` (a list per account type), and ``individual{...}`` (with ``dob``)
for individuals, ``business{...}`` and ``beneficial_owners[...]`` for corporations. The
contract is incomplete: fields it does not name pass through unchecked, and sFOX's own answer
has the last word.

Personal data: the values read here are held in memory by the plan (to check them) and by the
registration step (to send them), and nowhere else. A reason names the field, never its value;
sFOX's error texts are scrubbed of every value of the body (:func:`scrub_fields`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_sfox.onboarding.model import AccountType
from airflow_sfox.onboarding.schema import check_identifier

if TYPE_CHECKING:
    from collections.abc import Mapping

#: ``account_role`` values sFOX accepts.
ACCOUNT_ROLES: tuple[str, ...] = ("client", "advisor")
#: ``account_purpose`` values per account type, as sFOX's docs spell them.
ACCOUNT_PURPOSES: dict[AccountType, tuple[str, ...]] = {
    AccountType.INDIVIDUAL: (
        "Trading",
        "Selling only",
        "Other",
        "Online purchases",
        "Online payments",
        "Investing",
        "Buying only",
        "Business",
    ),
    AccountType.CORPORATION: (
        "Treasury Management",
        "Operating",
        "Liquidating Crypto Assets",
        "Investment Fund",
        "Cross Border Payments",
        "Arbitrage Trading",
        "Other",
    ),
}
#: The nested object (or array) each account type sends, and whether it is an array.
NESTED_BY_ACCOUNT_TYPE: dict[AccountType, dict[str, type]] = {
    AccountType.INDIVIDUAL: {"individual": dict},
    AccountType.CORPORATION: {"business": dict, "beneficial_owners": list},
}
_NESTED = {name for shapes in NESTED_BY_ACCOUNT_TYPE.values() for name in shapes}
#: Fields that come from the source's own columns (``OnboardingSource.columns``), not the mapping.
SOURCE_FIELDS = ("user_id", "account_type", "email", "phone_number")
#: Top-level fields required of every account type (the body's documented fields; ``user_id``,
#: ``account_type`` and ``email`` are checked with the source row).
REQUIRED_FIELDS = ("first_name", "last_name", "phone_number", "phone_country_code", "account_purpose")
#: The mapping by default: each field from the source column of the same name; the nested ones
#: from JSON columns of their name.
DEFAULT_FIELDS: dict[str, str] = {
    "first_name": "first_name",
    "last_name": "last_name",
    "phone_country_code": "phone_country_code",
    "account_purpose": "account_purpose",
    "individual": "individual",
    "business": "business",
    "beneficial_owners": "beneficial_owners",
}
#: The Airflow Variable holding the key of the fields' HMAC by default (Airflow masks the value
#: of a Variable whose name says "secret").
DEFAULT_SECRET_VARIABLE = "sfox_registration_secret"  # noqa: S105 - a Variable name, not a secret
#: Shortest key accepted: a short key would let a low-entropy field (a date of birth) be guessed.
MIN_SECRET_LENGTH = 16
#: ISO 3166-1 alpha-2 country codes (249), as a block of text that reads as the standard's table.
ISO_COUNTRIES = frozenset(
    (  # noqa: SIM905
        "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS "
        "BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE "
        "EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM "
        "HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC "
        "LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA "
        "NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW "
        "SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO "
        "TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW "
    ).split()
)
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
#: Oldest date of birth taken as real.
MAX_AGE_YEARS = 130
#: Keys of nested objects checked by their kind, wherever they appear (unknown keys pass).
_DATE_KEYS = ("dob", "date_of_birth", "birth_date", "incorporation_date")
_COUNTRY_KEYS = ("country", "country_code", "phone_country_code", "issuing_country", "nationality")
_PHONE_KEYS = ("phone", "phone_number")
#: Body fields that are no personal data: kept in a scrubbed message.
_NOT_PERSONAL = ("account_type", "account_role", "account_purpose")


@dataclass(frozen=True)
class Registration:
    """
    Register the source's users that sFOX does not know yet, before their email step (opt-in:
    ``OnboardingSource(registration=Registration(...))``). Checked where the DAG is defined,
    without any I/O.

    :param fields: the source column of each register-account field, where it differs from
        :data:`DEFAULT_FIELDS`: ``{"first_name": "given_name"}``; a nested field by its dotted
        path (``{"individual.dob": "birth_date", "individual.address.country": "country"}``:
        the object is then built from columns, merged over its JSON column when that is mapped
        too); ``None`` drops a default (a source without ``phone_country_code``). ``user_id``,
        ``account_type``, ``email`` and ``phone_number`` are the source's own columns.
    :param account_role: the ``account_role`` of rows without an ``account_role`` column (or
        with it empty): ``client`` or ``advisor``.
    :param secret_variable: the Airflow Variable (or secrets backend entry) holding the key of
        the fields' keyed hash, at least 16 characters; never stored in the warehouse.
    """

    fields: Mapping[str, str | None] = field(default_factory=dict)
    account_role: str = "client"
    secret_variable: str = DEFAULT_SECRET_VARIABLE

    def __post_init__(self) -> None:
        if self.account_role not in ACCOUNT_ROLES:
            raise ValueError(
                f"registration account_role must be one of {ACCOUNT_ROLES}, got {self.account_role!r}"
            )
        if not isinstance(self.secret_variable, str) or not self.secret_variable.strip():
            raise ValueError("registration secret_variable must name an Airflow Variable")
        for path, column in self.fields.items():
            head = path.split(".", 1)[0]
            if head in SOURCE_FIELDS:
                raise ValueError(
                    f"registration fields: {path!r} comes from the source's own columns; map it with "
                    f"OnboardingSource(columns={{{head!r}: ...}})"
                )
            if "." in path and head not in _NESTED - {"beneficial_owners"}:
                raise ValueError(
                    f"registration fields: {path!r} is not a field of individual or business; "
                    "beneficial_owners comes from one JSON column (an array)"
                )
            if not all(part.isidentifier() for part in path.split(".")):
                raise ValueError(f"registration fields: {path!r} is not a field name (or dotted path)")
            if column is not None:
                check_identifier(column, f"registration fields[{path!r}]")

    def columns(self) -> dict[str, str]:
        """Each mapped field (dotted path) and its source column, defaults included."""
        built = {path for path in self.fields if "." in path}
        mapped: dict[str, str | None] = {
            path: column
            for path, column in DEFAULT_FIELDS.items()
            # A nested object built from columns takes its JSON column only when named.
            if not any(p.startswith(f"{path}.") for p in built)
        }
        mapped.update(self.fields)
        return {path: column for path, column in mapped.items() if column is not None}


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()[:10]
    return value.strip() if isinstance(value, str) else str(value)


def _nested(path: str, value: Any) -> Any:
    """A JSON column's value (text or already decoded); raises ValueError naming the field."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError(f"{path} is not valid JSON") from None
    return value


def build_payload(
    registration: Registration,
    *,
    user_id: str,
    account_type: str,
    email: str,
    phone_number: str | None,
    values: Mapping[str, Any],
) -> dict[str, Any] | str:
    """
    The register-account body of one source row, or why it cannot be built (naming the field).

    :param values: the row's value of each mapped field (see :meth:`Registration.columns`).
    """
    kind = AccountType(account_type)
    body: dict[str, Any] = {"account_type": kind.value, "user_id": user_id, "email": email.strip()}
    if phone_number:
        body["phone_number"] = phone_number.strip()
    role = _text(values.get("account_role")).lower() or registration.account_role
    body["account_role"] = role
    shapes = NESTED_BY_ACCOUNT_TYPE[kind]
    for path, value in sorted(values.items(), key=lambda item: item[0].count(".")):
        head, _, rest = path.partition(".")
        if head == "account_role" or (head in _NESTED and head not in shapes):
            continue
        if head in _NESTED and not rest:
            try:
                decoded = _nested(path, value)
            except ValueError as err:
                return str(err)
            if decoded is not None:
                body[head] = decoded
        elif rest:
            if _text(value):
                target = body.setdefault(head, {})
                if not isinstance(target, dict):
                    return f"{head} is not a JSON object"
                *parents, leaf = rest.split(".")
                for part in parents:
                    target = target.setdefault(part, {})
                    if not isinstance(target, dict):
                        return f"{head}.{part} is not a JSON object"
                target[leaf] = _text(value)
        elif _text(value):
            body[path] = _text(value)
    return body


def checked_payload(
    registration: Registration,
    *,
    user_id: str,
    account_type: str,
    email: str,
    phone_number: str | None,
    values: Mapping[str, Any],
    today: dt.date | None = None,
) -> dict[str, Any] | str:
    """:func:`build_payload`, then :func:`check_payload`: the body, or why it cannot be sent."""
    body = build_payload(
        registration,
        user_id=user_id,
        account_type=account_type,
        email=email,
        phone_number=phone_number,
        values=values,
    )
    if isinstance(body, str):
        return body
    problem = check_payload(body, today=today)
    return body if problem is None else problem


def check_payload(body: Mapping[str, Any], *, today: dt.date | None = None) -> str | None:
    """
    Why a register-account body would be refused (``None``: send it). The reason names the
    field (``individual.dob is not a date (YYYY-MM-DD)``), never its value.

    :param body: a body made by :func:`build_payload`.
    :param today: the date the dates of birth are checked against (default: today, UTC).
    """
    kind = AccountType(body["account_type"])
    today = today or dt.datetime.now(dt.timezone.utc).date()
    for name in REQUIRED_FIELDS:
        if not _text(body.get(name)):
            return f"{name} is missing (required to register {kind}s)"
    if body.get("account_role") not in ACCOUNT_ROLES:
        return f"account_role is not one of {', '.join(ACCOUNT_ROLES)}"
    purposes = ACCOUNT_PURPOSES[kind]
    if body["account_purpose"] not in purposes:
        return f"account_purpose is not one of the {kind} purposes: {', '.join(purposes)}"
    for name, shape in NESTED_BY_ACCOUNT_TYPE[kind].items():
        value = body.get(name)
        if not isinstance(value, shape) or not value:
            what = "a non-empty JSON array" if shape is list else "a non-empty JSON object"
            return f"{name} is missing or not {what} (required to register {kind}s)"
    if kind == AccountType.INDIVIDUAL and not _text(body["individual"].get("dob")):
        return "individual.dob is missing (required to register individuals)"
    return _check_values("", body, today)


def _check_values(prefix: str, value: Any, today: dt.date) -> str | None:
    """Dates, country codes and phone numbers anywhere in the body, by key; others pass."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        path = f"{prefix}{key}" if isinstance(key, str) else f"{prefix.rstrip('.')}[{key}]"
        if isinstance(item, (dict, list)):
            problem = _check_values(f"{path}.", item, today)
        else:
            problem = _check_leaf(path, str(key).lower(), _text(item), today)
        if problem:
            return problem
    return None


def _check_leaf(path: str, key: str, text: str, today: dt.date) -> str | None:
    if not text:
        return None
    if key in _DATE_KEYS:
        try:
            when = dt.date.fromisoformat(text) if _DATE.match(text) else None
        except ValueError:
            when = None
        if when is None:
            return f"{path} is not a date (YYYY-MM-DD)"
        if key in _DATE_KEYS[:3] and not today.replace(year=today.year - MAX_AGE_YEARS) <= when <= today:
            return f"{path} is not a plausible date of birth"
    elif key in _COUNTRY_KEYS and text not in ISO_COUNTRIES:
        return f"{path} is not an ISO 3166-1 alpha-2 country code"
    elif key in _PHONE_KEYS and not _E164.match(text):
        return f"{path} is not in E.164 format (+ and 7 to 15 digits)"
    return None


def fields_hmac(body: Mapping[str, Any], key: bytes) -> str:
    """
    The keyed hash (HMAC-SHA256, hex) of a register-account body: whether a row's fields
    changed since they were last sent, without keeping them. Never a plain hash: a date of
    birth or a name would be found by trying the likely values.

    :param key: the secret of :func:`registration_secret`.
    """
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def _leaves(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [leaf for key, item in value.items() if key not in _NOT_PERSONAL for leaf in _leaves(item)]
    if isinstance(value, list):
        return [leaf for item in value for leaf in _leaves(item)]
    text = _text(value)
    return [text] if len(text) >= 2 else []


def scrub_fields(message: str, body: Mapping[str, Any]) -> str:
    """
    sFOX's error text with every value of the body replaced by ``<redacted>`` (any case), where
    it stands as a whole (a country ``US`` is not the start of ``user``).
    """
    for leaf in sorted(set(_leaves(body)), key=len, reverse=True):
        pattern = rf"(?<!\w){re.escape(leaf)}(?!\w)"
        message = re.sub(pattern, "<redacted>", message, flags=re.IGNORECASE)
    return message


def registration_secret(registration: Registration) -> bytes:
    """
    The key of the fields' keyed hash, from the Airflow Variable the registration names.

    :raises ValueError: the Variable is missing or shorter than :data:`MIN_SECRET_LENGTH`
        (naming the Variable, never its value).
    """
    from airflow.sdk import Variable

    name = registration.secret_variable
    try:
        value = Variable.get(name, default=None)
    except Exception as err:  # noqa: BLE001 - outside a task: the same error, named
        raise ValueError(
            f"cannot read Airflow Variable {name!r} (the registration secret): {type(err).__name__}"
        ) from None
    if not isinstance(value, str) or len(value) < MIN_SECRET_LENGTH:
        raise ValueError(
            f"registration needs the Airflow Variable {name!r}: a secret of at least "
            f"{MIN_SECRET_LENGTH} characters, the key of the keyed hash of each user's registration "
            "fields (kept out of the warehouse); set it, e.g. AIRFLOW_VAR_"
            f"{name.upper()}, or name another with Registration(secret_variable=...)"
        )
    return value.encode("utf-8")
