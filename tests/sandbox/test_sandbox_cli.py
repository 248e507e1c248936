"""``python -m sfox_sandbox`` as a subprocess, and seed files (JSON and CSV)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests

from sfox_sandbox import load_seed_file
from sfox_sandbox.__main__ import is_loopback
from tests.sandbox.fake_airflow import PASSWORD, USERNAME, FakeAirflow
from tests.sandbox.registrations import DELETE, REGISTER, registration

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO_ROOT = Path(__file__).resolve().parents[2]
TOKEN = "cli-secret-token"
AIRFLOW_ENV = ("SFOX_SANDBOX_AIRFLOW_TOKEN", "SFOX_SANDBOX_AIRFLOW_USER", "SFOX_SANDBOX_AIRFLOW_PASSWORD")

SEED_USERS = [
    {
        "user_id": "j-ind",
        "account_type": "individual",
        "email": "j-ind@example.com",
        "phone_number": "+12223334444",
        "first_name": "J",
        "last_name": "Ind",
    },
    {
        "user_id": "j/corp",
        "account_type": "corporation",
        "email": "corp@example.com",
        "account_role": "advisor",
    },
]

CSV_SEED = """user_id,account_type,email,phone_number,first_name,last_name,account_role,email_verified
c-ind,individual,c-ind@example.com,+12223335555,Cee,Ind,,true
c-corp,corporation,c-corp@example.com,,Cee,Corp,advisor,
c-adv,individual,c-adv@example.com,+12223336666,Cee,Adv,Advisor,no
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    for name in ("SFOX_SANDBOX_TOKEN", *AIRFLOW_ENV):
        env.pop(name, None)
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "sfox_sandbox", *args]


class Cli:
    """A sandbox subprocess and its URL."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            _cli("--port", "0", *args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**_env(), **(env or {})},
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url:
            self.proc.wait(10)
            pytest.fail(f"sandbox did not start: {self.proc.stderr.read() if self.proc.stderr else ''}")

    def get(self, path: str, token: str | None = TOKEN, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.get(self.url + path, headers=headers, timeout=10, **kwargs)

    def post(self, path: str, token: str | None = TOKEN, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.post(self.url + path, headers=headers, timeout=10, **kwargs)

    def stop(self) -> tuple[int, str, str]:
        """SIGTERM by pid; return exit code, stdout and stderr."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        out, err = self.proc.communicate(timeout=15)
        return self.proc.returncode, out, err


@pytest.fixture
def start_cli() -> Iterator[Any]:
    started: list[Cli] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Cli:
        cli = Cli(*args, env=env)
        started.append(cli)
        return cli

    yield start
    for cli in started:
        if cli.proc.poll() is None:
            cli.proc.kill()
            cli.proc.wait(10)


def test_help_lists_every_option() -> None:
    result = subprocess.run(
        _cli("--help"), capture_output=True, text=True, env=_env(), timeout=30, check=False
    )
    assert result.returncode == 0
    for flag in (
        "--host", "--port", "--token", "--seed", "--random-seed", "--no-register-code",
        "--rate-limit", "--rate-window", "--rate-block", "--time-scale", "--retry-after",
        "--latency-ms", "--jitter-ms", "--error-500", "--error-503", "--reset", "--hang",
        "--hang-seconds", "--drop", "--journal-size", "--request-timeout", "--idle-timeout",
        "--asset-events-url", "--asset-uri", "--asset-events-user", "--asset-events-batch-ms",
        "--register-existing-status", "--register-existing-error", "--register-invalid-status",
        "--register-invalid-error",
    ):  # fmt: skip
        assert flag in result.stdout
    # each option shows its default once (the help text's own, or argparse's)
    options = re.split(r"\n  (?=-)", result.stdout)
    twice = [o.split()[0] for o in options if o.count("(default:") > 1]
    assert twice == []
    help_of = {o.split()[0]: " ".join(o.split()) for o in options}
    assert help_of["--token"].count("default") == 1
    assert "$SFOX_SANDBOX_TOKEN, else 'sandbox-token'" in help_of["--token"]
    assert help_of["--random-seed"].endswith("(default: random)")
    assert help_of["--port"].endswith("(default: 8089)")
    assert help_of["--seed"].endswith("reset (default: no users)")
    assert "default" not in help_of["--retry-after"]


