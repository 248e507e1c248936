"""Operator that asks sFOX to send one user a verification code."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_sfox._compat import BaseOperator
from airflow_sfox.defaults import DEFAULT_SFOX_CONN_ID
from airflow_sfox.exceptions import SfoxAlreadyVerifiedError

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
                return self._result("already_verified", None)
        destination = data.get("phone_number") if self.verification_type == "sms" else None
        destination = destination or data.get("email")  # one docs version puts the phone under "email"
        return self._result("sent", destination)

    def _result(self, outcome: str, destination: object) -> dict[str, str]:
        return {
            "user_id": self.user_id,
            "type": self.verification_type,
            "outcome": outcome,
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
