"""The provider metadata is valid for Airflow and resolves to the hook and its form."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_sfox import __version__
from airflow_sfox.get_provider_info import (
    CONFIG,
    CONFIG_SECTION,
    CONN_FIELDS,
    config_default,
    get_provider_info,
)


def test_provider_info_validates_against_airflows_schema():
    import airflow
    import jsonschema

    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_package_name_is_the_installed_distribution():
    from importlib.metadata import version

    info = get_provider_info()
    assert version(info["package-name"]) == __version__
    assert info["versions"][0] == __version__


def test_providers_manager_resolves_connection_type_to_the_hook():
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert manager.providers["airflow-provider-sfox"].version == __version__
    hook_info = manager.hooks["sfox"]
    assert hook_info is not None
    assert hook_info.hook_class_name == "airflow_sfox.hooks.sfox.SfoxConnectHook"
    assert hook_info.connection_id_attribute_name == "sfox_conn_id"
    assert hook_info.hook_name == "sFOX Connect"


_HOOK_META_SCRIPT = """
import json
from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService
metas = [m.model_dump(mode="json") for m in HookMetaService.hook_meta_data() if m.connection_type == "sfox"]
print("HOOK_META=" + json.dumps(metas))
"""


@pytest.fixture(scope="module")
def sfox_hook_meta() -> dict:
    """
    What the Airflow UI's connection form receives (``GET /ui/connections/hook_meta``).

    Computed in a fresh interpreter, as in the api-server: ProvidersManager is a process-wide
    singleton, and Airflow 3.1 builds the form only when its first hook import runs under
    HookMetaService's stand-ins for the FAB form classes.
    """
    out = subprocess.run(
        [sys.executable, "-c", _HOOK_META_SCRIPT], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("HOOK_META="))
    metas = json.loads(line.removeprefix("HOOK_META="))
    assert len(metas) == 1
    return metas[0]


def test_connection_form_standard_fields(sfox_hook_meta):
    fields = sfox_hook_meta["standard_fields"]
    assert sfox_hook_meta["hook_name"] == "sFOX Connect"
    assert fields["host"] == {"hidden": False, "title": "Base URL", "placeholder": "https://api.sfox.com"}
    assert fields["password"]["title"] == "Enterprise API token"
    assert not fields["password"]["hidden"]
    for hidden in ("login", "port", "url_schema"):
        assert fields[hidden]["hidden"] is True


def test_connection_form_has_one_field_per_extra(sfox_hook_meta):
    extra_fields = sfox_hook_meta["extra_fields"]
    assert set(extra_fields) == set(CONN_FIELDS)
    for name, field in CONN_FIELDS.items():
        assert extra_fields[name]["schema"]["title"] == field["label"]
        assert "null" in extra_fields[name]["schema"]["type"]  # every extra is optional


def _airflow_cli(*args: str) -> str:
    """``airflow <args>`` in a fresh process (the session's AIRFLOW_HOME), its standard output."""
    return subprocess.run(
        [sys.executable, "-m", "airflow", *args], capture_output=True, text=True, check=True, timeout=180
    ).stdout


def test_airflow_config_list_documents_the_sfox_section():
    out = _airflow_cli(
        "config", "list", "--section", CONFIG_SECTION, "--include-descriptions", "--color", "off"
    )
    assert f"[{CONFIG_SECTION}]" in out
    options = CONFIG[CONFIG_SECTION]["options"]
    assert {"onboarding_page_enabled", "onboarding_dag_ids"} <= set(options)
    for name, option in options.items():
        assert f"{name} = " in out, name
        assert f"# {option['description'].splitlines()[0]}" in out, name


def test_airflow_config_get_value_gives_the_declared_defaults():
    out = _airflow_cli("config", "get-value", CONFIG_SECTION, "onboarding_dag_ids")
    assert out.strip().splitlines()[-1] == "sfox_batch_onboarding"  # after any log line
    assert config_default("onboarding_dag_ids") == "sfox_batch_onboarding"
    assert config_default("onboarding_page_enabled") == "True"


def test_config_defaults_match_the_engine_and_the_page():
    """The page's defaults are the engine's table names and the DAG file's connection id."""
    from airflow_sfox.defaults import LEDGER_TABLE, RUNS_TABLE
    from airflow_sfox.plugins.dashboard import DashboardSettings

    assert config_default("onboarding_ledger_table") == LEDGER_TABLE
    assert config_default("onboarding_runs_table") == RUNS_TABLE
    assert config_default("onboarding_warehouse_conn_id") == DashboardSettings().conn_id
    for option in CONFIG[CONFIG_SECTION]["options"].values():
        assert set(option) == {"description", "version_added", "type", "example", "default"}
