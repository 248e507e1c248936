"""
The baseline a data engineer would write by hand: ``python -m sfox_bench.handloop '<json>'``.

Reads the user ids from the warehouse table, then sends each an email code through one
``requests.Session`` with 8 threads, paced at 24 request starts per second (the i-th request
starts at ``t0 + i / 24``: never more than 240 in a 10-s window). No ledger, no retries, no
plan: the least a correct script does. Arguments: ``url``, ``token``, ``warehouse``,
``table``, ``threads`` (8), ``rate`` (24). Prints ``{"wall_s", "started_at", "ended_at",
"requests", "statuses"}``; ``wall_s`` runs from before the warehouse read to the last answer.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import requests

from sfox_bench.common import emit, log


def main() -> None:
    args = json.loads(sys.argv[1])
    threads, rate = int(args.get("threads", 8)), float(args.get("rate", 24.0))
    started_at, started = time.time(), time.perf_counter()
    conn = sqlite3.connect(args["warehouse"])
    user_ids = [row[0] for row in conn.execute(f"SELECT user_id FROM {args['table']} ORDER BY user_id")]
    conn.close()

    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {args['token']}"
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=threads))
    statuses: Counter[str] = Counter()
    lock = threading.Lock()
    t0 = time.monotonic()

    def send(index: int, user_id: str) -> None:
        delay = t0 + index / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        url = f"{args['url']}/v1/enterprise/users/send-verification/{quote(user_id, safe='')}"
        try:
            status = str(session.post(url, json={"type": "email"}, timeout=30).status_code)
        except requests.RequestException as err:
            status = type(err).__name__
        with lock:
            statuses[status] += 1

    log(f"hand-written loop: {len(user_ids)} users, {threads} threads, {rate:g}/s")
    with ThreadPoolExecutor(threads) as pool:
        # Submitted in order; a thread takes the next index only when free, so starts stay paced.
        for index, user_id in enumerate(user_ids):
            pool.submit(send, index, user_id)
    wall = time.perf_counter() - started
    emit(
        {
            "wall_s": wall,
            "started_at": started_at,
            "ended_at": time.time(),
            "requests": sum(statuses.values()),
            "statuses": dict(statuses),
        }
    )


if __name__ == "__main__":
    main()
