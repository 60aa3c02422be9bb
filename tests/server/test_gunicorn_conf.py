"""The server's workers, on a real SSO platform: one import forked into them, nothing shared that
must not be, Nagle off on every connection, and a killed worker replaced with every check intact.

Real PostgreSQL, S3 and Keycloak (the harness); the server is `mlflow-stack up`'s own.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from harness.keycloak import KeycloakServer
from harness.platforms import SsoPlatform, sso_platform
from harness.postgres import PostgresServer
from harness.s3 import S3Server
from mlflow_stack.local import process
from mlflow_stack.server import gunicorn_conf
from mlflow_stack.server.gunicorn_conf import FORK_HAZARD, GC_LOG, ROUTES_LOG, STORES_LOG
from mlflow_stack.server.tunables import GC_THRESHOLDS

pytestmark = pytest.mark.integration  # real Keycloak, PostgreSQL and S3
WORKERS = 3
SEARCH = "/api/2.0/mlflow/experiments/search"
SYS_PIDFD_GETFD = 438  # the same number on every architecture Linux has


@pytest.fixture(scope="module")
def plat(tmp_path_factory: pytest.TempPathFactory, keycloak: KeycloakServer,
         postgres_server: PostgresServer, s3_server: S3Server) -> Iterator[SsoPlatform]:
    with sso_platform(tmp_path_factory.mktemp("workers"), "workers", keycloak, postgres_server,
                      s3_server, workers=WORKERS) as p:
        yield p


def master(plat: SsoPlatform) -> psutil.Process:
    record = process.find_running(plat.state).record
    assert record is not None
    return psutil.Process(record.pid)


def workers(plat: SsoPlatform) -> list[psutil.Process]:
    return master(plat).children()


def wait_for_workers(plat: SsoPlatform, count: int, timeout: float = 120) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = workers(plat)
        if len(found) == count:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{count} workers expected, found {len(workers(plat))}")


def served_everywhere(plat: SsoPlatform, token: str) -> None:
    """Fresh connections until every worker answered; each answer checked."""
    bearer = {"Authorization": f"Bearer {token}"}
    for _ in range(12 * WORKERS):
        with httpx.Client(base_url=plat.url, timeout=30) as client:
            assert client.post(SEARCH, json={"max_results": 1}, headers=bearer).status_code == 200
            refused = client.post(SEARCH, json={"max_results": 1})
            assert refused.status_code == 401, refused.text


def test_the_app_is_imported_once_and_forked(plat: SsoPlatform) -> None:
    parent = master(plat)
    # The recorded pid is the server itself: `mlflow server` was replaced, not waited on.
    assert "gunicorn" in " ".join(parent.cmdline())
    assert not any(Path(a).name == "mlflow" for a in parent.cmdline()[:3])
    found = wait_for_workers(plat, WORKERS)
    assert {w.ppid() for w in found} == {parent.pid}
    served_everywhere(plat, plat.token())
    # Forked workers share the master's pages: spawned interpreters had USS ≈ 3/4 of RSS each.
    tree = [parent, *found]
    uss = sum(p.memory_full_info().uss for p in tree)
    rss = sum(p.memory_info().rss for p in tree)
    assert uss < 0.5 * rss, f"USS {uss >> 20} MiB of RSS {rss >> 20} MiB: pages not shared"


def test_master_holds_no_database_connection_and_starts_no_thread(plat: SsoPlatform) -> None:
    served_everywhere(plat, plat.token())
    pg = plat.postgres.port
    parent = master(plat)
    assert [c for c in parent.net_connections("tcp") if c.raddr and c.raddr.port == pg] == []
    assert any(c.raddr and c.raddr.port == pg
               for w in workers(plat) for c in w.net_connections("tcp"))
    log = plat.state.log_file.read_text(errors="replace")
    assert "Listening at:" in log
    assert FORK_HAZARD not in log
    assert "not preloaded" not in log  # every module of gunicorn_conf.WARM_MODULES exists


def _peer_socket(pid: int, fd: int) -> socket.socket:
    """A duplicate of another process's socket (pidfd_getfd), to read its options."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        dup = libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
        if dup < 0:
            raise OSError(ctypes.get_errno(), "pidfd_getfd")
        return socket.socket(fileno=dup)
    finally:
        os.close(pidfd)


def test_every_accepted_connection_has_nagle_off(plat: SsoPlatform) -> None:
    port = plat.settings.server.port
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        assert conn.recv(4096).startswith(b"HTTP/1.1 200")
        mine = conn.getsockname()[1]
        served = [(w.pid, c.fd) for w in workers(plat) for c in w.net_connections("tcp")
                  if c.raddr and c.raddr.port == mine]
        assert len(served) == 1, served
        with _peer_socket(*served[0]) as theirs:
            assert theirs.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_a_killed_worker_is_replaced_with_every_check_in_place(plat: SsoPlatform) -> None:
    parent = master(plat).pid
    victim = wait_for_workers(plat, WORKERS)[0]
    audit = plat.state.audit_log
    refusals = audit.read_text().count('"action": "request.refused"')
    os.kill(victim.pid, signal.SIGKILL)
    deadline = time.monotonic() + 120
    while victim.pid in {w.pid for w in workers(plat)} or len(workers(plat)) < WORKERS:
        assert time.monotonic() < deadline, "the killed worker was not replaced"
        time.sleep(0.2)
    assert master(plat).pid == parent
    # The new worker is forked from the same imported app: tokens checked, refusals audited.
    served_everywhere(plat, plat.token())
    assert audit.read_text().count('"action": "request.refused"') >= refusals + 12 * WORKERS


