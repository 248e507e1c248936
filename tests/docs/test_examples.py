"""
The docs' code examples run: ``docs/examples/*`` are the files the pages include.

The hook example runs against the sandbox; the operator DAG runs under ``dag.test()`` against
it; the DAG files parse with no I/O; the three ways of posting an email-verified event run
against the stand-in for Airflow's REST API that the sandbox's tests use
(``tests/sandbox/fake_airflow.py``: a real HTTP server on 127.0.0.1 that checks the token and
serves decoy assets that Airflow's substring search also finds), except the
apache-airflow-client one, which needs that package and is compiled only.
"""

from __future__ import annotations

import ast
import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import load_dag_file

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "docs" / "examples"
USERS = [
    {
        "user_id": "client_1",
        "account_type": "individual",
        "email": "c1@example.com",
        "phone_number": "+12223334444",
    },
    {"user_id": "client_2", "account_type": "corporation", "email": "c2@example.com"},
]


def _module(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"docs_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_hook_example_sends_one_code_and_counts_the_users(sfox_sandbox):
    sfox_sandbox.seed_users(USERS)
    example = _module("hook_example")

    requirements = example.send_email_code("client_1")
    again = example.send_email_code("client_1")  # not verified yet: a second code (a resend)

    sent = [(e.user_id, e.type) for e in sfox_sandbox.journal() if e.code_sent]
    assert sent == [("client_1", "email"), ("client_1", "email")]
    assert requirements["email"] is True
    assert again == requirements
    assert example.count_users() == len(USERS)


def test_the_hook_example_treats_already_verified_as_done(sfox_sandbox):
    import requests

    from tests.helpers import TOKEN

    sfox_sandbox.seed_users(USERS)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    base = f"{sfox_sandbox.url}/v1/enterprise/users"
    requests.post(f"{base}/send-verification/client_2", json={"type": "email"}, headers=headers, timeout=5)
    otp = sfox_sandbox.codes("client_2")["email"]["latest"]
    requests.post(f"{base}/verify/client_2", json={"type": "email", "otp": otp}, headers=headers, timeout=5)
    sfox_sandbox.clear_journal()

    assert _module("hook_example").send_email_code("client_2")["email"] is False
    assert not [e for e in sfox_sandbox.journal() if e.code_sent]


def test_the_operator_example_dag_sends_each_user_once(airflow_db, sfox_sandbox):
    sfox_sandbox.seed_users([*USERS, {**USERS[0], "user_id": "client_account_1"}])
    # dag.test() runs DAGs of the DAG folder (the session's, in a temp folder: see tests/conftest.py).
    linked = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]) / "sfox_send_verification_example.py"
    linked.symlink_to(EXAMPLES / "operator_dag.py")
    try:
        run = load_dag_file(linked, "sfox_send_verification_example").test()
    finally:
        linked.unlink()

    assert str(run.state) == "success"
    sent = sorted((e.user_id, e.type) for e in sfox_sandbox.journal() if e.code_sent)
    assert sent == [("client_1", "email"), ("client_2", "email"), ("client_account_1", "email")]


@pytest.mark.parametrize(
    ("path", "dag_id"),
    [
        ("docs/examples/watcher_dag.py", "sfox_batch_onboarding"),
        ("dags/sfox_batch_onboarding.py", "sfox_batch_onboarding"),
        ("dags/sfox_email_verified.py", "sfox_email_verified"),
    ],
)
def test_the_dag_files_the_docs_include_parse(path, dag_id):
    dag = load_dag_file(REPO / path, dag_id)
    assert dag.dag_id == dag_id
    assert dag.task_ids


def test_the_readme_dag_is_the_shipped_example_dag():
    """One ten-line DAG: the README's install section shows the file in ``dags/``."""
    readme = (REPO / "README.md").read_text()
    block = readme.split("<!-- example-dag:", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    shipped = ast.parse((REPO / "dags" / "sfox_batch_onboarding.py").read_text())
    shipped.body = [n for n in shipped.body if not isinstance(n, ast.Expr)]  # its docstring
    readme_tree = ast.parse(block)
    readme_tree.body = [
        n for n in readme_tree.body if not isinstance(n, ast.ImportFrom) or n.module != "__future__"
    ]
    shipped.body = [n for n in shipped.body if not isinstance(n, ast.ImportFrom) or n.module != "__future__"]
    assert ast.dump(readme_tree) == ast.dump(shipped)


@pytest.fixture
def fake_airflow():
    """Airflow's token, asset and asset-event routes (the sandbox's tests' stand-in), with decoy assets."""
    from tests.sandbox.fake_airflow import FakeAirflow

    with FakeAirflow() as fake:
        yield fake


def _exact_asset_id() -> int:
    from tests.sandbox.fake_airflow import ASSETS

    (asset_id,) = [a["id"] for a in ASSETS if a["uri"] == "sfox://api.sfox.com/email-verified"]
    return asset_id


def test_posting_an_event_with_requests(fake_airflow):
    from tests.sandbox.fake_airflow import PASSWORD, USERNAME

    example = _module("post_event_requests")
    assert (
        example.post_email_verified(fake_airflow.url, USERNAME, PASSWORD, ["client_1"]) == _exact_asset_id()
    )
    assert fake_airflow.events() == [{"asset_id": _exact_asset_id(), "extra": {"user_ids": ["client_1"]}}]


def test_posting_an_event_with_curl(fake_airflow):
    from tests.sandbox.fake_airflow import PASSWORD, USERNAME

    env = {**os.environ, "AIRFLOW": fake_airflow.url, "AIRFLOW_USER": USERNAME, "AIRFLOW_PASSWORD": PASSWORD}
    result = subprocess.run(
        ["sh", str(EXAMPLES / "post_event.sh"), "client_1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert fake_airflow.events() == [{"asset_id": _exact_asset_id(), "extra": {"user_ids": ["client_1"]}}]


def test_posting_with_a_wrong_password_fails_loudly(fake_airflow):
    import requests

    with pytest.raises(requests.HTTPError, match="401"):
        _module("post_event_requests").post_email_verified(
            fake_airflow.url, "partner-backend", "wrong", ["x"]
        )
    assert fake_airflow.events() == []


def test_the_airflow_client_example_compiles():
    """apache-airflow-client is not a dependency: its example is compiled, not run."""
    tree = ast.parse((EXAMPLES / "post_event_client.py").read_text())
    calls = {
        n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
    }
    assert {"get_assets", "create_asset_event"} <= calls
