"""Fixed read statements run straight on psycopg's cursor (speed; the same rows).

The fast read paths build each statement once and bind only values per call. SQLAlchemy still
does per execution what a fixed statement does not need: its cache key (a walk of the whole
statement), an execution context, result metadata and Row objects. For a metric history that
was ~0.4 ms of a ~1.5 ms read (``bench/driver_rows.py``). Here each statement is compiled once
for the connection's dialect, and later executions send that SQL with the values bound on
psycopg's cursor of the same pooled, autocommit connection (``mirrors.read_rows``), so the
pool, its idle ping and the transaction handling are SQLAlchemy's as before.

Only when SQLAlchemy would send exactly this SQL and hand back the driver's values unchanged:
PostgreSQL through psycopg; no parameter expanded at execution (``IN`` lists: ``any_in`` gives
PostgreSQL one array parameter instead, the same condition to its planner), every column's
result processor none for the type the server returned (checked on the first execution), and
column names a row can carry as attributes. Values go through the statement's bind processors,
as SQLAlchemy sends them. Anything else is executed by SQLAlchemy, as before, and so is every
statement while something watches them (SQL echo, cursor-execute listeners). On a broken
connection SQLAlchemy runs the statement again, so that its disconnect handling (the pool drops
the connection, listeners hear of it) is unchanged; ``read_rows`` turns other driver errors into
the MlflowExceptions MLflow's session raises.
"""

from __future__ import annotations

import collections
import threading
import weakref
from collections.abc import Mapping
from typing import Any, cast

#: The driver whose cursor this runs on (its placeholders are the compiled SQL's).
DRIVER = "psycopg"


class _Plan:
    """A statement compiled once: its SQL, the values compiled into it, its row type."""

    __slots__ = ("checked", "params", "processors", "row", "sql", "types")

    def __init__(self, sql: str, params: dict[str, Any], processors: dict[str, Any], row: Any,
                 types: list[Any]) -> None:
        self.sql = sql
        self.params = params
        self.processors = processors
        self.row = row
        self.types = types
        self.checked = False  # result processors looked at (needs the server's column types)


# statement -> its plan, or None for "SQLAlchemy executes it". Keyed by the statement object
# (identity): statements built once live as long as their builder's cache, and one the
# builder dropped takes its plan with it.
_PLANS: weakref.WeakKeyDictionary[Any, _Plan | None] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def _compile(statement: Any, dialect: Any) -> _Plan | None:
    compiled = statement.compile(dialect=dialect)
    sql = str(compiled)
    processors = getattr(compiled, "_bind_processors", None)
    if (not isinstance(processors, dict) or compiled.positiontup is not None
            or "POSTCOMPILE" in sql or not hasattr(compiled, "_result_columns")):
        return None
    columns = compiled._result_columns
    make_type: Any = collections.namedtuple  # field names known only here
    try:
        row = make_type("Row", [column[0] for column in columns])
    except ValueError:  # a name a tuple field cannot have, or a repeated one
        return None
    return _Plan(sql, dict(compiled.params), dict(processors), row,
                 [column[3] for column in columns])


def plan(statement: Any, dialect: Any) -> _Plan | None:
    """``statement``'s plan for ``dialect`` (compiled on first use), or None when SQLAlchemy
    must execute it."""
    if dialect.driver != DRIVER:
        return None
    try:
        return _PLANS[statement]
    except KeyError:
        pass
    found = _compile(statement, dialect)
    with _LOCK:
        _PLANS[statement] = found
    return found


def _unprocessed(found: _Plan, description: Any, dialect: Any) -> bool:
    """Whether SQLAlchemy would return every column as the driver does."""
    if description is None or len(description) != len(found.types):
        return False
    for type_, column in zip(found.types, description, strict=True):
        processor = getattr(type_, "_cached_result_processor", None)
        if processor is None or processor(dialect, column.type_code) is not None:
            return False
    return True


def _watched(connection: Any) -> bool:
    """Whether something watches this connection's statements (SQL echo, a listener on
    cursor executions: tracing, tests counting statements): it must see every one."""
    dispatch = connection.dispatch
    return bool(connection.engine.echo or dispatch.before_cursor_execute
                or dispatch.after_cursor_execute)


def fetch_all(connection: Any, statement: Any, values: Mapping[str, Any] | None = None,
              named: bool = True) -> list[Any]:
    """``connection.execute(statement, values).all()``: rows whose columns are also attributes
    (with ``named=False``, rows that are only sequences: the driver's own tuples, not copied).
    ``connection`` is what ``mirrors.read_rows`` gives (a Connection or MLflow's Session)."""
    from sqlalchemy.engine import Connection

    found = None
    if isinstance(connection, Connection) and not _watched(connection):
        found = plan(statement, connection.dialect)
    rows = None if found is None else _driver_rows(connection, statement, found, values,
                                                   named)
    if rows is None:
        return list(connection.execute(statement, dict(values or {})).all())
    return rows


def _driver_rows(connection: Any, statement: Any, found: _Plan,
                 values: Mapping[str, Any] | None, named: bool = True) -> list[Any] | None:
    """The rows from the driver's cursor; None when SQLAlchemy must run the statement."""
    params = {**found.params, **(values or {})}
    for name, process in found.processors.items():
        if name in params:
            params[name] = process(params[name])
    driver_connection = connection.connection.dbapi_connection
    try:
        with driver_connection.cursor() as cursor:
            cursor.execute(found.sql, params)
            if not found.checked:
                if not _unprocessed(found, cursor.description, connection.dialect):
                    with _LOCK:
                        _PLANS[statement] = None
                    return None
                found.checked = True
            rows = cursor.fetchall()
    except connection.dialect.loaded_dbapi.Error as error:
        if connection.dialect.is_disconnect(error, driver_connection, None):
            # SQLAlchemy runs it again and meets the same broken connection: it invalidates
            # the connection in the pool and reports the error to its listeners
            # (db_metrics counts disconnects there).
            return None
        raise  # a statement error: mirrors.read_rows maps it as it maps SQLAlchemy's
    if not named:
        return cast(list[Any], rows)
    make = found.row._make
    return [make(row) for row in rows]


def arrays(connection: Any) -> bool:
    """Whether statements for ``connection`` should take their lists as one array parameter
    (``any_in``): where ``fetch_all`` runs them on the driver."""
    from sqlalchemy.engine import Connection

    return isinstance(connection, Connection) and connection.dialect.driver == DRIVER


def any_in(column: Any, name: str, arrays: bool) -> Any:
    """``column IN (:name...)``: on PostgreSQL as ``column = ANY(:name)`` with the list bound
    as one array (one SQL text for every length), elsewhere as SQLAlchemy's expanding IN."""
    from sqlalchemy import any_, bindparam

    if arrays:
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == any_(bindparam(name, type_=ARRAY(column.type)))
    return column.in_(bindparam(name, expanding=True))
