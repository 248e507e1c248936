"""``POST /v1/enterprise/register-account``: the emulated call, its counts, answers and faults.

A request that reaches the call (past an outage window, the rate limit, a random fault that
processes nothing, the token check; see :mod:`sfox_sandbox.app`) is handled in this order:

1. Counted for its ``user_id`` (a non-empty string in the body), whatever comes next:
   :meth:`Registrar.request_counts`, ``GET /_sandbox/register-requests``. A body without one is
   refused and not counted. Requests stopped before the call are in the journal only.
2. A register fault set for that ``user_id`` (:meth:`Registrar.set_fault`) is taken: one of
   its ``times`` is used up.
3. Checked (:func:`~sfox_sandbox.registration.check_registration`): a failure gets the
   ``invalid`` answer (:class:`~sfox_sandbox.config.RegisterAnswer`, status and text
   configurable, default ``400 {"error": "<field> <reason>"}``).
4. A ``user_id`` that exists (seeded, generated or registered) gets the ``existing`` answer
   (default ``400 {"error": "User already exists"}``); the user is left as it was.
5. Else the user is created ``PENDING`` with ``requirements`` ``email`` true (and ``sms`` true
   for an individual), the first email code is sent (as sFOX does, unless
   ``register_sends_code`` is off) and the answer is ``200 {"data": <user>}`` (sFOX documents
   no body: clients must not rely on it).
6. A fault taken in step 2 then changes the answer, after the work was done: ``lost``
   resets the connection unanswered, ``503`` answers ``503 {"error": ...}``, ``timeout``
   holds the answer back ``seconds`` (default: the faults' ``hang_seconds``, 30 s), past a
   client's read timeout. The journal names it (``register_lost``, ``register_503``,
   ``register_timeout``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sfox_sandbox.answers import ApiError, ApiResult
from sfox_sandbox.config import REGISTER_ANSWER_KINDS, RegisterAnswer
from sfox_sandbox.model import EMAIL, requirements_for
from sfox_sandbox.registration import InvalidRegistration, check_registration
from sfox_sandbox.users import SandboxUser

if TYPE_CHECKING:
    import threading
    from collections.abc import Mapping

    from sfox_sandbox.config import SandboxConfig
    from sfox_sandbox.state import SandboxState

#: What a register fault does to the answer, once the request was carried out.
REGISTER_FAULT_MODES: tuple[str, ...] = ("lost", "503", "timeout")
REGISTER_FAULT_503_MESSAGE = "Service unavailable"


@dataclass(frozen=True)
class RegisterFault:
    """A fault for the next ``times`` register requests of one ``user_id``.

    :param mode: ``lost``, ``503`` or ``timeout`` (see :data:`REGISTER_FAULT_MODES`).
    :param times: requests left that it applies to (>= 1).
    :param seconds: how long ``timeout`` holds the answer back; ``None``: the faults'
        ``hang_seconds``.
    """

    mode: str
    times: int
    seconds: float | None = None

    @classmethod
    def checked(cls, mode: Any, times: Any, seconds: Any = None) -> RegisterFault:
        """A validated fault.

        :raises ValueError: naming the invalid argument.
        """
        if mode not in REGISTER_FAULT_MODES:
            raise ValueError(f"mode must be one of {', '.join(repr(m) for m in REGISTER_FAULT_MODES)}")
        if isinstance(times, bool) or not isinstance(times, int) or times < 1:
            raise ValueError("times must be an integer >= 1")
        if seconds is not None and (
            isinstance(seconds, bool)
            or not isinstance(seconds, (int, float))
            or not math.isfinite(seconds)
            or seconds < 0
        ):
            raise ValueError("seconds must be a number >= 0 or null")
        return cls(str(mode), times, None if seconds is None else float(seconds))

    def to_dict(self, user_id: str) -> dict[str, Any]:
        """``{"user_id", "mode", "times", "seconds"}``."""
        return {"user_id": user_id, **dataclasses.asdict(self)}


class Registrar:
    """The register-account call of one sandbox, with its counts, answers and faults.

    Its own data is guarded by ``lock`` (the state's lock, so that a registration and the
    user store change together).

    :param config: start-up configuration (answers, ``register_sends_code``).
    :param lock: the state's lock.
    """

    def __init__(self, config: SandboxConfig, lock: threading.RLock) -> None:
        self.config = config
        self.lock = lock
        self.answers: dict[str, RegisterAnswer] = {}
        self.faults: dict[str, RegisterFault] = {}
        self.requests: dict[str, int] = {}
        self.reset()

    def reset(self) -> None:
        """Back to the configured answers; no faults, no counts."""
        with self.lock:
            config = self.config
            self.answers = {"existing": config.register_existing, "invalid": config.register_invalid}
            self.faults = {}
            self.requests = {}

    # ---------------------------------------------------------------- settings
    def set_answer(self, kind: str, status: Any = None, error: Any = None) -> RegisterAnswer:
        """Set the answer to an ``existing`` user or an ``invalid`` body (``None`` keeps the
        current status or text); return it.

        :raises ValueError: an unknown kind, or an unusable status or text.
        """
        if kind not in REGISTER_ANSWER_KINDS:
            raise ValueError(f"kind must be one of {', '.join(REGISTER_ANSWER_KINDS)}")
        with self.lock:
            current = self.answers[kind]
            answer = RegisterAnswer(
                current.status if status is None else status, current.error if error is None else error
            )
            answer.validate()
            self.answers[kind] = answer
            return answer

    def answers_dict(self) -> dict[str, dict[str, Any]]:
        """``{"existing": {"status", "error"}, "invalid": {...}}``."""
        with self.lock:
            return {kind: answer.to_dict() for kind, answer in self.answers.items()}

    def set_fault(
        self, user_id: str, mode: Any = "lost", times: Any = 1, seconds: Any = None
    ) -> dict[str, Any]:
        """Fault the next ``times`` register requests of ``user_id`` (which need not exist
        yet); replaces a fault set before. Return :meth:`fault_dict`.

        :raises ValueError: an empty ``user_id`` or an invalid argument.
        """
        if not isinstance(user_id, str) or not user_id:
            raise ValueError("user_id must be a non-empty string")
        fault = RegisterFault.checked(mode, times, seconds)
        with self.lock:
            self.faults[user_id] = fault
            return fault.to_dict(user_id)

    def clear_fault(self, user_id: str) -> None:
        """Forget the register fault of ``user_id``, if any."""
        with self.lock:
            self.faults.pop(user_id, None)

    def fault_dict(self, user_id: str) -> dict[str, Any] | None:
        """The fault left for ``user_id`` (``{"user_id", "mode", "times", "seconds"}``) or ``None``."""
        with self.lock:
            fault = self.faults.get(user_id)
            return fault.to_dict(user_id) if fault is not None else None

    def request_counts(self) -> dict[str, int]:
        """Register requests per ``user_id`` that reached the call: created, refused or lost."""
        with self.lock:
            return dict(self.requests)

    # ------------------------------------------------------------------ the call
    def register(self, state: SandboxState, body: Mapping[str, Any]) -> ApiResult:
        """Carry out one register-account request (see the module's docstring).

        :raises ApiError: the configured refusal, when no fault changes the answer.
        """
        user_id = body.get("user_id")
        key = user_id if isinstance(user_id, str) and user_id else None
        with self.lock:
            fault = None
            if key is not None:
                self.requests[key] = self.requests.get(key, 0) + 1
                fault = self._take_fault(key)
            try:
                result = self._create(state, body)
            except ApiError as exc:
                if fault is None:
                    raise
                result = ApiResult(exc.status, {"error": exc.message})
            if fault is None:
                return result
            return self._faulted(result, fault, state.faults.hang_seconds)

    def _take_fault(self, user_id: str) -> RegisterFault | None:
        fault = self.faults.get(user_id)
        if fault is None:
            return None
        if fault.times > 1:
            self.faults[user_id] = dataclasses.replace(fault, times=fault.times - 1)
        else:
            del self.faults[user_id]
        return fault

    @staticmethod
    def _faulted(result: ApiResult, fault: RegisterFault, hang_seconds: float) -> ApiResult:
        """The answer of a carried-out request, changed by ``fault``."""
        name = f"register_{fault.mode}"
        if fault.mode == "503":
            return ApiResult(
                503,
                {"error": REGISTER_FAULT_503_MESSAGE},
                code_sent=result.code_sent,
                channel=result.channel,
                fault=name,
            )
        delay = (hang_seconds if fault.seconds is None else fault.seconds) if fault.mode == "timeout" else 0.0
        return dataclasses.replace(result, fault=name, delay=delay)

    def _create(self, state: SandboxState, body: Mapping[str, Any]) -> ApiResult:
        try:
            check_registration(body)
        except InvalidRegistration as exc:
            answer = self.answers["invalid"]
            raise ApiError(answer.status, answer.render(exc.field, exc.reason)) from None
        user_id = body["user_id"]
        if state.find_user(user_id) is not None:
            answer = self.answers["existing"]
            raise ApiError(answer.status, answer.render("user_id", "already exists"))
        account_type = body["account_type"]
        user = SandboxUser(
            user_id=user_id,
            account_type=account_type,
            account_role=str(body.get("account_role") or "client").lower(),
            email=body["email"],
            phone_number=body["phone_number"],
            first_name=body["first_name"],
            last_name=body["last_name"],
            advisor_user_id=body.get("advisor_user_id"),
            requirements=requirements_for(account_type),
        )
        state.store_user(user)
        sent = self.config.register_sends_code
        if sent:
            # sFOX emails the first OTP itself after registration.
            state.send_code(user_id, EMAIL)
        return ApiResult(200, {"data": user.to_api()}, code_sent=sent, channel=EMAIL if sent else None)
