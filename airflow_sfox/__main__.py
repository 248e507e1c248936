"""``python -m airflow_sfox``: the operator's hold on a budget scope (see :mod:`airflow_sfox.cli`)."""

from __future__ import annotations

from airflow_sfox.cli import main

raise SystemExit(main())