def test_every_worker_runs_with_the_tuned_collector(plat: SsoPlatform) -> None:
    # Last in the module: the worker forked after the kill above is among them. Each worker
    # reports from inside itself, once ready to serve, what its collector runs with.
    log = plat.state.log_file.read_text(errors="replace")
    expected = ",".join(str(t) for t in GC_THRESHOLDS)
    assert expected != "700,10,10"  # Python's defaults: the line must show something else
    for worker in wait_for_workers(plat, WORKERS):
        found = re.findall(rf"worker {worker.pid}: {GC_LOG} (\S+), (\d+) objects frozen", log)
        assert found, f"worker {worker.pid} logged no {GC_LOG} line"
        thresholds, frozen = found[-1]
        assert thresholds == expected
        # What the master froze before forking (MLflow and the app: hundreds of thousands).
        assert int(frozen) > 100_000, frozen
        # And FastAPI's route contexts, built by the master: the worker's first request does
        # not build them again.
        routes = re.findall(rf"worker {worker.pid}: .* {ROUTES_LOG} (\d+)/(\d+)", log)
        assert routes, f"worker {worker.pid} logged no {ROUTES_LOG}"
        built, found_routers = map(int, routes[-1])
        assert built == found_routers > 0, routes[-1]
    master_line = re.findall(rf"{ROUTES_LOG}: (\d+) included routers built before the fork", log)
    assert master_line and int(master_line[-1]) > 0, master_line
    # MLflow's stores too (the master's connections closed before the fork: tested above).
    assert f"{STORES_LOG}: tracking and model registry stores made before the fork" in log


def _small_app() -> Any:
    from fastapi import APIRouter, FastAPI

    router = APIRouter()

    @router.get("/items/{item_id}")
    def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    app = FastAPI()
    app.include_router(router, prefix="/api")
    return app


def _forbid_building(monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi import routing

    def refused(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("route contexts built while serving")

    monkeypatch.setattr(routing._IncludedRouter, "_build_effective_context", refused)


def test_route_contexts_are_built_before_the_first_request(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    app = _small_app()
    assert gunicorn_conf.routes_built(app) == (0, 1)
    assert gunicorn_conf.warm_routes(app) == 1
    assert gunicorn_conf.routes_built(app) == (1, 1)
    _forbid_building(monkeypatch)
    assert TestClient(app).get("/api/items/7").json() == {"item_id": 7}
    # Control: an app nobody warmed builds them on its first request.
    with pytest.raises(AssertionError, match="while serving"):
        TestClient(_small_app()).get("/api/items/7")


def test_the_platform_app_s_routes_are_all_warmed() -> None:
    from mlflow_stack.server.plain_app import app

    count = gunicorn_conf.warm_routes(app)
    assert count > 0
    assert gunicorn_conf.routes_built(app) == (count, count)


def test_stores_are_made_once_or_left_to_the_workers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from mlflow.server import handlers
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    monkeypatch.setattr(handlers, "_tracking_store", None)
    monkeypatch.setattr(handlers, "_model_registry_store", None)
    # Making a store also sets the process's tracking and registry URIs (MLFLOW_TRACKING_URI
    # too): kept out of the rest of the test session.
    monkeypatch.setattr(tracking_utils, "set_tracking_uri", lambda uri: None)
    monkeypatch.setattr(registry_utils, "set_registry_uri", lambda uri: None)
    log = logging.getLogger("test.gunicorn")
    # A database that cannot be opened: a warning naming no location, and nothing kept.
    (tmp_path / "a-file").write_text("")  # a file where the database's directory would be
    broken = f"sqlite:///{tmp_path}/a-file/secret-name.db"
    monkeypatch.setenv("_MLFLOW_SERVER_FILE_STORE", broken)
    monkeypatch.setenv("_MLFLOW_SERVER_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    with caplog.at_level(logging.INFO, logger="test.gunicorn"):
        assert not gunicorn_conf.warm_stores(log)
    assert "each worker makes its own" in caplog.text and "secret-name" not in caplog.text
    assert handlers._tracking_store is None
    monkeypatch.setenv("_MLFLOW_SERVER_FILE_STORE", f"sqlite:///{tmp_path}/mlflow.db")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="test.gunicorn"):
        assert gunicorn_conf.warm_stores(log)
    made: list[Any] = [handlers._tracking_store, handlers._model_registry_store]
    assert None not in made
    assert "stores made before the fork" in caplog.text
    for store in made:
        store.engine.dispose()
