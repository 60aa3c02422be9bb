"""MLflow's gateway-timing and workspace layers (server/idle_layers.py) step aside only when they
would do nothing: a gateway path is still timed, a workspace header with workspaces off still
gets MLflow's error, and every other request skips both BaseHTTPMiddleware layers."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from mlflow.server import fastapi_app
from starlette.middleware.base import BaseHTTPMiddleware

from mlflow_stack.server import idle_layers


def _app(installed: bool) -> FastAPI:
    app = FastAPI()

    @app.get("/gateway/ping")
    def gateway() -> dict[str, str]:
        return {"gateway": "yes"}

    @app.get("/api/2.0/mlflow/ping")
    def api() -> dict[str, str]:
        return {"api": "yes"}

    fastapi_app.add_fastapi_workspace_middleware(app)
    fastapi_app.add_gateway_timing_middleware(app)
    if installed:
        assert sorted(idle_layers.install(app)) == [idle_layers.GATEWAY, idle_layers.WORKSPACE]
    return app


@pytest.fixture
def dispatched(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the BaseHTTPMiddleware dispatches that ran."""
    ran: list[str] = []
    real = BaseHTTPMiddleware.__call__

    async def spy(self: Any, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            ran.append(self.dispatch_func.__name__)
        await real(self, scope, receive, send)

    monkeypatch.setattr(BaseHTTPMiddleware, "__call__", spy)
    return ran


def _answer(app: FastAPI, path: str, headers: dict[str, str] | None = None) -> tuple[Any, ...]:
    with TestClient(app) as client:
        response = client.get(path, headers=headers or {})
    return response.status_code, response.json(), \
        "x-mlflow-gateway-duration-ms" in {k.lower() for k in response.headers}


def test_requests_they_do_nothing_for_skip_both_layers(dispatched: list[str]) -> None:
    assert _answer(_app(True), "/api/2.0/mlflow/ping") == \
        _answer(_app(False), "/api/2.0/mlflow/ping")
    assert dispatched == [idle_layers.GATEWAY, idle_layers.WORKSPACE]  # MLflow's app only


def test_a_gateway_path_is_still_timed(dispatched: list[str]) -> None:
    theirs = _answer(_app(False), "/gateway/ping")
    dispatched.clear()
    assert _answer(_app(True), "/gateway/ping") == theirs
    assert theirs[2] is True  # the timing header is there
    assert dispatched == [idle_layers.GATEWAY]


def test_a_workspace_header_without_workspaces_gets_mlflow_s_error(
        dispatched: list[str]) -> None:
    header = {"X-MLflow-Workspace": "team-a"}
    theirs = _answer(_app(False), "/api/2.0/mlflow/ping", header)
    assert theirs[0] >= 400 and "not enabled" in theirs[1]["message"]
    dispatched.clear()
    assert _answer(_app(True), "/api/2.0/mlflow/ping", header) == theirs
    assert idle_layers.WORKSPACE in dispatched


def test_with_workspaces_on_the_layer_always_runs(dispatched: list[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_ENABLE_WORKSPACES", "true")
    needed = idle_layers._workspace_work()
    assert needed({"headers": []}) is True
    monkeypatch.setenv("MLFLOW_ENABLE_WORKSPACES", "false")
    assert needed({"headers": []}) is False
    assert needed({"headers": [(b"x-mlflow-workspace", b" ")]}) is False  # blank: as MLflow
    assert needed({"headers": [(b"x-mlflow-workspace", b"a")]}) is True


def test_installing_after_the_app_served_is_refused() -> None:
    app = _app(False)
    with TestClient(app) as client:
        client.get("/api/2.0/mlflow/ping")
    with pytest.raises(RuntimeError, match="before serving"):
        idle_layers.install(app)


def test_the_server_without_sso_has_them_installed() -> None:
    from mlflow_stack.server import plain_app

    kinds = [m.cls for m in plain_app.app.user_middleware]
    assert kinds.count(idle_layers.StepAside) == 2
    assert BaseHTTPMiddleware not in kinds
