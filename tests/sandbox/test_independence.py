"""The sandbox is an independent model of sFOX (issue 21): it imports nothing from the provider,
and a wrong channel rule planted in the provider makes the sandbox-backed tests fail."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SANDBOX_SOURCES = sorted((REPO / "sandbox" / "sfox_sandbox").glob("*.py"))
#: A provider test that plans and sends for individuals and corporations against the sandbox.
TARGET = "tests/integration/test_channel_rule_sandbox.py"


def _imported_modules(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
    return names


def test_the_sandbox_sources_are_found() -> None:
    assert {p.name for p in SANDBOX_SOURCES} >= {"__init__.py", "model.py", "state.py", "app.py"}


@pytest.mark.parametrize("path", SANDBOX_SOURCES, ids=lambda p: p.name)
def test_the_sandbox_imports_nothing_from_the_provider(path: Path) -> None:
    provider = [name for name in _imported_modules(path) if name.split(".")[0] == "airflow_sfox"]
    assert provider == [], f"{path.name} imports {provider}: the sandbox must model sFOX on its own"


@pytest.mark.parametrize(
    ("rule", "exit_code"),
    [
        (None, 0),  # control: the provider's own rule passes
        # Individuals asked for sms before email: the provider refuses the rule as it imports
        # (every account type must verify the same channel first), before any test runs.
        ("sms-first", 2),
        ("email-only", 1),  # individuals never asked for sms: the sandbox still requires it
        # Corporations given an sms step: sFOX lists no sms requirement for them, so the ledger
        # row the provider keeps for it is one sFOX does not know.
        ("corporation-sms", 1),
    ],
)
def test_a_planted_wrong_rule_fails_the_sandbox_backed_tests(
    rule: str | None, exit_code: int, tmp_path
) -> None:
    argv = [
        sys.executable,
        "-m",
        "pytest",
        TARGET,
        "-q",
        "-p",
        "no:cacheprovider",
        "--basetemp",
        str(tmp_path),
    ]
    env = dict(os.environ)
    env.pop("SFOX_PLANTED_RULE", None)
    if rule is not None:
        argv += ["-p", "tests.sandbox.planted_rule"]
        env["SFOX_PLANTED_RULE"] = rule
    result = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    output = result.stdout[-4000:] + result.stderr[-2000:]
    # 1 is "tests failed", 2 a collection error (here: the provider refusing the rule), 0 passed.
    assert result.returncode == exit_code, output
    if exit_code == 1:
        assert "1 failed" in result.stdout, output
        assert "AssertionError" in result.stdout, output
    elif exit_code == 2:
        assert "every account type must verify the same channel first" in output, output
    else:
        assert "1 passed" in result.stdout, output
