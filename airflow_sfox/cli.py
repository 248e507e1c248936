"""
The emergency stop, from the command line: ``python -m airflow_sfox hold|release|status``.

Hold every sender that shares an ``sfox`` connection's budget scope (one egress IP): every
task, thread and process using that budget backend stops before its next request, within
seconds, and no user is charged a failure. Run it where Airflow's configuration and
connections are available (a worker, the scheduler or api-server host, or anywhere with the
same ``AIRFLOW_CONN_*`` and ``[core]`` settings)::

    python -m airflow_sfox hold --conn-id sfox_default --for 30m --reason "sFOX maintenance"
    python -m airflow_sfox hold --conn-id sfox_default --until 2026-12-06T18:00:00Z
    python -m airflow_sfox hold --conn-id sfox_default            # until released
    python -m airflow_sfox status --conn-id sfox_default          # and a recorded sFOX outage
    python -m airflow_sfox release --conn-id sfox_default
    python -m airflow_sfox hold --conn-id sfox_default --scope sfox-worker-2   # another scope

With the ``local`` backend a hold covers the machine where it runs (the budget's folder); with
``redis`` it covers every machine. ``--scope`` names another scope of the connection's backend
(a per-host ``{hostname}`` scope of another machine, say).

These are not ``airflow sfox ...`` commands: Airflow lets providers add CLI commands (the
``cli`` entry of the provider info) only from Airflow 3.2, and this provider supports 3.1.3+.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

_DURATION_PART = re.compile(r"(\d+)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """``30m``, ``2h``, ``1h30m``, ``90s``, ``1d`` as a time span."""
    compact = text.strip().lower()
    parts = _DURATION_PART.findall(compact)
    if not parts or "".join(number + unit for number, unit in parts) != compact:
        raise argparse.ArgumentTypeError(f"not a duration such as 30m, 2h or 1h30m: {text!r}")
    seconds = sum(int(number) * _UNIT_SECONDS[unit] for number, unit in parts)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"the duration must be positive, got {text!r}")
    return timedelta(seconds=seconds)


def parse_until(text: str) -> datetime:
    """An ISO 8601 time with its offset (``Z`` for UTC)."""
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give the time's offset (e.g. {text}Z for UTC): {text!r}")
    return when


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m airflow_sfox`` command line."""
    parser = argparse.ArgumentParser(
        prog="python -m airflow_sfox",
        description="Hold, release or show the operator's hold on an sFOX connection's rate budget scope.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    hold = commands.add_parser("hold", help="stop every sender of the connection's budget scope")
    ends = hold.add_mutually_exclusive_group()
    ends.add_argument(
        "--until", type=parse_until, help="ISO 8601 time the hold ends (default: until released)"
    )
    ends.add_argument("--for", dest="duration", type=parse_duration, help="how long, e.g. 30m, 2h, 1h30m")
    hold.add_argument("--reason", help='shown with the hold (default: "held by operator"); no personal data')
    for name, text in (
        ("release", "end the hold"),
        ("status", "show the hold in force and a recorded sFOX outage, if any"),
    ):
        commands.add_parser(name, help=text)
    for sub in commands.choices.values():
        sub.add_argument(
            "--conn-id", required=True, help="the sfox connection (its scope and budget backend)"
        )
        sub.add_argument(
            "--scope", help="another budget scope of the connection's backend (default: the connection's own)"
        )
        sub.add_argument("--json", action="store_true", help="print JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return the exit status (0: done; 1: refused)."""
    args = build_parser().parse_args(argv)
    from airflow_sfox.exceptions import SfoxError
    from airflow_sfox.hooks.budget import current_hold, hold, recorded_outage, release

    try:
        if args.command == "hold":
            until = args.until or (datetime.now(timezone.utc) + args.duration if args.duration else None)
            result: Any = hold(args.conn_id, until=until, reason=args.reason, scope=args.scope)
        elif args.command == "release":
            result = {"released": release(args.conn_id, scope=args.scope)}
        else:
            result = {
                "hold": current_hold(args.conn_id, scope=args.scope),
                "outage": recorded_outage(args.conn_id, scope=args.scope),
            }
    except (SfoxError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(result) if args.json else _describe(args.command, args.conn_id, result))
    return 0


def _describe(command: str, conn_id: str, result: Any) -> str:
    if command == "release":
        return f"{conn_id}: released." if result["released"] else f"{conn_id}: was not held."
    if command == "status":
        lines = [_describe("hold", conn_id, result["hold"])]
        if (down := result["outage"]) is not None:
            lines.append(
                f"{conn_id}: {down['down']} since {down['since']}, recorded for scope {down['scope']!r}: its "
                f"chunk tasks send nothing but one probe ({down['probes']} failed; the next in "
                f"{down['probe_in']:.0f} s)."
            )
        return "\n".join(lines)
    if result is None:
        return f"{conn_id}: not held."
    until = result["until"] or "released"
    return (
        f"{conn_id}: held until {until} ({result['reason']}); scope {result['scope']!r}, "
        f"since {result['since']}, {result['backend']} backend ({result['where']})."
    )
