"""Imports whose location differs between the supported Airflow versions (3.1 to 3.3)."""

from __future__ import annotations

import inspect

from airflow.sdk import BaseHook, BaseOperator
from airflow.sdk.exceptions import AirflowException

try:  # Airflow 3.2+
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException, DownstreamTasksSkipped
except ImportError:  # Airflow 3.1
    from airflow.exceptions import (  # type: ignore[no-redef]
        AirflowFailException,
        AirflowSkipException,
        DownstreamTasksSkipped,
    )

try:  # Airflow 3.3+: tasks take a retry_policy
    from airflow.sdk.definitions.retry_policy import RetryPolicy  # noqa: F401 - marks 3.3+

    AIRFLOW_V_3_3_PLUS = True
except ImportError:  # Airflow 3.1 and 3.2
    AIRFLOW_V_3_3_PLUS = False


def _backoff_is_a_multiplier() -> bool:
    """Whether ``retry_exponential_backoff`` is the delay's multiplier (newer) or a flag (3.1)."""
    try:
        parameter = inspect.signature(BaseOperator.__init__).parameters["retry_exponential_backoff"]
    except (KeyError, TypeError, ValueError):
        return False
    return "bool" not in str(parameter.annotation)


#: Exponential back-off of task retries, the delay doubling each time, on every version (a
#: multiplier of 2 where Airflow takes one; True, which doubles, where it takes a flag).
RETRY_EXPONENTIAL_BACKOFF: float | bool = 2.0 if _backoff_is_a_multiplier() else True

try:  # Airflow 3.1+: the Task SDK masks secrets in task logs.
    from airflow.sdk.log import mask_secret
except ImportError:  # pragma: no cover - older layouts
    from airflow.sdk.execution_time.secrets_masker import mask_secret  # type: ignore[no-redef]

# Deadline alerts (experimental since 3.1): 3.3 exports them from airflow.sdk (3.1 does not) and
# runs a SyncCallback on an executor (3.2+); 3.1's DeadlineAlert refuses anything but AsyncCallback.
try:  # Airflow 3.2+ (3.3.2's type stub of airflow.sdk does not list them)
    from airflow.sdk import (  # type: ignore[attr-defined,unused-ignore]
        AsyncCallback,
        DeadlineAlert,
        DeadlineReference,
        SyncCallback,
    )
except ImportError:  # Airflow 3.1
    from airflow.sdk.definitions.deadline import (  # type: ignore[no-redef,unused-ignore]
        AsyncCallback,
        DeadlineAlert,
        DeadlineReference,
        SyncCallback,
    )

__all__ = [
    "AIRFLOW_V_3_3_PLUS",
    "RETRY_EXPONENTIAL_BACKOFF",
    "AirflowException",
    "AirflowFailException",
    "AirflowSkipException",
    "AsyncCallback",
    "BaseHook",
    "BaseOperator",
    "DeadlineAlert",
    "DeadlineReference",
    "DownstreamTasksSkipped",
    "SyncCallback",
    "mask_secret",
]
