"""
The sandbox's https front of docker-compose (docker/sandbox_tls_proxy.py), run natively.

In compose, the Airflow containers reach the sandbox as ``https://sfox-sandbox:8443``: the
sandbox listens on 127.0.0.1 in its container, the proxy (same network namespace) terminates
TLS with a throw-away CA, and the Airflow containers trust it through ``REQUESTS_CA_BUNDLE``.
Here the same two processes run on loopback, and the unchanged hook talks to the proxy.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import certifi
import pytest
import requests

from tests.helpers import TOKEN, stop_process_group

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO = Path(__file__).resolve().parents[2]
PROXY = REPO / "docker" / "sandbox_tls_proxy.py"
SEED = REPO / "docker" / "sandbox" / "users.json"


@contextlib.contextmanager
def _process(argv: list[str], cwd: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    """Start ``argv`` in its own session; yield it and its first stdout line; stop it by pid."""
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, start_new_session=True
    )
    try:
        assert proc.stdout is not None
        first_line = proc.stdout.readline().strip()
        if not first_line:
            proc.wait(10)
            pytest.fail(f"{argv[1:3]} exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        yield proc, first_line
    finally:
        stop_process_group(proc)


@pytest.fixture(scope="module")
def tls_sandbox(tmp_path_factory) -> Iterator[tuple[str, str, Path]]:
    """(https URL, plain sandbox URL, cert dir) of the sandbox behind the proxy, both on loopback."""
    cert_dir = tmp_path_factory.mktemp("sandbox-tls")
    sandbox_argv = [sys.executable, "-m", "sfox_sandbox", "--host", "127.0.0.1", "--port", "0"]
    sandbox_argv += ["--token", TOKEN, "--seed", str(SEED), "--rate-limit", "0"]
    with _process(sandbox_argv, REPO) as (_, sandbox_url):
        upstream = sandbox_url.removeprefix("http://")
        proxy_argv = [sys.executable, str(PROXY), "--listen", "127.0.0.1:0", "--upstream", upstream]
        proxy_argv += ["--hostname", "sfox-sandbox", "--cert-dir", str(cert_dir)]
        with _process(proxy_argv, cert_dir) as (_, banner):
            listen = banner.split()[0]  # "https://127.0.0.1:PORT -> http://..."
            port = listen.rsplit(":", 1)[1]
            yield f"https://localhost:{port}", sandbox_url, cert_dir


def test_trust_files_hold_the_public_roots_and_the_sandbox_ca(tls_sandbox):
    _, _, cert_dir = tls_sandbox
    ca = (cert_dir / "ca.pem").read_text()
    bundle = (cert_dir / "ca-bundle.pem").read_text()
    assert bundle.endswith(ca)
    assert bundle.startswith(Path(certifi.where()).read_text().rstrip("\n"))
    assert sorted(p.name for p in cert_dir.iterdir()) == ["ca-bundle.pem", "ca.pem"]  # no private key
    ssl.create_default_context(cafile=str(cert_dir / "ca-bundle.pem"))  # parses


def test_the_certificate_names_the_compose_host(tls_sandbox):
    from cryptography import x509

    url, _, cert_dir = tls_sandbox
    port = int(url.rsplit(":", 1)[1])
    pem = ssl.get_server_certificate(("127.0.0.1", port))
    names = x509.load_pem_x509_certificate(pem.encode()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert "sfox-sandbox" in names.value.get_values_for_type(x509.DNSName)
    assert "localhost" in names.value.get_values_for_type(x509.DNSName)
    # Verified against the CA, by host name, as requests does.
    headers = {"Authorization": f"Bearer {TOKEN}"}
    response = requests.get(
        f"{url}/v1/enterprise/users/demo-0001", headers=headers, verify=str(cert_dir / "ca.pem"), timeout=10
    )
    assert response.json()["data"]["user_id"] == "demo-0001"


@pytest.mark.parametrize(
    "target",
    [
        "/_sandbox/health",
        "/_sandbox/codes/demo-0001",
        "/_sandbox/journal",
        "/",
        "/v1",
        "/v2/enterprise/users",
        "http://127.0.0.1/_sandbox/journal",  # absolute-form: the sandbox would strip the host
    ],
)
def test_the_front_forwards_only_the_api(tls_sandbox, target):
    """The admin routes never leave the sandbox's container: the proxy answers 404 itself."""
    url, sandbox_url, cert_dir = tls_sandbox
    before = requests.get(f"{sandbox_url}/_sandbox/journal", timeout=10).json()["data"]
    answer = _raw_https(url, cert_dir, f"GET {target} HTTP/1.1\r\nHost: sfox-sandbox\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 404 "), answer[:200]
    assert b"this front serves /v1/ only" in answer
    assert b'"seq"' not in answer
    assert b'"ok"' not in answer
    assert requests.get(f"{sandbox_url}/_sandbox/journal", timeout=10).json()["data"] == before


def test_a_request_pipelined_after_an_api_call_is_not_forwarded(tls_sandbox):
    """One request per connection: an admin request smuggled behind a /v1/ one gets nothing."""
    url, _, cert_dir = tls_sandbox
    first = f"GET /v1/enterprise/users/demo-0001 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    second = "GET /_sandbox/journal HTTP/1.1\r\nHost: x\r\n\r\n"
    answer = _raw_https(url, cert_dir, (first + second).encode())
    assert answer.count(b"HTTP/1.1 ") == 1
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b"Connection: close" in answer
    assert b'"seq"' not in answer


def _raw_https(url: str, cert_dir: Path, request: bytes) -> bytes:
    """Send raw bytes over TLS to the front; return everything it answers until it closes."""
    port = int(url.rsplit(":", 1)[1])
    context = ssl.create_default_context(cafile=str(cert_dir / "ca.pem"))
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with context.wrap_socket(raw, server_hostname="localhost") as sock:
        sock.sendall(request)
        data = b""
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            while chunk := sock.recv(65536):
                data += chunk
    return data


def test_the_hook_sends_through_the_https_front(tls_sandbox, monkeypatch):
    from airflow_sfox.hooks.sfox import SfoxConnectHook

    url, sandbox_url, cert_dir = tls_sandbox
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert_dir / "ca-bundle.pem"))
    conn = {"conn_type": "sfox", "host": url, "password": TOKEN, "extra": {"rate_limit_requests": 0}}
    monkeypatch.setenv("AIRFLOW_CONN_SFOX_TLS", json.dumps(conn))
    with SfoxConnectHook(sfox_conn_id="sfox_tls") as hook:
        users = hook.list_users()
        assert {u["user_id"] for u in users} >= {"demo-0001", "demo-0003"}
        hook.send_verification("demo-0001", "email")
    codes = requests.get(f"{sandbox_url}/_sandbox/codes/demo-0001", timeout=10).json()["data"]
    assert codes["email"]["count"] == 1


def test_the_hook_refuses_an_unknown_certificate(tls_sandbox, monkeypatch):
    """Without the sandbox CA in REQUESTS_CA_BUNDLE, TLS verification fails: nothing is sent."""
    from airflow_sfox.exceptions import SfoxError
    from airflow_sfox.hooks.sfox import SfoxConnectHook

    url, _, _ = tls_sandbox
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    conn = {"conn_type": "sfox", "host": url, "password": TOKEN, "extra": {"max_retry_seconds": 0}}
    monkeypatch.setenv("AIRFLOW_CONN_SFOX_TLS", json.dumps(conn))
    with SfoxConnectHook(sfox_conn_id="sfox_tls") as hook, pytest.raises(SfoxError, match="SSLError"):
        hook.list_users()
