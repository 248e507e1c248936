"""
One OS process of the multi-process budget tests: its own hook, N threads, a fixed number of
requests. Run as ``python tests/ratelimit/budget_worker.py '<json>'`` with the connection in
``AIRFLOW_CONN_SFOX_DEFAULT``: prints ``READY``, waits for a line on stdin, sends, then prints
one ``RESULT {...}`` line (the hook's stats and each request's wall-clock start and end).
"""

from __future__ import annotations

import json
import sys
import threading
import time


def main(settings: dict) -> None:
    from airflow_sfox.exceptions import SfoxError
    from airflow_sfox.hooks.sfox import SfoxConnectHook

    hook = SfoxConnectHook(pool_size=settings["threads"])
    _ = hook.config, hook.session  # read the connection and open the budget before the start
    print("READY", flush=True)
    sys.stdin.readline()
    time.sleep(settings.get("start_delay", 0.0))
    left = [settings["requests"]]
    lock = threading.Lock()
    done: list[dict] = []

    def run() -> None:
        while True:
            with lock:
                if left[0] == 0:
                    return
                left[0] -= 1
            started = time.time()
            try:
                hook.list_users(account_role="advisor")
                outcome = "ok"
            except SfoxError as err:
                outcome = f"{type(err).__name__}: {err}"
            with lock:
                done.append({"start": started, "end": time.time(), "outcome": outcome})

    threads = [threading.Thread(target=run) for _ in range(settings["threads"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    hook.close()
    print("RESULT " + json.dumps({"stats": hook.stats.as_dict(), "requests": done}), flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
