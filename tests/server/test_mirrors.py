"""What the fast read paths share (server/mirrors.py): source pins, MLflow's JSON doubles, and
read connections that answer like MLflow's managed sessions, on real PostgreSQL and SQLite."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from mlflow.exceptions import MlflowException
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from sqlalchemy import text
from sqlalchemy.orm import Session

from harness.postgres import PostgresServer
from mlflow_stack.server import mirrors


def test_a_changed_source_is_named() -> None:
    name = "mlflow.entities.metric:Metric.to_proto"
    assert mirrors.changed({name: mirrors.source_digest(name)}) == []
    assert mirrors.changed({name: "0" * 64}) == [name]


def test_doubles_are_written_as_mlflow_writes_them() -> None:
    assert [mirrors.json_double(v) for v in (math.nan, math.inf, -math.inf, 1.5)] == \
        ["NaN", "Infinity", "-Infinity", 1.5]


@pytest.mark.integration
def test_postgresql_reads_run_without_a_transaction(postgres_server: PostgresServer) -> None:
    make: Any = SqlAlchemyStore  # MLflow is untyped
    store = make(postgres_server.new_database("mirrors"), "/nonexistent")
    try:
        with mirrors.read_rows(store) as connection:
            # No BEGIN was sent: the server sees no transaction around the statement.
            assert connection.execute(text("SELECT now() = statement_timestamp()")).scalar()
        with pytest.raises(MlflowException) as raised, mirrors.read_rows(store) as connection:
            connection.execute(text("SELECT * FROM no_such_table"))
        assert raised.value.error_code == "BAD_REQUEST"  # as MLflow's managed session
        with mirrors.read_rows(store) as connection:  # the pool still serves
            assert connection.execute(text("SELECT 1")).scalar() == 1
    finally:
        store.engine.dispose()


def test_sqlite_reads_use_mlflow_s_session(tmp_path: Path) -> None:
    make: Any = SqlAlchemyStore
    store = make(f"sqlite:///{tmp_path}/m.db", str(tmp_path / "a"))
    with mirrors.read_rows(store) as session:
        assert isinstance(session, Session)  # with MLflow's PRAGMAs applied
        assert session.execute(text("SELECT count(*) FROM runs")).scalar() == 0
    store.engine.dispose()
