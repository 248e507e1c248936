"""``python -m airflow_sfox``: the operator's hold on a budget scope (see :mod:`airflow_sfox.cli`)."""

from __future__ import annotations

from airflow_sfox.cli import main

if __name__ == "__main__":  # importing the module (the docs' API reference does) runs nothing
    raise SystemExit(main())