def test_start_serve_and_stop_by_pid(start_cli: Any, tmp_path: Path) -> None:
    seed = tmp_path / "users.json"
    seed.write_text(json.dumps(SEED_USERS))
    cli = start_cli("--token", TOKEN, "--seed", str(seed), "--log-level", "INFO", "--random-seed", "5")
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", cli.url)
    assert cli.get("/v1/enterprise/users/j-ind").json()["data"]["requirements"] == {
        "email": True,
        "sms": True,
    }
    assert cli.get("/v1/enterprise/users/j%2Fcorp").json()["data"]["account_role"] == "Advisor"
    assert cli.get("/v1/enterprise/users/j-ind", token="wrong").status_code == 401
    resp = cli.post("/v1/enterprise/users/send-verification/j-ind", json={"type": "email"})
    assert resp.json() == {"data": {"user_id": "j-ind", "type": "email", "email": "j-ind@example.com"}}
    assert requests.get(f"{cli.url}/_sandbox/codes/j-ind", timeout=5).json()["data"]["email"]["count"] == 1
    # reset reloads the seed file's users
    replaced = {"user_id": "j-ind", "account_type": "corporation", "email": "other@example.com"}
    requests.post(f"{cli.url}/_sandbox/users", json=[replaced], timeout=5).raise_for_status()
    assert cli.get("/v1/enterprise/users/j-ind").json()["data"]["account_type"] == "corporation"
    requests.post(f"{cli.url}/_sandbox/reset", timeout=5)
    assert cli.get("/v1/enterprise/users/j-ind").json()["data"]["account_type"] == "individual"

    code, out, err = cli.stop()
    assert code == 0
    assert out == ""  # only the URL line (already read) goes to stdout
    # never log the token or personal data
    for secret in (TOKEN, "j-ind@example.com", "+12223334444"):
        assert secret not in out + err


def test_seed_csv(start_cli: Any, tmp_path: Path) -> None:
    seed = tmp_path / "users.csv"
    seed.write_text(CSV_SEED)
    cli = start_cli("--token", TOKEN, "--seed", str(seed))
    users = {u["user_id"]: u for u in cli.get("/v1/enterprise/users").json()["data"]}
    assert list(users) == ["c-ind", "c-corp", "c-adv"]
    assert users["c-ind"]["requirements"] == {"email": False, "sms": True}
    assert users["c-ind"]["account_role"] == "Client"
    assert users["c-corp"]["phone_number"] is None
    assert users["c-corp"]["account_role"] == "Advisor"
    assert users["c-adv"]["requirements"] == {"email": True, "sms": True}
    advisors = cli.get("/v1/enterprise/users", params={"accountRole": "advisor"}).json()["data"]
    assert [u["user_id"] for u in advisors] == ["c-corp", "c-adv"]
    # email already verified in the seed: the sms code may be requested at once
    resp = cli.post("/v1/enterprise/users/send-verification/c-ind", json={"type": "sms"})
    assert resp.json()["data"]["phone_number"] == "+12223335555"
    assert cli.stop()[0] == 0


