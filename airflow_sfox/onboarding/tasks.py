"""
The batch step of onboarding as an Airflow task: one planned chunk's codes of one channel.

It belongs to the engine (it drives :func:`~airflow_sfox.onboarding.sender.send_chunk` and the
ledger), not to ``airflow_sfox.operators``, which knows only hooks. It signals through Airflow:
it returns its figures through XCom, and fails as a task fails. An outage (sFOX, the rate
budget's backend, the warehouse) fails it with :class:`~airflow_sfox.onboarding.sender.ChunkStopped`,
which Airflow's retries resume, after pushing what was down under :data:`STOPPED_KEY` for the
run's summary; a refused token or an unusable connection fails it at once, without retries.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from airflow_sfox._compat import (
    AirflowFailException,
    AirflowSkipException,
    BaseOperator,
    DownstreamTasksSkipped,
)
from airflow_sfox.defaults import DEFAULT_SFOX_CONN_ID, DEFAULT_WAREHOUSE_CONN_ID
from airflow_sfox.exceptions import SfoxAuthError, SfoxConfigError
from airflow_sfox.onboarding.model import Channel, RunRef, prerequisite

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from airflow.sdk import Context

    from airflow_sfox.hooks.sfox import SfoxConnectHook
    from airflow_sfox.onboarding.config import OnboardingSource
    from airflow_sfox.onboarding.warehouse import Warehouse

#: XCom key under which a stopped chunk step says what was down (see ``ChunkStopped.as_xcom``).
STOPPED_KEY = "stopped"


class SendVerificationBatchOperator(BaseOperator):
    """
    Send the codes of one planned chunk of the onboarding ledger.

    Reads the chunk's ``queued`` users of ``verification_type`` from the ledger, sends them
    through one :class:`~airflow_sfox.hooks.sfox.SfoxConnectHook` with ``threads`` concurrent
    requests (paced by the shared rate budget), and commits every outcome to the ledger as it
    arrives. Returns the chunk's figures (counts, requests, 429s; no personal data).

    A chunk with no ``verification_type`` code due is skipped, and the skip says why (for
    example: its individuals still wait for their email verification before any sms). Users a
    try that died left claimed are sent again, marked uncertain, or held for review when the
    descriptor says ``hold_uncertain`` (the run's param of that name).

    Per-call retries of 5xx and timeouts are short (``ENGINE_MAX_RETRY_SECONDS``): when sFOX,
    the rate budget's backend or the warehouse is down the step stops within seconds, its
    unanswered users stay queued, and the task fails for Airflow's retries to resume it. A
    refused token or an unusable connection raises :class:`AirflowFailException`: no retry.

    :param chunk: a chunk descriptor made by the planner. (templated)
    :param verification_type: ``"email"`` or ``"sms"``. (templated)
    :param warehouse_conn_id: the SQL connection holding the ledger.
    :param warehouse_schema: the schema of the onboarding tables (``None``: the connection's default).
    :param sfox_conn_id: the ``sfox`` connection.
    :param threads: concurrent requests; by default enough to fill the connection's rate budget
        at up to 300 ms of latency (8 at 20 requests/s, at most 32).
    :param later_steps: the task ids of the chunk's later steps (in the same mapped group), by
        channel. Those the plan queued nothing for are skipped when this step succeeds, so that
        Airflow does not start a task only for it to skip: after a registration, for example,
        the chunk's email and sms steps.
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
        later_steps: Mapping[str, str] | None = None,
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
        self.later_steps = dict(later_steps or {})

    def execute(self, context: Context) -> dict[str, Any]:
        """Send the chunk; return its figures."""
        from airflow_sfox.hooks.sfox import SfoxConnectHook
        from airflow_sfox.onboarding.metrics import emit_chunk
        from airflow_sfox.onboarding.sender import ENGINE_MAX_RETRY_SECONDS
        from airflow_sfox.onboarding.warehouse import Warehouse

        self._skip_if_nothing_due()
        warehouse = Warehouse.from_conn_id(self.warehouse_conn_id, schema=self.warehouse_schema)
        # Every chunk task (and every other user of the connection's scope) shares one budget.
        # One line per request would bury the progress lines: those go to DEBUG here.
        with SfoxConnectHook(
            sfox_conn_id=self.sfox_conn_id,
            request_log_level=logging.DEBUG,
            max_retry_seconds=ENGINE_MAX_RETRY_SECONDS,
        ) as hook:
            stats = self._send(context, warehouse, hook)
        emit_chunk(stats, dag_id=self.dag_id)
        figures: dict[str, Any] = stats.as_dict()
        self._skip_empty_later_steps(context, figures)
        return figures

    def _skip_empty_later_steps(self, context: Context, figures: dict[str, Any]) -> None:
        """Skip the chunk's later steps the plan queued nothing for (each would only skip itself)."""
        empty = [channel for channel in self.later_steps if not int(self.chunk.get(channel) or 0)]
        if not empty:
            return
        ti = context["ti"]
        # Raising ends the task before Airflow pushes the return value: push it here.
        ti.xcom_push(key="return_value", value=figures)
        self.log.info(
            "%s: nothing planned for its %s step(s): skipped", self.chunk["label"], ", ".join(empty)
        )
        raise DownstreamTasksSkipped(tasks=[(self.later_steps[channel], ti.map_index) for channel in empty])

    def _send(self, context: Context, warehouse: Warehouse, hook: SfoxConnectHook) -> Any:
        """Send the chunk and add its figures to the run row, done or not; fail through Airflow."""
        from airflow_sfox.onboarding.sender import ChunkStopped, threads_for

        run = RunRef(self.dag_id, context["run_id"])
        started = time.monotonic()
        try:
            stats = self._run_chunk(warehouse, hook, run, self.threads or threads_for(hook.budget_rate))
        except ChunkStopped as stopped:
            context["ti"].xcom_push(key=STOPPED_KEY, value=stopped.as_xcom())
            self._record(warehouse, run, hook, started, done=False)
            raise
        except (SfoxAuthError, SfoxConfigError) as err:
            # A retry cannot fix a token or a connection: fail now. Each other chunk task of the
            # run spends at most one request on the token (its first request goes alone).
            self._record(warehouse, run, hook, started, done=False)
            context["ti"].xcom_push(key=STOPPED_KEY, value={"service": "token", "down": str(err)})
            raise AirflowFailException(
                f"{err}. Fix connection {self.sfox_conn_id!r}, then run again (not retried)."
            ) from None
        except BaseException:
            self._record(warehouse, run, hook, started, done=False)
            raise
        self._record(warehouse, run, hook, started, done=True)
        return stats

    def _run_chunk(self, warehouse: Warehouse, hook: SfoxConnectHook, run: RunRef, threads: int) -> Any:
        """The chunk step's requests (see :func:`~airflow_sfox.onboarding.sender.send_chunk`)."""
        from airflow_sfox.onboarding.sender import send_chunk

        return send_chunk(
            warehouse,
            hook,
            run=run,
            chunk=self.chunk,
            channel=self.verification_type,
            threads=threads,
            hold_uncertain=bool(self.chunk.get("hold_uncertain", False)),
        )

    def _record(
        self, warehouse: Warehouse, run: RunRef, hook: SfoxConnectHook, started: float, *, done: bool
    ) -> None:
        """Count the step's requests even when it stopped half-way; the summary checks every step."""
        from airflow_sfox.onboarding.runs import record_chunk

        figures = {**hook.stats.as_dict(), "seconds": time.monotonic() - started}
        try:
            record_chunk(warehouse, run, figures, step=self._step_key(), done=done)
        except Exception:
            if done:
                raise
            # Already failing (often: the warehouse is down): keep the first error.
            self.log.warning("could not record the chunk's figures", exc_info=True)

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


class RegisterBatchOperator(SendVerificationBatchOperator):
    """
    Register the users of one planned chunk that sFOX does not know yet
    (``POST /v1/enterprise/register-account``), before its email step.

    Each registration sFOX accepts records the user ``registered`` and its email code ``sent``
    (sFOX emails it itself: the email step then has nothing to send for that user). Any unclear
    answer is settled by reading the user before anything is posted again (see
    :mod:`airflow_sfox.onboarding.registering`). The registration fields are read from the source
    when the step starts and never leave it: not in the log, XCom, the ledger or errors.

    :param chunk: a chunk descriptor made by the planner. (templated)
    :param source: the source, with its registration mapping (where the DAG is defined).

    The other parameters are :class:`SendVerificationBatchOperator`'s.
    """

    template_fields: Sequence[str] = ("chunk",)
    ui_color = "#e8dcff"

    def __init__(self, *, chunk: dict[str, Any], source: OnboardingSource, **kwargs: Any) -> None:
        super().__init__(chunk=chunk, verification_type=str(Channel.REGISTRATION), **kwargs)
        if source.registration is None:
            raise ValueError("RegisterBatchOperator needs a source with a registration mapping")
        self.source = source

    def _run_chunk(self, warehouse: Warehouse, hook: SfoxConnectHook, run: RunRef, threads: int) -> Any:
        from airflow_sfox.onboarding.registering import register_chunk
        from airflow_sfox.onboarding.registration import registration_secret

        assert self.source.registration is not None
        return register_chunk(
            warehouse,
            hook,
            run=run,
            chunk=self.chunk,
            source=self.source,
            key=registration_secret(self.source.registration),
            threads=threads,
        )
