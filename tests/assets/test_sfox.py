"""The provider's assets: their URIs, and Airflow's check of the provider's schemes."""

from __future__ import annotations

import pytest
from airflow.sdk import Asset

from airflow_sfox.assets.sfox import email_verified_asset, ledger_asset, table_asset


@pytest.mark.parametrize(
    ("host", "uri"),
    [
        ("api.sfox.com", "sfox://api.sfox.com/email-verified"),
        ("API.sfox.com", "sfox://api.sfox.com/email-verified"),
        ("127.0.0.1:8089", "sfox://127.0.0.1:8089/email-verified"),
    ],
)
def test_email_verified_asset_is_one_per_host(host, uri):
    asset = email_verified_asset(host)
    assert asset.uri == uri
    assert asset == email_verified_asset(host.lower())  # the same asset wherever it is built


@pytest.mark.parametrize("host", ["", "https://api.sfox.com", "api.sfox.com/x", "a b", "user@host", 80])
def test_email_verified_asset_refuses_what_is_no_host(host):
    with pytest.raises(ValueError, match="email_verified_asset: host must be"):
        email_verified_asset(host)


@pytest.mark.parametrize(
    ("database_uri", "table", "uri"),
    [
        ("postgres://db:5432/wh", "customers", "postgres://db:5432/wh/public/customers"),
        ("postgres://db:5432/wh", "crm.customers", "postgres://db:5432/wh/crm/customers"),
        ("mysql://db:3306/wh", "customers", "mysql://db:3306/wh/customers"),
        ("mysql://db:3306/wh/", "customers", "mysql://db:3306/wh/customers"),
    ],
)
def test_table_asset_uses_the_database_provider_s_form(database_uri, table, uri):
    assert table_asset(database_uri, table).uri == uri


@pytest.mark.parametrize(
    ("database_uri", "table", "message"),
    [
        ("postgres://user:secret@db:5432/wh", "customers", "without credentials"),
        ("db:5432/wh", "customers", "without credentials"),
        ("postgres://db:5432/wh/extra", "customers", "without credentials"),
        ("postgres://db:5432/wh", "customers; drop", "SQL identifier"),
    ],
)
def test_table_asset_refuses_bad_input_naming_it(database_uri, table, message):
    with pytest.raises(ValueError, match=message):
        table_asset(database_uri, table)


def test_ledger_asset_names_the_connection_and_table():
    assert ledger_asset("wh", "onboarding.ledger").uri == "sfox-ledger://wh/onboarding.ledger"


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("sfox://api.sfox.com/verified", "sfox://<host>/email-verified"),
        ("sfox-ledger://wh/no such table", "sfox-ledger://<conn>/<table>"),
    ],
)
def test_airflow_refuses_a_malformed_uri_of_the_provider_s_schemes(uri, message):
    # The provider registers its schemes (get_provider_info()["asset-uris"]): Airflow calls its check.
    with pytest.raises(ValueError, match=message):
        Asset(uri=uri)
