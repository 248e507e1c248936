"""
Measurement 3, client overhead: ``python -m sfox_bench.overhead '<json>'``.

The same send-verification POSTs, from the same number of threads, against a zero-latency
sandbox without rate limit: through one shared ``SfoxConnectHook`` with pacing off
(``rate_limit_requests=0``), and through a bare ``requests.Session`` per thread. Rounds
alternate (bare, hook, bare, hook, ...) so drift in the machine's load hits both alike.
Arguments: ``url``, ``threads``, ``seconds`` (per round), ``rounds``, ``users``.
"""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time
from typing import Any

import requests

from sfox_bench.common import TOKEN, emit, log


def _run(threads: int, seconds: float, send_factory: Any) -> tuple[float, float]:
    """Requests/s of all threads, and the client process's CPU microseconds per request."""
    counts = [0] * threads
    barrier = threading.Barrier(threads + 1)
    deadline = [0.0]

    def worker(index: int) -> None:
        send = send_factory()
        barrier.wait()
        done = 0
        while time.monotonic() < deadline[0]:
            send(done)
            done += 1
        counts[index] = done

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    deadline[0] = time.monotonic() + seconds
    started = time.monotonic()
    cpu = time.process_time()
    barrier.wait()
    for w in workers:
        w.join()
    total = max(sum(counts), 1)
    return total / (time.monotonic() - started), (time.process_time() - cpu) / total * 1e6


def main() -> None:
    args = json.loads(sys.argv[1])
    url, users = args["url"], int(args["users"])

    def bare_factory() -> Any:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {TOKEN}"

        def send(i: int) -> None:
            r = session.post(
                f"{url}/v1/enterprise/users/send-verification/u{i % users}",
                json={"type": "email"},
                timeout=30,
            )
            if r.status_code != 200:
                raise RuntimeError(f"status {r.status_code}")

        return send

    from airflow_sfox.hooks.sfox import SfoxConnectHook

    hook = SfoxConnectHook(rate_limit_requests=0)
    hook.send_verification("u0", "email")  # read the connection once, outside the timing

    def hook_factory() -> Any:
        def send(i: int) -> None:
            hook.send_verification(f"u{i % users}", "email")

        return send

    bare: list[float] = []
    ours: list[float] = []
    bare_cpu: list[float] = []
    ours_cpu: list[float] = []
    for round_ in range(int(args["rounds"])):
        for rates, cpus, factory in ((bare, bare_cpu, bare_factory), (ours, ours_cpu, hook_factory)):
            rate, cpu_us = _run(args["threads"], args["seconds"], factory)
            rates.append(rate)
            cpus.append(cpu_us)
        log(f"overhead round {round_ + 1}: bare {bare[-1]:,.0f}/s, hook {ours[-1]:,.0f}/s")
    hook.close()
    emit(
        {
            "threads": args["threads"],
            "seconds_per_round": args["seconds"],
            "bare_rps": bare,
            "hook_rps": ours,
            "bare_median": statistics.median(bare),
            "hook_median": statistics.median(ours),
            "ratio": statistics.median(ours) / statistics.median(bare),
            "bare_cpu_us": statistics.median(bare_cpu),
            "hook_cpu_us": statistics.median(ours_cpu),
        }
    )


if __name__ == "__main__":
    main()
