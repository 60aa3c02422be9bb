"""``mlflow_db_connection_errors_total{stage}`` (server/db_metrics.py) against a real PostgreSQL:
a connection refused counts as ``connect``, a connection the server terminates as
``disconnect``, and a failing query on a good connection counts nothing.

The counting runs in a child process with ``PROMETHEUS_MULTIPROC_DIR`` set before
``prometheus_client`` is imported, as in the server (``mlflow server --expose-prometheus``); the
test reads the directory with prometheus_client's multiprocess collector, as ``/metrics`` does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest, multiprocess

from harness.ports import free_port
from harness.postgres import PostgresServer

pytestmark = pytest.mark.integration

CHILD = r"""
import sys
import sqlalchemy as sa
from mlflow_stack.server import db_metrics

assert db_metrics.install() and db_metrics.install()  # idempotent: one listener
good, refused = sys.argv[1], sys.argv[2]
engine = sa.create_engine(good)
with engine.connect() as conn:
    assert conn.execute(sa.text("select 1")).scalar() == 1
    try:
        conn.execute(sa.text("select * from no_such_table"))  # an error, not a connection one
    except sa.exc.ProgrammingError:
        pass
if sys.argv[3] == "errors":
    with engine.connect() as conn:
        try:  # the server ends this very connection
            conn.execute(sa.text("select pg_terminate_backend(pg_backend_pid())"))
        except sa.exc.OperationalError:
            pass
        else:
            raise SystemExit("the terminated connection did not fail")
    try:
        sa.create_engine(refused).connect()
    except sa.exc.OperationalError:
        pass
    else:
        raise SystemExit("a connection to a closed port succeeded")
"""


def counted(tmp_path: Path, postgres: PostgresServer, mode: str) -> dict[str, float]:
    prom_dir = tmp_path / f"prometheus-{mode}"
    prom_dir.mkdir()
    good = postgres.dsn().replace("postgresql://", "postgresql+psycopg://", 1)
    refused = f"postgresql+psycopg://nobody:x@127.0.0.1:{free_port()}/postgres"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(prom_dir)}
    result = subprocess.run([sys.executable, "-c", CHILD, good, refused, mode], env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(prom_dir))  # type: ignore[no-untyped-call]
    text = generate_latest(registry).decode()
    assert "# TYPE mlflow_db_connection_errors_total counter" in text, text
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("mlflow_db_connection_errors_total{"):
            labels, value = line.rsplit(" ", 1)
            values[labels.split('stage="', 1)[1].split('"', 1)[0]] = float(value)
    return values


def test_connection_errors_are_counted_by_stage(tmp_path: Path,
                                                postgres_server: PostgresServer) -> None:
    assert counted(tmp_path, postgres_server, "errors") == {"connect": 1.0, "disconnect": 1.0}


def test_good_connections_and_query_errors_count_nothing(
        tmp_path: Path, postgres_server: PostgresServer) -> None:
    # Both series are there from the start, at 0: increase() sees the first error.
    assert counted(tmp_path, postgres_server, "clean") == {"connect": 0.0, "disconnect": 0.0}


def test_nothing_is_installed_without_a_metrics_directory(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow_stack.server import db_metrics

    monkeypatch.delenv(db_metrics.MULTIPROC_ENV, raising=False)
    monkeypatch.setattr(db_metrics, "_counter", None)
    assert db_metrics.install() is False
