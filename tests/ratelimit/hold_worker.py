"""
One sender process of the hold tests: its own hook sends until an operator's hold stops it. Run
as ``python tests/ratelimit/hold_worker.py`` with the connection in ``AIRFLOW_CONN_SFOX_DEFAULT``:
prints ``SENDING`` after its first answered request, then one ``HELD {...}`` line (the hold's
scope and end, and how many requests were answered) when the hold stops it.
"""

from __future__ import annotations

import json
import time


def main() -> None:
    from airflow_sfox.exceptions import SfoxHeldError
    from airflow_sfox.hooks.sfox import SfoxConnectHook

    hook = SfoxConnectHook()
    answered = 0
    give_up = time.monotonic() + 120
    while time.monotonic() < give_up:
        try:
            hook.list_users(account_role="advisor")
        except SfoxHeldError as err:
            until = err.until.isoformat() if err.until else None
            print(
                "HELD " + json.dumps({"scope": err.scope, "until": until, "answered": answered}), flush=True
            )
            return
        answered += 1
        if answered == 1:
            print("SENDING", flush=True)
    print(f"NOT HELD after {answered} requests", flush=True)


if __name__ == "__main__":
    main()
