"""A pytest plugin that plants a wrong channel rule in the provider (``-p tests.sandbox.planted_rule``).

``SFOX_PLANTED_RULE`` picks the mistake, patched into
``airflow_sfox.onboarding.model.CHANNELS_BY_ACCOUNT_TYPE`` before any test runs:

- ``sms-first``: individuals verify their phone before their email;
- ``email-only``: individuals verify their email only;
- ``corporation-sms``: corporations verify email, then sms.

The sandbox keeps its own rule (written from the API contract), so sandbox-backed tests of the
provider must fail under any of them: see ``tests/sandbox/test_independence.py``.
"""

from __future__ import annotations

import os

PLANTED_RULE_ENV = "SFOX_PLANTED_RULE"


def pytest_configure(config) -> None:
    from airflow_sfox.onboarding.model import CHANNELS_BY_ACCOUNT_TYPE, AccountType, Channel

    rules = {
        "sms-first": (AccountType.INDIVIDUAL, (Channel.SMS, Channel.EMAIL)),
        "email-only": (AccountType.INDIVIDUAL, (Channel.EMAIL,)),
        "corporation-sms": (AccountType.CORPORATION, (Channel.EMAIL, Channel.SMS)),
    }
    name = os.environ.get(PLANTED_RULE_ENV, "")
    if name not in rules:
        raise ValueError(f"{PLANTED_RULE_ENV} must be one of {', '.join(rules)}, not {name!r}")
    account_type, channels = rules[name]
    CHANNELS_BY_ACCOUNT_TYPE[account_type] = channels
