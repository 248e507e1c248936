"""
Worker processes of the multi-process tests, started together: each prints ``READY`` once it is
set up (Airflow's start-up logs may come first), all get ``GO`` on stdin at once, and each
prints one ``RESULT <json>`` line before it exits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def run_together(
    script: Path, settings: list[Any], envs: list[dict[str, str]], *, timeout: float
) -> list[Any]:
    """Run ``script '<json settings>'`` once per setting (with its env), released together; their RESULTs."""
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), json.dumps(setting)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO), **env},
            cwd=REPO,
        )
        for setting, env in zip(settings, envs, strict=True)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            seen = []
            while (line := proc.stdout.readline()) and line.strip() != "READY":
                seen.append(line)
            assert line.strip() == "READY", f"worker did not start: {''.join(seen)[-2000:]}"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("GO\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            out, _ = proc.communicate(timeout=timeout)
            assert proc.returncode == 0, out[-3000:]
            line = next(line for line in out.splitlines() if line.startswith("RESULT "))
            results.append(json.loads(line.removeprefix("RESULT ")))
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
