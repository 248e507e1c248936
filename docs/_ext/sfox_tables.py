"""
Sphinx directives that render the tables of :mod:`sfox_facts` from the code at build time.

``sfox-connection-fields``, ``sfox-connection-extras``, ``sfox-config-options``, ``sfox-enum``
(argument: the enum's dotted path), ``sfox-table-columns`` (argument: ``ledger``, ``attempts``,
``runs``, ``steps`` or ``snapshot``), ``sfox-metrics``, ``sfox-params`` (argument:
``onboarding`` or ``event``) and ``sfox-api-modules`` (an ``automodule`` per module; in an rST
page). A fact the code and the docs disagree on is a warning, which ``make docs`` turns into an
error.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import sfox_facts
from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

_CODE = re.compile(r":\w+:`~?([^`]+)`|``([^`]+)``|`([^`]+)`")


def _inline(text: str) -> list[nodes.Node]:
    """Plain text with ``code``, `code` and :role:`target` turned into literals."""
    out: list[nodes.Node] = []
    position = 0
    for found in _CODE.finditer(text):
        if found.start() > position:
            out.append(nodes.Text(text[position : found.start()]))
        out.append(nodes.literal(text=next(g for g in found.groups() if g is not None)))
        position = found.end()
    if position < len(text):
        out.append(nodes.Text(text[position:]))
    return out


def render(table: sfox_facts.Table) -> nodes.table:
    """A docutils table of text cells."""
    node = nodes.table(classes=["sfox-generated"])
    group = nodes.tgroup(cols=len(table.header))
    node += group
    for _ in table.header:
        group += nodes.colspec(colwidth=1)

    def row(cells: tuple[str, ...]) -> nodes.row:
        line = nodes.row()
        for cell in cells:
            entry = nodes.entry()
            entry += nodes.paragraph("", "", *_inline(cell))
            line += entry
        return line

    head = nodes.thead()
    head += row(table.header)
    body = nodes.tbody()
    for cells in table.rows:
        body += row(cells)
    group += head
    group += body
    return node


class _TableDirective(SphinxDirective):
    has_content = False
    optional_arguments = 1

    def table(self) -> sfox_facts.Table:
        raise NotImplementedError

    def run(self) -> list[nodes.Node]:
        return [render(self.table())]


class ConnectionFields(_TableDirective):
    def table(self) -> sfox_facts.Table:
        return sfox_facts.connection_fields()


class ConnectionExtras(_TableDirective):
    def table(self) -> sfox_facts.Table:
        return sfox_facts.connection_extras()


class ConfigOptions(_TableDirective):
    def table(self) -> sfox_facts.Table:
        return sfox_facts.config_options()


class EnumTable(_TableDirective):
    """``:require-meaning:``: every member needs a ``#:`` comment (a warning otherwise)."""

    required_arguments = 1
    optional_arguments = 0
    option_spec: ClassVar[dict[str, Any]] = {"require-meaning": directives.flag}

    def table(self) -> sfox_facts.Table:
        found = sfox_facts.enum_table(self.arguments[0])
        for value, meaning, _ in found.rows:
            if not meaning and "require-meaning" in self.options:
                logger.warning(
                    "%s member %s has no #: comment", self.arguments[0], value, location=self.get_location()
                )
        return found


class ColumnTable(_TableDirective):
    required_arguments = 1
    optional_arguments = 0

    def run(self) -> list[nodes.Node]:
        name, table, problems = sfox_facts.column_table(self.arguments[0])
        for problem in problems:
            logger.warning(problem, location=self.get_location())
        caption = nodes.paragraph("", "", nodes.Text("Table "), nodes.literal(text=name), nodes.Text(":"))
        return [caption, render(table)]


class Metrics(_TableDirective):
    def table(self) -> sfox_facts.Table:
        found = sfox_facts.metrics()
        listed = {row[0].strip("`") for row in found.rows}
        for name in sorted(sfox_facts.emitted_metric_names()):
            stem = name.split("<x>")[0]
            if name not in listed and not any(m.startswith(stem) for m in listed):
                logger.warning(
                    "metric %s is emitted but not listed in metrics.py's docstring",
                    name,
                    location=self.get_location(),
                )
        return found


class Params(_TableDirective):
    def table(self) -> sfox_facts.Table:
        return sfox_facts.params(self.arguments[0] if self.arguments else "onboarding")


class ApiModules(SphinxDirective):
    """An ``automodule`` with its members for every module of the provider (rST pages only)."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        lines = []
        for module in sfox_facts.modules():
            title = f"``{module}``"
            lines += [title, "-" * len(title), "", f".. automodule:: {module}", "   :members:", "", ""]
        node = nodes.section()
        node.document = self.state.document
        self.state.nested_parse(StringList(lines, source="sfox-api-modules"), 0, node, match_titles=True)
        return node.children


def metrics_docstring(app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    """On the API page, the list of metrics in ``metrics.py``'s docstring is rendered as its table."""
    if what == "module" and name == "airflow_sfox.onboarding.metrics":
        first = lines.index("") if "" in lines else len(lines)
        lines[first:] = ["", ".. sfox-metrics::", ""]


def setup(app: Any) -> dict[str, Any]:
    app.connect("autodoc-process-docstring", metrics_docstring)
    for name, directive in {
        "sfox-connection-fields": ConnectionFields,
        "sfox-connection-extras": ConnectionExtras,
        "sfox-config-options": ConfigOptions,
        "sfox-enum": EnumTable,
        "sfox-table-columns": ColumnTable,
        "sfox-metrics": Metrics,
        "sfox-params": Params,
        "sfox-api-modules": ApiModules,
    }.items():
        app.add_directive(name, directive)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
