"""
Reading the sandbox's journal (server-side arrival times) against a run's task instances.

- :func:`max_per_window`: the most requests in any window of ``window`` seconds at the server.
- :func:`losses`: where a run sent nothing although the budget would have let it. A request
  could have started at the latest of the previous request and (once the budget's N starts
  are used) the N-th previous start plus the budget's span; any later start, past a small
  tolerance, is time lost. Before the first send and after the last, all of the run's time
  is lost (a hand-written loop has none). Each lost instant is put down to what Airflow was
  doing then: a task instance running (plan, chunks, summarize, a send task starting up)
  or none (the scheduler's / ``dag.test()``'s loop between task instances).
"""

from __future__ import annotations

import bisect
import itertools
from typing import Any

#: Seconds a start may come after its earliest possible time without counting as lost
#: (a request's latency and thread hand-over are not time lost between chunks).
TOLERANCE_S = 0.15
STEP_S = 0.01
SEND_PATH = "/v1/enterprise/users/send-verification/"


def send_times(entries: list[dict[str, Any]]) -> list[float]:
    """Server-side times of the send-verification requests, sorted."""
    return sorted(e["time"] for e in entries if SEND_PATH in e["path"])


def max_per_window(times: list[float], window: float = 10.0) -> int:
    """The most entries of ``times`` (any order) in a half-open window ``[t, t + window)``."""
    times = sorted(times)
    best = 0
    for i, t in enumerate(times):
        best = max(best, bisect.bisect_left(times, t + window, lo=i) - i)
    return best


def _cause(x: float, gap_start: float, tis: list[dict[str, Any]], loop: str) -> str:
    running = [t for t in tis if t["start"] is not None and t["start"] <= x < (t["end"] or float("inf"))]
    labelled = [t for t in running if t.get("label")]  # e.g. dag.test()'s own start-up
    if labelled:
        return str(labelled[0]["label"])
    sends = [t for t in running if t["task_id"].split(".")[-1].startswith("send_")]
    starting = [t for t in sends if t["start"] >= gap_start]
    if starting:
        return f"{starting[0]['task_id'].split('.')[-1]} task start-up (process, hook, claim)"
    others = [t for t in running if t not in sends]
    if others:
        name = others[0]["task_id"].split(".")[-1]
        return "chunks tasks" if name.endswith("_chunks") else name
    if sends:
        return "send task wind-down (last outcomes recorded, task end)"
    return loop


def _attribute(
    start: float, end: float, gap_start: float, tis: list[dict[str, Any]], loop: str, into: dict[str, float]
) -> None:
    x = start
    while x < end:
        step = min(STEP_S, end - x)
        cause = _cause(x + step / 2, gap_start, tis, loop)
        into[cause] = into.get(cause, 0.0) + step
        x += step


def losses(
    times: list[float],
    sends: list[float],
    tis: list[dict[str, Any]],
    *,
    requests: int,
    span: float,
    run_start: float | None,
    run_end: float | None,
    latency_s: float,
    loop: str,
) -> dict[str, Any]:
    """
    Seconds lost before the first send, between sends (chunk boundaries) and after the last,
    each by cause; and the seconds with no request in flight during the send phase.

    :param times: server-side times of every request the budget counted (the plan's read too).
    :param sends: those of the send-verification requests.
    """
    result: dict[str, Any] = {"before": {}, "between": {}, "after": {}, "idle_s": 0.0, "gaps": 0}
    if not sends:
        return result
    times = sorted(times)
    tis = [t for t in tis if t["start"] is not None]
    if run_start is not None:
        _attribute(run_start, sends[0] - latency_s, run_start, tis, loop, result["before"])
    for i, (prev, cur) in enumerate(itertools.pairwise(times), start=1):
        if cur <= sends[0] or prev >= sends[-1]:
            continue
        result["idle_s"] += max(0.0, cur - latency_s - prev)
        earliest = prev if i < requests else max(prev, times[i - requests] + span)
        lost = cur - earliest - TOLERANCE_S
        if lost > 0:
            result["gaps"] += 1
            _attribute(cur - lost, cur, prev - latency_s, tis, loop, result["between"])
    if run_end is not None:
        _attribute(sends[-1], run_end, sends[-1], tis, loop, result["after"])
    for key in ("before", "between", "after"):
        result[key] = {k: round(v, 2) for k, v in sorted(result[key].items(), key=lambda kv: -kv[1])}
        result[f"{key}_s"] = round(sum(result[key].values()), 2)
    result["idle_s"] = round(result["idle_s"], 2)
    return result
