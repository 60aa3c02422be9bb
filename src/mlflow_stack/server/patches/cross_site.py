"""No cross-site writes on any route.

MLflow refuses state-changing requests from other origins in its own app only: a POST to
mlflow-oidc-auth's permission API with a session cookie and ``Origin: https://evil.example``
granted a permission. The same rule (MLflow's should_block_cors_request and allowed origins)
now guards every route (pure ASGI: no per-request task).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mlflow_stack.server.asgi import send_error
from mlflow_stack.server.guards import Shape

BLOCKS = Shape("mlflow.server.security_utils", "should_block_cors_request",
               ("origin", "method", "allowed_origins"))
ALLOWED_ORIGINS = Shape("mlflow.server.fastapi_security", "get_allowed_origins", ())
SECURITY_OFF = Shape("mlflow.environment_variables", "MLFLOW_SERVER_DISABLE_SECURITY_MIDDLEWARE")
UPSTREAM = (BLOCKS, ALLOWED_ORIGINS, SECURITY_OFF)


class CrossSiteWriteBlock:
    """403 for a state-changing request whose Origin MLflow's rule blocks."""

    def __init__(self, app: Any, allowed_origins: list[str],
                 blocks: Callable[[str, str, list[str] | None], bool]) -> None:
        self.app = app
        self.allowed_origins = allowed_origins
        self.blocks = blocks  # MLflow's rule, resolved once (apply)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            origin = next((v for k, v in scope["headers"] if k == b"origin"), b"")
            if origin and self.blocks(origin.decode("latin-1"), scope["method"],
                                      self.allowed_origins):
                await send_error(send, 403, "PERMISSION_DENIED", "Cross-origin request blocked")
                return
        await self.app(scope, receive, send)


def apply(app: Any) -> None:
    blocks = BLOCKS.require()
    allowed_origins = ALLOWED_ORIGINS.require()
    if SECURITY_OFF.require().get() == "true":
        return
    origins = allowed_origins()
    if "*" not in origins:  # MLflow's own rule: a wildcard opts out of server-side blocking
        app.add_middleware(CrossSiteWriteBlock, allowed_origins=origins, blocks=blocks)
