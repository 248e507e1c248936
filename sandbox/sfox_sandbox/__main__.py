"""Command line: ``python -m sfox_sandbox --port 8089 --token TOKEN [options]``.

Prints the base URL (e.g. ``http://127.0.0.1:8089``) alone on the first line of stdout once
listening, so a caller using ``--port 0`` can learn the port. Logs go to stderr. Stops on
SIGINT or SIGTERM. Run with ``--help`` for every option.

``--asset-events-url URL`` makes the sandbox post an Airflow asset event (``--asset-uri``)
each time a user confirms their email; its secrets come only from the environment (a command
line shows in ``ps``): ``$SFOX_SANDBOX_AIRFLOW_TOKEN`` (a JWT), or a user
(``--asset-events-user`` or ``$SFOX_SANDBOX_AIRFLOW_USER``) and
``$SFOX_SANDBOX_AIRFLOW_PASSWORD``.

``--register-existing-status`` / ``--register-existing-error`` and ``--register-invalid-status``
/ ``--register-invalid-error`` choose the answers of register-account that sFOX does not
document (an existing ``user_id``, a body failing the checks; 400 by default).

The ``/_sandbox/`` admin routes show every verification code and can reset the state. With
an admin token (``$SFOX_SANDBOX_ADMIN_TOKEN``, or ``--admin-token``) they need it in the
``X-Sandbox-Admin-Token`` header; without one they are open on a loopback ``--host`` and
refused (403) on any other, and a warning says so on stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from typing import TYPE_CHECKING

from sfox_sandbox.config import (
    DEFAULT_ASSET_URI,
    DEFAULT_TOKEN,
    AssetEventSettings,
    FaultSettings,
    RateLimitSettings,
    RegisterAnswer,
    SandboxConfig,
    is_loopback,
)
from sfox_sandbox.seed import load_seed_file
from sfox_sandbox.server import SandboxServer

if TYPE_CHECKING:
    from collections.abc import Sequence

TOKEN_ENV = "SFOX_SANDBOX_TOKEN"  # noqa: S105 - name of an env var, not a secret
ADMIN_TOKEN_ENV = "SFOX_SANDBOX_ADMIN_TOKEN"  # noqa: S105 - name of an env var, not a secret
# Where the Airflow secrets of --asset-events-url come from (names of env vars).
AIRFLOW_TOKEN_ENV = "SFOX_SANDBOX_AIRFLOW_TOKEN"  # noqa: S105
AIRFLOW_USER_ENV = "SFOX_SANDBOX_AIRFLOW_USER"
AIRFLOW_PASSWORD_ENV = "SFOX_SANDBOX_AIRFLOW_PASSWORD"  # noqa: S105


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default once: "(default: X)" is added unless the help text names
    the default itself, the option has no default value (``None``) or it is a flag."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "(default:" in text or action.default is None or isinstance(action.default, bool):
            return text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the sandbox command."""
    parser = argparse.ArgumentParser(
        prog="python -m sfox_sandbox",
        description=(
            "Local emulator of the sFOX Connect (enterprise) API for demos, tests and "
            "benchmarks. Serves /v1/enterprise/... like sFOX (bearer token, sFOX rate limit, "
            "optional faults) and an admin API under /_sandbox/ "
            "(codes, faults, rate-limit, token, users, asset-events, register-answers, reset, journal). "
            "Prints the "
            "base URL on the first line of stdout once listening."
        ),
        formatter_class=_HelpFormatter,
    )
    _server_options(parser)
    _rate_options(parser)
    _fault_options(parser)
    _event_options(parser)
    _register_options(parser)
    return parser


def _server_options(parser: argparse.ArgumentParser) -> None:
    srv = parser.add_argument_group("server")
    srv.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; on a non-loopback address the /_sandbox/ admin routes "
        f"are refused unless an admin token is set (${ADMIN_TOKEN_ENV} or --admin-token)",
    )
    srv.add_argument("--port", type=int, default=8089, help="TCP port; 0 picks a free port")
    srv.add_argument(
        "--token",
        default=None,
        help=f"Enterprise token clients must send as 'Authorization: Bearer <token>' "
        f"(default: ${TOKEN_ENV}, else {DEFAULT_TOKEN!r})",
    )
    srv.add_argument(
        "--admin-token",
        default=None,
        help=f"token the /_sandbox/ admin routes need in the X-Sandbox-Admin-Token header; "
        f"prefer ${ADMIN_TOKEN_ENV}, which stays out of the process list (default: "
        f"${ADMIN_TOKEN_ENV}, else none: admin routes open on loopback only)",
    )
    srv.add_argument(
        "--seed",
        metavar="FILE",
        help="seed users from a JSON list of user objects or a CSV file with columns "
        "user_id, account_type, email, phone_number, first_name, last_name[, account_role, "
        "email_verified, phone_verified]; reloaded on every reset (default: no users)",
    )
    srv.add_argument(
        "--random-seed",
        type=int,
        default=None,
        help="seed of the RNG behind codes, tokens and fault draws (default: random)",
    )
    srv.add_argument(
        "--no-register-code",
        action="store_true",
        help="register-account does not send the first email code (sFOX does)",
    )
    _limit_options(srv)


