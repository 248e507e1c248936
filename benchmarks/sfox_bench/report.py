"""REPORT.md and report.png from the results of one benchmark run."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from sfox_bench import outage, registration

if TYPE_CHECKING:
    from pathlib import Path

XCOM_LIMIT = 64 * 1024
RSS_LIMIT_MB = 100.0
#: "Linear in rows": time per row at the largest planning size within this factor of the size
#: before it (1M rows within 12x the wall time of 100k).
LINEAR_FACTOR = 1.2
DB_NAMES = {"sqlite": "SQLite", "postgres": "PostgreSQL"}


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _verdict(ok: bool | None) -> str:
    return {True: "**met**", False: "**missed**", None: "not measured"}[ok]


def goals(r: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per goal: what was measured, the goal, met or not, and the cause when missed."""
    rows: list[dict[str, Any]] = []

    rows += _budget_goals(r)
    live = r.get("live")
    if live and live.get("ratio"):
        ok = live["ratio"] > 1 and live["onboarding"]["state"] == "success"
        rows.append(
            {
                "goal": "2. Faster than one HttpOperator task per user, under a live scheduler",
                "figure": f"HttpOperator / onboarding wall time = {live['ratio']:.2f} "
                f"({_f(live['http']['wall_s'])} s vs {_f(live['onboarding']['wall_s'])} s, "
                f"{live['users']} users); 429s: {live['http']['rate_limited']} vs "
                f"{live['onboarding']['rate_limited']}",
                "ok": ok,
                "cause": ""
                if ok
                else "At this N the fixed cost of the onboarding DAG's tasks (plan, two send steps per "
                "account type, summary: each a task process) outweighs the per-user task cost of the "
                "HttpOperator DAG.",
            }
        )
    o = r.get("overhead")
    if o:
        ok = o["ratio"] >= 0.8
        rows.append(
            {
                "goal": "3. Client overhead: hook / bare requests.Session >= 0.8",
                "figure": f"{o['ratio']:.2f} ({_f(o['hook_median'], 0)} vs {_f(o['bare_median'], 0)} req/s, "
                f"{o['threads']} threads); client CPU {_f(o['hook_cpu_us'], 0)} vs "
                f"{_f(o['bare_cpu_us'], 0)} us/request",
                "ok": ok,
                "cause": ""
                if ok
                else "See the CPU per request: the hook's per-call work (pacer, stats, "
                "error mapping) costs more than the bare loop.",
            }
        )
    p = r.get("parse")
    if p:
        ok = p["ratio"] <= 1.2
        extra = sorted(set(p["onboarding"]["new_packages"]) - set(p["empty"]["new_packages"]))
        rows.append(
            {
                "goal": "4. DAG parse time <= 1.2 x an empty DAG file with the same Airflow imports",
                "figure": f"{p['ratio']:.2f} ({_f(p['onboarding']['load_ms'])} ms vs "
                f"{_f(p['empty']['load_ms'])} ms to load the file after `import airflow`; "
                f"{p['total_ratio']:.2f} for the whole process)",
                "ok": ok,
                "cause": ""
                if ok
                else f"Loading the DAG file imports {p['onboarding']['new_modules']} modules against "
                f"{p['empty']['new_modules']} for the empty file; packages only the DAG file pulls in: "
                f"{', '.join(extra) or 'none'}. The hook (and `requests`) is no longer imported at parse "
                "time; what remains is the provider's own modules and the DAG's 11 `Param`s, each "
                "validated with jsonschema when the DAG is built.",
            }
        )
    pl = r.get("planning")
    for database, db in _planning_dbs(pl).items():
        sizes = db["sizes"]
        if not sizes:
            continue
        big = sizes[-1]
        prev = sizes[-2] if len(sizes) > 1 else sizes[0]
        f = _planning_figures(big, prev)
        ok = big["xcom_bytes"] < XCOM_LIMIT and f["growth_mb"] < RSS_LIMIT_MB and f["linear"]
        scope = (
            "" if big["rows"] >= 1_000_000 else f" (quick mode: largest size {big['rows']:,} rows, not 1M)"
        )
        rows.append(
            {
                "goal": f"5. Planning on {DB_NAMES.get(database, database)}: peak RSS growth < 100 MB from "
                f"10k to 1M rows, time linear (1M within {LINEAR_FACTOR * 10:g}x of 100k), XCom < 64 KB",
                "figure": f"{prev['rows']:,} -> {big['rows']:,} rows: wall {_f(prev['wall_s'], 2)} -> "
                f"{_f(big['wall_s'], 2)} s ({_f(f['time_ratio'], 2)}x for {_f(f['rows_ratio'], 0)}x rows); "
                f"peak RSS {_f(sizes[0]['peak_rss_mb'])} -> {_f(big['peak_rss_mb'])} MB (growth "
                f"{_f(f['growth_mb'])} MB from {sizes[0]['rows']:,} rows); XCom {big['xcom_bytes']:,} B; "
                f"{big['task_instances']:,} task instances{scope}",
                "ok": ok,
                "cause": ""
                if ok
                else f"({DB_NAMES.get(database, database)}) see the planning section: "
                + "; ".join(
                    msg
                    for cond, msg in (
                        (big["xcom_bytes"] >= XCOM_LIMIT, f"XCom {big['xcom_bytes']:,} B, over 64 KB"),
                        (
                            f["growth_mb"] >= RSS_LIMIT_MB,
                            f"peak RSS grew {_f(f['growth_mb'])} MB from {sizes[0]['rows']:,} rows",
                        ),
                        (
                            not f["linear"],
                            f"wall time grew {_f(f['time_ratio'], 2)}x for {_f(f['rows_ratio'], 0)}x rows "
                            f"(allowed {_f(f['allowed_ratio'], 1)}x)" + _slow_part(big, prev),
                        ),
                    )
                    if cond
                ),
            }
        )
    for database, error in ((pl or {}).get("errors") or {}).items():
        rows.append(
            {
                "goal": f"5. Planning on {DB_NAMES.get(database, database)}",
                "figure": f"not run: {error}",
                "ok": None,
                "cause": "",
            }
        )
    if r.get("lookup"):
        rows.append(_lookup_goal(r["lookup"]))
    if r.get("events"):
        rows.append(_events_goal(r["events"]))
    if r.get("watcher"):
        rows.append(_watcher_goal(r["watcher"]))
    if r.get("outage"):
        rows.append(outage.goal(r["outage"]))
    if r.get("registration"):
        rows += registration.goals(r["registration"])
    return rows


