"""What `up` shows while the server starts: the meaningful lines of its log, in order."""

from __future__ import annotations

from pathlib import Path

from mlflow_stack.local.startup import StartupLog

FIRST_START = """\
Registry store URI not provided. Using backend store URI.
2026/12/03 17:37:29 INFO mlflow.store.db.utils: Creating initial MLflow database tables...
2026/12/03 17:37:29 INFO mlflow.store.db.utils: Updating database tables
2026/12/03 17:37:29 INFO alembic.runtime.migration: Running upgrade 451a -> 90e6, add user column
[MLflow] Security middleware enabled. Allowed hosts: localhost, localhost:*, 127.0.0.1, and 1 more.
/venv/lib/python3.11/site-packages/mlflow/server/fastapi_app.py:23: DeprecationWarning: x
  from starlette.middleware.wsgi import WSGIResponder, build_environ
2026/12/04 09:28:37 INFO: Starting gunicorn 23.0.0
2026/12/04 09:28:37 INFO: Listening at: http://127.0.0.1:5066 (19428)
2026/12/04 09:28:37 INFO: Using worker: uvicorn.workers.UvicornH11Worker
2026/12/04 09:28:37 INFO: routes built: 8 included routers built before the fork
2026/12/04 09:28:37 INFO: stores: tracking and model registry stores made before the fork
2026/12/04 09:28:37 INFO: Booting worker with pid: 19672
2026/12/04 09:28:37 INFO: worker 19672: gc thresholds 50000,20,100, 347308 objects frozen; r…
2026/12/04 09:28:37 INFO: Started server process [19672]
2026/12/04 09:28:37 WARNING: stores: not before the fork (each worker makes its own): x
2026/12/04 09:28:37 INFO: Waiting for application startup.
2026/12/04 09:28:37 INFO: Booting worker with pid: 19673
2026/12/04 09:28:37 INFO: Started server process [19673]
2026/12/04 09:28:37 INFO: Application startup complete.
2026/12/04 09:28:38 ERROR mlflow.server: something broke while starting
2026/12/04 09:28:38 INFO: Application startup complete.
2026/12/04 09:28:38 INFO: 127.0.0.1:33916 - "GET /health HTTP/1.1" 200
"""


def test_first_start_reads_as_progress(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("an earlier run's last line\n")
    follower = StartupLog(log, log.stat().st_size, workers=2)
    assert follower.poll() == []
    with log.open("a") as fh:
        fh.write(FIRST_START)
    assert follower.poll() == [
        "creating the database schema (first start only)",
        "bringing the database schema up to date",
        "migration: add user column",
        "listening on http://127.0.0.1:5066; starting workers",
        "preparing the app once for all workers",
        "opening the tracking and registry stores",
        "worker 1 of 2 starting",
        "worker 2 of 2 starting",
        "worker 1 of 2 ready",
        "error: something broke while starting",
        "worker 2 of 2 ready",
    ]
    assert follower.poll() == []


def test_a_line_is_read_once_it_is_complete(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("")
    follower = StartupLog(log, 0, workers=1)
    with log.open("a") as fh:
        fh.write("2026/12/03 17:37:29 INFO mlflow.store.db.utils: Updating data")
    assert follower.poll() == []
    with log.open("a") as fh:
        fh.write("base tables\n")
    assert follower.poll() == ["bringing the database schema up to date"]


def test_a_missing_log_is_no_progress(tmp_path: Path) -> None:
    assert StartupLog(tmp_path / "none.log", 0, workers=1).poll() == []
