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

__all__ = ["AirflowException", "AirflowSkipException", "BaseHook", "BaseOperator", "mask_secret"]
