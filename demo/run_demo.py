"""
The end-to-end demo behind ``make demo``: the onboarding DAG against the local sandbox.

1. Makes ``.demo/`` in the repository: an Airflow home and a SQLite warehouse holding about
   1,000 synthetic users (individuals and corporations) plus a few bad rows.
2. Starts the sFOX sandbox (``python -m sfox_sandbox``) on a free port, seeded with
   the valid users.
3. Runs ``airflow dags test sfox_batch_onboarding``: every valid user gets an email code.
4. A third of the individuals "verify" their email through the sandbox, like a person typing
   the code.
5. Runs the DAG again: those individuals get their sms code; nothing is sent twice.
6. Prints the ledger, the run summaries and checks computed from the sandbox's journal; exits
   with status 1 when a check fails.

Airflow's output goes to ``.demo/run-*.log``; the console gets progress lines and the
summary tables. No personal data is real: emails are ``@example.com``, phones ``+1202...``.
Run from the repository's virtualenv: ``make demo`` (or ``.venv/bin/python demo/run_demo.py``).
"""

from __future__ import annotations

import json
import os
import random
import re
import select
import shutil
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import requests

REPO = Path(__file__).resolve().parent.parent
DEMO_DIR = REPO / ".demo"
AIRFLOW_HOME = DEMO_DIR / "airflow"
WAREHOUSE = DEMO_DIR / "warehouse.db"
SEED_FILE = DEMO_DIR / "sandbox-users.json"
SANDBOX_LOG = DEMO_DIR / "sandbox.log"

DAG_ID = "sfox_batch_onboarding"
SOURCE_TABLE = "sfox_users"
LEDGER_TABLE = "sfox_onboarding_ledger"
RUNS_TABLE = "sfox_onboarding_runs"
TOKEN = "sfox-demo-token"  # noqa: S105 - the local sandbox's token, not a secret

USERS = 1000
CORPORATION_SHARE = 0.3
RANDOM_SEED = 2026
#: Every n-th individual (a third) verifies their email between the two runs.
VERIFY_EVERY = 3
#: Chunk size and failure threshold of both runs; the bad rows are 1% of the source.
RUN_CONF = {"chunk_size": 250, "failure_threshold": 0.02}
#: The hook's request budget. 200 per 10 s is the production default, safely under sFOX's
#: limit of 250 per 10 s; the demo runs the sandbox's sFOX limit on a 10x faster clock (250 per
#: 1 s, 6 s block) and a budget of 100 per 1 s under it, with the jitter margin scaled too.
REQUESTS_PER_SECOND = 100
SANDBOX_TIME_SCALE = 0.1

#: Rows the planner must reject (about 1% of the source): never sent, never seen by sFOX.
BAD_ROWS: list[tuple[Any, ...]] = [
    ("", "individual", "empty-id@example.com", "+12025550100"),
    ("bad-account-type", "trust", "trust@example.com", "+12025550101"),
    ("bad-email", "individual", "not-an-email", "+12025550102"),
    ("bad-no-email", "corporation", None, None),
    ("bad-no-phone", "individual", "no-phone@example.com", None),
    ("bad-phone", "corporation", "bad-phone@example.com", "555-0103"),
    ("dup-1", "individual", "dup-a@example.com", "+12025550104"),
    ("dup-1", "corporation", "dup-b@example.com", None),
    ("x" * 200, "individual", "long-id@example.com", "+12025550105"),
    ("ctl\x07id", "corporation", "control@example.com", None),
]

