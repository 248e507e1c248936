"""Measure the sandbox's throughput.

Starts ``python -m sfox_sandbox --port 0 --rate-limit 0`` as a separate process (so
the client does not share its GIL), seeds users, then sends send-verification requests over
keep-alive connections from several client threads and prints requests per second.

Run from the repository root, in the project's venv::

    .venv/bin/python benchmarks/sandbox_throughput.py --seconds 5 --threads 4
    .venv/bin/python benchmarks/sandbox_throughput.py --client requests
"""

from __future__ import annotations

import argparse
import functools
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

import requests

TOKEN = "bench-token"


def _worker_httpclient(host: str, port: int, deadline: float, counts: list[int], index: int) -> None:
    conn = http.client.HTTPConnection(host, port)
    body = json.dumps({"type": "email"})
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    done = 0
    while time.monotonic() < deadline:
        conn.request("POST", f"/v1/enterprise/users/send-verification/u{done % 100}", body, headers)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"unexpected status {resp.status}")
        done += 1
    conn.close()
    counts[index] = done


def _worker_requests(url: str, deadline: float, counts: list[int], index: int) -> None:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    done = 0
    while time.monotonic() < deadline:
        resp = session.post(
            f"{url}/v1/enterprise/users/send-verification/u{done % 100}", json={"type": "email"}
        )
        if resp.status_code != 200:
            raise RuntimeError(f"unexpected status {resp.status_code}")
        done += 1
    session.close()
    counts[index] = done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--client", choices=["httpclient", "requests"], default="httpclient")
    args = parser.parse_args()

    proc = subprocess.Popen(
        [sys.executable, "-m", "sfox_sandbox", "--port", "0", "--token", TOKEN, "--rate-limit", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        users = [
            {"user_id": f"u{i}", "account_type": "corporation", "email": f"u{i}@example.com"}
            for i in range(100)
        ]
        requests.post(f"{url}/_sandbox/users", json=users, timeout=10).raise_for_status()
        parts = urlsplit(url)
        counts = [0] * args.threads
        start = time.monotonic()
        deadline = start + args.seconds
        threads = []
        for i in range(args.threads):
            if args.client == "requests":
                work = functools.partial(_worker_requests, url, deadline, counts, i)
            else:
                work = functools.partial(
                    _worker_httpclient, str(parts.hostname), int(parts.port or 80), deadline, counts, i
                )
            threads.append(threading.Thread(target=work))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - start
        total = sum(counts)
        journal = requests.get(f"{url}/_sandbox/journal?since={total - 1}", timeout=10).json()["data"]
        print(
            f"{total} requests in {elapsed:.2f} s with {args.threads} {args.client} threads: "
            f"{total / elapsed:,.0f} req/s (journal last seq {journal[-1]['seq'] if journal else 0})"
        )
    finally:
        proc.terminate()
        proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
