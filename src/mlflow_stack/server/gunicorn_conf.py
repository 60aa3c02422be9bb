"""How the server's workers run: gunicorn imports the app once, then forks them.

``mlflow server`` uses ``--gunicorn-opts "-c python:mlflow_stack.server.gunicorn_conf"``
(launch/command.py). uvicorn's own ``--workers`` spawns fresh interpreters that each import
MLflow, mlflow-oidc-auth and their dependencies (~180 MiB USS apiece) one after another; here the
master imports the app (``preload_app``) and forks the workers, which share those pages
copy-on-write. The workers are uvicorn's, on h11 (the request-head timeout of
server/request_limits.py patches its protocol), so requests are served exactly as before.

Fork safety, checked by tests/server/test_gunicorn_conf.py and the whole suite running on it:
the master serves no requests; it closes the database connections its import made before it
forks (``when_ready``), and a worker never uses a connection another process opened
(``_guard_pools``; a shared session breaks both, e.g. psycopg's "prepared statement already
exists"). Threads do not survive a fork: the master warns if its import started any.

Garbage collection: the master freezes what its import allocated and raises the collector's
thresholds before it forks; the workers inherit both (the collector's state is process memory)
and each logs what it runs with once it is ready to serve (``post_worker_init``).

Route contexts: FastAPI builds each included router's request models and dependencies on the
first request that reaches it, in every worker (~0.4 s of CPU each; a worker's first answer
took 1-2.5 s on this 2-core machine). The master builds them before it forks
(``warm_routes``), and each worker logs that it has them.
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import threading
import weakref
from collections.abc import Iterator
from typing import Any

from mlflow_stack.server.log import quiet_known_warnings
from mlflow_stack.server.tunables import GC_THRESHOLDS

# Before the master imports the app (preload_app), which raises one of them.
quiet_known_warnings()

FORK_HAZARD = "fork hazard"
GC_LOG = "gc thresholds"
ROUTES_LOG = "routes built"
STORES_LOG = "stores"

# uvicorn's worker class for gunicorn, with the asyncio loop and h11.
worker_class = "uvicorn.workers.UvicornH11Worker"
preload_app = True
# uvicorn's default; gunicorn's is 2 s (MLflow's client and browsers reuse connections).
keepalive = 5
# A worker whose event loop has not checked in for this long is replaced. Requests run on
# threads (Flask on a pool), so only a wedged loop trips it.
timeout = 120
graceful_timeout = 30
# What MLflow's uvicorn log config did: the servers' lines on stderr and one line per request
# on stdout, in MLflow's format ("2026/12/04 09:50:00 INFO: ..."), which local/startup.py reads
# for `up`'s progress. The root logger stays as Python leaves it (gunicorn's default would
# print every library's INFO lines).
logconfig_dict: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": "WARNING", "handlers": []},
    "filters": {"orderly_stop": {"()": f"{__name__}.OrderlyStop"}},
    "formatters": {"default": {"format": "%(asctime)s %(levelname)s: %(message)s",
                               "datefmt": "%Y/%m/%d %H:%M:%S"}},
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "formatter": "default",
                   "stream": "ext://sys.stderr", "filters": ["orderly_stop"]},
        "stdout": {"class": "logging.StreamHandler", "formatter": "default",
                   "stream": "ext://sys.stdout"},
    },
    "loggers": {
        "gunicorn.error": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "gunicorn.access": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
    },
}


class OrderlyStop(logging.Filter):
    """gunicorn reports a worker that ended by SIGTERM as an ERROR, but SIGTERM only ever comes
    from the master stopping it (uvicorn re-raises the signal once it has shut down cleanly):
    an INFO line, so that every `down` does not leave errors in the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and str(record.msg).endswith("was sent SIGTERM!"):
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


# Engines used in this process, so that the master can close their connections before it forks.
_ENGINES: weakref.WeakSet[Any] = weakref.WeakSet()