#: Lines of the ``airflow dags test`` output echoed to the console: the plan, the progress of
#: each chunk task, and the request figures; the reasons of rejected rows on the first run only.
_ECHO = re.compile(r"Planned \d+ users|: \d+/\d+ done, |\d+ requests, \d+ answered 429")
_ECHO_FIRST = re.compile(f"{_ECHO.pattern}|rejected \\d+ rows?:")
#: The summary table is one multi-line log record: the header line, then bare table lines,
#: the last of which ends with the record's " [logger] key=value" fields.
_TABLE_HEADER = re.compile(r"sFOX onboarding (summary|dry run):")
_TABLE_ROW = re.compile(r"^(channel\s+outcome\s+count|-{10,}|\S+\s+\S+\s+\d+)$")
#: The last line of a traceback: ``airflow.sdk.exceptions.AirflowException: ...``.
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Exception|Error): ")
_LOG_PREFIX = re.compile(r"^\S+\s+\[\w+\s*\]\s+(.*)$")
_LOG_FIELDS = re.compile(r"\s+\[[\w.]+\](\s+\w+=\S*)*\s*$")


class DemoError(Exception):
    """A step of the demo failed; the message says which and where its log is."""


def say(text: str = "") -> None:
    """Print one console line now."""
    print(text, flush=True)


# --- data ---------------------------------------------------------------------------------------


def make_users(count: int, seed: int = RANDOM_SEED) -> list[tuple[str, str, str, str | None]]:
    """``count`` valid synthetic users ``(user_id, account_type, email, phone_number)``."""
    rng = random.Random(seed)  # noqa: S311 - synthetic data, not security
    rows: list[tuple[str, str, str, str | None]] = []
    for i in range(count):
        kind = "corporation" if rng.random() < CORPORATION_SHARE else "individual"
        phone = f"+1202{rng.randrange(10**7):07d}" if kind == "individual" else None
        rows.append((f"user-{i:06d}", kind, f"person{i}@example.com", phone))
    return rows


def seed_warehouse(path: Path, rows: list[tuple[Any, ...]]) -> None:
    """Create the source table ``sfox_users`` in a new SQLite file."""
    with sqlite3.connect(path) as conn:
        conn.execute(
            f"CREATE TABLE {SOURCE_TABLE} (user_id TEXT, account_type TEXT, email TEXT, phone_number TEXT)"
        )
        conn.executemany(f"INSERT INTO {SOURCE_TABLE} VALUES (?, ?, ?, ?)", rows)  # noqa: S608
    conn.close()


def write_sandbox_seed(path: Path, users: list[tuple[str, str, str, str | None]]) -> None:
    """The sandbox's users: the valid rows, as registered on sFOX by the partner."""
    seed = [
        {"user_id": uid, "account_type": kind, "email": email, "phone_number": phone}
        for uid, kind, email, phone in users
    ]
    path.write_text(json.dumps(seed), encoding="utf-8")


# --- sandbox ------------------------------------------------------------------------------------


def start_sandbox() -> tuple[subprocess.Popen[str], str]:
    """Start the sandbox on a free port; return the process and its URL (first stdout line)."""
    log = SANDBOX_LOG.open("w", encoding="utf-8")
    proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
        [
            sys.executable,
            "-m",
            "sfox_sandbox",
            "--port",
            "0",
            "--token",
            TOKEN,
            "--seed",
            str(SEED_FILE),
            "--random-seed",
            str(RANDOM_SEED),
            "--time-scale",
            str(SANDBOX_TIME_SCALE),
            "--log-level",
            "INFO",
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        cwd=REPO,
    )
    log.close()
    assert proc.stdout is not None
    url = _read_line(proc.stdout, timeout=30.0)
    if not url.startswith("http"):
        stop_sandbox(proc)
        raise DemoError(f"the sandbox did not start (exit status {proc.returncode}); see {SANDBOX_LOG}")
    return proc, url


def _read_line(stream: IO[str], timeout: float) -> str:
    """One line of a pipe, or ``""`` after ``timeout`` seconds or at end of file."""
    ready, _, _ = select.select([stream], [], [], timeout)
    return stream.readline().strip() if ready else ""


