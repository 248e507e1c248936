"""Imports whose location differs between the supported Airflow versions (3.1 to 3.3)."""

from __future__ import annotations

from airflow.sdk import BaseHook, BaseOperator
from airflow.sdk.exceptions import AirflowException

try:  # Airflow 3.2+
    from airflow.sdk.exceptions import AirflowSkipException
except ImportError:  # Airflow 3.1
    from airflow.exceptions import AirflowSkipException  # type: ignore[no-redef]

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
    "AirflowException",
    "AirflowSkipException",
    "AsyncCallback",
    "BaseHook",
    "BaseOperator",
    "DeadlineAlert",
    "DeadlineReference",
    "SyncCallback",
    "mask_secret",
]
