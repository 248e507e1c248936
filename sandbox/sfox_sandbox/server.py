"""The sandbox's Python handle: :class:`SandboxServer` runs the HTTP server
(:mod:`sfox_sandbox.transport`) in a background thread and gives direct access to its state.

Usage from Python::

    from sfox_sandbox import SandboxConfig, SandboxServer

    with SandboxServer(SandboxConfig(token="t", random_seed=1)) as server:
        server.seed_users([{"user_id": "u1", "account_type": "individual", ...}])
        requests.post(f"{server.url}/v1/enterprise/users/send-verification/u1", ...)
        server.codes("u1")["email"]["latest"]
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import TYPE_CHECKING, Any

from sfox_sandbox.app import SandboxApp
from sfox_sandbox.config import AssetEventSettings, FaultSettings, RateLimitSettings, SandboxConfig
from sfox_sandbox.state import SandboxState
from sfox_sandbox.transport import HttpServer

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from types import TracebackType

    from sfox_sandbox.journal import JournalEntry
    from sfox_sandbox.listing import ListSettings
    from sfox_sandbox.users import GeneratedUsers


class SandboxServer:
    """A running sandbox: HTTP server in a background thread plus direct access to its state.

    :param config: start-up configuration (``port=0`` picks a free port).

    Attributes: ``state`` (:class:`~sfox_sandbox.state.SandboxState`), ``config``.
    ``url``, ``host`` and ``port`` are known once :meth:`start` returned.
    """

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config if config is not None else SandboxConfig()
        self.config.validate()
        self.state = SandboxState(self.config)
        self.app = SandboxApp(self.state)
        self._http = HttpServer(
            self.app,
            self.config.max_body_bytes,
            request_timeout=self.config.request_timeout,
            idle_timeout=self.config.idle_timeout,
        )
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None

    # ----------------------------------------------------------- life cycle
    @property
    def host(self) -> str:
        """Address the server listens on."""
        return self.config.host

    @property
    def port(self) -> int:
        """Bound TCP port.

        :raises RuntimeError: before :meth:`start`.
        """
        if self._port is None:
            raise RuntimeError("sandbox server is not started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (no trailing slash)."""
        host = self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 10.0) -> str:
        """Start serving in a daemon thread; return the URL once the port is listening.

        :param timeout: seconds to wait for the server to listen.
        :raises OSError: when the port cannot be bound.
        """
        if self._thread is not None:
            raise RuntimeError("sandbox server already started")
        ready = threading.Event()
        failure: list[BaseException] = []

        def on_ready(port: int) -> None:
            self._port = port
            ready.set()

        def run() -> None:
            try:
                asyncio.run(self._main(on_ready))
            except BaseException as exc:  # noqa: BLE001 - re-raised in start()'s caller
                failure.append(exc)
                ready.set()

        self._thread = threading.Thread(target=run, name="sfox-sandbox", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError("sandbox server did not start in time")
        if failure:
            self._thread = None
            raise failure[0]
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server and its thread; open connections are closed. Idempotent.

        :param timeout: seconds to wait for the thread to end.
        """
        thread, loop, event = self._thread, self._loop, self._stop_event
        if thread is None:
            return
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(event.set)
        thread.join(timeout)
        self._thread = None
        self.state.asset_events.close()

    def serve_forever(self, on_ready: Callable[[int], None] | None = None) -> None:
        """Serve in the calling thread until SIGINT/SIGTERM (used by the CLI).

        :param on_ready: called with the bound port once listening.
        """

        def ready(port: int) -> None:
            self._port = port
            if on_ready is not None:
                on_ready(port)

        try:
            asyncio.run(self._main(ready, handle_signals=True))
        finally:
            self.state.asset_events.close()

    async def _main(self, on_ready: Callable[[int], None], handle_signals: bool = False) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        if handle_signals:
            import signal

            for signum in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    self._loop.add_signal_handler(signum, self._stop_event.set)
        port = await self._http.start(self.config.host, self.config.port)
        on_ready(port)
        try:
            await self._stop_event.wait()
        finally:
            await self._http.close()

    def __enter__(self) -> SandboxServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---------------------------------------------------------- state access
    def set_faults(self, **changes: Any) -> FaultSettings:
        """Change fault settings at run time (partial update); return the new settings.

        :param changes: :class:`~sfox_sandbox.config.FaultSettings` fields.
        :raises ValueError: on an invalid value (nothing is changed).
        """
        return self.state.set_faults(changes)

    def set_rate_limit(self, **changes: Any) -> RateLimitSettings:
        """Change rate-limit settings at run time (partial update); return the new settings.

        :param changes: :class:`~sfox_sandbox.config.RateLimitSettings` fields.
        :raises ValueError: on an invalid value (nothing is changed).
        """
        return self.state.set_rate_limit(changes)

    def set_asset_events(self, **changes: Any) -> AssetEventSettings:
        """Change the posting of Airflow asset events (``PUT /_sandbox/asset-events`` does the
        same): a partial update that turns posting on unless it says ``enabled=False``.

        :param changes: :class:`~sfox_sandbox.config.AssetEventSettings` fields.
        :raises ValueError: on an invalid or missing value (nothing is changed).
        """
        return self.state.asset_events.configure(changes)

    def asset_events(self) -> dict[str, Any]:
        """Asset-event settings (secrets masked) and delivery counters, as ``GET
        /_sandbox/asset-events`` answers them (see ``AssetEvents.status``)."""
        return self.state.asset_events.status()

    def set_token(self, token: str) -> None:
        """Change the Enterprise token at run time (``PUT /_sandbox/token`` does the same).

        Later ``/v1/`` requests with the old token get 401, as sFOX answers a revoked key;
        :meth:`reset` restores the start-up token.

        :param token: the new token.
        :raises ValueError: when it is empty or holds spaces or control characters.
        """
        self.state.set_token(token)

    def seed_users(self, users: Iterable[Mapping[str, Any]]) -> int:
        """Add or replace users; return how many.

        :param users: seed objects (see :func:`~sfox_sandbox.state.user_from_seed`).
        """
        return self.state.seed_users(users)

    def generate_users(
        self,
        count: int,
        *,
        prefix: str = "user-",
        individual_share: float = 0.7,
        email_verified_share: float = 0.33,
        start: int = 0,
    ) -> GeneratedUsers:
        """Add ``count`` synthetic users ``{prefix}{start}``.. in O(1) memory
        (``POST /_sandbox/users/generate`` does the same; see ``SandboxState.generate_users``).

        :raises ValueError: invalid values, or a range that could collide with existing users.
        """
        return self.state.generate_users(
            count,
            prefix=prefix,
            individual_share=individual_share,
            email_verified_share=email_verified_share,
            start=start,
        )

    def set_outage(self, seconds: float, mode: str = "503") -> dict[str, Any]:
        """Start an outage window (``PUT /_sandbox/outage`` does the same): for ``seconds``
        sandbox seconds (times the rate limit's ``time_scale``) every ``/v1/`` request gets 503
        (``mode="503"``) or its connection is reset unanswered (``mode="refuse"``).

        :returns: ``{"until": <epoch seconds>, "mode", "seconds_left"}``.
        :raises ValueError: ``seconds`` not > 0, or an unknown ``mode``.
        """
        return self.state.set_outage(seconds, mode).to_dict()

    def clear_outage(self) -> None:
        """End the outage window now (``DELETE /_sandbox/outage``)."""
        self.state.clear_outage()

    def set_unprocessable(self, user_id: str, channel: str, text: str) -> dict[str, Any]:
        """Answer every send-verification of ``user_id`` and ``channel`` with ``422 {"error":
        text}`` until cleared or reset (``PUT /_sandbox/users/{user_id}/unprocessable``).

        :raises ApiError: 404 for an unknown user.
        :raises ValueError: an unknown channel, or ``text`` not a string.
        """
        return self.state.set_unprocessable(user_id, channel, text)

    def clear_unprocessable(self, user_id: str, channel: str | None = None) -> dict[str, Any]:
        """Stop :meth:`set_unprocessable` for ``channel`` (``None``: both) of ``user_id``."""
        return self.state.clear_unprocessable(user_id, channel)

    def set_register_fault(
        self, user_id: str, mode: str = "lost", times: int = 1, seconds: float | None = None
    ) -> dict[str, Any]:
        """Fault the next ``times`` register-account requests of ``user_id`` (``PUT
        /_sandbox/users/{user_id}/register-fault``); the user need not exist yet. Each is
        carried out as usual (the account created, the first code sent, or the request
        refused), then ``mode="lost"`` resets the connection without an answer, ``"503"``
        answers ``503``, ``"timeout"`` holds the answer back ``seconds`` (default: the
        faults' ``hang_seconds``) past a client's timeout. Replaces a fault set before.

        :returns: ``{"user_id", "mode", "times", "seconds"}``.
        :raises ValueError: an empty ``user_id``, an unknown mode, ``times`` < 1.
        """
        return self.state.registrar.set_fault(user_id, mode, times, seconds)

    def clear_register_fault(self, user_id: str) -> None:
        """Forget the register fault of ``user_id`` (``DELETE .../register-fault``)."""
        self.state.registrar.clear_fault(user_id)

    def set_register_answer(self, kind: str, status: int, text: str) -> dict[str, Any]:
        """Choose the answer to a register-account request refused for ``kind`` ``existing``
        (its ``user_id`` exists) or ``invalid`` (its body fails the documented checks), which
        sFOX does not document (``PUT /_sandbox/register-answers/{kind}``); :meth:`reset`
        restores the configured one.

        :param status: 400 to 599.
        :param text: the ``error`` text; ``{field}`` and ``{reason}`` are replaced by the
            field at fault and what it must be.
        :returns: ``{"status", "error"}``.
        :raises ValueError: an unknown kind, a status out of range or an empty text.
        """
        return self.state.registrar.set_answer(kind, status, text).to_dict()

    def register_requests(self) -> dict[str, int]:
        """Register-account requests per ``user_id`` that reached the call: created, refused
        (invalid, existing) or lost to a register fault (``GET /_sandbox/register-requests``).
        Requests stopped before it (outage, 429, 401, a random fault that processes nothing)
        are not counted: sFOX never saw them; they are in the journal."""
        return self.state.registrar.request_counts()

    def set_list(self, **changes: Any) -> ListSettings:
        """Change the user list's pagination (``PUT /_sandbox/list``; see ``ListSettings``)."""
        return self.state.set_list(changes)

    def codes(self, user_id: str) -> dict[str, Any]:
        """Latest code and count per channel of one user (see ``SandboxState.codes_for``).

        :param user_id: decoded user id.
        """
        return self.state.codes_for(user_id)

    def journal(self, since: int = 0, user_id: str | None = None) -> list[JournalEntry]:
        """Copy of the request journal.

        :param since: keep entries with ``seq`` greater than this.
        :param user_id: keep entries of this user only.
        """
        return self.state.journal_entries(since, user_id)

    def clear_journal(self) -> None:
        """Empty the journal."""
        self.state.clear_journal()

    def reset(self) -> None:
        """Return to the start state (see ``SandboxState.reset``)."""
        self.state.reset()
