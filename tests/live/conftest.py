"""The ``live`` marker: tests that bring up a real Airflow (a few minutes; ``-m "not live"`` skips them)."""

from __future__ import annotations


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "live: brings up a live Airflow (api-server, scheduler, dag-processor, triggerer)"
    )
