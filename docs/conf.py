"""Sphinx configuration of the provider's docs (``make docs``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path[:0] = [str(DOCS / "_ext"), str(DOCS.parent)]
# autodoc imports Airflow: give it a home of its own inside the (git-ignored) build folder.
os.environ.setdefault("AIRFLOW_HOME", str(DOCS / "_build" / "airflow-home"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")

from airflow_sfox import __version__  # noqa: E402

project = "airflow-provider-sfox"
author = "airflow-provider-sfox maintainers"
copyright = "the airflow-provider-sfox maintainers"
version = release = __version__

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.viewcode", "sfox_tables"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "examples/README.md"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# Internal links are checked (no network): every cross-reference to a page, a heading or an
# object of the provider must resolve. References to other projects' objects (Airflow,
# SQLAlchemy, the standard library) are not: no intersphinx inventory is downloaded.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(?!airflow_sfox\b).*"),
    # Private helpers named in annotations are not part of the reference.
    (r"py:.*", r"airflow_sfox\..*\._\w+"),
    # Its ``#:`` comment sits on CONFIG_SECTION, so autodoc has no entry for it.
    (r"py:data", r"airflow_sfox\.get_provider_info\.CONFIG"),
    # A dataclass field without a docstring of its own.
    (r"py:attr", r"airflow_sfox\.onboarding\.planner\.Plan\.counts"),
]

autodoc_default_options = {"members": True, "show-inheritance": True, "ignore-module-all": True}
# Airflow's own docstrings (BaseOperator's, ...) use substitutions of Airflow's docs.
autodoc_inherit_docstrings = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"

html_theme = "furo"
html_title = f"airflow-provider-sfox {release}"
html_static_path: list[str] = []