def test_token_from_environment(tmp_path: Path) -> None:
    env = _env()
    env["SFOX_SANDBOX_TOKEN"] = "env-token"
    proc = subprocess.Popen(_cli("--port", "0"), stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        ok = requests.get(
            f"{url}/v1/enterprise/users", headers={"Authorization": "Bearer env-token"}, timeout=5
        )
        assert ok.status_code == 200
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(15)
    assert proc.returncode == 0


def test_asset_event_flags_post_to_airflow(start_cli: Any, tmp_path: Path) -> None:
    seed = tmp_path / "users.json"
    seed.write_text(json.dumps(SEED_USERS))
    uri = "sfox://api.sfox.com/email_verified2"
    with FakeAirflow() as airflow:
        cli = start_cli(
            "--token", TOKEN, "--seed", str(seed), "--asset-events-url", airflow.url,
            "--asset-uri", uri, "--asset-events-batch-ms", "0", "--log-level", "INFO",
            env={"SFOX_SANDBOX_AIRFLOW_USER": USERNAME, "SFOX_SANDBOX_AIRFLOW_PASSWORD": PASSWORD},
        )  # fmt: skip
        settings = requests.get(f"{cli.url}/_sandbox/asset-events", timeout=5).json()["data"]["settings"]
        assert settings | {"airflow_url": None} == {
            "enabled": True, "airflow_url": None, "asset_uri": uri, "token": None, "username": USERNAME,
            "password": "***", "batch_ms": 0.0, "timeout_seconds": 5.0, "retries": 3, "backoff_ms": 200.0,
        }  # fmt: skip
        assert settings["airflow_url"] == airflow.url
        assert cli.post("/v1/enterprise/users/send-verification/j-ind", json={"type": "email"}).ok
        code = requests.get(f"{cli.url}/_sandbox/codes/j-ind", timeout=5).json()["data"]["email"]["latest"]
        verify = cli.post("/v1/enterprise/users/verify/j-ind", json={"type": "email", "otp": code})
        assert verify.status_code == 200
        deadline = time.monotonic() + 30
        while not airflow.events() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert airflow.events() == [{"asset_id": 2, "extra": {"user_ids": ["j-ind"]}}]
        assert airflow.accepted_auth() == ["Bearer tok-1"]
        code, out, err = cli.stop()
    assert code == 0
    assert PASSWORD not in out + err
    assert "tok-1" not in out + err


def test_fault_and_rate_limit_flags(start_cli: Any) -> None:
    cli = start_cli(
        "--token", TOKEN, "--error-503", "1", "--rate-limit", "2", "--rate-block", "100",
        "--retry-after", "--latency-ms", "1", "--hang-seconds", "5",
    )  # fmt: skip
    faults = requests.put(f"{cli.url}/_sandbox/faults", json={}, timeout=5).json()["data"]
    assert (faults["error_503_rate"], faults["latency_ms"], faults["hang_seconds"]) == (1.0, 1.0, 5.0)
    assert [cli.get("/v1/enterprise/users").status_code for _ in range(2)] == [503, 503]
    resp = cli.get("/v1/enterprise/users")
    assert resp.status_code == 429
    assert resp.headers["Retry-After"] == "100"
    assert requests.get(f"{cli.url}/_sandbox/health", timeout=5).status_code == 200
    assert cli.stop()[0] == 0


def test_no_register_code_flag(start_cli: Any) -> None:
    cli = start_cli("--token", TOKEN, "--no-register-code")
    assert cli.post(REGISTER, json=registration("corporation", user_id="r1")).status_code == 200
    assert requests.get(f"{cli.url}/_sandbox/codes/r1", timeout=5).json()["data"]["email"]["count"] == 0
    assert cli.stop()[0] == 0


def test_register_answer_flags(start_cli: Any) -> None:
    cli = start_cli(
        "--token", TOKEN,
        "--register-existing-status", "409", "--register-existing-error", "Taken: {field}",
        "--register-invalid-status", "422", "--register-invalid-error", "Bad {field}",
    )  # fmt: skip
    answers = [
        cli.post(REGISTER, json=body) for body in (registration(), registration(), registration(email=DELETE))
    ]
    assert [(r.status_code, r.json().get("error")) for r in answers] == [
        (200, None),
        (409, "Taken: user_id"),
        (422, "Bad email"),
    ]
    assert cli.stop()[0] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--error-500", "0.7", "--error-503", "0.7"], "add up"),
        (["--error-500", "2"], "between 0 and 1"),
        (["--rate-limit", "-1"], "limit"),
        (["--time-scale", "0"], "time_scale"),
        (["--seed", "/nonexistent/users.json"], "No such file"),
        (["--asset-events-url", "http://127.0.0.1:8080"], "needs $SFOX_SANDBOX_AIRFLOW_TOKEN"),
        (["--asset-events-user", "admin"], "--asset-events-user needs --asset-events-url"),
        (["--register-existing-status", "200"], "status must be an integer from 400 to 599"),
        (["--register-invalid-error", ""], "error must be a non-empty text"),
        (
            ["--asset-events-url", "http://127.0.0.1:8080", "--asset-events-user", "admin"],
            "password in $SFOX_SANDBOX_AIRFLOW_PASSWORD",
        ),
        (["--asset-events-batch-ms", "-5"], "must be >= 0"),
    ],
)
def test_invalid_arguments_exit_2(args: list[str], message: str) -> None:
    result = subprocess.run(
        _cli("--port", "0", *args), capture_output=True, text=True, env=_env(), timeout=30, check=False
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


def test_busy_port_exits_1(start_cli: Any) -> None:
    cli = start_cli("--token", TOKEN)
    port = cli.url.rsplit(":", 1)[1]
    result = subprocess.run(
        _cli("--port", port), capture_output=True, text=True, env=_env(), timeout=30, check=False
    )
    assert result.returncode == 1
    assert "cannot listen" in result.stderr


# ------------------------------------------------------------------------- seed files
def test_load_seed_json_forms(tmp_path: Path) -> None:
    plain = tmp_path / "a.json"
    plain.write_text(json.dumps(SEED_USERS))
    wrapped = tmp_path / "b.json"
    wrapped.write_text(json.dumps({"users": SEED_USERS}))
    no_suffix = tmp_path / "seed"
    no_suffix.write_text(json.dumps(SEED_USERS))
    assert load_seed_file(plain) == load_seed_file(wrapped) == load_seed_file(no_suffix) == SEED_USERS


def test_load_seed_csv(tmp_path: Path) -> None:
    path = tmp_path / "u.csv"
    path.write_text("\ufeff" + CSV_SEED)  # a BOM from a spreadsheet export is tolerated
    users = load_seed_file(path)
    assert [u["user_id"] for u in users] == ["c-ind", "c-corp", "c-adv"]
    assert "phone_number" not in users[1]  # empty cells are missing values
    assert users[0]["email_verified"] == "true"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.json", "{not json", "invalid JSON"),
        ("bad.json", '{"users": 3}', "list of user objects"),
        ("bad.json", '[{"user_id": "x", "account_type": "bank"}]', "user #0"),
        ("bad.csv", "email,first_name\na@b.c,A\n", "user_id"),
        ("bad.csv", "user_id,account_type\nok,individual\n,corporation\n", "user #1"),
    ],
)
def test_load_seed_errors(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError, match=re.escape(message)):
        load_seed_file(path)


