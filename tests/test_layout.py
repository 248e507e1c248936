"""
The shape of the code (issue 21): layers that point one way, and small parts.

Layering: every import of every module of ``airflow_sfox/`` and ``dags/``, read with ``ast``:
module-level imports, lazy imports inside functions, and imports under ``if TYPE_CHECKING:``
alike. TYPE_CHECKING imports count: they run nowhere, but a type named in a signature is a
dependency of the design all the same, and a cycle "hidden" behind a lazy or a type-only import
is still a cycle for the next maintainer. The arrows (a layer imports only the layers listed
for it, and itself)::

    dags -> onboarding (factory, engine), triggers, assets
    plugins -> onboarding (the page reads the warehouse through it)
    triggers -> onboarding (its ledger API), hooks, assets
    onboarding -> operators -> hooks -> ratelimit, exceptions
    assets: leaves (only the base modules)
    base: the package root, defaults, _compat, get_provider_info (facts every layer may read)

and ``sandbox/`` (the emulator, a distribution of its own) imports nothing from ``airflow_sfox``.

Size: no module of ``airflow_sfox/`` or ``sandbox/`` over MAX_MODULE_LINES lines, no function
(method, nested function) over MAX_FUNCTION_LINES lines, from its ``def`` to its last line.

Tests: no module of ``tests/`` (nor ``benchmarks/``, ``demo/``) imports a test module
(``test_*.py``): fixtures live in conftest files and their plugins, helpers in helper modules.

KNOWN_DEBT lists the violations left of issue 21 (29 on main at 99aa7f5, none now). It may only
shrink: a new violation fails, and so does a listed one that is gone (remove it from the list).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 60

#: Layer -> the layers it may import (besides itself).
ALLOWED = {
    "dags": {"onboarding", "triggers", "operators", "hooks", "assets", "ratelimit", "exceptions", "base"},
    "plugins": {"onboarding", "hooks", "ratelimit", "exceptions", "base"},
    "triggers": {"onboarding", "hooks", "assets", "ratelimit", "exceptions", "base"},
    "onboarding": {"operators", "hooks", "assets", "ratelimit", "exceptions", "base"},
    "operators": {"hooks", "exceptions", "base"},
    "hooks": {"ratelimit", "exceptions", "base"},
    "cli": {"hooks", "ratelimit", "exceptions", "base"},
    "assets": {"base"},
    "ratelimit": {"exceptions", "base"},
    "exceptions": {"base"},
    "base": set(),
}
#: The layer of each module of the package root (sub-packages are layers of their own name).
ROOT_MODULES = {
    "airflow_sfox": "base",
    "airflow_sfox.defaults": "base",
    "airflow_sfox._compat": "base",
    "airflow_sfox.get_provider_info": "base",
    "airflow_sfox.exceptions": "exceptions",
    "airflow_sfox.ratelimit": "ratelimit",
    "airflow_sfox.cli": "cli",
    "airflow_sfox.__main__": "cli",
}

#: Issue 21's remaining debt: today's violations, each ("import", importer, imported),
#: ("module", path, "") or ("function", path, qualified name). It may only shrink.
KNOWN_DEBT: set[tuple[str, str, str]] = set()


def _sources() -> list[Path]:
    """Every module of the provider, the emulator and the shipped DAGs."""
    trees = [REPO / "airflow_sfox", REPO / "sandbox" / "sfox_sandbox"]
    return sorted([p for tree in trees for p in tree.rglob("*.py")] + list((REPO / "dags").glob("*.py")))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[0] == "sandbox":
        parts = parts[1:]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute, wherever the import statement is."""
    name = _module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.add(module)
            # ``from package import module``: the module is what is imported.
            found.update(
                f"{module}.{alias.name}" for alias in node.names if _is_module(f"{module}.{alias.name}")
            )
    return found


