"""MLflow's Flask app under its FastAPI app without a thread hand-off per message (speed).

The server without SSO serves Flask through MLflow's ``_EfficientWSGIMiddleware`` (Starlette's
WSGI responder with a faster body join): Flask runs on a worker thread, and the response's
start and every body chunk are each handed to the event loop and waited for
(``anyio.from_thread.run``), a sender task forwarding them. On the 2-core machine that was
~10 % of a small API call's samples (waking the loop from the thread, then waiting for the
GIL to come back). Here the thread collects the response, and the loop sends it once the
thread is done: no hand-off at all for what API calls answer. A response that grows past
``BUFFER_LIMIT`` (a streamed file) switches to sending each chunk as it comes, as before, so
memory stays bounded (MLflow's event streams, the gateway's and the Assistant's, are FastAPI
routes and never pass here). The rest is as MLflow's: the whole request body read first, Starlette's
``build_environ``, websocket handshakes refused, other scopes ignored, an ``exc_info`` given to
``start_response`` raised after the response; the response iterable is also closed, as the
WSGI specification asks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

BUFFER_LIMIT = 1 << 20  # bytes a response may reach before it is streamed


class _Response:
    """One request's response, filled by the WSGI app's thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, send: Any, limit: int) -> None:
        self.loop = loop
        self.send = send
        self.limit = limit
        self.start: dict[str, Any] | None = None
        self.chunks: list[bytes] = []
        self.size = 0
        self.streaming = False
        self.exc_info: Any = None

    def start_response(self, status: str, response_headers: list[tuple[str, str]],
                       exc_info: Any = None) -> None:
        self.exc_info = exc_info
        if self.start is None:
            code, _ = status.split(" ", 1)
            self.start = {
                "type": "http.response.start",
                "status": int(code),
                "headers": [(name.strip().encode("ascii").lower(), value.strip().encode("ascii"))
                            for name, value in response_headers],
            }

    def _now(self, message: dict[str, Any]) -> None:
        asyncio.run_coroutine_threadsafe(self.send(message), self.loop).result()

    def run(self, app: Callable[..., Iterable[bytes]], environ: dict[str, Any]) -> None:
        result = app(environ, self.start_response)
        try:
            for chunk in result:
                if self.streaming:
                    self._now({"type": "http.response.body", "body": chunk, "more_body": True})
                    continue
                self.chunks.append(chunk)
                self.size += len(chunk)
                if self.size > self.limit:
                    if self.start is None:
                        raise RuntimeError("the WSGI app sent a body before start_response")
                    self.streaming = True
                    self._now(self.start)
                    self._now({"type": "http.response.body", "body": b"".join(self.chunks),
                               "more_body": True})
                    self.chunks = []
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        if self.streaming:
            self._now({"type": "http.response.body", "body": b""})


class LeanWSGIMiddleware:
    """An ASGI app serving the WSGI ``app`` (drop-in for MLflow's _EfficientWSGIMiddleware)."""

    def __init__(self, app: Callable[..., Any], limit: int = BUFFER_LIMIT) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        import anyio
        from starlette.middleware.wsgi import build_environ

        if scope["type"] != "http":
            if scope["type"] == "websocket":  # WSGI cannot serve it: refuse the handshake
                await send({"type": "websocket.close", "code": 1000})
            return
        chunks: list[bytes] = []
        more_body = True
        while more_body:
            message = await receive()
            if chunk := message.get("body", b""):
                chunks.append(chunk)
            more_body = message.get("more_body", False)
        environ = build_environ(scope, b"".join(chunks))
        del chunks
        response = _Response(asyncio.get_running_loop(), send, self.limit)
        await anyio.to_thread.run_sync(response.run, self.app, environ)
        if not response.streaming:
            if response.start is None:
                raise RuntimeError("the WSGI app returned without calling start_response")
            await send(response.start)
            await send({"type": "http.response.body", "body": b"".join(response.chunks)})
        if response.exc_info is not None:
            raise response.exc_info[0].with_traceback(response.exc_info[1],
                                                      response.exc_info[2])


def install(app: Any) -> bool:
    """Serve the Flask mount of MLflow's FastAPI ``app`` through LeanWSGIMiddleware; False
    (MLflow's adapter kept) when the mount is not where MLflow puts it."""
    from mlflow.server.fastapi_app import _EfficientWSGIMiddleware
    from starlette.routing import Mount

    mounts = [route for route in app.router.routes
              if isinstance(route, Mount) and isinstance(route.app, _EfficientWSGIMiddleware)]
    if len(mounts) != 1:
        return False
    mlflow_adapter: Any = mounts[0].app
    lean = LeanWSGIMiddleware(mlflow_adapter.app)
    mounts[0]._base_app = mounts[0].app = lean
    return True
