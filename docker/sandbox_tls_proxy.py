"""
HTTPS in front of the sandbox, for docker-compose (``python sandbox_tls_proxy.py --help``).

The ``sfox`` hook sends its token over https only (plain http only to a loopback host), and
in docker-compose the Airflow containers reach the sandbox over the compose network. So the
sandbox listens on 127.0.0.1 inside its container, and this proxy, sharing the sandbox
container's network namespace (``network_mode: service:sfox-sandbox``), terminates TLS on
``0.0.0.0:8443`` and forwards to ``127.0.0.1:8089``: nothing unencrypted leaves the
container. It forwards only sFOX's API, ``/v1/...``: any other request target (the sandbox's
``/_sandbox/`` admin routes above all) gets 404 from the proxy itself. Each connection carries
one request (``Connection: close`` is set on the way in), so a second request pipelined on
the same connection can never reach the sandbox unchecked.

At every start it makes a throw-away certificate authority (its key is never written), signs
a server certificate for ``--hostname`` (plus ``localhost`` and ``127.0.0.1``), and writes
``ca.pem`` and ``ca-bundle.pem`` (the CA plus the public roots of ``certifi``) into
``--cert-dir``, a volume the Airflow containers mount read-only with
``REQUESTS_CA_BUNDLE=<cert-dir>/ca-bundle.pem``: requests verify the sandbox's certificate,
and real hosts such as api.sfox.com still verify against the public roots. Only public
certificates are written; the server key stays in this process's memory and a private temp file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import ipaddress
import json
import os
import signal
import ssl
import sys
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

BUFFER = 64 * 1024
#: Most bytes of a request head (request line and headers), as the sandbox itself allows.
MAX_HEAD = 64 * 1024
#: Seconds a client may take to send its request head.
HEAD_TIMEOUT = 30.0
#: The only request targets forwarded: sFOX's API, never the sandbox's admin routes.
FORWARDED_PREFIX = "/v1/"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _make_ca(
    start: datetime.datetime, end: datetime.datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A throw-away certificate authority and its key (kept in memory only)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("sfox sandbox local CA"))
        .issuer_name(_name("sfox sandbox local CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return ca_cert, ca_key


def make_certificates(hostnames: list[str]) -> tuple[bytes, bytes, bytes]:
    """A fresh CA and a server certificate it signs; returns (ca_pem, server_pem, server_key_pem)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=365)
    ca_cert, ca_key = _make_ca(start, end)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys([*hostnames, "localhost", "127.0.0.1"]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hostnames[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return (
        ca_cert.public_bytes(serialization.Encoding.PEM),
        cert.public_bytes(serialization.Encoding.PEM),
        key_pem,
    )


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o644)
    os.replace(tmp, path)


def write_trust_files(cert_dir: Path, ca_pem: bytes) -> None:
    """``ca.pem`` and ``ca-bundle.pem`` (public roots of certifi, then the sandbox CA)."""
    import certifi

    cert_dir.mkdir(parents=True, exist_ok=True)
    public_roots = Path(certifi.where()).read_bytes()
    _write_atomic(cert_dir / "ca.pem", ca_pem)
    _write_atomic(cert_dir / "ca-bundle.pem", public_roots.rstrip(b"\n") + b"\n" + ca_pem)


def server_context(cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    with tempfile.TemporaryDirectory(prefix="sandbox-tls-") as tmp:  # mode 0700, removed at once
        chain = Path(tmp) / "server.pem"
        chain.write_bytes(cert_pem + key_pem)
        context.load_cert_chain(chain)
    return context


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(BUFFER):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError, ssl.SSLError):
        pass
    finally:
        writer.close()


def _answer(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


def forwarded_head(head: bytes) -> bytes | None:
    """The head to send upstream (``Connection: close`` in place of the client's own), or
    ``None`` when the request target is not under :data:`FORWARDED_PREFIX`.

    :param head: the request head, up to and including its empty line.
    """
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].split(b" ")
    # origin-form only: an absolute-form target ("http://host/_sandbox/...") is refused too
    if len(parts) != 3 or not parts[1].startswith(FORWARDED_PREFIX.encode()):
        return None
    kept = [
        line
        for line in lines[1:]
        if line.split(b":", 1)[0].strip().lower() not in (b"connection", b"keep-alive")
    ]
    return b"\r\n".join([lines[0], *kept, b"Connection: close"]) + b"\r\n\r\n"


async def _forward(
    upstream: tuple[str, int], client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
) -> None:
    try:
        head = await asyncio.wait_for(client_reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
    except asyncio.LimitOverrunError:
        client_writer.write(_answer(431, "Request Header Fields Too Large", "Request header too large"))
        await _close(client_writer)
        return
    except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError, OSError, ssl.SSLError):
        client_writer.close()
        return
    upstream_head = forwarded_head(head)
    if upstream_head is None:
        client_writer.write(_answer(404, "Not Found", "Not found: this front serves /v1/ only"))
        await _close(client_writer)
        return
    try:
        up_reader, up_writer = await asyncio.open_connection(*upstream)
    except OSError:
        client_writer.close()
        return
    up_writer.write(upstream_head)
    await asyncio.gather(_pipe(client_reader, up_writer), _pipe(up_reader, client_writer))


async def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError, ssl.SSLError):
        await writer.drain()
    writer.close()


async def serve(listen: tuple[str, int], upstream: tuple[str, int], context: ssl.SSLContext) -> None:
    server = await asyncio.start_server(
        lambda r, w: _forward(upstream, r, w), listen[0], listen[1], ssl=context, backlog=512, limit=MAX_HEAD
    )
    port = server.sockets[0].getsockname()[1]
    print(f"https://{listen[0]}:{port} -> http://{upstream[0]}:{upstream[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "0.0.0.0", int(port)  # noqa: S104 - the proxy's purpose is to be reachable


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="TLS-terminating proxy in front of the sFOX sandbox.")
    parser.add_argument("--listen", type=_address, default=("0.0.0.0", 8443), help="HOST:PORT (port 0: free)")  # noqa: S104
    parser.add_argument("--upstream", type=_address, default=("127.0.0.1", 8089), help="sandbox HOST:PORT")
    parser.add_argument(
        "--hostname", action="append", required=True, help="name clients use (repeatable), e.g. sfox-sandbox"
    )
    parser.add_argument("--cert-dir", type=Path, required=True, help="where ca.pem and ca-bundle.pem go")
    args = parser.parse_args(argv)
    ca_pem, cert_pem, key_pem = make_certificates(args.hostname)
    context = server_context(cert_pem, key_pem)
    write_trust_files(args.cert_dir, ca_pem)
    try:
        asyncio.run(serve(args.listen, args.upstream, context))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
