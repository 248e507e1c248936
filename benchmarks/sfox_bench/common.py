"""Shared pieces: the sandbox process, Airflow homes, synthetic users, the machine's description."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import platform
import random
import select
import shutil
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

REPO = Path(__file__).resolve().parents[2]
BENCH_DIR = REPO / "benchmarks"
ONBOARDING_DAG_FILE = REPO / "dags" / "sfox_batch_onboarding.py"
BENCH_DAGS = BENCH_DIR / "dags"
HTTP_DAG_FILE = BENCH_DAGS / "sfox_http_onboarding.py"
TOKEN = "sfox-bench-token"
SOURCE_TABLE = "sfox_users"


def log(text: str) -> None:
    """One progress line on stderr (stdout of measurement processes carries their JSON)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# --- synthetic users ------------------------------------------------------------------------------


def iter_users(count: int, *, seed: int = 7, corporation_share: float = 0.3) -> Iterator[tuple[Any, ...]]:
    """The rows of ``tests.onboarding_data.make_users``, generated lazily (1M rows fit no list)."""
    rng = random.Random(seed)
    for i in range(count):
        kind = "corporation" if rng.random() < corporation_share else "individual"
        phone = f"+1202{rng.randrange(10**7):07d}" if kind == "individual" else None
        yield (f"user-{i:07d}", kind, f"person{i}@example.com", phone)


def seed_warehouse(path: Path, count: int, rows: Iterable[tuple[Any, ...]] | None = None) -> None:
    """
    A new SQLite warehouse whose ``sfox_users`` holds ``count`` valid users (one executemany).

    :param rows: the ``(user_id, account_type, email, phone_number)`` rows instead of this
        module's synthetic users.
    """
    path.unlink(missing_ok=True)
    conn = sqlite3.connect(path)
    try:
        conn.execute(
            f"CREATE TABLE {SOURCE_TABLE} "
            "(user_id TEXT, account_type TEXT, email TEXT, phone_number TEXT, extra TEXT)"
        )
        conn.executemany(
            f"INSERT INTO {SOURCE_TABLE} (user_id, account_type, email, phone_number) VALUES (?, ?, ?, ?)",
            iter_users(count) if rows is None else rows,
        )
        conn.commit()
    finally:
        conn.close()


def sandbox_seed(count: int) -> list[dict[str, Any]]:
    """The users as registered on sFOX by the partner (the sandbox's seed objects)."""
    return [
        {"user_id": uid, "account_type": kind, "email": email, "phone_number": phone}
        for uid, kind, email, phone in iter_users(count)
    ]


# --- the sandbox, in a process of its own (it must not share the client's GIL) --------------------


class Sandbox:
    """``python -m sfox_sandbox`` on a free port, driven through its admin API."""

    def __init__(
        self,
        log_path: Path,
        *,
        rate_limit: int = 0,
        window: float = 10.0,
        block: float = 60.0,
        latency_ms: float = 0.0,
    ) -> None:
        self.log_path = log_path
        self.args = [
            "--rate-limit",
            str(rate_limit),
            "--rate-window",
            str(window),
            "--rate-block",
            str(block),
            "--latency-ms",
            str(latency_ms),
        ]
        self.settings = {
            "rate_limit": rate_limit,
            "window_s": window,
            "block_s": block,
            "latency_ms": latency_ms,
        }
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self._users: list[dict[str, Any]] = []

    def __enter__(self) -> Sandbox:
        with self.log_path.open("w") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "sfox_sandbox",
                    "--port",
                    "0",
                    "--token",
                    TOKEN,
                    "--random-seed",
                    "1",
                    *self.args,
                ],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                cwd=REPO,
            )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 60)
        self.url = self.proc.stdout.readline().strip() if ready else ""
        if not self.url.startswith("http"):
            self.__exit__(None, None, None)
            raise RuntimeError(f"the sandbox did not start; see {self.log_path}")
        return self

    def __exit__(self, *exc: object) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()

    def seed(self, users: list[dict[str, Any]]) -> None:
        """Register users (kept, and registered again after every :meth:`reset`)."""
        self._users = users
        self._post_users()

    def _post_users(self) -> None:
        for start in range(0, len(self._users), 5000):
            r = requests.post(
                f"{self.url}/_sandbox/users", json=self._users[start : start + 5000], timeout=60
            )
            r.raise_for_status()

    def reset(self) -> None:
        """Back to a fresh sFOX: no codes, empty journal, rate-limit windows cleared, users seeded."""
        requests.post(f"{self.url}/_sandbox/reset", timeout=30).raise_for_status()
        self._post_users()

    def journal(self) -> list[dict[str, Any]]:
        r = requests.get(f"{self.url}/_sandbox/journal", timeout=120)
        r.raise_for_status()
        return r.json()["data"]

    def figures(self) -> dict[str, Any]:
        """Requests, 429s, codes sent and the span between the first and last request."""
        entries = self.journal()
        statuses = Counter(str(e["status"]) for e in entries)
        times = sorted(e["time"] for e in entries)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        return {
            "requests": len(entries),
            "rate_limited": statuses.get("429", 0),
            "codes_sent": sum(1 for e in entries if e["code_sent"]),
            "statuses": dict(statuses),
            "first": min(times) if times else None,
            "last": max(times) if times else None,
            "send_span_s": (max(times) - min(times)) if len(times) > 1 else 0.0,
            # Pauses of over 0.5 s between two requests: task start-up between chunk tasks.
            "idle_gaps_s": sum(g for g in gaps if g > 0.5),
        }


