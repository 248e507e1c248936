"""The registration mapping (checked at parse time), the body of a row, its checks, its keyed hash."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import pytest

from airflow_sfox.onboarding.config import OnboardingConfig, OnboardingSource
from airflow_sfox.onboarding.registration import (
    DEFAULT_FIELDS,
    Registration,
    build_payload,
    check_payload,
    fields_hmac,
    registration_secret,
    scrub_fields,
)
from tests.onboarding.registration_data import corporation, individual

TODAY = dt.date(2026, 12, 6)


def body_of(row: dict, registration: Registration | None = None) -> dict | str:
    registration = registration or Registration()
    return build_payload(
        registration,
        user_id=row["user_id"],
        account_type=row["account_type"],
        email=row["email"],
        phone_number=row["phone_number"],
        values={path: row.get(column) for path, column in registration.columns().items()},
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"account_role": "owner"}, "account_role must be one of"),
        ({"fields": {"email": "mail"}}, "comes from the source's own columns"),
        ({"fields": {"beneficial_owners.name": "owner"}}, "not a field of individual or business"),
        ({"fields": {"first_name": "given name"}}, "SQL identifier"),
        ({"fields": {"first-name": "given"}}, "not a field name"),
        ({"secret_variable": " "}, "secret_variable"),
    ],
)
def test_a_bad_mapping_is_refused_where_the_dag_is_defined(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Registration(**kwargs)


def test_the_mapping_defaults_renames_builds_nested_objects_and_drops_fields():
    assert Registration().columns() == DEFAULT_FIELDS
    mapped = Registration(
        fields={"first_name": "given", "individual.dob": "birth_date", "phone_country_code": None}
    ).columns()
    assert mapped["first_name"] == "given"
    assert mapped["individual.dob"] == "birth_date"
    assert "individual" not in mapped  # built from columns: its JSON column only when named
    assert "phone_country_code" not in mapped
    assert mapped["business"] == "business"


def test_a_run_conf_may_not_name_the_registration():
    with pytest.raises(ValueError, match="registration"):
        OnboardingConfig.check_conf({"registration": {"fields": {}}})
    with pytest.raises(ValueError, match="Registration"):
        OnboardingSource(registration={"fields": {}})  # type: ignore[arg-type]


def test_the_body_of_each_account_type():
    ind = body_of(individual(3))
    assert ind["account_role"] == "client"
    assert ind["individual"]["address"]["country"] == "US"
    assert "business" not in ind
    assert "beneficial_owners" not in ind
    corp = body_of(corporation(3))
    assert isinstance(corp["beneficial_owners"], list)
    assert "individual" not in corp
    built = Registration(
        fields={"individual": None, "individual.dob": "dob", "individual.address.city": "city"}
    )
    row = {**individual(4), "dob": dt.date(1970, 1, 2), "city": "Paris"}
    assert body_of(row, built)["individual"] == {"dob": "1970-01-02", "address": {"city": "Paris"}}


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (individual(1), None),
        (corporation(1), None),
        (
            individual(1, account_purpose="Treasury Management"),
            "account_purpose is not one of the individual",
        ),
        (corporation(1, account_purpose="Trading"), "account_purpose is not one of the corporation"),
        (individual(1, last_name=" "), "last_name is missing (required to register individuals)"),
        (corporation(1, phone_number=None), "phone_number is missing (required to register corporations)"),
        (individual(1, phone_country_code="XX"), "phone_country_code is not an ISO 3166-1 alpha-2"),
        (individual(1, individual=None), "individual is missing or not a non-empty JSON object"),
        (individual(1, individual="[1]"), "individual is missing or not a non-empty JSON object"),
        (
            individual(1, individual='{"dob": "2030-01-01"}'),
            "individual.dob is not a plausible date of birth",
        ),
        (individual(1, individual='{"dob": "1980-02-30"}'), "individual.dob is not a date (YYYY-MM-DD)"),
        (
            individual(1, individual='{"dob": "1980-02-03", "address": {"country": "United States"}}'),
            "individual.address.country is not an ISO 3166-1 alpha-2",
        ),
        (corporation(1, business="{}"), "business is missing or not a non-empty JSON object"),
        (
            corporation(1, beneficial_owners="[]"),
            "beneficial_owners is missing or not a non-empty JSON array",
        ),
        (
            corporation(1, beneficial_owners=json.dumps([{"dob": "05/05/1970"}])),
            "beneficial_owners[0].dob is not a date",
        ),
        (
            corporation(1, beneficial_owners=json.dumps([{"phone": "555-0100"}])),
            "beneficial_owners[0].phone is not in E.164",
        ),
        (
            individual(1, individual='{"dob": "1980-02-03", "favourite_colour": "teal"}'),
            None,
        ),  # unknown: passes
    ],
)
def test_checks_name_the_field_never_the_value(row, reason):
    body = body_of(row)
    assert isinstance(body, dict)
    found = check_payload(body, today=TODAY)
    assert found == reason if reason is None else found is not None and found.startswith(reason)
    for value in ("Ada1x", "Lovelace1y", "1980-02-30", "05/05/1970", "555-0100", "United States"):
        assert found is None or value not in found


def test_the_fields_hash_is_keyed_stable_and_never_a_plain_hash():
    body = body_of(individual(5))
    assert isinstance(body, dict)
    one, other = fields_hmac(body, b"a" * 32), fields_hmac(body, b"b" * 32)
    assert one == fields_hmac(dict(reversed(body.items())), b"a" * 32)  # key order does not matter
    assert one != other
    plain = json.dumps(body, sort_keys=True, separators=(",", ":"))
    assert one != hashlib.sha256(plain.encode()).hexdigest()
    changed = body_of(individual(5, last_name="Byron"))
    assert isinstance(changed, dict)
    assert fields_hmac(changed, b"a" * 32) != one


def test_sfox_messages_are_scrubbed_of_every_field_value():
    body = body_of(individual(6))
    assert isinstance(body, dict)
    message = "Invalid user ADA6X lovelace6y, born 19" + json.loads(individual(6)["individual"])["dob"][2:]
    scrubbed = scrub_fields(message, body)
    for value in ("ADA6X", "lovelace6y", "19" + message[-8:]):
        assert value not in scrubbed
    assert scrubbed.startswith("Invalid user <redacted> <redacted>, born <redacted>")


@pytest.mark.parametrize("value", [None, "short"])
def test_the_secret_must_be_set_and_long(monkeypatch, value):
    if value is not None:
        monkeypatch.setenv("AIRFLOW_VAR_SFOX_REGISTRATION_SECRET", value)
    with pytest.raises(ValueError, match="sfox_registration_secret") as raised:
        registration_secret(Registration())
    assert value is None or value not in str(raised.value)
    monkeypatch.setenv("AIRFLOW_VAR_SFOX_REGISTRATION_SECRET", "s" * 16)
    assert registration_secret(Registration()) == b"s" * 16
