"""Idle layers step aside (speed; no check changes).

Proxy-header handling with no trusted proxy and workspace context with workspaces off do
nothing, yet each costs a BaseHTTPMiddleware layer (a task group and a streamed copy of the
response) per request; here they pass the request straight on. With a trusted proxy, or
workspaces on, their own code runs unchanged.
"""

from __future__ import annotations

from typing import Any

from mlflow_stack.server.guards import Shape, wrapping

_CALL = ("self", "scope", "receive", "send")
PROXY_HEADERS = Shape("mlflow_oidc_auth.middleware", "ProxyHeadersMiddleware.__call__", _CALL)
WORKSPACE_CONTEXT = Shape("mlflow_oidc_auth.middleware", "WorkspaceContextMiddleware.__call__",
                          _CALL)
UPSTREAM = (PROXY_HEADERS, WORKSPACE_CONTEXT)


def apply() -> None:
    proxy_call = PROXY_HEADERS.require()
    workspace_call = WORKSPACE_CONTEXT.require()
    from mlflow_oidc_auth.config import config

    @wrapping(proxy_call)
    async def proxy_headers(self: Any, scope: Any, receive: Any, send: Any) -> None:
        if getattr(self, "_trusted_networks", None) == []:  # no proxy trusted: reads nothing
            await self.app(scope, receive, send)
        else:
            await proxy_call(self, scope, receive, send)

    @wrapping(workspace_call)
    async def workspace_context(self: Any, scope: Any, receive: Any, send: Any) -> None:
        if not config.MLFLOW_ENABLE_WORKSPACES:  # read per request, as its dispatch does
            await self.app(scope, receive, send)
        else:
            await workspace_call(self, scope, receive, send)

    PROXY_HEADERS.owner().__call__ = proxy_headers
    WORKSPACE_CONTEXT.owner().__call__ = workspace_context