def stop_sandbox(proc: subprocess.Popen[str]) -> None:
    """Terminate the sandbox; kill it if it does not stop within 5 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    if proc.stdout is not None:
        proc.stdout.close()


def verify_emails(url: str, user_ids: list[str]) -> int:
    """Verify the email of each user with the otp the sandbox sent; return how many passed."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    interval = 1.0 / REQUESTS_PER_SECOND  # the same budget as the DAG's hook
    verified = 0
    for user_id in user_ids:
        started = time.monotonic()
        path_id = quote(user_id, safe="")
        codes = session.get(f"{url}/_sandbox/codes/{path_id}", timeout=10)
        codes.raise_for_status()
        otp = codes.json()["data"]["email"]["latest"]
        answer = session.post(
            f"{url}/v1/enterprise/users/verify/{path_id}", json={"type": "email", "otp": otp}, timeout=10
        )
        if answer.status_code != 200:
            raise DemoError(f"verifying {user_id}: HTTP {answer.status_code} {answer.text[:200]}")
        verified += 1
        time.sleep(max(0.0, interval - (time.monotonic() - started)))
    return verified


def journal(url: str) -> list[dict[str, Any]]:
    """Every ``/v1/`` request the sandbox received, in order."""
    answer = requests.get(f"{url}/_sandbox/journal", timeout=30)
    answer.raise_for_status()
    return answer.json()["data"]


# --- airflow ------------------------------------------------------------------------------------


def airflow_env(sandbox_url: str) -> dict[str, str]:
    """The environment of the Airflow commands: this demo's home, DAGs and connections only."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(AIRFLOW_HOME),
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW_CONN_SFOX_DEFAULT=json.dumps(
            {
                "conn_type": "sfox",
                "host": sandbox_url,
                "password": TOKEN,
                "extra": {
                    "rate_limit_requests": REQUESTS_PER_SECOND,
                    "rate_limit_window_seconds": 1,
                    "rate_limit_margin_seconds": 0.5 * SANDBOX_TIME_SCALE,
                    "rate_limit_dir": str(DEMO_DIR / "rate-budget"),
                },
            }
        ),
        AIRFLOW_CONN_SFOX_WAREHOUSE=json.dumps({"conn_type": "sqlite", "host": str(WAREHOUSE)}),
    )
    return env


def airflow(
    args: list[str], env: dict[str, str], log_path: Path, *, echo: re.Pattern[str] | None = None
) -> float:
    """
    Run ``airflow ARGS`` with its output in ``log_path``; return its duration in seconds.

    :param echo: print the lines it matches and the summary table to the console.
    :raises DemoError: when the command fails.
    """
    started = time.monotonic()
    with log_path.open("w", encoding="utf-8") as log:
        proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            [sys.executable, "-m", "airflow", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            env=env,
            cwd=REPO,
        )
        assert proc.stdout is not None
        try:
            in_table = False
            for line in proc.stdout:
                log.write(line)
                if echo is None:
                    continue
                text = line.rstrip()
                if _TABLE_HEADER.search(text):
                    in_table = True
                    continue
                if in_table:
                    row = _LOG_FIELDS.sub("", text).strip()
                    in_table = bool(_TABLE_ROW.match(row)) and row == text.strip()
                    if _TABLE_ROW.match(row):
                        say(f"    {row}")
                        continue
                match = echo.search(text)
                if match:
                    say(f"    {_message(text)}")
        except BaseException:  # Ctrl-C or a console error: do not leave Airflow running
            proc.kill()
            raise
        finally:
            proc.wait()
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        lines = log_path.read_text(encoding="utf-8").splitlines()
        causes = [line for line in lines if _EXCEPTION.match(line)] or lines[-5:]
        for line in causes[-5:]:
            say(f"    {line[:300]}")
        raise DemoError(
            f"`airflow {' '.join(args[:2])}` failed (exit status {proc.returncode}); see {log_path}"
        )
    return seconds


def _message(line: str) -> str:
    """The message of an Airflow log line, without its time, level and logger fields."""
    found = _LOG_PREFIX.match(line)
    return _LOG_FIELDS.sub("", found.group(1) if found else line).strip()


def run_dag(env: dict[str, str], number: int) -> float:
    """One ``airflow dags test`` run of the onboarding DAG; return its duration."""
    log_path = DEMO_DIR / f"run-{number}.log"
    say(f"  airflow dags test {DAG_ID} -c '{json.dumps(RUN_CONF)}'   (log: {_rel(log_path)})")
    echo = _ECHO_FIRST if number == 1 else _ECHO
    seconds = airflow(["dags", "test", DAG_ID, "-c", json.dumps(RUN_CONF)], env, log_path, echo=echo)
    say(f"  run {number} finished in {seconds:.0f} s")
    return seconds


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


# --- report -------------------------------------------------------------------------------------


def query(sql: str, db: Path = WAREHOUSE) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Column names and rows of a query on the warehouse (or another SQLite file)."""
    with sqlite3.connect(db) as conn:
        cursor = conn.execute(sql)
        rows = cursor.fetchall()
        names = [d[0] for d in cursor.description]
    conn.close()
    return names, rows


