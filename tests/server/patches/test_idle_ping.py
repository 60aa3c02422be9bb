"""A pooled connection is pinged only after it sat idle (server/patches/idle_ping.py), on a
real PostgreSQL: no round trip for a connection used a moment ago, a ping after the idle
time, recovery through that ping when the database dropped the connection, and the one
failure the rule accepts when it dropped a connection used a moment ago."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy
from sqlalchemy import exc

from harness.postgres import PostgresServer
from mlflow_stack.server.patches import idle_ping

pytestmark = pytest.mark.integration
AFTER = 0.3


@pytest.fixture
def engine(postgres_server: PostgresServer) -> Iterator[tuple[Any, list[int]]]:
    """An engine as MLflow makes them (pre-ping on), with the rule on; the pings it sends."""
    made = sqlalchemy.create_engine(postgres_server.new_database("idle_ping"),
                                    pool_pre_ping=True)
    idle_ping.ping_when_idle(made, AFTER)
    pings: list[int] = []
    ping = made.dialect.do_ping

    def counted(dbapi_connection: Any) -> Any:
        pings.append(1)
        return ping(dbapi_connection)

    made.dialect.do_ping = counted  # type: ignore[method-assign]
    yield made, pings
    made.dispose()


def _backend(engine: Any) -> int:
    with engine.connect() as connection:
        pid: int = connection.execute(sqlalchemy.text("SELECT pg_backend_pid()")).scalar_one()
    return pid


def _terminate(postgres_server: PostgresServer, pid: int) -> None:
    with psycopg.connect(postgres_server.dsn(), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    time.sleep(0.1)  # the backend is gone before the next use


def test_a_connection_used_a_moment_ago_is_not_pinged(engine: tuple[Any, list[int]]) -> None:
    made, pings = engine
    first = _backend(made)
    for _ in range(5):
        assert _backend(made) == first  # the same pooled connection, each time
    assert pings == []
    time.sleep(AFTER + 0.1)
    assert _backend(made) == first
    assert pings == [1]  # idle for longer: pinged once, then used


def test_an_idle_connection_the_database_dropped_is_replaced(
        engine: tuple[Any, list[int]], postgres_server: PostgresServer) -> None:
    made, pings = engine
    first = _backend(made)
    _terminate(postgres_server, first)
    time.sleep(AFTER)
    second = _backend(made)  # no error: the ping found it dropped, the pool reconnected
    assert second != first and pings == [1]


def test_a_connection_dropped_right_after_use_fails_once(
        engine: tuple[Any, list[int]], postgres_server: PostgresServer) -> None:
    """What the rule gives up, bounded: one failed use, then the pool has reconnected."""
    made, pings = engine
    first = _backend(made)
    _terminate(postgres_server, first)
    with pytest.raises(exc.OperationalError):
        _backend(made)
    assert _backend(made) != first
    assert pings == []


def test_zero_pings_at_every_checkout_as_mlflow_does(postgres_server: PostgresServer) -> None:
    made = sqlalchemy.create_engine(postgres_server.new_database("idle_ping"),
                                    pool_pre_ping=True)
    try:
        assert idle_ping.ping_when_idle(made, 0.0).pool._pre_ping is True
        first = _backend(made)
        _terminate(postgres_server, first)
        assert _backend(made) != first  # SQLAlchemy's own pre-ping replaced it
    finally:
        made.dispose()


def test_both_apps_apply_the_rule() -> None:
    from mlflow.store.db import utils
    from mlflow_oidc_auth import sqlalchemy_store

    from mlflow_stack.server import plain_app, sso_app

    assert plain_app.app is not None and sso_app.app is not None  # nothing applied here
    created: list[Any] = [utils.create_sqlalchemy_engine,
                          sqlalchemy_store.SqlAlchemyStore._create_engine]
    for create in created:
        assert create.__qualname__ == "_lazy.<locals>.create", create
        assert create.__wrapped__.__module__ != idle_ping.__name__, create  # wrapped once


def test_the_apps_engines_get_the_rule(monkeypatch: pytest.MonkeyPatch,
                                       postgres_server: PostgresServer) -> None:
    from mlflow.store.db import utils
    from mlflow_oidc_auth import sqlalchemy_store

    monkeypatch.setattr(utils, "create_sqlalchemy_engine", utils.create_sqlalchemy_engine)
    monkeypatch.setattr(sqlalchemy_store.SqlAlchemyStore, "_create_engine",
                        sqlalchemy_store.SqlAlchemyStore.__dict__["_create_engine"])
    idle_ping.apply()
    idle_ping.apply()  # idempotent: wrapped once
    for create in (utils.create_sqlalchemy_engine_with_retry,
                   sqlalchemy_store.SqlAlchemyStore._create_engine):
        made = create(postgres_server.new_database("idle_ping"))
        try:
            assert made.pool._pre_ping is False  # the rule pings instead
            # Once, though applied twice (Pool-wide listeners, e.g. gunicorn_conf's, aside).
            assert [f.__qualname__ for f in made.pool.dispatch.checkout.listeners] == [
                "ping_when_idle.<locals>.checkout"]
        finally:
            made.dispose()