def _limit_options(srv: argparse._ArgumentGroup) -> None:
    """Journal size and connection timeouts."""
    config_defaults = SandboxConfig()
    srv.add_argument(
        "--journal-size",
        type=_count,
        default=config_defaults.journal_size,
        help="the journal keeps the latest N /v1/ requests (about 300-400 bytes each); "
        "seq numbers keep counting",
    )
    srv.add_argument(
        "--request-timeout",
        type=_positive,
        default=config_defaults.request_timeout,
        help="seconds each read of a started request (or write of an answer) may take; "
        "then 408 and the connection is closed",
    )
    srv.add_argument(
        "--idle-timeout",
        type=_positive,
        default=config_defaults.idle_timeout,
        help="seconds an idle keep-alive connection is kept open",
    )
    srv.add_argument("--log-level", default="WARNING", help="logging level on stderr")


def _rate_options(parser: argparse.ArgumentParser) -> None:
    rl = parser.add_argument_group("rate limit (per client address, /v1/ routes only)")
    defaults = RateLimitSettings()
    rl.add_argument(
        "--rate-limit",
        type=int,
        default=defaults.limit,
        help="requests allowed per window; 0 disables the rate limit",
    )
    rl.add_argument("--rate-window", type=float, default=defaults.window_seconds, help="sliding window, s")
    rl.add_argument(
        "--rate-block",
        type=float,
        default=defaults.block_seconds,
        help="block after the limit is passed (every request gets 429), s",
    )
    rl.add_argument(
        "--time-scale",
        type=float,
        default=defaults.time_scale,
        help="factor applied to --rate-window and --rate-block (0.01: 60 s block -> 0.6 s)",
    )
    rl.add_argument(
        "--retry-after",
        action="store_true",
        help="send a Retry-After header on 429 (sFOX documents none)",
    )


def _fault_options(parser: argparse.ArgumentParser) -> None:
    flt = parser.add_argument_group(
        "faults (/v1/ routes only; shares are probabilities whose sum must be <= 1)"
    )
    flt.add_argument("--latency-ms", type=_non_negative, default=0.0, help="fixed latency, ms")
    flt.add_argument("--jitter-ms", type=_non_negative, default=0.0, help="extra uniform latency 0..N ms")
    flt.add_argument("--error-500", type=_share, default=0.0, help="share of 500 answers")
    flt.add_argument("--error-503", type=_share, default=0.0, help="share of 503 answers")
    flt.add_argument(
        "--reset", type=_share, default=0.0, help="share of connections reset (RST), unprocessed"
    )
    flt.add_argument(
        "--hang",
        type=_share,
        default=0.0,
        help="share of requests processed but answered only after --hang-seconds",
    )
    flt.add_argument(
        "--hang-seconds",
        type=_non_negative,
        default=FaultSettings().hang_seconds,
        help="delay of a 'hang' answer, s (make it longer than the client timeout)",
    )
    flt.add_argument(
        "--drop",
        type=_share,
        default=0.0,
        help="share of requests processed (code sent) whose connection is then reset",
    )


def _register_options(parser: argparse.ArgumentParser) -> None:
    reg = parser.add_argument_group(
        "register-account answers sFOX does not document (also at run time: "
        "PUT /_sandbox/register-answers/{existing,invalid})"
    )
    defaults = SandboxConfig()
    for kind, what in (("existing", "a user_id that exists"), ("invalid", "a body that fails the checks")):
        answer = getattr(defaults, f"register_{kind}")
        reg.add_argument(
            f"--register-{kind}-status",
            metavar="STATUS",
            type=int,
            default=answer.status,
            help=f"HTTP status (400-599) of the answer to {what}",
        )
        reg.add_argument(
            f"--register-{kind}-error",
            metavar="TEXT",
            default=answer.error,
            help=f"error text of the answer to {what}; {{field}} and {{reason}} are replaced by "
            "the field at fault and what it must be",
        )


