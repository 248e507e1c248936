"""The measurements behind ``make bench``: see ``benchmarks/run.py``."""

from __future__ import annotations
