"""The one place that knows how SQLite and PostgreSQL differ, for every SQL repository.

Repositories write portable SQLAlchemy Core and ask this module for the few statements whose
spelling differs: insert-or-ignore and upserts (`ON CONFLICT`, `upsert_row` for the plain
kind), row locks (`FOR UPDATE`, which
SQLite does not have and does not need: its write transactions start with `BEGIN IMMEDIATE`
and hold the database's single writer lock), the two-argument min/max, and the UTC day of a
timestamp.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from sqlalchemy import Connection, Select, Table, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.elements import ColumnElement

POSTGRESQL = "postgresql"
SQLITE = "sqlite"

_S = TypeVar("_S", bound=Select[Any])


def is_postgresql(conn: Connection) -> bool:
    return conn.dialect.name == POSTGRESQL


def locks_rows(conn: Connection) -> bool:
    """Whether `FOR UPDATE` is needed to keep a row from concurrent writers: on PostgreSQL;
    not on SQLite, whose write transactions exclude each other from `BEGIN IMMEDIATE` on."""
    return is_postgresql(conn)


def upsert(conn: Connection, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that takes `.on_conflict_do_nothing()` / `.on_conflict_do_update(...)`
    (both dialects spell them the same; `.excluded` names the row that was refused)."""
    return upsert_for(is_postgresql(conn), table)


def upsert_for(postgres: bool, table: Table) -> postgresql.Insert | sqlite.Insert:
    """`upsert` for a statement built once per dialect, before any connection."""
    return postgresql.insert(table) if postgres else sqlite.insert(table)


def upsert_row(
    conn: Connection, table: Table, key: Mapping[str, Any], values: Mapping[str, Any]
) -> None:
    """Insert the row `key` + `values`, or, where a row with that `key` exists (the key's
    columns must be a unique index), overwrite its `values`."""
    stmt = upsert(conn, table).values(**key, **values)
    conn.execute(stmt.on_conflict_do_update(index_elements=list(key), set_=dict(values)))


def insert_ignore(conn: Connection, table: Table) -> postgresql.Insert | sqlite.Insert:
    """INSERT ... ON CONFLICT DO NOTHING: on PostgreSQL a concurrent insert of the same key
    waits for the first transaction and then inserts nothing."""
    return insert_ignore_for(is_postgresql(conn), table)


def insert_ignore_for(postgres: bool, table: Table) -> postgresql.Insert | sqlite.Insert:
    """`insert_ignore` for a statement built once per dialect, before any connection."""
    return upsert_for(postgres, table).on_conflict_do_nothing()


def for_update(conn: Connection, stmt: _S, *, skip_locked: bool = False) -> _S:
    """Lock the selected rows until the transaction ends: `FOR UPDATE` on PostgreSQL; on
    SQLite the statement as it is (the write transaction already excludes every writer)."""
    if locks_rows(conn):
        return stmt.with_for_update(skip_locked=skip_locked)
    return stmt


def least(conn: Connection, a: Any, b: Any) -> ColumnElement[Any]:
    """The smaller of two values (SQLite's scalar `min`, PostgreSQL's `least`)."""
    return least_for(is_postgresql(conn), a, b)


def least_for(postgres: bool, a: Any, b: Any) -> ColumnElement[Any]:
    """`least` for a statement built once per dialect."""
    return func.least(a, b) if postgres else func.min(a, b)


def greatest(conn: Connection, a: Any, b: Any) -> ColumnElement[Any]:
    """The larger of two values (SQLite's scalar `max`, PostgreSQL's `greatest`)."""
    return func.greatest(a, b) if is_postgresql(conn) else func.max(a, b)


def utc_day(conn: Connection, moment: Any) -> ColumnElement[Any]:
    """The UTC calendar day of a stored timestamp."""
    if is_postgresql(conn):
        # timestamptz -> the UTC calendar day, whatever the session time zone.
        return func.date(func.timezone("UTC", moment))
    return func.date(moment)  # SQLite keeps naive UTC text
