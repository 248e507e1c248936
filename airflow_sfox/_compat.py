"""Imports whose location differs between the supported Airflow versions (3.1 to 3.3)."""

from __future__ import annotations

from airflow.sdk import BaseHook, BaseOperator
from airflow.sdk.exceptions import AirflowException

try:  # Airflow 3.1+: the Task SDK masks secrets in task logs.
    from airflow.sdk.log import mask_secret
except ImportError:  # pragma: no cover - older layouts
    from airflow.sdk.execution_time.secrets_masker import mask_secret  # type: ignore[no-redef]

__all__ = ["AirflowException", "BaseHook", "BaseOperator", "mask_secret"]
