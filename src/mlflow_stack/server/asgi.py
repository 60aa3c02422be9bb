"""The ASGI shapes the server runtime's pure middlewares share, and their one error answer."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def send_error(send: Send, status: int, error_code: str, message: str,
                     close: bool = False) -> None:
    """An MLflow-style JSON error (``error_code``, ``message``)."""
    body = json.dumps({"error_code": error_code, "message": message}).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    if close:  # uvicorn closes after the response instead of draining the rest of the body
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def routed_path(scope: Scope) -> str:
    """The path the router dispatches on: the request path without the app's root path (what
    Starlette's router and mlflow-oidc-auth's route checks use)."""
    path: str = scope.get("path", "") or "/"
    root: str = scope.get("root_path", "") or ""
    if root and (path == root or path.startswith(root.rstrip("/") + "/")):
        path = path[len(root.rstrip("/")):]
    return path or "/"
