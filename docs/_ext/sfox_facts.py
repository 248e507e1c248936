"""
The facts the code holds, read at build time.

One function per table of the docs; the Sphinx directives in :mod:`sfox_tables` render them,
and ``tests/docs`` compares them with the code. Nothing here is written by hand except the
one-line explanations of table columns (:data:`COLUMN_NOTES`), which the build checks against
the tables the engine defines: a column without a note, or a note without a column, fails it.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PACKAGE = "airflow_sfox"


@dataclass(frozen=True)
class Table:
    """A table of the docs: its header and its rows of text cells (``code`` in backticks)."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


def _first(*candidates: tuple[str, str]) -> Any:
    """The first ``module.attribute`` of ``candidates`` that imports: code may move between modules."""
    missing = []
    for module, attribute in candidates:
        try:
            return getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError):
            missing.append(f"{module}.{attribute}")
    raise ImportError(f"none of {missing} exists: update docs/_ext/sfox_facts.py")


def provider_info() -> dict[str, Any]:
    """What Airflow's ProvidersManager reads (the entry point ``apache_airflow_provider``)."""
    return _first(("airflow_sfox.get_provider_info", "get_provider_info"))()


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _default(value: Any) -> str:
    return "" if value is None else f"`{json.dumps(value) if not isinstance(value, str) else value}`"


# -- the sfox connection --------------------------------------------------------------------------


def connection_type() -> dict[str, Any]:
    """The ``sfox`` entry of the provider's ``connection-types``."""
    (conn,) = [c for c in provider_info()["connection-types"] if c["connection-type"] == "sfox"]
    return conn


def connection_fields() -> Table:
    """The standard fields of the form: shown (with their label) or hidden."""
    behaviour = connection_type()["ui-field-behaviour"]
    relabel, placeholders = behaviour.get("relabeling", {}), behaviour.get("placeholders", {})
    rows = []
    for field in ("host", "schema", "login", "password", "port", "extra"):
        if field in behaviour.get("hidden-fields", []):
            rows.append((f"`{field}`", "hidden", ""))
        else:
            rows.append((f"`{field}`", relabel.get(field, field), placeholders.get(field, "")))
    return Table(("field", "label in the form", "placeholder"), tuple(rows))


def connection_extras() -> Table:
    """Every extra of the connection form (``conn-fields``): key, label, type, default, meaning."""
    rows = []
    for key, field in connection_type()["conn-fields"].items():
        schema = field.get("schema", {})
        kinds = schema.get("type", "")
        kind = "/".join(k for k in ([kinds] if isinstance(kinds, str) else kinds) if k != "null")
        bounds = ", ".join(
            f"{word} {schema[name]}"
            for name, word in (("minimum", "min"), ("maximum", "max"))
            if name in schema
        )
        rows.append(
            (
                f"`{key}`",
                field.get("label", ""),
                kind + (f" ({bounds})" if bounds else ""),
                _default(schema.get("default")),
                _one_line(field.get("description", "")),
            )
        )
    return Table(("extra", "label in the form", "type", "default", "meaning"), tuple(rows))


# -- the [sfox] configuration section ---------------------------------------------------------------


def config_options() -> Table:
    """The provider's ``[sfox]`` options, as ``airflow config list --section sfox -d`` lists them."""
    rows = []
    for section, body in provider_info()["config"].items():
        for option, spec in body["options"].items():
            env = f"AIRFLOW__{section.upper()}__{option.upper()}"
            rows.append(
                (
                    f"`[{section}] {option}`",
                    f"`{env}`",
                    spec.get("type", ""),
                    _default(spec.get("default")),
                    _default(spec.get("example")),
                    _one_line(spec.get("description", "")),
                )
            )
    return Table(("option", "environment variable", "type", "default", "example", "meaning"), tuple(rows))


# -- enums of the model: ledger states, run statuses, attempt outcomes, event skips --------------------


def member_docs(enum_path: str) -> dict[str, str]:
    """The ``#:`` comment of each member of an enum, read from its source as autodoc does."""
    from sphinx.pycode import ModuleAnalyzer

    module, _, name = enum_path.rpartition(".")
    docs = ModuleAnalyzer.for_module(module).find_attr_docs()
    return {attr: _one_line(" ".join(lines)) for (cls, attr), lines in docs.items() if cls == name}


