"""SELECTs of the hot paths run on SQLite's own driver connection.

A statement executed through SQLAlchemy's Connection costs several times what SQLite
spends on it (checking a connection out and back, building the execution context,
wrapping each row): for the reads every GET, HEAD and PUT makes, that was a fifth to a
third of the request's CPU. A DriverQuery compiles its statement once, sends the SQL
and the bound values straight to the sqlite3 connection, and converts each column with
the result processor SQLAlchemy itself would apply (datetimes, JSON, booleans), so rows
read either way are equal (tests/index/test_latest.py compares them).

Only statements whose parameters are plain named values with no conversion on the way
in qualify; anything else is refused when the query is built, not at run time.

The three statements every upload commits (the blob upsert, the version insert, the
head upsert) run the same way (`DriverWrite`): each parameter converted by the bind
processor SQLAlchemy would apply (datetimes, JSON, booleans), inside the transaction
SQLAlchemy began on the same connection. Through SQLAlchemy they cost about 30 us of
Python each on top of SQLite's own work (tests/index/test_driver_writes.py checks the
rows come out the same).
"""

from __future__ import annotations

import sqlite3
import weakref
from collections import namedtuple
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Dialect, Insert, Select

_QUERIES: weakref.WeakKeyDictionary[Dialect, dict[int, DriverQuery]] = weakref.WeakKeyDictionary()


def driver_query(statement: Select[Any], dialect: Dialect) -> DriverQuery:
    """The DriverQuery of a statement built once (a module's constant), per dialect:
    a result processor depends on the engine's (its JSON deserializer)."""
    queries = _QUERIES.setdefault(dialect, {})
    query = queries.get(id(statement))
    if query is None:
        query = queries[id(statement)] = DriverQuery(statement, dialect)
    return query


class DriverQuery:
    def __init__(self, statement: Select[Any], dialect: Dialect) -> None:
        if dialect.name != "sqlite":
            raise ValueError("a DriverQuery runs on SQLite only")
        compiled = statement.compile(dialect=dialect)
        names = tuple(compiled.positiontup or ())
        for name in names:
            bind = compiled.binds[name]
            if bind.value is not None or bind.callable is not None:
                raise ValueError(f"parameter {name!r} has a value of its own")
            if bind.type.dialect_impl(dialect).bind_processor(dialect) is not None:
                raise ValueError(f"parameter {name!r} needs converting")
        self._sql = compiled.string
        self._names = names
        columns = list(statement.selected_columns)
        self._processors: list[Callable[[Any], Any] | None] = [
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
        ]
        self._row = namedtuple("DriverRow", [column.key for column in columns])  # type: ignore[misc]

    def rows(self, driver: sqlite3.Connection, **values: Any) -> list[Any]:
        """Every row, as a named tuple whose fields are the statement's column keys."""
        raw = driver.execute(self._sql, [values[name] for name in self._names]).fetchall()
        processors, row = self._processors, self._row
        return [
            row(*(v if p is None else p(v) for p, v in zip(processors, r, strict=True)))
            for r in raw
        ]

    def first(self, driver: sqlite3.Connection, **values: Any) -> Any | None:
        found = self.rows(driver, **values)
        return found[0] if found else None


_WRITES: weakref.WeakKeyDictionary[Dialect, dict[int, DriverWrite]] = weakref.WeakKeyDictionary()
_GIVEN = object()  # a parameter whose value comes with each execution


class DriverWrite:
    """An INSERT (an upsert, with RETURNING of one column) run on the sqlite3 connection."""

    def __init__(self, statement: Insert, dialect: Dialect) -> None:
        if dialect.name != "sqlite":
            raise ValueError("a DriverWrite runs on SQLite only")
        compiled = statement.compile(dialect=dialect)
        if compiled.insert_prefetch or compiled.update_prefetch:
            raise ValueError("a column default computed in Python is not supported")
        self._sql = compiled.string
        plan: list[tuple[str, Any, Callable[[Any], Any] | None]] = []
        for name in compiled.positiontup or ():
            bind = compiled.binds[name]
            if bind.callable is not None or bind.expanding:
                raise ValueError(f"parameter {name!r} is not a plain value")
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if bind.required:
                plan.append((name, _GIVEN, processor))
            else:  # a constant of the statement (`refcount + 1`): converted once, here
                value = bind.value if processor is None else processor(bind.value)
                plan.append((name, value, None))
        self._plan = plan

    def run(self, driver: sqlite3.Connection, values: dict[str, Any]) -> list[Any]:
        """Run it with `values`; the rows it returns (RETURNING), if any."""
        args = []
        for name, fixed, processor in self._plan:
            if fixed is _GIVEN:
                value = values[name]
                # None too: a JSON column's processor decides what None becomes.
                args.append(value if processor is None else processor(value))
            else:
                args.append(fixed)
        # fetchall: the statement runs to its end (a RETURNING statement left open
        # would stay active in the transaction).
        return driver.execute(self._sql, args).fetchall()


def insert_returning(conn: Connection, statement: Insert, values: dict[str, Any]) -> Any:
    """`statement` (a module's constant, with RETURNING of one column) run with
    `values`: the column of the one row it returns. On SQLite's driver connection,
    elsewhere through SQLAlchemy."""
    driver = driver_of(conn)
    if driver is None:
        return conn.execute(statement, values).scalar_one()
    return _driver_write(statement, conn.dialect).run(driver, values)[0][0]


def insert_returning_row(conn: Connection, statement: Insert, values: dict[str, Any]) -> Any:
    """`insert_returning` for a statement returning several columns: its one row."""
    driver = driver_of(conn)
    if driver is None:
        return conn.execute(statement, values).one()
    return _driver_write(statement, conn.dialect).run(driver, values)[0]


def run_write(conn: Connection, statement: Insert, values: dict[str, Any]) -> None:
    """`insert_returning` for a statement that returns nothing."""
    driver = driver_of(conn)
    if driver is None:
        conn.execute(statement, values)
    else:
        _driver_write(statement, conn.dialect).run(driver, values)


def _driver_write(statement: Insert, dialect: Dialect) -> DriverWrite:
    writes = _WRITES.setdefault(dialect, {})
    found = writes.get(id(statement))
    if found is None:
        found = writes[id(statement)] = DriverWrite(statement, dialect)
    return found


def first_row(conn: Connection, statement: Select[Any], **values: Any) -> Any | None:
    """The statement's first row: on SQLite's driver connection, elsewhere through
    SQLAlchemy (the rows of either have the same fields)."""
    driver = driver_of(conn)
    if driver is not None:
        return driver_query(statement, conn.dialect).first(driver, **values)
    return conn.execute(statement, values).first()


def scalars(conn: Connection, statement: Select[Any], **values: Any) -> list[Any]:
    """The first column of every row (as `first_row` runs it)."""
    driver = driver_of(conn)
    if driver is not None:
        return [row[0] for row in driver_query(statement, conn.dialect).rows(driver, **values)]
    return list(conn.execute(statement, values).scalars())


def driver_of(conn: Connection) -> sqlite3.Connection | None:
    """The sqlite3 connection under `conn` (inside its transaction, if one is open);
    None on any other database."""
    if conn.dialect.name != "sqlite":
        return None
    driver = conn.connection.driver_connection
    return driver if isinstance(driver, sqlite3.Connection) else None
