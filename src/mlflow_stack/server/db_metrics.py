"""``mlflow_db_connection_errors_total{stage}`` on ``/metrics``: the database connection errors
of the server, which nothing MLflow exports shows.

MLflow's exporter counts requests by method and status only: a database that refuses or drops
connections shows there as 500s among any others. SQLAlchemy reports every DBAPI error of every
engine (MLflow's tracking and registry stores, mlflow-oidc-auth's) to its ``handle_error`` event,
connection failures included; this counts, per ``stage``:

- ``connect``: a new connection could not be opened (database down, refused, unreachable,
  authentication failed, too many connections);
- ``disconnect``: a connection in use was lost (the dialect's ``is_disconnect``: server
  restarted, connection terminated, network cut).

A pool's pre-ping that finds a stale connection is not counted (the pool replaces it without
an error; if the replacement fails, that is a ``connect``). Both series are exported from the
start at 0, so an alert on ``increase()`` sees the first error.

Installed by both server apps (plain and SSO) only when MLflow exports metrics
(``--expose-prometheus``, which sets ``PROMETHEUS_MULTIPROC_DIR`` before the app is imported):
the counter then lives in that directory, summed over the workers like MLflow's own.
"""

from __future__ import annotations

import os
from typing import Any

METRIC = "mlflow_db_connection_errors"  # exported as mlflow_db_connection_errors_total
STAGES = ("connect", "disconnect")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_counter: Any = None


def stage_of(context: Any) -> str | None:
    """The stage of one SQLAlchemy ``ExceptionContext``, or None: not a connection error."""
    if getattr(context, "is_pre_ping", False):
        return None
    if context.connection is None:  # raised while opening a connection (SQLAlchemy docs)
        return "connect"
    if context.is_disconnect:
        return "disconnect"
    return None


def _on_error(context: Any) -> None:
    stage = stage_of(context)
    if stage is not None and _counter is not None:
        _counter.labels(stage=stage).inc()


def install() -> bool:
    """Count connection errors of every SQLAlchemy engine (idempotent). False, and nothing
    installed, when the server exports no metrics."""
    global _counter
    if _counter is not None:
        return True
    if not os.environ.get(MULTIPROC_ENV):
        return False
    from prometheus_client import Counter
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    counter = Counter(METRIC, "Database connection errors of the MLflow server (connect: a "
                      "connection could not be opened; disconnect: one in use was lost)",
                      ["stage"])
    for stage in STAGES:
        counter.labels(stage=stage)  # exported at 0 from the start
    _counter = counter
    # On the Engine class: every engine, including ones created after this.
    event.listen(Engine, "handle_error", _on_error)
    return True
