"""Validation of source rows: every bad row gets a reason naming its field, never its PII."""

from __future__ import annotations

import pytest

from airflow_sfox.onboarding.validation import SourceUser, ledger_key, validate_row


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (("u1", "individual", "a@example.com", "+12025550100"), SourceUser("u1", "individual")),
        (("u2", " Corporation ", "b@example.co.uk", None), SourceUser("u2", "corporation")),
        ((42, "corporation", "c@example.com", ""), SourceUser("42", "corporation")),
        (("u3", "corporation", "d@example.com", "+442071838750"), SourceUser("u3", "corporation")),
    ],
)
def test_valid_rows(row, expected):
    assert validate_row(*row) == expected


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (("", "individual", "a@example.com", "+12025550100"), "user_id is empty"),
        (("   ", "individual", "a@example.com", "+12025550100"), "user_id is empty"),
        ((None, "individual", "a@example.com", "+12025550100"), "user_id is empty"),
        (("x" * 129, "individual", "a@example.com", "+12025550100"), "user_id is longer than 128"),
        (("a\nb", "individual", "a@example.com", "+12025550100"), "control characters"),
        (("a\x00b", "corporation", "a@example.com", None), "control characters"),
        (("..", "corporation", "a@example.com", None), "cannot be '.' or '..'"),
        (("u", "business", "a@example.com", None), "account_type 'business' is not one of"),
        (("u", None, "a@example.com", None), "account_type '' is not one of"),
        (("u", "individual", None, "+12025550100"), "email is missing"),
        (("u", "individual", "secret.person@nowhere", "+12025550100"), "email is malformed"),
        (("u", "individual", "two@@example.com", "+12025550100"), "email is malformed"),
        (("u", "individual", "a b@example.com", "+12025550100"), "email is malformed"),
        (("u", "individual", "a@example.com", None), "phone_number is missing"),
        (("u", "individual", "a@example.com", "202-555-0100"), "E.164"),
        (("u", "individual", "a@example.com", "+0123456789"), "E.164"),
        (("u", "corporation", "a@example.com", "12345"), "E.164"),
    ],
)
def test_rejected_rows_name_the_field(row, reason):
    result = validate_row(*row)
    assert isinstance(result, str)
    assert reason in result
    for pii in (row[2], row[3]):
        if pii:
            assert str(pii) not in result


@pytest.mark.parametrize(
    ("user_id", "expected"), [("u1", "u1"), ("", "<empty user_id>"), (None, "<empty user_id>")]
)
def test_ledger_key(user_id, expected):
    assert ledger_key(user_id) == expected


@pytest.mark.parametrize("user_id", ["a\x00b", "y" * 300])
def test_ledger_key_of_unstorable_ids_is_printable_stable_and_bounded(user_id):
    key = ledger_key(user_id)
    assert key.startswith("<invalid user_id")
    assert "\x00" not in key
    assert len(key) < 255
    assert ledger_key(user_id) == key  # the same bad row keeps its ledger row
    assert ledger_key(user_id + "z") != key


@pytest.mark.parametrize(
    ("rule", "row", "expected"),
    [
        # Corporations verifying their phone too: their phone becomes required.
        (
            {"individual": ("email", "sms"), "corporation": ("email", "sms")},
            ("c1", "corporation", "c@example.com", None),
            "phone_number is missing (required for corporations)",
        ),
        # Individuals verifying their email only: no phone needed.
        (
            {"individual": ("email",), "corporation": ("email",)},
            ("i1", "individual", "i@example.com", None),
            SourceUser("i1", "individual"),
        ),
    ],
    ids=["corporations-verify-sms", "individuals-email-only"],
)
def test_the_phone_rule_follows_the_model_s_channel_rule(monkeypatch, rule, row, expected):
    from airflow_sfox.onboarding import model

    planted = {model.AccountType(k): tuple(model.Channel(c) for c in v) for k, v in rule.items()}
    monkeypatch.setattr(model, "CHANNELS_BY_ACCOUNT_TYPE", planted)
    assert validate_row(*row) == expected