def _sets_of(module: Any, member: Any) -> list[str]:
    """The module-level frozensets of ``module`` (``DONE_STATES``, ...) that hold ``member``."""
    return sorted(
        name
        for name, value in vars(module).items()
        if name.isupper()
        and isinstance(value, frozenset)
        and member in value
        # str enums compare equal across enums (AttemptOutcome.SENT == LedgerState.SENT): same class only.
        and all(isinstance(v, type(member)) for v in value)
    )


def _grouped(module: Any, enum: Any, member: Any) -> bool:
    """Whether ``member``'s line directly follows the previous member's in the source."""
    lines, _ = inspect.getsourcelines(enum)
    names = [m.name for m in enum]
    at = {n: i for i, line in enumerate(lines) for n in names if line.strip().startswith(f"{n} =")}
    previous = names[names.index(member.name) - 1]
    return at.get(member.name, -1) - at.get(previous, -10) == 1


def enum_table(enum_path: str) -> Table:
    """One row per member: its value, its meaning (its ``#:`` comment), the sets that hold it."""
    module_name, _, name = enum_path.rpartition(".")
    module = importlib.import_module(module_name)
    enum = getattr(module, name)
    docs = member_docs(enum_path)
    rows = []
    meaning = ""
    for member in enum:
        sets = ", ".join(f"`{s}`" for s in _sets_of(module, member))
        # A ``#:`` comment above a group of members (no blank line between them) covers the group.
        meaning = docs.get(member.name, meaning if rows and _grouped(module, enum, member) else "")
        rows.append((f"`{member.value}`", meaning, sets))
    return Table(("value", "meaning", "in"), tuple(rows))


# -- the warehouse tables ----------------------------------------------------------------------------

