"""MLflow's own app: its two function middlewares step aside when they have nothing to do.

MLflow's FastAPI app (the server without SSO) adds two ``@app.middleware("http")`` layers:
gateway timing, which only acts on ``/gateway/`` paths, and workspace context, which with
workspaces off only turns a workspace header into MLflow's "not enabled" error. Each is a
``BaseHTTPMiddleware`` (a task group and a streamed copy of every response) on every request.
Here each runs exactly as MLflow wrote it when it could act (a gateway path; workspaces on or a
workspace header sent) and passes the request straight on otherwise. Flask's own
``before_request`` resolves the workspace for Flask's routes either way, as it does when the
middleware has not. The SSO app has the same for mlflow-oidc-auth's layers
(server/patches/idle_middleware.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

GATEWAY = "gateway_timing_middleware"
WORKSPACE = "workspace_context_middleware"
FROM = "mlflow.server.fastapi_app"


class StepAside:
    """``dispatch`` as a BaseHTTPMiddleware for the requests ``needed`` says it acts on; every
    other request goes straight to the app."""

    def __init__(self, app: Any, dispatch: Callable[..., Any],
                 needed: Callable[[dict[str, Any]], bool]) -> None:
        from starlette.middleware.base import BaseHTTPMiddleware

        self.app = app
        self.full = BaseHTTPMiddleware(app, dispatch=dispatch)
        self.needed = needed

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not self.needed(scope):
            await self.app(scope, receive, send)
        else:
            await self.full(scope, receive, send)


def _gateway_path(prefix: str) -> Callable[[dict[str, Any]], bool]:
    from mlflow.server.asgi_utils import get_routed_asgi_path
    from starlette.requests import Request

    def needed(scope: dict[str, Any]) -> bool:
        return bool(get_routed_asgi_path(Request(scope)).startswith(prefix))

    return needed


def _workspace_work() -> Callable[[dict[str, Any]], bool]:
    from mlflow import environment_variables
    from mlflow.server.workspace_helpers import WORKSPACE_HEADER_NAME

    enabled: Any = environment_variables.MLFLOW_ENABLE_WORKSPACES  # MLflow is untyped

    header = WORKSPACE_HEADER_NAME.lower().encode()

    def needed(scope: dict[str, Any]) -> bool:
        if enabled.get():  # read per request, as MLflow's middleware does
            return True
        return any(name == header and value.strip() for name, value in scope["headers"])

    return needed


def install(app: Any) -> list[str]:
    """Make MLflow's two function middlewares on ``app`` step aside when idle (before the app
    has served: its middleware stack is built on the first request). The ones changed."""
    from mlflow.server import handlers
    from starlette.middleware import Middleware
    from starlette.middleware.base import BaseHTTPMiddleware

    if app.middleware_stack is not None:
        raise RuntimeError("the app has already built its middleware; install before serving")
    conditions = {
        GATEWAY: lambda: _gateway_path(handlers._add_static_prefix("/gateway/")),
        WORKSPACE: _workspace_work,
    }
    changed = []
    for index, entry in enumerate(app.user_middleware):
        dispatch = entry.kwargs.get("dispatch") if entry.cls is BaseHTTPMiddleware else None
        name = getattr(dispatch, "__name__", None)
        if dispatch is None or dispatch.__module__ != FROM or name not in conditions:
            continue
        app.user_middleware[index] = Middleware(StepAside, dispatch=dispatch,
                                                needed=conditions[name]())
        changed.append(name)
    return changed
