"""
The docs' tables come from the code: ``docs/_ext/sfox_facts.py`` reads them at build time.

Each test compares one generated table with the code it is read from, so a table that stops
following the code (a state, a param, an extra, a column or a metric missing) fails here, and
``make docs`` fails on the same mismatch as a warning.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def facts():
    """``docs/_ext/sfox_facts.py``, the module the Sphinx extension renders."""
    sys.path.insert(0, str(REPO / "docs" / "_ext"))
    try:
        yield importlib.import_module("sfox_facts")
    finally:
        sys.path.remove(str(REPO / "docs" / "_ext"))
        sys.modules.pop("sfox_facts", None)


def _first_column(table) -> list[str]:
    return [row[0].strip("`") for row in table.rows]


@pytest.mark.parametrize(
    "enum_path",
    [
        "airflow_sfox.onboarding.model.LedgerState",
        "airflow_sfox.onboarding.model.RunStatus",
        "airflow_sfox.onboarding.model.AttemptOutcome",
        "airflow_sfox.onboarding.model.EventSkip",
    ],
)
def test_every_member_of_an_enum_is_listed_with_its_meaning(facts, enum_path):
    module_name, _, name = enum_path.rpartition(".")
    enum = getattr(importlib.import_module(module_name), name)
    table = facts.enum_table(enum_path)
    assert _first_column(table) == [m.value for m in enum]
    documented = facts.member_docs(enum_path)
    previous = ""
    for member, row in zip(enum, table.rows, strict=True):
        # A member without a comment of its own shares the group comment above it, or has none.
        assert row[1] == documented[member.name] if member.name in documented else row[1] in ("", previous)
        previous = row[1]


def test_every_ledger_state_has_a_meaning(facts):
    from airflow_sfox.onboarding.model import LedgerState

    table = facts.enum_table("airflow_sfox.onboarding.model.LedgerState")
    assert all(row[1] for row in table.rows), [row[0] for row in table.rows if not row[1]]
    # The sets a state belongs to are read from the model too.
    sent = next(row for row in table.rows if row[0] == f"`{LedgerState.SENT.value}`")
    assert "`DONE_STATES`" in sent[2]


@pytest.mark.parametrize("kind", ["onboarding", "event"])
def test_every_param_is_listed_with_its_default_and_choices(facts, kind):
    from airflow_sfox.onboarding import params as params_module

    found = params_module.onboarding_params() if kind == "onboarding" else params_module.event_params()
    table = facts.params(kind)
    assert [row[1].strip("`") for row in table.rows] == list(found)
    for (name, param), row in zip(found.items(), table.rows, strict=True):
        choices = param.schema.get("enum") or param.schema.get("items", {}).get("enum") or []
        assert row[5] == ", ".join(f"`{c}`" for c in choices), name
        assert row[2] == param.schema.get("title", ""), name


def test_every_connection_extra_is_listed(facts):
    from airflow_sfox.get_provider_info import get_provider_info

    (conn,) = [c for c in get_provider_info()["connection-types"] if c["connection-type"] == "sfox"]
    table = facts.connection_extras()
    assert _first_column(table) == list(conn["conn-fields"])
    assert all(row[1] and row[4] for row in table.rows)
    hidden = {row[0].strip("`") for row in facts.connection_fields().rows if row[1] == "hidden"}
    assert hidden == set(conn["ui-field-behaviour"]["hidden-fields"])


def test_every_config_option_is_listed_with_its_environment_variable(facts):
    from airflow_sfox.get_provider_info import get_provider_info

    options = get_provider_info()["config"]["sfox"]["options"]
    table = facts.config_options()
    assert _first_column(table) == [f"[sfox] {option}" for option in options]
    assert [row[1].strip("`") for row in table.rows] == [f"AIRFLOW__SFOX__{o.upper()}" for o in options]


def test_the_column_notes_match_the_tables_of_the_engine(facts):
    tables = facts.warehouse_tables()
    assert set(tables) == set(facts.COLUMN_NOTES)
    for kind, table in tables.items():
        name, rendered, problems = facts.column_table(kind)
        assert problems == [], problems
        assert name == str(table.name)
        assert _first_column(rendered) == [c.name for c in table.columns]


def test_every_metric_emitted_is_listed(facts):
    from airflow_sfox.onboarding.metrics import PLAN_FIGURES, PREFIX

    listed = set(_first_column(facts.metrics()))
    emitted = facts.emitted_metric_names()
    assert emitted, "no metric name found in metrics.py"
    for name in emitted:
        stem = name.split("<x>")[0]
        assert name in listed or any(m.startswith(stem) and m != stem for m in listed), name
    for figure in PLAN_FIGURES:
        assert f"{PREFIX}.plan.{figure}" in listed


def test_the_api_reference_covers_every_module(facts):
    found = facts.modules()
    on_disk = sorted(p for p in (REPO / "airflow_sfox").rglob("*.py"))
    assert len(found) == len(on_disk)
    assert "airflow_sfox.onboarding.model" in found
