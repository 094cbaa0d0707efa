"""Statements compiled once for a dialect, with SQLAlchemy's own processing of each value.

SQLAlchemy looks a statement up in its compiled cache and processes its parameters on every
execution; for the few statements run on every request that costs about as much as the
database's work. A ``Prepared`` statement keeps the SQL text and the processors of its
parameters and result columns, so it can be sent as it is: on the event loop's own psycopg
connections (``repository.loop_reads``), or with ``execute`` on a connection of the engine, which
keeps the engine's error wrapping, disconnect handling and events.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Dialect
from sqlalchemy.engine import Connection
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.types import TypeEngine

Row = tuple[Any, ...]


@dataclass(frozen=True)
class Prepared:
    """A statement compiled once: its SQL text and SQLAlchemy's per-value processors."""

    sql: str
    constants: Mapping[str, Any]  # the values SQLAlchemy bound itself (literals in the query)
    binds: tuple[tuple[str, Callable[[Any], Any] | None], ...]
    results: tuple[Callable[[Any], Any] | None, ...]

    def parameters(self, given: Mapping[str, Any]) -> dict[str, Any]:
        params = dict(self.constants)
        for name, process in self.binds:
            if name in given:
                params[name] = process(given[name]) if process else given[name]
        return params

    def row(self, raw: Sequence[Any]) -> Row:
        if not self.results:
            return tuple(raw)
        return tuple(process(value) if process else value
                     for process, value in zip(self.results, raw, strict=True))


def prepare(statement: ClauseElement, dialect: Dialect,
            result_types: Sequence[TypeEngine[Any]] = ()) -> Prepared:
    """``statement`` compiled for ``dialect``, with the processors of its parameters and of
    result columns of ``result_types`` (none: the rows as the driver gives them)."""
    form = cast(SQLCompiler, statement.compile(dialect=dialect))
    processors = {name: bind.type._cached_bind_processor(dialect)
                  for name, bind in form.binds.items()}
    constants = {}
    for name, bind in form.binds.items():
        if not bind.required and bind.callable is None:
            process = processors[name]
            constants[name] = process(bind.value) if process else bind.value
    binds = tuple((name, process) for name, process in processors.items()
                  if name not in constants)
    results = tuple(kind._cached_result_processor(dialect, None) for kind in result_types)
    return Prepared(form.string, constants, binds, results)


def execute(conn: Connection, statement: Prepared, given: Mapping[str, Any]) -> list[Row]:
    """Every row of ``statement`` run on ``conn`` with the parameters ``given``."""
    result = conn.exec_driver_sql(statement.sql, statement.parameters(given))
    return [statement.row(raw) for raw in result.all()] if result.returns_rows else []