def sfox_conn(url: str, **extra: Any) -> str:
    """The ``AIRFLOW_CONN_SFOX_DEFAULT`` value of the sandbox."""
    return json.dumps({"conn_type": "sfox", "host": url, "password": TOKEN, "extra": extra})


def http_conn(url: str) -> str:
    """An ``http`` connection to the sandbox: the bearer token goes in as a header from the extra."""
    return json.dumps(
        {
            "conn_type": "http",
            "host": url,
            "extra": {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        }
    )


def sqlite_conn(path: Path) -> str:
    return json.dumps({"conn_type": "sqlite", "host": str(path)})


# --- Airflow homes and measurement processes ----------------------------------------------------


def airflow_env(home: Path, dags_folder: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment of an Airflow process using ``home`` (SQLite metadata DB inside it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder or home / "dags"),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")])),
            **extra,
        }
    )
    return env


def airflow_bin() -> str:
    return str(Path(sys.executable).with_name("airflow"))


def migrated_db(work: Path) -> Path:
    """A migrated, empty metadata DB, made once per benchmark run and copied for each use."""
    template = work / "template-home"
    db = template / "airflow.db"
    if not db.exists():
        template.mkdir(parents=True, exist_ok=True)
        (template / "dags").mkdir(exist_ok=True)
        with (work / "db-migrate.log").open("w") as out:
            subprocess.run(
                [airflow_bin(), "db", "migrate"],
                env=airflow_env(template),
                stdout=out,
                stderr=subprocess.STDOUT,
                check=True,
                timeout=600,
            )
    return db


def new_home(work: Path, name: str, dag_files: list[Path]) -> Path:
    """A fresh Airflow home with a copy of the migrated DB and ``dag_files`` linked into its DAG folder."""
    home = work / name
    shutil.rmtree(home, ignore_errors=True)
    (home / "dags").mkdir(parents=True)
    shutil.copy(migrated_db(work), home / "airflow.db")
    for path in dag_files:
        (home / "dags" / path.name).symlink_to(path)
    return home


def run_measurement(
    module: str, args: dict[str, Any], env: dict[str, str], log_path: Path, timeout: float
) -> Any:
    """Run ``python -m sfox_bench.<module>`` with ``args`` as JSON; return the JSON it prints last."""
    env = {**env, "PYTHONPATH": os.pathsep.join([str(BENCH_DIR), env.get("PYTHONPATH", "")])}
    with log_path.open("w") as err:
        result = subprocess.run(
            [sys.executable, "-m", f"sfox_bench.{module}", json.dumps(args)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            timeout=timeout,
            cwd=REPO,
        )
    with log_path.open("a") as err:  # the task logs of dag.test() come on stdout: keep them
        err.write(result.stdout)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"sfox_bench.{module} failed (exit {result.returncode}); see {log_path}")
    return json.loads(lines[-1])


def emit(result: Any) -> None:
    """The last stdout line of a measurement process: its result."""
    sys.stdout.flush()
    print(json.dumps(result), flush=True)


# --- the machine ---------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """CPU model, cores, RAM, OS, Python and package versions, and the load while starting."""
    from importlib import metadata

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram_gb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    versions = {}
    for dist in (
        "apache-airflow",
        "apache-airflow-providers-http",
        "apache-airflow-providers-common-sql",
        "apache-airflow-providers-sqlite",
        "airflow-provider-sfox",
        "requests",
    ):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gb": ram_gb,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": versions,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