def _event_options(parser: argparse.ArgumentParser) -> None:
    evt = parser.add_argument_group(
        "asset events (post to Airflow when a user confirms their email; "
        "also at run time: PUT /_sandbox/asset-events)"
    )
    evt.add_argument(
        "--asset-events-url",
        metavar="URL",
        default=None,
        help=f"Airflow API server to post to, e.g. http://127.0.0.1:8080; turns posting on, with "
        f"${AIRFLOW_TOKEN_ENV} (a JWT) or a user and ${AIRFLOW_PASSWORD_ENV} (default: off)",
    )
    evt.add_argument(
        "--asset-uri", metavar="URI", default=DEFAULT_ASSET_URI, help="URI of the asset, matched exactly"
    )
    evt.add_argument(
        "--asset-events-user",
        metavar="USER",
        default=None,
        help=f"Airflow user the sandbox gets its token for (POST /auth/token); the password only "
        f"from ${AIRFLOW_PASSWORD_ENV} (default: ${AIRFLOW_USER_ENV})",
    )
    evt.add_argument(
        "--asset-events-batch-ms",
        metavar="MS",
        type=_non_negative,
        default=0.0,
        help="0: one event per confirmation; N: the confirmations within N ms go in one event",
    )


def _asset_events_from_args(args: argparse.Namespace) -> AssetEventSettings:
    """The asset-event settings of the flags, secrets from the environment (never argv)."""
    settings = AssetEventSettings(asset_uri=args.asset_uri, batch_ms=args.asset_events_batch_ms)
    if args.asset_events_url is None:
        if args.asset_events_user:
            raise ValueError("--asset-events-user needs --asset-events-url")
        settings.validate()
        return settings  # off; a PUT /_sandbox/asset-events brings its own credentials
    username = args.asset_events_user or os.environ.get(AIRFLOW_USER_ENV, "")
    password = os.environ.get(AIRFLOW_PASSWORD_ENV, "") if username else ""
    token = os.environ.get(AIRFLOW_TOKEN_ENV, "")
    if username and not password:
        raise ValueError(f"--asset-events-user needs the password in ${AIRFLOW_PASSWORD_ENV}")
    if not (token or username):
        raise ValueError(
            f"--asset-events-url needs ${AIRFLOW_TOKEN_ENV}, or --asset-events-user and "
            f"${AIRFLOW_PASSWORD_ENV}"
        )
    settings = dataclasses.replace(
        settings,
        enabled=True,
        airflow_url=args.asset_events_url,
        token=token,
        username=username,
        password=password,
    )
    settings.validate()
    return settings


def config_from_args(args: argparse.Namespace) -> SandboxConfig:
    """Build a :class:`SandboxConfig` from parsed arguments.

    :param args: result of :func:`build_parser`'s ``parse_args``.
    :raises ValueError: on an invalid combination (e.g. fault shares above 1, bad seed file).
    """
    faults = FaultSettings(
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        error_500_rate=args.error_500,
        error_503_rate=args.error_503,
        reset_rate=args.reset,
        hang_rate=args.hang,
        hang_seconds=args.hang_seconds,
        drop_rate=args.drop,
    )
    faults.validate()
    rate = RateLimitSettings(
        limit=args.rate_limit,
        window_seconds=args.rate_window,
        block_seconds=args.rate_block,
        time_scale=args.time_scale,
        retry_after=args.retry_after,
    )
    rate.validate()
    asset_events = _asset_events_from_args(args)
    token = args.token or os.environ.get(TOKEN_ENV) or DEFAULT_TOKEN
    admin_token = args.admin_token or os.environ.get(ADMIN_TOKEN_ENV) or ""
    seeds = load_seed_file(args.seed) if args.seed else []
    config = SandboxConfig(
        host=args.host,
        port=args.port,
        token=token,
        admin_token=admin_token,
        faults=faults,
        rate_limit=rate,
        asset_events=asset_events,
        seed_users=seeds,
        random_seed=args.random_seed,
        register_sends_code=not args.no_register_code,
        register_existing=RegisterAnswer(args.register_existing_status, args.register_existing_error),
        register_invalid=RegisterAnswer(args.register_invalid_status, args.register_invalid_error),
        journal_size=args.journal_size,
        request_timeout=args.request_timeout,
        idle_timeout=args.idle_timeout,
    )
    config.validate()
    return config


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sandbox until SIGINT/SIGTERM; return the exit status.

    :param argv: arguments without the program name (default: ``sys.argv[1:]``).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=str(args.log_level).upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = config_from_args(args)
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    if not is_loopback(config.host) and not config.admin_token:
        print(
            f"sandbox: WARNING: listening on {config.host}, not a loopback address, without an "
            f"admin token: the /_sandbox/ admin routes are refused (403); set ${ADMIN_TOKEN_ENV} "
            "to use them",
            file=sys.stderr,
            flush=True,
        )
    server = SandboxServer(config)

    def announce(port: int) -> None:
        print(server.url, flush=True)
        logging.getLogger("sfox_sandbox").info(
            "listening on %s with %d seed users", server.url, len(config.seed_users)
        )

    try:
        server.serve_forever(announce)
    except OSError as exc:
        print(f"sandbox: cannot listen on {config.host}:{config.port}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