def print_table(names: list[str], rows: list[tuple[Any, ...]]) -> None:
    """Print rows as an aligned text table (numbers right-aligned)."""

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.1f}"
        return str(value)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max([len(n)] + [len(r[i]) for r in cells]) for i, n in enumerate(names)]
    numeric = [
        all(isinstance(row[i], (int, float)) or row[i] is None for row in rows) for i in range(len(names))
    ]

    def line(values: list[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    say("  " + line(names))
    say("  " + "  ".join("-" * w for w in widths))
    for row in cells:
        say("  " + line(row))


def report() -> list[str]:
    """Print the ledger and the runs; return the run statuses."""
    say("\nLedger (sfox_onboarding_ledger), users by channel and state:")
    print_table(
        *query(
            f"SELECT channel, state, COUNT(*) AS users FROM {LEDGER_TABLE} "  # noqa: S608
            "GROUP BY channel, state ORDER BY channel, state"
        )
    )
    say("\nRuns (sfox_onboarding_runs):")
    names, rows = query(
        "SELECT run_id, status, source_rows, planned, rejected, sent, already_verified, failed, "  # noqa: S608
        f"uncertain, requests, rate_limited, ROUND(requests_per_second, 1) AS req_per_s "
        f"FROM {RUNS_TABLE} ORDER BY started_at"
    )
    print_table(names, rows)
    return [row[1] for row in rows]


def check(
    entries: list[dict[str, Any]],
    users: list[tuple[str, str, str, str | None]],
    verified: list[str],
    statuses: list[str],
) -> list[str]:
    """Compare what the sandbox saw with what should have happened; return the failures."""
    codes = Counter(
        (e["user_id"], e["type"]) for e in entries if e["code_sent"] and "/send-verification/" in e["path"]
    )
    email = {uid for (uid, channel) in codes if channel == "email"}
    sms = {uid for (uid, channel) in codes if channel == "sms"}
    valid = {u[0] for u in users}
    twice = sorted(key for key, n in codes.items() if n > 1)
    bad_ids = {str(row[0]) for row in BAD_ROWS}
    seen_bad = bad_ids & {e["user_id"] for e in entries if e["user_id"] is not None}
    errors = Counter(str(e["status"]) for e in entries if e["status"] not in (200, 201))
    _, rows = query(f"SELECT user_id, channel, sends FROM {LEDGER_TABLE} WHERE sends > 0")  # noqa: S608
    ledger = Counter({(user_id, channel): sends for user_id, channel, sends in rows})
    _, rows = query(
        "SELECT state, COUNT(*) FROM task_instance GROUP BY state ORDER BY state",
        AIRFLOW_HOME / "airflow.db",
    )
    tasks = {str(state): count for state, count in rows}
    complete = not entries or (entries[0]["seq"] == 1 and entries[-1]["seq"] == len(entries))
    results = [
        (f"the journal holds every request ({len(entries)})", complete),
        (
            f"every valid user got exactly 1 email code ({len(email)} users of {len(valid)})",
            email == valid and all(n == 1 for (_, c), n in codes.items() if c == "email"),
        ),
        (
            f"sms codes went to exactly the {len(verified)} verified individuals ({len(sms)} users)",
            sms == set(verified),
        ),
        (f"no code was sent twice ({sum(codes.values())} codes for {len(codes)} user-channels)", not twice),
        (f"bad rows never reached sFOX (0 of {len(bad_ids)} bad user_ids seen)", not seen_bad),
        (f"no error answers from sFOX ({dict(errors) or 'none'})", not errors),
        (f"the ledger's send counts match the journal ({sum(ledger.values())} sends)", ledger == codes),
        (f"both runs succeeded ({', '.join(statuses)})", statuses == ["success", "success"]),
        # A chunk task may fail after recording all its outcomes: the run is still a success
        # (the summary judges the ledger), but the demo wants a clean run.
        (f"no Airflow task failed ({tasks})", set(tasks) <= {"success", "skipped"}),
    ]
    say("\nChecks (the sandbox's journal of requests against the plan and the ledger):")
    failures = []
    for text, ok in results:
        say(f"  {'ok  ' if ok else 'FAIL'} {text}")
        if not ok:
            failures.append(text)
    if twice:
        say(f"       sent twice: {twice[:5]}")
    if seen_bad:
        say(f"       bad user_ids seen: {sorted(seen_bad)[:5]}")
    return failures


# --- main ---------------------------------------------------------------------------------------


def main() -> int:
    """Run the demo; return the exit status."""
    started = time.monotonic()
    if DEMO_DIR.exists():
        shutil.rmtree(DEMO_DIR)
    AIRFLOW_HOME.mkdir(parents=True)

    users = make_users(USERS)
    individuals = [u[0] for u in users if u[1] == "individual"]
    seed_warehouse(WAREHOUSE, [*users, *BAD_ROWS])
    write_sandbox_seed(SEED_FILE, users)
    say(
        f"Warehouse {_rel(WAREHOUSE)}: {len(users) + len(BAD_ROWS)} rows = {len(individuals)} individuals, "
        f"{len(users) - len(individuals)} corporations, {len(BAD_ROWS)} bad rows"
    )

    try:
        proc, url = start_sandbox()
    except DemoError as err:
        say(f"\nDemo failed: {err}")
        return 1
    try:
        say(f"Sandbox listening on {url} with {len(users)} users (log: {_rel(SANDBOX_LOG)})")
        env = airflow_env(url)
        say("Airflow: db migrate ...")
        seconds = airflow(["db", "migrate"], env, DEMO_DIR / "db-migrate.log")
        say(f"  metadata DB ready in {seconds:.0f} s ({_rel(AIRFLOW_HOME)})")

        say("\nRun 1: every valid user gets an email code")
        run_dag(env, 1)

        verified = individuals[::VERIFY_EVERY]
        say(f"\n{len(verified)} of {len(individuals)} individuals verify their email in the sandbox ...")
        say(f"  {verify_emails(url, verified)} emails verified")

        say("\nRun 2: the verified individuals get their sms code; nothing else is sent")
        run_dag(env, 2)

        statuses = report()
        failures = check(journal(url), users, verified, statuses)
    except (DemoError, requests.RequestException) as err:
        say(f"\nDemo failed: {err}")
        return 1
    finally:
        stop_sandbox(proc)
    say(f"\nSandbox stopped. Demo finished in {time.monotonic() - started:.0f} s; files in {_rel(DEMO_DIR)}/")
    if failures:
        say(f"{len(failures)} check(s) failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