def test_journal_size_and_timeouts_reach_the_server(start_cli: Any, tmp_path: Path) -> None:
    seed = tmp_path / "users.json"
    seed.write_text(json.dumps(SEED_USERS))
    cli = start_cli(
        "--token", TOKEN, "--seed", str(seed), "--journal-size", "2",
        "--request-timeout", "0.5", "--idle-timeout", "0.5",
    )  # fmt: skip
    for _ in range(3):
        assert cli.get("/v1/enterprise/users/j-ind").status_code == 200
    journal = requests.get(f"{cli.url}/_sandbox/journal", timeout=5).json()["data"]
    assert [e["seq"] for e in journal] == [2, 3]
    # a stalled request is answered 408 and closed by the timeout
    host, port = cli.url.rsplit("/", 1)[1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /_sandbox/health HTTP/1.1\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 408 ")
    code, _, err = cli.stop()
    assert code == 0
    assert "WARNING" not in err  # loopback: no warning


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--journal-size", "-1"], "--journal-size"),
        (["--request-timeout", "0"], "--request-timeout"),
        (["--idle-timeout", "-3"], "--idle-timeout"),
    ],
)
def test_invalid_bounds_are_refused(args: list[str], error: str) -> None:
    result = subprocess.run(
        _cli("--port", "0", *args), capture_output=True, text=True, env=_env(), timeout=30, check=False
    )
    assert result.returncode == 2
    assert error in result.stderr


@pytest.mark.parametrize(
    ("host", "admin_token", "status", "warned"),
    [
        ("0.0.0.0", None, 403, True),  # noqa: S104 - the point
        ("0.0.0.0", "admin-secret", 200, False),  # noqa: S104
        ("127.0.0.1", None, 200, False),
        ("localhost", None, 200, False),
        ("127.0.0.1", "admin-secret", 200, False),
    ],
)
def test_admin_routes_off_loopback_need_an_admin_token(
    start_cli: Any,
    monkeypatch: pytest.MonkeyPatch,
    host: str,
    admin_token: str | None,
    status: int,
    warned: bool,
) -> None:
    if admin_token is not None:
        monkeypatch.setenv("SFOX_SANDBOX_ADMIN_TOKEN", admin_token)  # from the environment, not argv
    cli = start_cli("--host", host, "--token", TOKEN)
    port = cli.url.rsplit(":", 1)[1]
    headers = {"X-Sandbox-Admin-Token": admin_token} if admin_token else {}
    resp = requests.get(f"http://127.0.0.1:{port}/_sandbox/health", headers=headers, timeout=5)
    assert resp.status_code == status
    if status == 403:
        assert "SFOX_SANDBOX_ADMIN_TOKEN" in resp.json()["error"]
    if admin_token:
        assert requests.get(f"http://127.0.0.1:{port}/_sandbox/health", timeout=5).status_code == 401
    code, _, err = cli.stop()
    assert code == 0
    assert ("admin routes are refused" in err) is warned, err
    if admin_token:
        assert admin_token not in err


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),  # noqa: S104
        ("::", False),
        ("192.168.1.20", False),
        ("sandbox.example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