#: What each column holds, per table kind. The build fails when the code's tables and these
#: notes disagree (a column added, renamed or removed), so the docs cannot drift silently.
COLUMN_NOTES: dict[str, dict[str, str]] = {
    "ledger": {
        "user_id": "the partner's user id, compared as exact text",
        "channel": "`registration`, `email` or `sms`",
        "account_type": "`individual` or `corporation` (empty for a rejected row)",
        "state": "the row's ledger state (below)",
        "sends": "codes sFOX accepted for this channel (resends included)",
        "attempts": "HTTP requests made for this channel, retries included",
        "uncertain": "requests whose answer was lost: a code may have gone out without our knowing",
        "failures": "tries in a row that ended `failed` or `not_registered`: the wait before the next "
        "and when to give up",
        "last_status": "the HTTP status of the last answer",
        "last_error": "the last error or rejection reason, without personal data",
        "first_request_at": "when the first request went out",
        "last_request_at": "when the last request went out",
        "last_sent_at": "when sFOX last accepted a request (a code went out)",
        "dag_id": "the DAG of the run that last touched the row",
        "run_id": "the Airflow run that last touched the row (a run id is unique within its DAG only)",
        "chunk": "the chunk of that run",
        "claimed_by": "the run whose chunk step is sending this row's request right now",
        "claimed_by_dag": "the DAG of that run",
        "claimed_at": "since when it is claimed",
        "updated_at": "when the row last changed",
        "fields_hmac": "`registration` rows: a keyed hash (HMAC-SHA256) of the registration fields "
        "last sent, never the fields; a refused registration is tried again when it changes",
    },
    "attempts": {
        "id": "a sequence number",
        "user_id": "the user",
        "channel": "`registration`, `email` or `sms`",
        "dag_id": "the DAG of the run that made the request",
        "run_id": "the Airflow run that made the request",
        "attempted_at": "when the request went out",
        "attempt": "1, then the hook's retries of the same call",
        "status": "the HTTP status (empty: no answer)",
        "outcome": "an attempt outcome (below)",
        "uncertain": "1 when the request may have reached sFOX without its answer reaching us",
        "error": "the error, without personal data",
    },
    "runs": {
        "dag_id": "the DAG of the run: several DAGs may share one warehouse (with `run_id`, the key)",
        "run_id": "the Airflow run id: two DAGs on one schedule get the same one",
        "dry_run": "1 for a dry run",
        "started_at": "when the plan started",
        "finished_at": "when `summarize` ended",
        "source_rows": "rows the source returned",
        "planned": "users with a code planned",
        "rejected": "users rejected (their source rows are invalid)",
        "duplicate_rows": "source rows beyond the first of a user_id found on several rows",
        "malformed_ids": "ids in a run's events that are no user id (the poster's error, never judged)",
        "sent": "codes sFOX accepted",
        "already_verified": "channels sFOX reported verified",
        "not_registered": "users sFOX does not know",
        "failed": "requests that failed",
        "uncertain": "outcomes marked uncertain",
        "steps": "chunk steps planned",
        "steps_done": "chunk steps finished",
        "requests": "HTTP requests made to sFOX",
        "rate_limited": "answers 429",
        "send_seconds": "seconds from the first send to the last",
        "requests_per_second": "requests / send seconds",
        "status": "the run's status (below)",
        "reason": "why the run has its status",
        "budget_wait_seconds": "thread-seconds spent waiting for the shared rate budget",
        "pause_seconds": "thread-seconds spent in 429 pauses",
        "registered": "users sFOX registered (their first email code went out with it)",
    },
    "steps": {
        "dag_id": "the DAG of the run",
        "run_id": "the Airflow run",
        "step": "one chunk step (a mapped task instance)",
        "finished_at": "when it finished: a step retried or cleared after it finished counts once",
    },
    "snapshot": {
        "snapshot_id": "the plan's snapshot",
        "user_id": "the user, as sFOX lists it",
        "dag_id": "the DAG of that run",
        "run_id": "the run whose plan read it",
        "account_type": "the account type sFOX reports",
        "status": "sFOX's `status` (`PENDING`, `VERIFIED`, ...)",
        "email_required": "sFOX's `requirements.email`: false = verified, true = still required, "
        "empty = not reported",
        "sms_required": "sFOX's `requirements.sms`, read the same way",
        "seen_at": "when the plan read it",
    },
    "snapshot_taken": {
        "snapshot_id": "a complete snapshot kept as the warehouse's shared one",
        "dag_id": "the DAG of that run",
        "run_id": "the run whose plan read the list",
        "taken_at": "when it was complete: reused while younger than a reader's `snapshot_max_age`",
        "users": "the users it holds",
    },
    "events": {
        "event_key": "the asset event's key: a hash of its asset URI, timestamp and source, which "
        "triggering and inlet events both carry",
        "dag_id": "the DAG of that run",
        "run_id": "the run that judged it",
        "seen_at": "when that run read it",
    },
    "version": {
        "id": "always 1: the table has one row",
        "version": "the schema version the tables beside it were made with",
        "written_at": "when it was written",
    },
}


def warehouse_tables() -> dict[str, Any]:
    """The engine's SQLAlchemy tables with their default names, keyed as :data:`COLUMN_NOTES`."""
    import sqlalchemy as sa

    defaults = importlib.import_module("airflow_sfox.defaults")
    define_tables = _first(
        ("airflow_sfox.onboarding.schema", "define_tables"),
        ("airflow_sfox.onboarding.tables", "define_tables"),
        ("airflow_sfox.onboarding.warehouse", "define_tables"),
    )
    tables = define_tables(
        sa.MetaData(),
        ledger=(None, defaults.LEDGER_TABLE),
        runs=(None, defaults.RUNS_TABLE),
        snapshot=(None, defaults.SNAPSHOT_TABLE),
    )
    schema = importlib.import_module("airflow_sfox.onboarding.schema")
    tables = (*tables, schema.events_table(sa.MetaData(), None, defaults.LEDGER_TABLE))
    tables = (*tables, schema.version_table(sa.MetaData(), None, defaults.LEDGER_TABLE))
    if hasattr(schema, "snapshot_taken_table"):
        tables = (*tables, schema.snapshot_taken_table(sa.MetaData(), None, defaults.SNAPSHOT_TABLE))
    kinds = {
        defaults.LEDGER_TABLE: "ledger",
        f"{defaults.LEDGER_TABLE}_events": "events",
        f"{defaults.LEDGER_TABLE}_version": "version",
        f"{defaults.LEDGER_TABLE}_attempts": "attempts",
        defaults.RUNS_TABLE: "runs",
        f"{defaults.RUNS_TABLE}_steps": "steps",
        defaults.SNAPSHOT_TABLE: "snapshot",
        f"{defaults.SNAPSHOT_TABLE}_taken": "snapshot_taken",
    }
    return {kinds.get(str(table.name), str(table.name)): table for table in tables}


