"""Operator that asks sFOX to send one user a verification code."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from airflow_sfox._compat import AirflowException, AirflowSkipException, BaseOperator
from airflow_sfox.defaults import DEFAULT_SFOX_CONN_ID, DEFAULT_WAREHOUSE_CONN_ID
from airflow_sfox.exceptions import SfoxAlreadyVerifiedError, SfoxAuthError
from airflow_sfox.onboarding.model import LedgerState, RunStatus, prerequisite

# The hook (and with it requests) is imported in execute(): a DAG file that uses these
# operators parses without loading the HTTP stack.

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import Context
    from airflow.sdk.definitions.mappedoperator import OperatorPartial


class SendVerificationOperator(BaseOperator):
    """
    Send a user a one-time verification code by email or sms.

    Calls ``POST /v1/enterprise/users/send-verification/{user_id}``. Works mapped, one task
    instance per user, labelled ``"<type> <user_id>"`` in the grid::

        SendVerificationOperator.partial(task_id="email", verification_type="email").expand(
            user_id=["client_1", "client_2"]
        )

    For thousands of users prefer the batch onboarding DAG: one task instance per user costs
    seconds of scheduling each.

    Returns (and pushes to XCom) ``{"user_id", "type", "outcome", "destination"}`` where
    ``outcome`` is ``"sent"`` or ``"already_verified"`` and ``destination`` is the masked
    email or phone number sFOX sent the code to (``"j***@example.com"``, ``"*********44"``).

    :param user_id: the partner's id of the user. (templated)
    :param verification_type: ``"email"`` or ``"sms"``. (templated)
    :param sfox_conn_id: the ``sfox`` Airflow connection to use.
    :param fail_if_already_verified: fail the task when sFOX answers that the channel is
        already verified, instead of succeeding with outcome ``"already_verified"``.
    """

    template_fields: Sequence[str] = ("user_id", "verification_type")
    ui_color = "#d6f0ff"
    #: Label of a mapped task instance in the grid, e.g. ``email client_1``.
    default_map_index_template = "{{ task.verification_type }} {{ task.user_id }}"

    @classmethod
    def partial(cls, **kwargs: Any) -> OperatorPartial:
        """Like :meth:`BaseOperator.partial`, with a readable ``map_index_template`` by default."""
        # Mapped task instances take the label from the partial arguments, not from __init__.
        kwargs.setdefault("map_index_template", cls.default_map_index_template)
        return super().partial(**kwargs)

    def __init__(
        self,
        *,
        user_id: str,
        verification_type: str,
        sfox_conn_id: str = DEFAULT_SFOX_CONN_ID,
        fail_if_already_verified: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.user_id = user_id
        self.verification_type = verification_type
        self.sfox_conn_id = sfox_conn_id
        self.fail_if_already_verified = fail_if_already_verified

    def execute(self, context: Context) -> dict[str, str]:
        """Send the code; return the JSON-serialisable outcome."""
        from airflow_sfox.hooks.sfox import SfoxConnectHook

        with SfoxConnectHook(sfox_conn_id=self.sfox_conn_id) as hook:
            try:
                data = hook.send_verification(self.user_id, self.verification_type)
            except SfoxAlreadyVerifiedError:
                if self.fail_if_already_verified:
                    raise
                self.log.info("%s of user %s is already verified", self.verification_type, self.user_id)
                return self._result(LedgerState.ALREADY_VERIFIED, None)
        destination = data.get("phone_number") if self.verification_type == "sms" else None
        destination = destination or data.get("email")  # one docs version puts the phone under "email"
        return self._result(LedgerState.SENT, destination)

    def _result(self, outcome: LedgerState, destination: object) -> dict[str, str]:
        return {
            "user_id": self.user_id,
            "type": self.verification_type,
            "outcome": outcome.value,
            "destination": mask_destination(destination),
        }


def mask_destination(value: object) -> str:
    """
    Mask an email address or phone number for logs and XCom.

    ``jane.doe@example.com`` -> ``j***@example.com``; ``+12223334444`` -> ``**********44``.

    :param value: the email or phone number as sFOX returned it; anything else gives ``""``.
    """
    if not isinstance(value, str) or not value:
        return ""
    if "@" in value:
        local, _, domain = value.rpartition("@")
        return f"{local[:1]}***@{domain}"
    return "*" * max(len(value) - 2, 0) + value[-2:]


class SendVerificationBatchOperator(BaseOperator):
    """
    Send the codes of one planned chunk of the onboarding ledger (see ``airflow_sfox.onboarding``).

    Reads the chunk's ``queued`` users of ``verification_type`` from the ledger, sends them
    through one :class:`SfoxConnectHook` with ``threads`` concurrent requests (paced by the
    hook), and commits every outcome to the ledger as it arrives. Returns the chunk's figures
    (counts, requests, 429s; no personal data).

    A chunk with no ``verification_type`` code due is skipped, and the skip says why (for
    example: its individuals still wait for their email verification before any sms). Users a
    try that died left claimed are sent again, marked uncertain, or held for review when the
    descriptor says ``hold_uncertain`` (the run's param of that name).

    :param chunk: a chunk descriptor made by the planner. (templated)
    :param verification_type: ``"email"`` or ``"sms"``. (templated)
    :param warehouse_conn_id: the SQL connection holding the ledger.
    :param warehouse_schema: the schema of the onboarding tables (``None``: the connection's default).
    :param sfox_conn_id: the ``sfox`` connection.
    :param threads: concurrent requests; by default enough to fill the connection's rate budget
        at up to 300 ms of latency (8 at 20 requests/s, at most 32).
    """

    template_fields: Sequence[str] = ("chunk", "verification_type")
    ui_color = "#d6f0ff"

    def __init__(
        self,
        *,
        chunk: dict[str, Any],
        verification_type: str,
        warehouse_conn_id: str = DEFAULT_WAREHOUSE_CONN_ID,
        warehouse_schema: str | None = None,
        sfox_conn_id: str = DEFAULT_SFOX_CONN_ID,
        threads: int | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("map_index_template", "{{ task.chunk['label'] }}")
        super().__init__(**kwargs)
        self.chunk = chunk
        self.verification_type = verification_type
        self.warehouse_conn_id = warehouse_conn_id
        self.warehouse_schema = warehouse_schema
        self.sfox_conn_id = sfox_conn_id
        self.threads = threads

    def execute(self, context: Context) -> dict[str, Any]:
        """Send the chunk; return its figures."""
        from airflow_sfox.hooks.sfox import SfoxConnectHook
        from airflow_sfox.onboarding.metrics import emit_chunk
        from airflow_sfox.onboarding.runs import record_chunk
        from airflow_sfox.onboarding.sender import send_chunk, threads_for
        from airflow_sfox.onboarding.warehouse import Warehouse

        self._skip_if_nothing_due()
        warehouse = Warehouse.from_conn_id(self.warehouse_conn_id, schema=self.warehouse_schema)
        run_id = context["run_id"]
        if warehouse.run_row(run_id).get("status") == RunStatus.AUTH_FAILED:
            raise AirflowException(
                f"sFOX refused the token earlier in run {run_id}: nothing sent. "
                f"Fix connection {self.sfox_conn_id!r}, then run again."
            )
        started = time.monotonic()
        done = False
        # Every chunk task (and every other user of the connection's scope) shares one budget.
        # One line per request would bury the progress lines: those go to DEBUG here.
        with SfoxConnectHook(sfox_conn_id=self.sfox_conn_id, request_log_level=logging.DEBUG) as hook:
            try:
                stats = send_chunk(
                    warehouse,
                    hook,
                    run_id=run_id,
                    chunk=self.chunk,
                    channel=self.verification_type,
                    threads=self.threads or threads_for(hook.budget_rate),
                    hold_uncertain=bool(self.chunk.get("hold_uncertain", False)),
                )
                done = True
            except SfoxAuthError:
                # Later chunk tasks of this run fail at once instead of each trying the token.
                warehouse.write_run({"run_id": run_id, "status": RunStatus.AUTH_FAILED.value})
                raise
            finally:
                # Count the requests even when the chunk stopped half-way; the summary checks
                # that every step was done.
                figures = {**hook.stats.as_dict(), "seconds": time.monotonic() - started}
                try:
                    record_chunk(warehouse, run_id, figures, step=self._step_key(), done=done)
                except Exception:
                    if done:
                        raise
                    # Already failing (often: the warehouse is down): keep the first error.
                    self.log.warning("could not record the chunk's figures", exc_info=True)
        emit_chunk(stats, dag_id=self.dag_id)
        return stats.as_dict()

    def _step_key(self) -> str:
        """The step's key in its run, the same for each of its tries: channel and chunk."""
        return f"{self.verification_type} {self.chunk['label']}"

    def _skip_if_nothing_due(self) -> None:
        """Skip, saying why at INFO, when the planner queued no code of this channel in the chunk."""
        due = int(self.chunk.get(self.verification_type) or 0)
        if due:
            return
        waiting = prerequisite(self.chunk["account_type"], self.verification_type)
        reason = f"{self.chunk['label']}: no {self.verification_type} code due in this chunk"
        if waiting is not None:
            reason += f" (its users wait for sFOX to report their {waiting} verified, or are done)"
        self.log.info("Skipped: %s", reason)
        raise AirflowSkipException(reason)
