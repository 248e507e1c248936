"""
What the onboarding engine needs of each database beyond portable SQLAlchemy Core.

One table, :data:`DIALECTS`: the dialect's upsert and the cast that turns a ``user_id`` into
exact text. A dialect not in it is refused with an error naming the connection, never guessed
at. SQLite (the embedded default), PostgreSQL and MariaDB/MySQL are the tested ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from sqlalchemy.engine import Dialect
    from sqlalchemy.sql.dml import Insert
    from sqlalchemy.sql.elements import ColumnElement


def is_mysql(dialect: Dialect) -> bool:
    """Whether the dialect is MariaDB or MySQL."""
    return dialect.name in ("mysql", "mariadb")


def exact_collation(dialect: Dialect) -> str:
    """MariaDB/MySQL: the binary collation without trailing-space padding ('abc' != 'abc ')."""
    return "utf8mb4_nopad_bin" if getattr(dialect, "is_mariadb", False) else "utf8mb4_0900_bin"


def _on_conflict(stmt: Any, keys: Sequence[str], updates: Sequence[str]) -> Insert:
    """PostgreSQL and SQLite: ``INSERT ... ON CONFLICT (keys) DO UPDATE SET c = excluded.c``."""
    if not updates:
        return stmt.on_conflict_do_nothing(index_elements=list(keys))
    return stmt.on_conflict_do_update(index_elements=list(keys), set_={c: stmt.excluded[c] for c in updates})


def _on_duplicate_key(stmt: Any, keys: Sequence[str], updates: Sequence[str]) -> Insert:
    """MariaDB/MySQL: ``INSERT ... ON DUPLICATE KEY UPDATE c = VALUES(c)``."""
    column = updates[0] if updates else keys[0]
    return stmt.on_duplicate_key_update(
        {c: stmt.inserted[c] for c in updates} or {column: stmt.table.c[column]}
    )


def _text_cast(expr: Any, dialect: Dialect) -> ColumnElement[str]:
    """SQLite, PostgreSQL: ``CAST(x AS TEXT)``; both compare text exactly (binary / deterministic)."""
    return sa.cast(expr, sa.Text())


def _mysql_text_cast(expr: Any, dialect: Dialect) -> ColumnElement[str]:
    """MariaDB/MySQL: ``CAST(x AS CHAR CHARACTER SET utf8mb4) COLLATE <binary NO PAD>``."""
    return sa.cast(expr, mysql.CHAR(charset="utf8mb4")).collate(exact_collation(dialect))


@dataclass(frozen=True)
class DialectSupport:
    """
    What the onboarding engine needs of a SQLAlchemy dialect beyond portable Core.

    :param insert: the dialect's own ``insert()`` construct (it carries the upsert clause).
    :param upsert: ``(insert, key columns, columns to update) -> upsert statement``.
    :param text_key: ``(expression, dialect) -> the expression as exact text``: how user_ids of
        any source column type are compared, sorted and de-duplicated.
    """

    insert: Callable[[Any], Any]
    upsert: Callable[[Any, Sequence[str], Sequence[str]], Insert]
    text_key: Callable[[Any, Dialect], ColumnElement[str]]


#: SQLAlchemy dialect name -> how to serve it. Another database needs an entry here.
DIALECTS: dict[str, DialectSupport] = {
    "sqlite": DialectSupport(sqlite.insert, _on_conflict, _text_cast),
    "postgresql": DialectSupport(postgresql.insert, _on_conflict, _text_cast),
    "mysql": DialectSupport(mysql.insert, _on_duplicate_key, _mysql_text_cast),
    "mariadb": DialectSupport(mysql.insert, _on_duplicate_key, _mysql_text_cast),
}


class UnsupportedDialectError(ValueError):
    """The warehouse connection's SQLAlchemy dialect has no entry in :data:`DIALECTS`."""


def conn_id_of(hook: Any) -> str:
    """The connection id of a hook, for error messages."""
    return str(getattr(hook, str(getattr(hook, "conn_name_attr", "")), None) or type(hook).__name__)


def dialect_support(hook: Any, dialect: str) -> DialectSupport:
    """
    The support of a warehouse connection's dialect.

    :param hook: the connection's hook, named in the error.
    :param dialect: its SQLAlchemy dialect name.
    :raises UnsupportedDialectError: the dialect is not in :data:`DIALECTS`.
    """
    support = DIALECTS.get(dialect)
    if support is None:
        raise UnsupportedDialectError(
            f"warehouse connection {conn_id_of(hook)!r} uses the SQLAlchemy dialect {dialect!r}, "
            "which the sFOX onboarding engine cannot serve: it needs an upsert (INSERT ... ON "
            "CONFLICT or ON DUPLICATE KEY UPDATE) and a cast of user_ids to exact text, registered "
            f"in airflow_sfox.onboarding.dialects.DIALECTS. Supported: {', '.join(sorted(DIALECTS))}."
        )
    return support


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """The planner reads on one connection while it writes on another: WAL lets both work at once."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
    finally:
        cursor.close()