def _is_module(name: str) -> bool:
    path = REPO / Path(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def layer_of(module: str) -> str:
    """The layer of a module of ``airflow_sfox`` (or of ``dags``)."""
    if module.startswith("dags."):
        return "dags"
    if module in ROOT_MODULES:
        return ROOT_MODULES[module]
    layer = module.split(".")[1]
    if layer not in ALLOWED:
        raise AssertionError(f"{module}: no layer; give it one in tests/test_layout.py (ROOT_MODULES)")
    return layer


def layering_violations() -> set[tuple[str, str, str]]:
    found = set()
    for path in _sources():
        importer = _module_name(path)
        for imported in imported_modules(path):
            if not (imported == "airflow_sfox" or imported.startswith("airflow_sfox.")):
                continue
            if importer.startswith("sfox_sandbox"):
                found.add(("import", importer, imported))
                continue
            if imported in ("airflow_sfox.onboarding", "airflow_sfox.plugins") and importer.startswith(
                imported
            ):
                continue  # a relative ``from . import x`` of a namespace package: its own layer
            mine, theirs = layer_of(importer), layer_of(imported)
            if theirs != mine and theirs not in ALLOWED[mine]:
                found.add(("import", importer, imported))
    return found


def imports_of_test_modules() -> set[tuple[str, str, str]]:
    """Imports of a test module (``test_*.py``) by any module of tests/, benchmarks/ or demo/."""
    found = set()
    for folder in ("tests", "benchmarks", "demo"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for imported in imported_modules(path):
                if imported.rsplit(".", 1)[-1].startswith("test_") and imported.split(".")[0] == "tests":
                    found.add(("test-import", _module_name(path), imported))
    return found


def _functions(tree: ast.AST, prefix: str = ""):
    """``(qualified name, node)`` of every function and method, nested ones too."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = f"{prefix}{node.name}"
            if not isinstance(node, ast.ClassDef):
                yield name, node
            yield from _functions(node, f"{name}.")
        else:
            yield from _functions(node, prefix)


def size_violations() -> set[tuple[str, str, str]]:
    found = set()
    for path in _sources():
        if path.parts[len(REPO.parts)] == "dags":
            continue
        relative = path.relative_to(REPO).as_posix()
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            found.add(("module", relative, ""))
        for name, node in _functions(ast.parse(text)):
            assert node.end_lineno is not None
            if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                found.add(("function", relative, name))
    return found


@pytest.mark.parametrize(
    ("kind", "check"),
    [
        ("layering", layering_violations),
        ("size", size_violations),
        ("test-import", imports_of_test_modules),
    ],
    ids=["layering", "size", "no-test-module-imports"],
)
def test_no_new_violation_and_no_stale_debt(kind, check):
    found = check()
    kinds = {"layering": {"import"}, "size": {"module", "function"}, "test-import": {"test-import"}}[kind]
    debt = {item for item in KNOWN_DEBT if item[0] in kinds}
    new, paid = sorted(found - debt), sorted(debt - found)
    assert not new, f"new {kind} violations (fix them; the limits and arrows stay): {new}"
    assert not paid, f"paid off: remove these from KNOWN_DEBT in tests/test_layout.py: {paid}"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import airflow_sfox.hooks.sfox\n", {"airflow_sfox.hooks.sfox"}),
        ("def f():\n    from airflow_sfox.onboarding import runs\n", {"airflow_sfox.onboarding"}),
        (
            "if TYPE_CHECKING:\n    from airflow_sfox.ratelimit import Budget\n",
            {"airflow_sfox.ratelimit"},
        ),
        ("from .sfox import SfoxConnectHook\n", {"airflow_sfox.hooks.sfox"}),
    ],
    ids=["module-level", "lazy", "type-checking", "relative"],
)
def test_imports_are_read_wherever_they_are(tmp_path, monkeypatch, source, expected):
    """The reader sees lazy, TYPE_CHECKING and relative imports (as if in airflow_sfox/hooks/x.py)."""
    module = tmp_path / "airflow_sfox" / "hooks" / "x.py"
    module.parent.mkdir(parents=True)
    module.write_text(source)
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    found = imported_modules(module)
    assert expected <= found, found


def test_a_function_is_measured_from_def_to_its_last_line():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))  # def + 60 lines
    names = [name for name, _ in _functions(ast.parse(f"class C:\n  def long():\n{body}\n"))]
    assert names == ["C.long"]
    (node,) = [node for _, node in _functions(ast.parse(f"def long():\n{body}\n"))]
    assert node.end_lineno is not None
    assert node.end_lineno - node.lineno + 1 == MAX_FUNCTION_LINES + 1  # one over the limit


@pytest.mark.parametrize(
    ("path", "source", "expected"),
    [
        (
            "airflow_sfox/hooks/x.py",
            "def f():\n    import airflow_sfox.onboarding.dag\n",
            "airflow_sfox.onboarding.dag",
        ),
        ("airflow_sfox/assets/x.py", "from airflow_sfox.hooks import sfox\n", "airflow_sfox.hooks"),
        ("sandbox/sfox_sandbox/x.py", "from airflow_sfox.defaults import X\n", "airflow_sfox.defaults"),
    ],
    ids=["hooks-to-onboarding", "assets-to-hooks", "sandbox-to-provider"],
)
def test_an_import_against_the_arrows_is_a_violation(tmp_path, monkeypatch, path, source, expected):
    module = tmp_path / path
    module.parent.mkdir(parents=True)
    module.write_text(source)
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    importer = ".".join(Path(path).with_suffix("").parts).removeprefix("sandbox.")
    assert layering_violations() == {("import", importer, expected)}
