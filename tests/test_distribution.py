"""
What ships: the provider's wheel holds no emulator, and the provider works without it.

The sandbox is a distribution of its own (``sfox-sandbox``, ``sandbox/``): Airflow keeps test
doubles out of provider distributions, and its admin routes reveal verification codes. These
tests build the real wheels (``uv build``, as a release would) and read their file lists, and
import the provider and parse the shipped DAG files in a process where ``sfox_sandbox``
cannot be imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PROVIDER = REPO / "airflow_sfox"


def _build_wheel(project: Path, out_dir: Path) -> zipfile.ZipFile:
    """Build ``project``'s wheel with the venv's uv (hatchling comes from the package index)."""
    uv = Path(sys.executable).with_name("uv")
    assert uv.exists(), f"{uv} is missing: run make install"
    result = subprocess.run(
        [str(uv), "build", "--wheel", "--out-dir", str(out_dir), str(project)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = out_dir.glob("*.whl")
    return zipfile.ZipFile(wheel)


def test_the_provider_wheel_holds_no_sandbox(tmp_path):
    with _build_wheel(REPO, tmp_path) as wheel:
        names = set(wheel.namelist())
        metadata = next(wheel.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    assert not [n for n in names if "sandbox" in n.lower()], sorted(names)
    assert {n.split("/")[0] for n in names} == {"airflow_sfox", "airflow_provider_sfox-0.1.0.dist-info"}
    static = [p.relative_to(REPO).as_posix() for p in (PROVIDER / "plugins" / "static").iterdir()]
    assert static
    expected = {
        "airflow_sfox/__init__.py",
        "airflow_sfox/onboarding/model.py",
        "airflow_sfox/hooks/sfox.py",
        "airflow_sfox/get_provider_info.py",
        "airflow_sfox/plugins/onboarding.py",
        *static,
    }
    assert expected <= names, sorted(expected - names)
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert requires
    assert not [line for line in requires if "sandbox" in line]
    assert "Name: airflow-provider-sfox" in metadata


def test_the_sandbox_wheel_holds_the_emulator_and_needs_nothing(tmp_path):
    with _build_wheel(REPO / "sandbox", tmp_path) as wheel:
        names = set(wheel.namelist())
        metadata = next(wheel.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    sources = {
        p.relative_to(REPO / "sandbox").as_posix() for p in (REPO / "sandbox" / "sfox_sandbox").glob("*.py")
    }
    assert "sfox_sandbox/__main__.py" in sources
    assert sources <= names
    assert not [n for n in names if n.startswith("airflow_sfox/")]
    assert "Name: sfox-sandbox" in metadata
    # An independent model of sFOX: the emulator needs nothing, least of all the provider.
    assert not [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]


#: Put first in ``sys.meta_path``: any import of ``sfox_sandbox`` fails, as where the
#: provider is installed without the sandbox.
_BLOCK_SANDBOX = """
import sys


class _NoSandbox:
    def find_spec(self, name, path=None, target=None):
        if name == "sfox_sandbox" or name.startswith("sfox_sandbox."):
            raise ImportError(f"{name} is blocked: the provider must work without the sandbox")
        return None


sys.meta_path.insert(0, _NoSandbox())
"""

_IMPORT_PROVIDER_AND_PARSE_DAGS = """
import importlib
import json
import pathlib

try:
    import sfox_sandbox  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("the blocker let sfox_sandbox through")

import airflow_sfox

root = pathlib.Path(airflow_sfox.__file__).parent
modules = sorted(
    ".".join(("airflow_sfox", *p.relative_to(root).with_suffix("").parts)).removesuffix(".__init__")
    for p in root.rglob("*.py")
)
for name in modules:
    importlib.import_module(name)

try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # Airflow < 3.2
    from airflow.models.dagbag import DagBag

bag = DagBag(dag_folder=sys.argv[1])  # no example DAGs: AIRFLOW__CORE__LOAD_EXAMPLES
print(json.dumps({
    "modules": modules,
    "dag_ids": sorted(bag.dag_ids),
    "import_errors": {str(k): str(v) for k, v in bag.import_errors.items()},
    "sandbox_loaded": sorted(m for m in sys.modules if m.split(".")[0] == "sfox_sandbox"),
}))
"""


def _airflow_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__UNIT_TEST_MODE="True",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/airflow.db",
    )
    return env


def test_the_provider_imports_and_the_dags_parse_without_the_sandbox(tmp_path):
    dag_files = sorted((REPO / "dags").glob("*.py"))
    assert dag_files
    result = subprocess.run(
        [sys.executable, "-c", _BLOCK_SANDBOX + _IMPORT_PROVIDER_AND_PARSE_DAGS, str(REPO / "dags")],
        cwd=tmp_path,
        env=_airflow_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert "airflow_sfox.hooks.sfox" in report["modules"]
    assert "airflow_sfox.onboarding.model" in report["modules"]
    assert "airflow_sfox.plugins.onboarding" in report["modules"]
    assert report["import_errors"] == {}
    # Whatever the DAG files are (the shipped DAG may be a factory call): each defines a DAG.
    assert len(report["dag_ids"]) >= len(dag_files)
    assert report["sandbox_loaded"] == []


@pytest.mark.parametrize("module", ["sfox_sandbox", "sfox_sandbox.__main__"])
def test_the_sandbox_loads_no_airflow(module):
    """The sandbox loads neither Airflow nor the provider: its model of sFOX is its own."""
    code = f"import sys, {module}; print(sorted(m.split('.')[0] for m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    loaded = set(result.stdout.strip().strip("[]").replace("'", "").split(", "))
    assert "sfox_sandbox" in loaded
    assert "airflow_sfox" not in loaded
    assert "airflow" not in loaded


def _readme_example_dag() -> str:
    """The DAG file of the README's install section (the block after its example-dag marker)."""
    readme = (REPO / "README.md").read_text()
    after = readme.split("<!-- example-dag:", 1)[1]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


