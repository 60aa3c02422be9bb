"""A pooled database connection is pinged before use only after it sat idle (speed; the same
recovery once it has).

MLflow (``create_sqlalchemy_engine``) and mlflow-oidc-auth (``SqlAlchemyStore._create_engine``)
create their engines with ``pool_pre_ping=True``: every checkout of a pooled connection first
sends a round trip to the database, so that a connection the database dropped (restart,
failover, idle timeout) is replaced instead of failing the request. Each request checks out at
least one connection (with SSO, also the permission store's), and on bench/scale.py's busy
2-core machine that round trip was ~20 % of a model-versions search (py-spy): the database's
process has to be scheduled to answer it.

Here a connection returned to its pool less than ``MLFLOW_STACK_DB_PING_AFTER`` seconds ago
(default 1; ``0`` pings at every checkout, as before) is used without the ping; one idle for
longer is pinged, and a ping that finds the connection dropped invalidates the pool, as
SQLAlchemy's pre-ping does. A fresh connection is never pinged (nor is it by SQLAlchemy). The
rule is HikariCP's ``aliveBypassWindowMs`` (500 ms) and PgBouncer's ``server_check_delay``
(30 s). What it gives up: when the database drops its connections, a request that reuses one
used within that second fails once with a database error (5xx, which MLflow's clients
retry); SQLAlchemy then invalidates the whole pool, so the requests after it reconnect.
tests/server/patches/test_idle_ping.py shows both on a real PostgreSQL.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from typing import Any

from mlflow_stack.server.guards import Shape, UpstreamChanged, wrapping
from mlflow_stack.server.tunables import seconds

MLFLOW = Shape("mlflow.store.db.utils", "create_sqlalchemy_engine", ("db_uri",))
OIDC = Shape("mlflow_oidc_auth.sqlalchemy_store", "SqlAlchemyStore._create_engine", ("db_uri",))
UPSTREAM = (MLFLOW, OIDC)
AFTER_ENV = "MLFLOW_STACK_DB_PING_AFTER"
_CHECKED_IN = "mlflow_stack_checked_in"  # the pool record's info key: when it came back


def ping_after() -> float:
    return seconds(AFTER_ENV, 1.0)


def ping_when_idle(engine: Any, after: float) -> Any:
    """``engine`` with its pool's pre-ping kept for connections idle ``after`` seconds or more
    (idempotent; an engine created without pre-ping, or ``after`` 0, is left as it is)."""
    from sqlalchemy import event, exc

    pool = engine.pool
    if not hasattr(pool, "_pre_ping"):
        raise UpstreamChanged("sqlalchemy's Pool has no _pre_ping any more: revisit "
                              "server/patches/idle_ping.py")
    if not pool._pre_ping or after <= 0:
        return engine
    dialect = engine.dialect

    def checked_in(dbapi_connection: Any, record: Any) -> None:
        record.info[_CHECKED_IN] = time.monotonic()

    def checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        returned = record.info.get(_CHECKED_IN)
        if returned is None or time.monotonic() - returned < after:
            return  # fresh, or in use a moment ago
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as error:
            if dialect.is_disconnect(error, dbapi_connection, None):
                # What SQLAlchemy's pre-ping does with a dropped connection: the pool replaces
                # it and every connection opened before it.
                raise exc.InvalidatePoolError() from error
            raise

    event.listen(pool, "checkin", checked_in)
    event.listen(pool, "checkout", checkout)
    pool._pre_ping = False
    return engine


def _lazy(original: Callable[[str], Any]) -> Callable[[str], Any]:
    @wrapping(original)
    def create(db_uri: str) -> Any:
        return ping_when_idle(original(db_uri), ping_after())

    return create


def _wrap(shape: Shape) -> None:
    original = shape.require()
    if getattr(original, "__wrapped__", None) is not None:
        return  # applied already (both apps imported in one process)
    owner = shape.owner()
    replacement: Any = _lazy(original)
    if isinstance(owner, type):  # a staticmethod on a class
        replacement = staticmethod(replacement)
    setattr(owner, shape.name, replacement)


def apply_mlflow() -> None:
    """MLflow's engines (tracking, registry, jobs, workspaces): before any store exists."""
    _wrap(MLFLOW)


def apply() -> None:
    """MLflow's engines and mlflow-oidc-auth's permission store's (the SSO app)."""
    apply_mlflow()
    importlib.import_module(OIDC.module)
    _wrap(OIDC)