#: Issue #12's goals: shares of the physical limit (25 requests/s), ratios to the loop.
RUN_SHARE = {"budget": 0.92, "budget_live": 0.90}
SEND_SHARE = 0.95
LOOP_RATIO = {"budget": 1.05, "budget_live": 1.08}
RUNNER = {"budget": "dag.test()", "budget_live": "live scheduler"}


def _lost_text(x: dict[str, Any]) -> str:
    """'12.3 s before the first send (causes), 0.6 s between sends (...), 0.8 s after the last (...)'."""
    lo = x.get("losses")
    if not lo:
        return "n/a"
    parts = []
    for key, where in (
        ("before", "before the first send"),
        ("between", "between sends"),
        ("after", "after the last"),
    ):
        causes = ", ".join(f"{k} {v:.1f} s" for k, v in lo[key].items() if v >= 0.05) or "none"
        parts.append(f"{lo[f'{key}_s']:.1f} s {where} ({causes})")
    return "; ".join(parts)


def _budget_goals(r: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    loop = r.get("loop")
    for step in ("budget", "budget_live"):
        b = r.get(step)
        if not b or "p2" not in b:
            continue
        x, runner = b["p2"], RUNNER[step]
        ok_state = x["state"] == "success"
        ok = ok_state and x["share"] >= RUN_SHARE[step] and x["rate_limited"] == 0
        rows.append(
            {
                "goal": f"1.1 {runner}: whole run >= {RUN_SHARE[step]} of {b['physical_rps']:g}/s, 0 x 429 "
                "(parallel_chunks=2)",
                "figure": f"{x['share']:.3f} ({_f(x['requests_per_s'], 2)}/s: {x['requests']:,} requests in "
                f"{_f(x['wall_s'])} s), {x['rate_limited']} x 429, max {x['max_per_10s']} per 10 s",
                "ok": ok,
                "cause": f"{runner}, {b['users']:,} users: {_lost_text(x)}. The budget itself allows at most "
                f"240 starts per {b['budget_span_s']:.2f} s (window + jitter margin), "
                f"{240 / b['budget_span_s'] / b['physical_rps']:.3f} of the limit over whole windows. "
                f"To reach {RUN_SHARE[step]} with this send phase ({_f(x['send_span_s'])} s), "
                "the run could spend "
                f"{x['requests'] / (RUN_SHARE[step] * b['physical_rps']) - x['send_span_s']:.1f} s outside "
                f"it; it spent {(x['wall_s'] or 0) - x['send_span_s']:.1f} s. That cost is fixed per run "
                "(it does not grow with users), so its share shrinks with more users (full mode: 5,000).",
            }
        )
        ok = ok_state and x["send_share"] >= SEND_SHARE and x["rate_limited"] == 0
        rows.append(
            {
                "goal": f"1.1 {runner}: send phase >= {SEND_SHARE} of {b['physical_rps']:g}/s",
                "figure": f"{x['send_share']:.3f} ({_f(x['send_requests_per_s'], 2)}/s: "
                f"{x['send_requests']:,} "
                f"sends in {_f(x['send_span_s'])} s)",
                "ok": ok,
                "cause": f"Lost between sends: {_lost_text(x).split('; ')[1]}.",
            }
        )
        if loop and x.get("wall_s"):
            ratio = x["wall_s"] / loop["wall_s"]
            ok = ok_state and ratio <= LOOP_RATIO[step]
            rows.append(
                {
                    "goal": f"1.2 {runner}: DAG whole run <= {LOOP_RATIO[step]} x the hand-written loop",
                    "figure": f"{ratio:.3f} ({_f(x['wall_s'])} s vs {_f(loop['wall_s'])} s, "
                    f"{loop['requests']:,} requests at {loop_rps(r)}/s, {loop['rate_limited']} x 429)",
                    "ok": ok,
                    "cause": f"The loop starts sending at once and stops at its last answer; the DAG run "
                    f"loses {_lost_text(x)}.",
                }
            )
    sh = (r.get("budget_live") or {}).get("shared")
    if sh:
        ok = (
            sh["rate_limited"] == 0
            and sh["max_per_10s"] <= 250
            and sh["onboarding"]["state"] == "success"
            and sh["operator"]["state"] == "success"
        )
        rows.append(
            {
                "goal": "1.3 4 chunk tasks + a SendVerificationOperator DAG on the same connection: 0 x 429, "
                "no 10-s window above 250 at the server",
                "figure": f"{sh['rate_limited']} x 429, max {sh['max_per_10s']} per 10 s "
                f"({sh['requests']:,} requests in {_f(sh['wall_s'])} s; runs "
                f"{sh['onboarding']['state']} / {sh['operator']['state']})",
                "ok": ok,
                "cause": "See section 1, shared budget.",
            }
        )
    return rows


def loop_rps(r: dict[str, Any]) -> str:
    b = r.get("budget") or r.get("budget_live") or {}
    return f"{b.get('loop_rps', 24):g}"


def _planning_dbs(pl: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The planning figures per database (results of before the PostgreSQL runs: SQLite only)."""
    if not pl:
        return {}
    return pl.get("databases") or {"sqlite": {"baseline": pl["baseline"], "sizes": pl["sizes"]}}


def _planning_figures(big: dict[str, Any], prev: dict[str, Any]) -> dict[str, Any]:
    """Growth and time ratio of the largest size against the one before (and the smallest)."""
    rows_ratio = big["rows"] / prev["rows"] if prev["rows"] else 1.0
    time_ratio = big["wall_s"] / prev["wall_s"] if prev["wall_s"] else 1.0
    allowed = LINEAR_FACTOR * rows_ratio
    return {
        "rows_ratio": rows_ratio,
        "time_ratio": time_ratio,
        "allowed_ratio": allowed,
        "linear": time_ratio <= allowed,
        "growth_mb": big.get("growth_vs_smallest_mb", big["growth_vs_empty_mb"]),
    }


def _slow_part(big: dict[str, Any], prev: dict[str, Any]) -> str:
    """Which phase of planning grew faster than the rows, when the plan process timed its phases."""
    a, b = big.get("phases_s") or {}, prev.get("phases_s") or {}
    grown = {k: a[k] / b[k] for k in a if b.get(k)}
    out = ""
    if grown:
        worst = max(grown, key=lambda k: grown[k])
        out += f"; the phase that grew most: {worst} ({_f(b[worst], 2)} -> {_f(a[worst], 2)} s)"
    for key, who in (
        ("cpu_s", "the plan process's own CPU"),
        ("db_server_cpu_s", "the database server's CPU"),
    ):
        if big.get(key) and prev.get(key):
            out += f"; {who}: {_f(prev[key])} -> {_f(big[key])} s ({_f(big[key] / prev[key], 1)}x)"
    return out


def _machine(m: dict[str, Any]) -> list[str]:
    v = m["versions"]
    return [
        "| | |",
        "|---|---|",
        f"| CPU | {m['cpu']} |",
        f"| cores | {m['cores']} |",
        f"| RAM | {m['ram_gb']} GB |",
        f"| OS | {m['os']} |",
        f"| Python | {m['python']} |",
        f"| Airflow | {v['apache-airflow']} |",
        f"| providers | http {v['apache-airflow-providers-http']}, common-sql "
        f"{v['apache-airflow-providers-common-sql']}, sqlite {v['apache-airflow-providers-sqlite']} |",
        f"| airflow-provider-sfox | {v['airflow-provider-sfox']} (requests {v['requests']}) |",
        f"| load average (1, 5, 15 min) | start {m['load_average']}, end {m.get('load_average_end')} |",
    ]


def _run_row(runner: str, name: str, x: dict[str, Any]) -> str:
    lo = x.get("losses") or {}
    lost = (
        f"{lo.get('before_s', 0):.1f} / {lo.get('between_s', 0):.1f} / {lo.get('after_s', 0):.1f}"
        if lo
        else "n/a"
    )
    return (
        f"| {runner} | {name} | {x.get('state', '')} | {_f(x['wall_s'])} | {x['requests']:,} | "
        f"{_f(x['requests_per_s'], 2)} ({x['share']:.3f}) | {_f(x['send_requests_per_s'], 2)} "
        f"({x['send_share']:.3f}) | {x['rate_limited']} | {x['max_per_10s']} | {lost} | "
        f"{x.get('task_instances', 'n/a')} |"
    )


def _budget_section(r: dict[str, Any]) -> list[str]:
    b, bl, loop = r.get("budget"), r.get("budget_live"), r.get("loop")
    any_b = b or bl
    if not any_b and not loop:
        return []
    info = any_b or {}
    users = (any_b or loop or {}).get("users", 0)
    out = [
        "## 1. The budget at sFOX's real limit (issue #12)",
        "",
        f"{users:,} users (SQLite warehouse, first run: every user is due an email code, plus the "
        "plan's one `GET /v1/enterprise/users`). Sandbox: sFOX's limit shape, unscaled "
        f"({info.get('limit', '250 per 10 s, 60 s block')}), {info.get('latency_ms', 100):g} ms latency. "
        f"Connection budget `rate_limit_requests={info.get('budget', '240 per 10 s').split()[0]}`, "
        "`rate_limit_window_seconds=10` (a start counts "
        f"{info.get('budget_span_s', 10.08):g} s: window + jitter margin), `rate_limit_backend=local` "
        "(a SQLite log in the work folder, fresh per run). DAGs: `benchmarks/dags/sfox_onboarding_bench.py`, "
        f"the factory with `parallel_chunks` 1, 2, 4 and `chunk_size` {info.get('chunk_size', 480)} (two "
        "windows of the budget: ~20 s of sending per chunk task, so a task start of a few seconds is "
        "hidden while another chunk task sends). Shares are of the physical limit, 25 requests/s. "
        "Whole run = the `dag.test()` call / the scheduler's start_date to end_date of the DAG run; "
        "send phase = send requests / (last send - first send) at the server. Hand-written loop "
        f"(`benchmarks/sfox_bench/handloop.py`): one `requests.Session`, {info.get('loop_threads', 8)} "
        f"threads, the i-th request starting at t0 + i / {info.get('loop_rps', 24):g}, from the warehouse "
        "read to the last answer. Seconds lost (before / between / after sends): see below.",
        "",
        "| runner | run | state | wall s | requests | req/s whole run (of 25) | req/s send phase (of 25) "
        "| 429s | max per 10 s | s lost before / between / after | task instances |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    if loop:
        out.append(_run_row("plain Python", "hand-written loop", loop))
    for step, runner in (("budget", "dag.test()"), ("budget_live", "live scheduler")):
        x = r.get(step)
        if not x:
            continue
        for key in ("p2", "p1"):
            if key in x:
                out.append(_run_row(runner, f"parallel_chunks={key[1]}", x[key]))
        if "shared" in x:
            sh = x["shared"]
            out.append(
                _run_row(
                    runner,
                    f"parallel_chunks=4 + SendVerificationOperator x {x['operator_users']} (both runs)",
                    {
                        **sh,
                        "state": f"{sh['onboarding']['state']}/{sh['operator']['state']}",
                        "task_instances": sh["onboarding"]["task_instances"]
                        + sh["operator"]["task_instances"],
                    },
                )
            )
    if not (b or {}).get("p1"):
        out += [
            "",
            "parallel_chunks=1 is measured in full mode only (`compare_p1`), to keep quick mode short.",
        ]
    if bl:
        out += [
            "",
            f"Live scheduler: Airflow {r['machine']['versions']['apache-airflow']} api-server + scheduler "
            f"({bl.get('executor')}, parallelism {bl.get('parallelism')}) + dag-processor, PostgreSQL "
            f"metadata DB, services up and DAGs parsed in {_f(bl.get('startup_s'))} s (not counted). "
            "Runs are "
            f"triggered one after the other; before each, a fresh warehouse and sandbox and "
            f"{info.get('budget_span_s', 10.08) + 0.5:g} s of rest so the budget's log is empty. The shared "
            f"run starts the onboarding DAG (4 chunk tasks at once) and the operator DAG "
            f"({bl.get('operator_users')} other users, one task each, 16 at a time) together; 429s and the "
            "10-s windows are counted over every request of both, at the server.",
        ]
    out += [
        "",
        "### Seconds lost, and where they come from",
        "",
        "From the sandbox journal (server-side times of every request) against the run's task "
        "instances: a request could have started at the latest of the previous request and, once "
        "240 starts are in the log, the 240th previous start + the budget's span; anything later, "
        "past 0.15 s, is lost. Before the first send and after the last, every second is lost. Each "
        "lost second is put down to what was running: a task instance, the start-up of a send task "
        "(process, hook, claiming its users), or nothing (the runner's loop between task instances).",
        "",
        "| runner | run | before the first send | between sends (chunk boundaries) | after the last send "
        "| no request in flight during the send phase |",
        "|---|---|---|---|---|---|",
    ]
    for step, runner in (("budget", "dag.test()"), ("budget_live", "live scheduler")):
        for key in ("p2", "p1"):
            x = (r.get(step) or {}).get(key)
            if not x or not x.get("losses"):
                continue
            lo = x["losses"]
            cells = [
                f"{lo[f'{k}_s']:.1f} s: "
                + (", ".join(f"{c} {v:.1f}" for c, v in lo[k].items() if v >= 0.05) or "-")
                for k in ("before", "between", "after")
            ]
            out.append(
                f"| {runner} | parallel_chunks={key[1]} | {' | '.join(cells)} | {lo['idle_s']:.1f} s "
                f"({lo['gaps']} gaps lost) |"
            )
    out += [
        "",
        "Idle time the budget imposes (a window's 240 starts used, waiting for the oldest to age out) "
        "is not lost: the hand-written loop at 24/s waits as long.",
        "",
    ]
    return out


def write_report(r: dict[str, Any], md_path: Path, png_path: Path) -> None:
    rows = goals(r)
    chart = _chart(r, png_path)
    out: list[str] = [
        "# Benchmarks: airflow-provider-sfox",
        "",
        *_header(r),
        "",
        "## Machine",
        "",
        *_machine(r["machine"]),
        "",
        "## Goals",
        "",
        "| goal | measured | verdict |",
        "|---|---|---|",
        *[f"| {g['goal']} | {g['figure']} | {_verdict(g['ok'])} |" for g in rows],
        "",
    ]
    missed = [g for g in rows if g["ok"] is False]
    if missed:
        out += ["Causes of the missed goals:", ""]
        out += [f"- **{g['goal'].split(' ', 1)[0]}** {g['cause']}" for g in missed]
        out.append("")
    if r.get("errors"):
        out += ["Measurements that failed (see their logs in the work folder):", ""]
        out += [f"- {k}: {v}" for k, v in r["errors"].items()]
        out.append("")
    if chart:
        out += [f"![charts]({png_path.name})", ""]

    out += _budget_section(r)
    a, live = r.get("alternative"), r.get("live")
    if a or live:
        n = (a or live)["users"]
        out += [
            "## 2. The alternative: one HttpOperator task per user",
            "",
            f"`benchmarks/dags/sfox_http_onboarding.py`: a task reads the same users from the "
            f"warehouse, then `HttpOperator.partial(...).expand(endpoint=...)` POSTs one email "
            f"send-verification per user (no pacing, no ledger). Both DAGs onboard the same {n:,} users "
            f"against the same sandbox (sandbox reset between runs)."
            + (
                f" Quick mode keeps N at {n} to keep the quick run short; the full "
                "mode runs 1,000 (the map limit is 1,024)."
                if r["mode"] == "quick"
                else ""
            ),
            "",
            "| runner | DAG | state | wall s | requests | 429s | task instances |",
            "|---|---|---|---|---|---|---|",
        ]
        if a:
            for key, name in (("onboarding", "sfox_onboarding_p1"), ("http", "sfox_http_onboarding")):
                x = a[key]
                out.append(
                    f"| dag.test() | {name} | {x['state']} | {_f(x['wall_s'])} | {x['requests']:,} | "
                    f"{x['rate_limited']} | {x['task_instances']} |"
                )
        if live:
            for key, name in (("onboarding", "sfox_onboarding_p1"), ("http", "sfox_http_onboarding")):
                x = live[key]
                out.append(
                    f"| live scheduler | {name} | {x['state']} | {_f(x['wall_s'])} | {x['requests']:,} | "
                    f"{x['rate_limited']} | {x['task_instances']} |"
                )
        out.append("")
        if a:
            out.append(f"- dag.test(): HttpOperator / onboarding wall time = **{a['ratio']:.2f}**.")
        if live and live.get("ratio"):
            out.append(
                f"- Live scheduler: HttpOperator / onboarding wall time = **{live['ratio']:.2f}**. "
                f"Airflow {r['machine']['versions']['apache-airflow']} api-server + scheduler "
                f"({live['executor']}, parallelism {live['parallelism']}, other settings default: "
                "16 active tasks per DAG) + dag-processor in a throw-away home with a PostgreSQL "
                "metadata DB; "
                f"services up and both DAGs parsed in {_f(live['startup_s'])} s (not counted). "
                "Wall time = the DAG run's start_date to end_date as the scheduler recorded them; the "
                "onboarding DAG (`sfox_onboarding_p1`: the factory with parallel_chunks=1 like "
                "`dags/sfox_batch_onboarding.py`, chunk_size 480, unscheduled) and the HttpOperator DAG "
                "ran triggered runs."
            )
        out.append(
            "- At this budget the HttpOperator DAG's rate is bounded by task start-up, far under "
            "sFOX's limit, hence no 429s; the risk of 429s for it comes with more parallelism "
            "(more workers, a higher `max_active_tasks`), which it has no pacing to hold back."
        )
        out.append("")
    o = r.get("overhead")
    if o:
        out += [
            "## 3. Client overhead",
            "",
            f"{o['threads']} threads, {o['seconds_per_round']:g} s rounds alternating bare/hook, "
            f"{len(o['bare_rps'])} rounds each, medians. Zero-latency sandbox, no rate limit, hook pacing "
            "off (`rate_limit_requests=0`). Bare: one `requests.Session` per thread; hook: one shared "
            "`SfoxConnectHook` (its pooled session). Client and sandbox share the machine's cores, so "
            "client CPU per request is shown too.",
            "",
            "| client | req/s (rounds) | median req/s | client CPU us/request |",
            "|---|---|---|---|",
            f"| bare requests.Session | {', '.join(f'{x:,.0f}' for x in o['bare_rps'])} | "
            f"{_f(o['bare_median'], 0)} | {_f(o['bare_cpu_us'], 0)} |",
            f"| SfoxConnectHook | {', '.join(f'{x:,.0f}' for x in o['hook_rps'])} | "
            f"{_f(o['hook_median'], 0)} | {_f(o['hook_cpu_us'], 0)} |",
            "",
            f"Ratio hook / bare: **{o['ratio']:.2f}**.",
            "",
        ]
    p = r.get("parse")
    if p:
        out += [
            "## 4. DAG parse time",
            "",
            f"{p['reps']} fresh processes per file, alternating; each runs `import airflow`, then times "
            "loading the file (its own imports included). The baseline `benchmarks/parse/empty_dag.py` "
            "has the DAG file's Airflow imports (`pendulum`, `airflow.sdk` DAG/task/task_group) and "
            "schedule, and no tasks. Medians.",
            "",
            "| file | load ms (median) | all runs | process total ms | modules imported | tasks |",
            "|---|---|---|---|---|---|",
        ]
        for key, name in (("empty", "empty baseline"), ("onboarding", "dags/sfox_batch_onboarding.py")):
            x = p[key]
            out.append(
                f"| {name} | {_f(x['load_ms'])} | {', '.join(str(v) for v in x['load_ms_all'])} | "
                f"{_f(x['total_ms'], 0)} | {x['new_modules']} | {x['tasks']} |"
            )
        out += [
            "",
            f"Ratio: **{p['ratio']:.2f}** for the file load, {p['total_ratio']:.2f} for the whole process "
            "(interpreter and `import airflow` included).",
            "",
        ]
    pl = r.get("planning")
    if pl:
        out += [
            "## 5. Planning at scale",
            "",
            "One first run planned the way the DAG's `plan` task plans it (`plan_run` with the DAG's "
            "default params: chunk_size 500, max_chunks 256), one process per database and size. The "
            "source table holds N synthetic users (70% individuals), seeded in bulk (executemany on "
            "SQLite, COPY on PostgreSQL); the sandbox holds the same N users (`POST "
            "/_sandbox/users/generate`, same ids `user-0`.., types, emails and phones), a third of them "
            "with their email verified: planning streams all N from sFOX into the snapshot, queues email "
            "for the others, marks the verified emails and queues sms for the verified individuals. "
            "Peak RSS from `getrusage` in the plan process; growth = peak minus the peak at the smallest "
            "size (and, for reference, minus the same process over an empty table and no users). XCom = "
            "what the plan task pushes, as JSON: its counts (return value) plus one chunk-descriptor list "
            "per account type. Task instances = the factory DAG's unmapped tasks (plan, 2 `_chunks`, "
            "summarize) plus, per descriptor, its group's steps (corporation 1, individual 2), counted "
            "on `onboarding_dag()`'s tasks. Wall time includes the sandbox serialising its list "
            "and the database server's work (other processes on the same cores); plan CPU s is the "
            "plan process's own CPU time, sandbox and DB server CPU s the sandbox's and the PostgreSQL "
            "server's (its backends) during the plan, load the machine's highest 1-minute load average "
            "around it.",
            "",
        ]
        for database, db in _planning_dbs(pl).items():
            b, sizes = db["baseline"], db["sizes"]
            out += [
                f"### {DB_NAMES.get(database, database)}",
                "",
                f"Empty table, no users: {_f(b['wall_s'], 2)} s, peak RSS {_f(b['peak_rss_mb'])} MB.",
                "",
                "| rows | wall s | us/row | x time (x rows) | peak RSS MB | growth MB | vs empty MB "
                "| XCom bytes | descriptors (corp + ind) | task instances | planned users | plan CPU s "
                "| sandbox CPU s | DB server CPU s | load (1 min) | seed s |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
            ]
            before = None
            for x in sizes:
                ratio = (
                    f"{_f(x['wall_s'] / before['wall_s'], 2)} ({_f(x['rows'] / before['rows'], 0)})"
                    if before and before["wall_s"] and before["rows"]
                    else ""
                )
                per = x.get("chunks_per_type") or {}
                kinds = f" ({per.get('corporation', 0)} + {per.get('individual', 0)})" if per else ""
                out.append(
                    f"| {x['rows']:,} | {_f(x['wall_s'], 2)} | {_f(x['us_per_row'])} | {ratio} | "
                    f"{_f(x['peak_rss_mb'])} | {_f(x.get('growth_vs_smallest_mb'))} | "
                    f"{_f(x['growth_vs_empty_mb'])} | {x['xcom_bytes']:,} | {x['chunks']}{kinds} | "
                    f"{x['task_instances']:,} | {_f(x.get('planned_users'))} | {_f(x.get('cpu_s'))} | "
                    f"{_f(x.get('sandbox_cpu_s'))} | {_f(x.get('db_server_cpu_s'))} | "
                    f"{_f(max(x['load_1min']) if x.get('load_1min') else None)} | {_f(x.get('seed_s'), 1)} |"
                )
                before = x
            out.append("")
        for database, error in (pl.get("errors") or {}).items():
            out += [f"{DB_NAMES.get(database, database)}: not run ({error}).", ""]
        out += [
            f"'Linear' is read as: the largest size's wall time within {LINEAR_FACTOR}x the rows ratio "
            "of the size before it (1M within 12x of 100k). Descriptors stop growing at `max_chunks` "
            "(256): larger plans give each descriptor several chunks, so XCom and task instances are "
            "bounded.",
            "",
        ]
    out += _lookup_section(r.get("lookup"))
    out += _events_section(r.get("events"))
    out += _watcher_section(r.get("watcher"))
    out += outage.section(r.get("outage"))
    out += registration.section(r.get("registration"))
    out += [
        "## How to run",
        "",
        "```",
        "make bench        # quick: the figures above, a few minutes",
        "make bench-full   # 5,000 users at the budget, 1,000 HttpOperator tasks, 1M planning rows",
        "python benchmarks/run.py --mode quick --only overhead,parse --work /tmp/b  # a subset, logs kept",
        "python benchmarks/run.py --mode quick --only lookup --merge  # one step, into this report",
        "python benchmarks/run.py --mode quick --only events --merge  # the asset event's latency, live",
        "python benchmarks/run.py --mode quick --only watcher --merge  # the watcher's latency, live",
        "python benchmarks/run.py --mode full --only outage --merge --out benchmarks/full  # outage",
        "```",
        "",
        f"Step durations (s): {', '.join(f'{k} {v:.0f}' for k, v in r.get('step_seconds', {}).items())}.",
        "",
    ]
    md_path.write_text("\n".join(out))


def _header(r: dict[str, Any]) -> list[str]:
    """When the figures were measured: in one run, or (``--merge``) in the runs listed."""
    runs = r.get("runs") or []
    if len(runs) <= 1:
        return [
            f"Mode **{r['mode']}**, run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
            f"{_f(r['total_seconds'], 0)} s in all. Written by `benchmarks/run.py` "
            f"(`make bench` = quick, `make bench-full` = full); raw figures in `results.json`.",
            "Every figure below was measured in this one run, side by side on this machine; other "
            "processes running at the same time make them noisy (see the load average).",
        ]
    return [
        f"Mode **{r['mode']}**, written by `benchmarks/run.py` (`make bench` = quick, `make bench-full` = "
        f"full) from {len(runs)} runs on this machine: each step's figures come from the last run that "
        "measured it (`--merge`), and the figures of one run were measured side by side. Raw figures "
        "in `results.json`; other processes running at the same time make them noisy (see the load).",
        "",
        "| run (UTC) | command | steps | s | load average (1, 5, 15 min) at start / end |",
        "|---|---|---|---|---|",
        *[
            f"| {run.get('at') or 'earlier'} | `{run['command']}` | {', '.join(run['steps'])} | "
            f"{_f(run.get('seconds'), 0)} | {' / '.join(str(x) for x in run.get('load_average') or [])} |"
            for run in runs
        ],
    ]


#: Issue #14's goal for the page's lookups on a 1M-row attempts table, per HTTP request.
LOOKUP_GOAL_MS = 200.0


def _lookup_goal(lk: dict[str, Any]) -> dict[str, Any]:
    """The goal row of measurement 6: p95 of both lookups' HTTP requests on the largest table."""
    big, base = lk["sizes"][-1] if lk["sizes"] else lk["baseline"], lk["baseline"]
    api, query = big["api"], big["query"]
    ok = all(api[k]["p95_ms"] < LOOKUP_GOAL_MS for k in ("user", "run"))
    scope = "" if big["attempts"] >= 1_000_000 else f" (largest size {big['attempts']:,} rows, not 1M)"
    ratios = lk["ratios_p50"]
    return {
        "goal": f"6. UI user lookup and run view < {LOOKUP_GOAL_MS:g} ms (p95 of the HTTP request) on a "
        "1M-row attempts table, SQLite",
        "figure": f"{big['attempts']:,} rows: user p50/p95 {_f(api['user']['p50_ms'])}/"
        f"{_f(api['user']['p95_ms'])} ms, run {_f(api['run']['p50_ms'])}/{_f(api['run']['p95_ms'])} ms "
        f"(queries alone: user {_f(query['user']['p95_ms'])}, run {_f(query['run']['p95_ms'])} ms p95); "
        f"{base['attempts']:,}-row baseline: user {_f(base['api']['user']['p50_ms'])}, run "
        f"{_f(base['api']['run']['p50_ms'])} ms p50; ratio {_f(ratios['api.user'], 2)}x / "
        f"{_f(ratios['api.run'], 2)}x{scope}",
        "ok": ok,
        "cause": ""
        if ok
        else "See section 6: the slowest query at the largest size and its plan name the index it lacks.",
    }


def _lookup_section(lk: dict[str, Any] | None) -> list[str]:
    """Section 6: the lookups at each size, the ratios to the baseline, each query with its plan."""
    if not lk:
        return []
    sizes = [lk["baseline"], *lk["sizes"]]
    big, base = sizes[-1], sizes[0]
    per_user = (big["attempts"] - big["heavy_users"] * 500) / max(1, big["users"])
    out = [
        "## 6. The UI page's user lookup and run view on a large attempts table (issue #14)",
        "",
        "One process per size: a new SQLite warehouse with the engine's own tables and indexes "
        "(`Warehouse.create_tables`), seeded with `executemany` in batches of 50,000 "
        "(`benchmarks/sfox_bench/lookup.py`). The same shape at every size: users drawn until the "
        f"attempts table has its rows (~{per_user:.1f} attempts per user: email, sms for the 70% "
        "individuals, retries, calls failed and tried again in the next run), sent in id order by "
        "runs of ~5,000 attempts, 1% of the rows on heavy users with 500 attempts each (their "
        f"timeline shows the newest 200). {lk['samples']} user ids and {lk['samples']} run ids drawn "
        "at random (seeded), each looked up once: *query* = `Lookups.user` / `Lookups.run` (with the "
        "run's DAG, as the page's links ask) on a connection of its own (the tables' catalog read "
        "included), *HTTP* = `GET api/user?user_id=` / `api/run?run_id=&dag_id=` through the "
        "plugin's FastAPI app (the connection looked up and an engine "
        "made per request, JSON; the DAG-access check answered by a stand-in auth manager). Warm OS "
        "cache (the file was just written); the table is `ANALYZE`d.",
        "",
        "| attempts rows | users (+ heavy) | ledger rows | runs (attempts: min / median / max) | seed s "
        "| user p50 / p95 / max ms | run p50 / p95 / max ms | heavy user p50 / p95 ms "
        "| HTTP user p50 / p95 ms | HTTP run p50 / p95 ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for x in sizes:
        q, api, per_run = x["query"], x["api"], x["run_attempts"]
        out.append(
            f"| {x['attempts']:,} | {x['users']:,} (+{x['heavy_users']}) | {x['ledger_rows']:,} | "
            f"{x['runs']:,} ({per_run['min']:,} / {per_run['median']:,} / {per_run['max']:,}) | "
            f"{_f(x['seed_s'])} | {_ms(q['user'], 'max')} | {_ms(q['run'], 'max')} | "
            f"{_ms(q['heavy_user'])} | {_ms(api['user'])} | {_ms(api['run'])} |"
        )
    ratios = lk["ratios_p50"]
    out += [
        "",
        f"{big['attempts']:,} / {base['attempts']:,} rows, p50: user lookup "
        f"**{_f(ratios['query.user'], 2)}x**, run view **{_f(ratios['query.run'], 2)}x**, "
        f"heavy user {_f(ratios['query.heavy_user'], 2)}x; "
        f"HTTP {_f(ratios['api.user'], 2)}x and {_f(ratios['api.run'], 2)}x. The heavy users' timeline: "
        f"{big['heavy_timeline']['shown']} of {big['heavy_timeline']['total']} attempts shown.",
        "",
        f"Each statement at {base['attempts']:,} and {big['attempts']:,} rows, and SQLite's plan at "
        f"{big['attempts']:,} (`EXPLAIN QUERY PLAN`):",
        "",
        f"| statement | p50 ms ({base['attempts']:,}) | p50 / p95 ms ({big['attempts']:,}) | plan |",
        "|---|---|---|---|",
    ]
    for label, st in big["statements"].items():
        plan = "; ".join(big["plans"].get(label, [])) or "n/a"
        small = base["statements"].get(label)
        out.append(
            f"| {label} | {_f(small['p50_ms'], 2) if small else 'n/a'} | {_f(st['p50_ms'], 2)} / "
            f"{_f(st['p95_ms'], 2)} | {plan} |"
        )
    out.append("")
    return out


def _ms(x: dict[str, Any], *extra: str) -> str:
    """'p50 / p95 (/ max)' of a timing, in ms."""
    return " / ".join(_f(x[f"{k}_ms"]) for k in ("p50", "p95", *extra))


def _chart(r: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 5, figsize=(22, 4.6))
    ax = axes[0]
    bars = []
    for step, runner in (("budget", "dag.test"), ("budget_live", "live")):
        for key in ("p2", "p1"):
            x = (r.get(step) or {}).get(key)
            if x:
                bars += [
                    (f"{runner}\np{key[1]} run", x["share"]),
                    (f"{runner}\np{key[1]} send", x["send_share"]),
                ]
    if r.get("loop"):
        bars.append(("loop\nrun", r["loop"]["share"]))
    if bars:
        ax.bar([k for k, _ in bars], [v for _, v in bars], color="#4c72b0")
        ax.axhline(1.0, color="k", ls="--", label="limit 25/s")
        ax.axhline(0.95, color="r", ls=":", label="send goal 0.95")
        ax.axhline(0.92, color="m", ls=":", label="run goal 0.92 (live 0.90)")
        ax.set_ylim(0, 1.15)
        ax.tick_params(axis="x", labelsize=7)
        ax.legend(fontsize=7, loc="lower center", framealpha=0.9)
    ax.set_title("1. Share of sFOX's 25 requests/s")
    ax = axes[1]
    groups = [(k, r.get(k)) for k in ("alternative", "live") if r.get(k)]
    if groups:
        xs = range(len(groups))
        ax.bar(
            [x - 0.2 for x in xs],
            [g["onboarding"]["wall_s"] or 0 for _, g in groups],
            0.4,
            label="onboarding",
        )
        ax.bar(
            [x + 0.2 for x in xs], [g["http"]["wall_s"] or 0 for _, g in groups], 0.4, label="HttpOperator"
        )
        ax.set_xticks(list(xs), ["dag.test()" if k == "alternative" else "live scheduler" for k, _ in groups])
        ax.set_ylabel("wall s")
        ax.legend(fontsize=8)
    ax.set_title(f"2. Wall time, {(r.get('alternative') or r.get('live') or {}).get('users', '?')} users")
    ax = axes[2]
    o = r.get("overhead")
    if o:
        ax.bar(
            ["bare\nrequests", "SfoxConnectHook"],
            [o["bare_median"], o["hook_median"]],
            color=["#999", "#4c72b0"],
        )
        ax.axhline(0.8 * o["bare_median"], color="r", ls=":", label="goal 0.8 x bare")
        ax.legend(fontsize=8)
    ax.set_title("3. Client req/s (no latency)")
    ax = axes[3]
    p = r.get("parse")
    if p:
        ax.bar(
            ["empty DAG", "onboarding DAG"],
            [p["empty"]["load_ms"], p["onboarding"]["load_ms"]],
            color=["#999", "#4c72b0"],
        )
        ax.axhline(1.2 * p["empty"]["load_ms"], color="r", ls=":", label="goal 1.2 x empty")
        ax.set_ylabel("ms (median)")
        ax.legend(fontsize=8)
    ax.set_title("4. DAG file load time")
    ax = axes[4]
    pl = r.get("planning")
    if pl and pl["sizes"]:
        rows = [x["rows"] for x in pl["sizes"]]
        ax.plot(rows, [x["wall_s"] for x in pl["sizes"]], "o-", label="wall s")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("source rows")
        ax.set_ylabel("wall s")
        ax2 = ax.twinx()
        ax2.plot(
            rows,
            [x["growth_vs_empty_mb"] for x in pl["sizes"]],
            "s--",
            color="#c44e52",
            label="RSS growth MB",
        )
        ax2.set_ylabel("peak RSS growth MB")
        ax2.set_ylim(0, max(RSS_LIMIT_MB, *[x["growth_vs_empty_mb"] for x in pl["sizes"]]) * 1.1)
        ax.legend(loc="upper left", fontsize=8)
        ax2.legend(loc="lower right", fontsize=8)
    ax.set_title("5. Planning")
    fig.suptitle(
        f"airflow-provider-sfox benchmarks ({r['mode']} mode, {r['machine']['cpu']}, "
        f"{r['machine']['cores']} cores)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


#: Issue #16's goal: an email confirmation's sms within this many seconds (p95), live.
EVENTS_GOAL_S = 30.0


def _events_goal(ev: dict[str, Any]) -> dict[str, Any]:
    """The goal row of measurement 7: p95 of confirmation -> sms request over sequential events."""
    ok = ev["p95_s"] < EVENTS_GOAL_S
    return {
        "goal": f"7. Email confirmation (asset event) -> sms request < {EVENTS_GOAL_S:g} s (p95), live "
        "scheduler, one event at a time",
        "figure": f"p50 {_f(ev['p50_s'])} s, p95 {_f(ev['p95_s'])} s (max {_f(ev['max_s'])}) over "
        f"{ev['events']} events; {_f(ev['ratio_p95'], 4)} of the hourly run's expected "
        f"{_f(ev['hourly_expected_s'], 0)} s",
        "ok": ok,
        "cause": ""
        if ok
        else "See section 7: the run's three task starts (plan, chunks, send) on the scheduler loop.",
    }


def _events_section(ev: dict[str, Any] | None) -> list[str]:
    """Section 7: the latency of the email-verified asset event, and the settings it ran with."""
    if not ev:
        return []
    settings = ", ".join(f"`{k}={v}`" for k, v in ev["settings"].items())
    return [
        "## 7. Email confirmation to sms through an asset event, live (issue #16)",
        "",
        "`tests/live/test_live_email_verified.py::test_event_latency` on a live Airflow (api-server, "
        "scheduler with LocalExecutor and `[core] parallelism` 2, dag-processor, triggerer; metadata on "
        "PostgreSQL), the follow-up DAG `sfox_email_verified` on the sandbox's asset: after one onboarding "
        "run sent the email codes, each of the benchmark's users confirms their email at the sandbox "
        "(one at a time: the next once the run of the previous one ended); the sandbox posts "
        "`POST /api/v2/assets/events` with the user's id, and the seconds counted run from the verify "
        "request to the sms send-verification request, both by the sandbox's journal clock. "
        f"Settings: {settings}, `AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC=2`.",
        "",
        "| events | p50 s | p95 s | mean s | min / max s | runs | mean run s (start to end) "
        "| hourly run's expected wait s | p50 / p95 ratio to it |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {ev['events']} | {_f(ev['p50_s'])} | {_f(ev['p95_s'])} | {_f(ev['mean_s'])} | "
        f"{_f(ev['min_s'])} / {_f(ev['max_s'])} | {ev['runs']} | {_f(ev['mean_run_s'])} | "
        f"{_f(ev['hourly_expected_s'], 0)} | {_f(ev['ratio_p50'], 4)} / {_f(ev['ratio_p95'], 4)} |",
        "",
        f"The hourly run's expected wait is {HOURLY_MEAN_WAIT_S_TEXT} for a confirmation at a random "
        "moment plus the run's time (here the mean follow-up run, a lower bound for a whole onboarding "
        "run). What the seconds are made of: the scheduler creating the asset-triggered run (its loop, "
        "idle sleep `scheduler_idle_sleep_time`), then three task starts in a row under LocalExecutor "
        "(`plan`, `individual_chunks`, then the mapped `send_sms`), each queued by the scheduler loop "
        "once the previous ended. `[scheduler] scheduler_heartbeat_sec` is only the job's heartbeat and "
        "the dag-processor's intervals only matter for new DAG files, not for runs. The idle sleep was "
        "lowered from its default of 1 s (which a production deployment may do too: the loop then polls "
        "the database more often when idle); this run did not measure the default side by side.",
        "",
    ]


HOURLY_MEAN_WAIT_S_TEXT = "30 min (1,800 s)"


#: The watcher's natural bound: one poll interval at most before the poll that sees the user, then
#: the asset event's own goal for the rest (the run that sends the sms).
WATCHER_MARGIN_S = EVENTS_GOAL_S


def _watcher_goal(w: dict[str, Any]) -> dict[str, Any]:
    """The goal row of measurement 8: p95 of confirmation -> sms request through the watcher."""
    interval = w["poll_interval_s"]
    bound = interval + WATCHER_MARGIN_S
    ok = w["p95_s"] < bound
    return {
        "goal": f"8. Email confirmation (watcher, poll every {interval:g} s) -> sms request < poll interval "
        f"+ {WATCHER_MARGIN_S:g} s = {bound:g} s (p95; the natural bound: at most one interval before "
        "the poll that sees the user, then goal 7's run), live, one user at a time",
        "figure": f"p50 {_f(w['p50_s'])} s, p95 {_f(w['p95_s'])} s (max {_f(w['max_s'])}) over "
        f"{w['users']} users; p95 {_f(w['ratio_p95_interval'], 2)}x the poll interval, "
        f"{_f(w['ratio_p95_expected'], 2)}x the expected {_f(w['expected_s'])} s (interval / 2 + the run)",
        "ok": ok,
        "cause": ""
        if ok
        else "See section 8: the poll's wait, then the run's three task starts on the scheduler loop.",
    }


def _watcher_section(w: dict[str, Any] | None) -> list[str]:
    """Section 8: the latency through the email-verified watcher, against its poll interval."""
    if not w:
        return []
    settings = ", ".join(f"`{k}={v}`" for k, v in w["settings"].items())
    interval = w["poll_interval_s"]
    return [
        "## 8. Email confirmation to sms through the watcher, live (issue #16)",
        "",
        "`tests/triggers/test_live_watcher.py::test_watcher_latency` on a live Airflow as in section 7 "
        "(api-server, scheduler with LocalExecutor, dag-processor, triggerer; metadata and warehouse on "
        "PostgreSQL), the onboarding DAG `sfox_watch_live` scheduled on `email_verified_asset(host, "
        f"watchers=[email_verified_watcher(poll_interval={interval:g})])`: no sandbox event, the watcher "
        "(in the triggerer) reads sFOX's user list every poll interval and emits the users newly "
        "verified. After one onboarding run sent the email codes, each of the benchmark's users confirms "
        "their email at the sandbox, one at a time (the next once the run of the previous one ended, "
        "after a random wait of 0 to one interval, so that the confirmations fall at random moments of "
        "the poll cycle); the seconds counted run from the verify request to the sms send-verification "
        f"request, both by the sandbox's journal clock. Settings: {settings}.",
        "",
        "| users | poll interval s | p50 s | p95 s | mean s | min / max s "
        "| confirmation -> event p50 / max s | runs | mean run s (start to end) "
        "| expected s (interval / 2 + run) "
        "| p50 / p95 ratio to the interval | p50 / p95 ratio to the expected |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {w['users']} | {interval:g} | {_f(w['p50_s'])} | {_f(w['p95_s'])} | {_f(w['mean_s'])} | "
        f"{_f(w['min_s'])} / {_f(w['max_s'])} | {_f(w['p50_emitted_s'])} / {_f(w['max_emitted_s'])} | "
        f"{w['runs']} | {_f(w['mean_run_s'])} | {_f(w['expected_s'])} | "
        f"{_f(w['ratio_p50_interval'], 2)} / {_f(w['ratio_p95_interval'], 2)} | "
        f"{_f(w['ratio_p50_expected'], 2)} / {_f(w['ratio_p95_expected'], 2)} |",
        "",
        "The expected figure is the mean wait for the next poll of a confirmation at a random moment "
        "(half the interval; the poll's own seconds add to it, since the interval runs from the end of one "
        "poll to the start of the next) plus the mean asset-triggered run. 'Confirmation -> event' is the "
        "asset event's timestamp in Airflow (the triggerer's clock, the same machine) less the verify "
        "request: the watcher's share; the rest is the scheduler creating the run and the run itself "
        "(here a whole onboarding run: plan, chunks, then the send tasks). The natural bound of the goal "
        "is one full interval (a confirmation just after a poll) plus goal 7's 30 s for the run.",
        "",
    ]