def _run(argv: list[str], env: dict[str, str], timeout: float = 600) -> str:
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"{argv}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.mark.live
def test_the_install_guide_from_a_wheel_into_a_fresh_airflow(tmp_path, sfox_sandbox):
    """
    docs/install.md (and the README) on a fresh venv with the newest Airflow: the wheel, the
    README's DAG file, a warehouse and a sandbox seeded from the guide's CSV, the connections
    added with the CLI, the connection test (refused until enabled, as Airflow 3 ships), a dry
    run that sends nothing, then a run that sends every user their email code.
    """
    from sfox_sandbox.seed import load_seed_file
    from tests.helpers import TOKEN

    examples = REPO / "docs" / "examples"
    with _build_wheel(REPO, tmp_path / "dist") as wheel:
        wheel_path = wheel.filename
    assert wheel_path is not None
    venv = tmp_path / "venv"
    uv = str(Path(sys.executable).with_name("uv"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "VIRTUAL_ENV"))}
    _run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], env)
    _run([uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), wheel_path], env)

    home = tmp_path / "airflow-home"
    (home / "dags").mkdir(parents=True)
    (home / "dags" / "sfox_onboarding.py").write_text(_readme_example_dag())
    warehouse = tmp_path / "warehouse.db"
    users = load_seed_file(examples / "users.csv")
    sfox_sandbox.seed_users(users)
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/airflow.db",
        PYTHONPYCACHEPREFIX=str(tmp_path / "pycache"),
    )
    python, airflow = str(venv / "bin" / "python"), str(venv / "bin" / "airflow")
    probe = "import airflow, importlib.util as u; print(airflow.__version__, u.find_spec('sfox_sandbox'))"
    versions = _run([python, "-c", probe], env)
    assert versions.split()[1] == "None", "the wheel brought the sandbox along"
    assert "5 rows" in _run(
        [python, str(examples / "make_warehouse.py"), str(examples / "users.csv"), str(warehouse)], env
    )
    _run([airflow, "db", "migrate"], env)
    _run([airflow, "dags", "reserialize"], env)  # a new DAG file at once, as the guide says
    assert "sfox_batch_onboarding" in _run([airflow, "dags", "list"], env)

    # The connections as the guide adds them (the budget's folder in tmp_path: nothing left behind).
    budget = json.dumps({"rate_limit_dir": str(tmp_path / "budget")})
    sfox = ["--conn-type", "sfox", "--conn-host", sfox_sandbox.url, "--conn-password", TOKEN]
    _run([airflow, "connections", "add", "sfox_default", *sfox, "--conn-extra", budget], env)
    _run(
        [
            airflow,
            "connections",
            "add",
            "sfox_warehouse",
            "--conn-type",
            "sqlite",
            "--conn-host",
            str(warehouse),
        ],
        env,
    )

    disabled = subprocess.run(
        [airflow, "connections", "test", "sfox_default"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert disabled.returncode == 1
    assert "disabled" in disabled.stdout + disabled.stderr
    tested = _run(
        [airflow, "connections", "test", "sfox_default"], {**env, "AIRFLOW__CORE__TEST_CONNECTION": "Enabled"}
    )
    assert "Connection success!" in tested
    assert [e.path for e in sfox_sandbox.journal()] == ["/v1/enterprise/users"]  # one read, nothing sent

    _run([airflow, "dags", "test", "sfox_batch_onboarding", "-c", '{"dry_run": true}'], env)
    assert not [e for e in sfox_sandbox.journal() if e.method == "POST"], "the dry run sent a request"
    _run([airflow, "dags", "test", "sfox_batch_onboarding"], env)
    codes = [(e.user_id, e.type) for e in sfox_sandbox.journal() if e.code_sent]
    assert sorted(codes) == sorted((u["user_id"], "email") for u in users), versions
