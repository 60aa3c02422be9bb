"""Fixed statements on psycopg's cursor (server/driver_rows.py), against a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from mlflow.exceptions import MlflowException
from sqlalchemy import (
    Column,
    Float,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    bindparam,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.engine import Connection

from harness.postgres import PostgresServer
from mlflow_stack.server import driver_rows, mirrors

pytestmark = pytest.mark.integration

METADATA = MetaData()
POINTS = Table("points", METADATA, Column("id", Integer, primary_key=True),
               Column("name", String(50)), Column("value", Float),
               Column("amount", Numeric(10, 2, asdecimal=False)))


@dataclass
class Store:
    """What ``mirrors.read_rows`` reads from an MLflow store: its dialect name and engine."""

    engine: Any
    db_type: str = "postgresql"


@pytest.fixture
def store(postgres_server: PostgresServer) -> Iterator[Store]:
    # One pooled connection, never pinged: a broken one handed out again would fail the next read.
    engine = create_engine(postgres_server.new_database("driver_rows"), pool_size=1,
                           max_overflow=0, pool_pre_ping=False)
    METADATA.create_all(engine)
    with engine.begin() as connection:
        connection.execute(POINTS.insert(), [
            {"id": i, "name": f"p{i % 3}", "value": i / 4, "amount": i * 1.25} for i in range(9)])
    yield Store(engine)
    engine.dispose()


def _by_name() -> Any:
    return (select(POINTS.c.id, POINTS.c.name, POINTS.c.value)
            .where(POINTS.c.name == bindparam("name")).order_by(POINTS.c.id))


def _through_sqlalchemy(store: Store, statement: Any, values: dict[str, Any]) -> list[Any]:
    with store.engine.connect() as connection:
        return [tuple(row) for row in connection.execute(statement, values)]


def test_a_fixed_statement_runs_on_the_driver_with_the_same_rows(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    statement = _by_name()
    expected = _through_sqlalchemy(store, statement, {"name": "p1"})
    with mirrors.read_rows(store) as connection:
        rows = driver_rows.fetch_all(connection, statement, {"name": "p1"})
    assert [tuple(row) for row in rows] == expected == [(1, "p1", 0.25), (4, "p1", 1.0),
                                                        (7, "p1", 1.75)]
    assert rows[0].name == "p1" and rows[0].value == 0.25  # columns are attributes too

    # Once checked, SQLAlchemy's execution is not used at all.
    def refused(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("executed by SQLAlchemy")

    monkeypatch.setattr(Connection, "execute", refused)
    with mirrors.read_rows(store) as connection:
        again = driver_rows.fetch_all(connection, statement, {"name": "p2"})
    assert [row.id for row in again] == [2, 5, 8]
    with mirrors.read_rows(store) as connection:
        plain = driver_rows.fetch_all(connection, statement, {"name": "p1"}, named=False)
    assert plain == expected  # the driver's own tuples, not copied into named rows
    assert not hasattr(plain[0], "name")


def test_lists_are_one_array_parameter_on_postgresql(store: Store) -> None:
    with mirrors.read_rows(store) as connection:
        assert driver_rows.arrays(connection)
        statement = (select(POINTS.c.id)
                     .where(driver_rows.any_in(POINTS.c.name, "names", True))
                     .order_by(POINTS.c.id))
        found = driver_rows.plan(statement, connection.dialect)
        assert found is not None and "ANY" in found.sql
        # One SQL text whatever the list's length; the rows of an IN list.
        assert [r.id for r in driver_rows.fetch_all(connection, statement, {"names": ["p0"]})] \
            == [0, 3, 6]
        assert [r.id for r in driver_rows.fetch_all(
            connection, statement, {"names": ["p0", "p2", "nope"]})] == [0, 2, 3, 5, 6, 8]
    # Elsewhere: SQLAlchemy's expanding IN, which the driver path leaves to SQLAlchemy.
    expanding = select(POINTS.c.id).where(driver_rows.any_in(POINTS.c.name, "names", False))
    with mirrors.read_rows(store) as connection:
        assert driver_rows.plan(expanding, connection.dialect) is None
        assert sorted(r.id for r in driver_rows.fetch_all(connection, expanding,
                                                          {"names": ["p1"]})) == [1, 4, 7]


def test_columns_sqlalchemy_converts_stay_with_sqlalchemy(store: Store) -> None:
    # NUMERIC comes from psycopg as Decimal; SQLAlchemy makes it a float (asdecimal=False).
    statement = select(POINTS.c.amount).where(POINTS.c.id == bindparam("id"))
    with mirrors.read_rows(store) as connection:
        rows = driver_rows.fetch_all(connection, statement, {"id": 2})
    assert rows[0][0] == 2.5 and type(rows[0][0]) is float
    with mirrors.read_rows(store) as connection:
        assert driver_rows.plan(statement, connection.dialect) is None  # decided once


def test_watched_statements_go_through_sqlalchemy(store: Store) -> None:
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        with mirrors.read_rows(store) as connection:
            rows = driver_rows.fetch_all(connection, _by_name(), {"name": "p0"})
    finally:
        event.remove(store.engine, "before_cursor_execute", record)
    assert [row.id for row in rows] == [0, 3, 6]
    assert len(seen) == 1 and "points" in seen[0]


def test_a_statement_error_is_mlflow_s_and_the_connection_serves_on(store: Store) -> None:
    statement = select(func.sqrt(bindparam("x", type_=Float)).label("root"))
    with mirrors.read_rows(store) as connection:
        assert driver_rows.fetch_all(connection, statement, {"x": 4.0})[0].root == 2.0
    with pytest.raises(MlflowException) as raised, mirrors.read_rows(store) as connection:
        driver_rows.fetch_all(connection, statement, {"x": -1.0})
    assert raised.value.error_code == "BAD_REQUEST"  # as for SQLAlchemy's errors
    with mirrors.read_rows(store) as connection:
        assert driver_rows.fetch_all(connection, statement, {"x": 9.0})[0].root == 3.0


def test_a_lost_connection_is_dropped_from_the_pool_and_reported(
        store: Store, postgres_server: PostgresServer) -> None:
    statement = _by_name()
    with mirrors.read_rows(store) as connection:
        driver_rows.fetch_all(connection, statement, {"name": "p0"})  # checked: on the driver
        backend = connection.connection.dbapi_connection.info.backend_pid
    errors: list[bool] = []
    event.listen(store.engine, "handle_error", lambda context: errors.append(
        context.is_disconnect))
    with psycopg.connect(postgres_server.dsn(), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (backend,))
    with pytest.raises(MlflowException) as raised, mirrors.read_rows(store) as connection:
        driver_rows.fetch_all(connection, statement, {"name": "p0"})
    assert raised.value.error_code == "TEMPORARILY_UNAVAILABLE"
    assert errors == [True]  # SQLAlchemy's listeners heard of it (db_metrics counts these)
    # The only pooled connection was the lost one: the next read gets a new one.
    with mirrors.read_rows(store) as connection:
        assert [row.id for row in driver_rows.fetch_all(connection, statement,
                                                        {"name": "p0"})] == [0, 3, 6]
