"""
Airflow plugins shipped with the provider.

:mod:`airflow_sfox.plugins.onboarding` holds the plugin class (entry point ``airflow.plugins``),
:mod:`airflow_sfox.plugins.app` its FastAPI app and :mod:`airflow_sfox.plugins.dashboard` the
SQL behind the page.
"""

from __future__ import annotations