def _guard_pools() -> None:
    """Before the app is imported: SQLAlchemy's recipe for pools across fork (a connection
    opened in another process is discarded at checkout, never used: two processes on one
    session corrupt both, e.g. psycopg's "prepared statement already exists"), and a note of
    every engine that connects."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from sqlalchemy.pool import Pool

    if not event.contains(Pool, "connect", _remember_pid):
        event.listen(Pool, "connect", _remember_pid)
        event.listen(Pool, "checkout", _refuse_foreign)
        event.listen(Engine, "engine_connect", _remember_engine)


def _remember_pid(dbapi_connection: Any, record: Any) -> None:
    record.info["pid"] = os.getpid()


def _refuse_foreign(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    from sqlalchemy import exc

    if record.info.get("pid") != os.getpid():
        # Forget it without closing: closing would end the other process's session.
        record.dbapi_connection = proxy.dbapi_connection = None
        raise exc.DisconnectionError("connection opened in another process")


def _remember_engine(connection: Any) -> None:
    _ENGINES.add(connection.engine)


# gunicorn reads this module before it imports the app (preload_app): the guard is in place
# for every connection the import makes.
_guard_pools()


# What every worker imports on its first requests (a worker's sys.modules after serving runs,
# metrics, artifacts, against the master's): imported once in the master instead, shared.
WARM_MODULES = (
    "anyio._backends._asyncio", "starlette.middleware.wsgi", "uvicorn.lifespan.on",
    "uvicorn.loops.asyncio", "uvicorn.protocols.websockets.auto", "mlflow.server.fastapi_app",
    "mlflow.server.artifact_router", "mlflow.server.server_info_api", "mlflow.tracing.export",
    "mlflow.tracing.processor.otel", "mlflow.store.tracking.sqlalchemy_workspace_store",
)
S3_MODULES = ("boto3", "botocore", "s3transfer", "mlflow.store.artifact.s3_artifact_repo",
              "mlflow_stack.server.s3_repository")
# Set by `mlflow server` for its server (mlflow/server/constants.py).
ARTIFACTS_DESTINATION_ENV = "_MLFLOW_SERVER_ARTIFACT_DESTINATION"


def warm(log: Any) -> None:
    """Import what the workers would each import on first use; with S3 artifacts, also load
    the S3 client's service model into boto3's default session (what MLflow's S3 repository
    creates its clients from). Nothing here connects anywhere."""
    s3 = os.environ.get(ARTIFACTS_DESTINATION_ENV, "").startswith("s3://")
    for name in WARM_MODULES + (S3_MODULES if s3 else ()):
        try:
            importlib.import_module(name)
        except ImportError as exc:  # a later MLflow may have moved it: only memory is lost
            log.warning("not preloaded (each worker imports it on first use): %s: %s", name, exc)
    if s3:
        import boto3

        # Explicit dummy keys and region: the credential chain and region lookup stay unused.
        if boto3.DEFAULT_SESSION is None:
            boto3.setup_default_session()
        session = boto3.DEFAULT_SESSION
        assert session is not None
        session.client("s3", region_name="us-east-1", aws_access_key_id="warm",
                       aws_secret_access_key="warm")


def _built(route: Any) -> bool:
    """Whether an included router has its route contexts for its current routes (FastAPI's
    private state: a FastAPI without it counts as not built, it never fails a start)."""
    version = getattr(route, "_effective_candidates_version", None)
    current = getattr(getattr(route, "original_router", None), "_get_routes_version", None)
    return version is not None and callable(current) and version == current()


def _included_routers(app: Any, build: bool) -> Iterator[tuple[Any, bool]]:
    """FastAPI's included routers in ``app`` and whether each has its route contexts (FastAPI
    builds them on the first request that reaches the router). ``build``: build them first;
    else the children of a router not built yet are not visited."""
    pending = list(getattr(getattr(app, "router", None), "routes", []))
    while pending:
        route = pending.pop()
        if callable(getattr(route, "effective_candidates", None)):
            if build:
                children = route.effective_candidates()
                route.effective_low_priority_routes()
            else:
                children = getattr(route, "_effective_candidates", [])
            built = _built(route)
            yield route, built
            if built:
                pending.extend(children)
        elif isinstance(getattr(route, "routes", None), list):  # a mount or a nested router
            pending.extend(route.routes)


def warm_routes(app: Any) -> int:
    """Build what FastAPI builds on a worker's first request: each included router's route
    contexts (its routes' request models and dependencies: ~0.4 s of CPU for MLflow's routers,
    seconds of each worker's first answer on a busy machine). Built here once, the workers
    inherit them, shared. The number of included routers; 0 for a FastAPI that builds nothing
    lazily (then only each worker's first answer is slower)."""
    return sum(1 for _ in _included_routers(app, build=True))


def routes_built(app: Any) -> tuple[int, int]:
    """(included routers with their route contexts built, included routers found)."""
    found = list(_included_routers(app, build=False))
    return sum(1 for _, built in found if built), len(found)


def warm_stores(log: Any) -> bool:
    """MLflow's tracking and model registry stores, made in the master: each worker made its
    own on its first request (engine, schema check, default experiment; ~0.2 s of CPU). The
    workers inherit them; the connections this opened are closed before the fork, like the
    app's. False, with a warning, if the database did not answer (each worker makes its own
    then, as before)."""
    try:
        from mlflow.server import handlers

        handlers._get_tracking_store()
        handlers._get_model_registry_store()
    except Exception as exc:  # the workers retry on their first request, as without this
        log.warning("%s: not before the fork (each worker makes its own): %s", STORES_LOG,
                    type(exc).__name__)
        return False
    log.info("%s: tracking and model registry stores made before the fork", STORES_LOG)
    return True


def when_ready(server: Any) -> None:
    """In the master, app imported, before the first fork: everything it allocated goes to a
    generation the collector never scans, so collections in the workers do not write to (and
    un-share) those pages."""
    warm(server.log)
    routers = warm_routes(getattr(server.app, "callable", None))  # preload_app's import
    server.log.info("%s: %d included routers built before the fork", ROUTES_LOG, routers)
    warm_stores(server.log)
    # After the warm-ups: a thread any of them (or the import) started would silently not run
    # in the workers.
    others = sorted(t.name for t in threading.enumerate() if t is not threading.main_thread())
    if others:
        server.log.warning("%s: threads running in the master before the workers fork: %s",
                           FORK_HAZARD, ", ".join(others))
    for engine in list(_ENGINES):  # the master serves nothing: no session to share
        engine.dispose()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)  # inherited by every worker forked from here


def post_worker_init(worker: Any) -> None:
    """In each worker, ready to serve: what its collector runs with and whether it has the
    route contexts the master built, from the worker itself (a line per worker in the server
    log, which tests read)."""
    built, found = routes_built(getattr(worker, "wsgi", None))
    worker.log.info("worker %d: %s %s, %d objects frozen; %s %d/%d", os.getpid(), GC_LOG,
                    ",".join(str(t) for t in gc.get_threshold()), gc.get_freeze_count(),
                    ROUTES_LOG, built, found)


def child_exit(server: Any, worker: Any) -> None:
    """A worker is gone: its live gauges leave /metrics (Prometheus multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
