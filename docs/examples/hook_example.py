"""The hook on its own (docs: hooks): one user's email code, the user, the user list."""

from __future__ import annotations

# [START howto_hook]
import contextlib
from typing import Any

from airflow_sfox.exceptions import SfoxAlreadyVerifiedError
from airflow_sfox.hooks.sfox import SfoxConnectHook


def send_email_code(user_id: str, *, sfox_conn_id: str = "sfox_default") -> dict[str, Any]:
    """Ask sFOX to email ``user_id`` a code; return what sFOX still requires of the user."""
    with SfoxConnectHook(sfox_conn_id=sfox_conn_id) as hook:
        with contextlib.suppress(SfoxAlreadyVerifiedError):  # a 422 "already verified": nothing to send
            hook.send_verification(user_id, "email")  # returns sFOX's "data": user_id, type, email
        user = hook.get_user(user_id)
        return user.get("requirements") or {}


def count_users(*, sfox_conn_id: str = "sfox_default") -> int:
    """Stream sFOX's user list (one request, parsed incrementally) and count it."""
    with SfoxConnectHook(sfox_conn_id=sfox_conn_id) as hook:
        return sum(1 for _ in hook.iter_users())


# [END howto_hook]