def column_table(kind: str) -> tuple[str, Table, list[str]]:
    """One table's name, its columns (name, SQL type, key, null, meaning), and the notes' mismatches."""
    table = warehouse_tables()[kind]
    notes = COLUMN_NOTES[kind]
    rows, problems = [], []
    for column in table.columns:
        type_name = type(column.type).__name__
        impl = getattr(column.type, "impl", None)
        if impl is not None:
            type_name = f"{type_name} ({impl.__name__ if isinstance(impl, type) else type(impl).__name__})"
        key = "primary key" if column.primary_key else ""
        null = "" if column.nullable else "not null"
        if column.name not in notes:
            problems.append(f"column {table.name}.{column.name} has no note in COLUMN_NOTES[{kind!r}]")
        rows.append((f"`{column.name}`", type_name, key, null, notes.get(column.name, "")))
    names = {c.name for c in table.columns}
    problems += [
        f"COLUMN_NOTES[{kind!r}] names {n!r}, not a column of {table.name}" for n in notes if n not in names
    ]
    return str(table.name), Table(("column", "type", "key", "null", "holds"), tuple(rows)), problems


# -- metrics --------------------------------------------------------------------------------------------

_METRIC = re.compile(r"^``(sfox\.[^`]+)``\s+(.*)$")


def metrics() -> Table:
    """The metrics the module docstring of ``onboarding/metrics.py`` lists, with when they are emitted."""
    doc = inspect.getdoc(importlib.import_module("airflow_sfox.onboarding.metrics")) or ""
    rows: list[list[str]] = []
    when = ""
    for paragraph in doc.split("\n\n"):
        lines = paragraph.splitlines()
        if not any(_METRIC.match(line) for line in lines):
            when = _one_line(paragraph).split(",")[0].rstrip(":")
            continue
        for line in lines:
            if found := _METRIC.match(line):
                rows.append([f"`{found[1]}`", found[2].strip(), when])
            elif rows:
                rows[-1][1] += " " + line.strip()
    return Table(("metric", "what", "emitted"), tuple((m, _one_line(w), e) for m, w, e in rows))


def emitted_metric_names() -> set[str]:
    """The names ``metrics.py`` emits, read from its code (``f"{PREFIX}.name"``; ``<x>`` for a variable)."""
    import ast

    module = importlib.import_module("airflow_sfox.onboarding.metrics")
    tree = ast.parse(inspect.getsource(module))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr) and node.values:
            head = node.values[0]
            if isinstance(head, ast.FormattedValue) and getattr(head.value, "id", None) == "PREFIX":
                parts = [v.value if isinstance(v, ast.Constant) else "<x>" for v in node.values[1:]]
                names.add(module.PREFIX + "".join(parts))
    return names


# -- params --------------------------------------------------------------------------------------------


def params(kind: str = "onboarding") -> Table:
    """The params of the onboarding DAG (or the follow-up DAG's): section, name, default, choices."""
    module = importlib.import_module("airflow_sfox.onboarding.params")
    found = module.onboarding_params() if kind == "onboarding" else module.event_params()
    rows = []
    for name, param in found.items():
        schema = param.schema
        items = schema.get("items", {})
        choices = schema.get("enum") or items.get("enum") or []
        kinds = schema.get("type", "")
        kind_text = "/".join(k for k in ([kinds] if isinstance(kinds, str) else kinds) if k != "null")
        rows.append(
            (
                schema.get("section", ""),
                f"`{name}`",
                schema.get("title", ""),
                kind_text,
                _default(param.value),
                ", ".join(f"`{c}`" for c in choices),
                _one_line(param.description or ""),
            )
        )
    return Table(("section", "param", "title", "type", "default", "choices", "description"), tuple(rows))


# -- the API reference -----------------------------------------------------------------------------------


def modules() -> list[str]:
    """Every module of the provider, namespace packages included (``onboarding`` has no ``__init__``)."""
    root = Path(importlib.import_module(PACKAGE).__file__ or "").parent
    return sorted(
        ".".join((PACKAGE, *path.relative_to(root).with_suffix("").parts)).removesuffix(".__init__")
        for path in root.rglob("*.py")
    )
