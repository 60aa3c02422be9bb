"""Bounds on what one connection or request may cost the server (issue 11 §3, items 1 and 2).

- **Request bodies** (``RequestBodyLimit``). MLflow's Flask app, behind mlflow-oidc-auth's
  WSGI adapter, reads a whole body and then parses it: one authenticated 50 MB JSON body took
  the server tree from ~1.0 to ~1.6 GiB (pod limit 1 GiB). Bodies above
  ``MLFLOW_STACK_MAX_REQUEST_BODY`` bytes (``server.max_request_body``) are refused with 413 —
  before anything is read when ``Content-Length`` says so, as soon as the limit is passed when
  the body is chunked. Artifact uploads (``PUT .../mlflow-artifacts/artifacts/...``) stay
  unbounded: they are streamed to the store (server/patches/flask_pool.py,
  server/s3_repository.py) or a temp file, never held in memory.
- **Idle bodies.** A request whose body stops arriving for
  ``MLFLOW_STACK_BODY_IDLE_TIMEOUT_SECONDS`` (default 60, nginx's ``client_body_timeout``) is
  answered 408 and its connection closed. Only gaps count: a slow but steady upload goes on.
- **Request heads** (``patch_header_timeout``). uvicorn has no header timeout: 200 connections
  that never finished their request head stayed open indefinitely. A connection that has not
  completed a request head within ``MLFLOW_STACK_HEADER_TIMEOUT_SECONDS`` (default 10) of
  opening, or of its previous response, is closed. uvicorn's protocol classes are patched at
  import of the app, which every worker does before it accepts a connection; the patch checks
  the shape it relies on and refuses to start on another one.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

from mlflow_stack.server.asgi import ASGIApp, Message, Receive, Scope, Send, send_error
from mlflow_stack.server.guards import UpstreamChanged, require

MAX_BODY_ENV = "MLFLOW_STACK_MAX_REQUEST_BODY"  # bytes, set by build_server_launch
HEADER_TIMEOUT_ENV = "MLFLOW_STACK_HEADER_TIMEOUT_SECONDS"
BODY_IDLE_TIMEOUT_ENV = "MLFLOW_STACK_BODY_IDLE_TIMEOUT_SECONDS"
DEFAULT_MAX_BODY = 16 * 2**20  # server.max_request_body's default (config/model.py says why)
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_IDLE_TIMEOUT = 60.0

# PUT .../mlflow-artifacts/artifacts/<path> (/api and /ajax-api, under any prefix a proxy adds):
# streamed to a temp file or straight to the store, never parsed, so not bounded.
UNBOUNDED_UPLOAD = "/2.0/mlflow-artifacts/artifacts/"


def is_artifact_upload(scope: Scope) -> bool:
    """An artifact upload through the server (its body is a file, not a message)."""
    return bool(scope["method"] == "PUT" and UNBOUNDED_UPLOAD in scope["path"])


def env_number(name: str, default: float) -> float:
    """A non-negative number from the environment (the default when unset or not a number)."""
    try:
        return max(0.0, float(os.environ.get(name, default)))
    except ValueError:
        return default


def body_framing(headers: list[tuple[bytes, bytes]]) -> tuple[int | None, bool]:
    """(Content-Length, chunked) of a request; HTTP/1.1 has a body only with one of them."""
    length: int | None = None
    chunked = False
    for name, value in headers:
        if name == b"content-length":
            length = int(value) if value.isdigit() else None  # the parser refuses other values
        elif name == b"transfer-encoding":
            chunked = True
    return length, chunked


class _Refused(Exception):  # control flow inside RequestBodyLimit only
    pass


class _Transfer:
    """One request's body as the app receives it: gaps timed, bytes counted (chunked only:
    a declared length is enforced by the HTTP parser), the app's own answer dropped once the
    request is refused."""

    __slots__ = ("_receive", "_send", "body_done", "idle", "limit", "received", "refusal",
                 "started", "too_large")

    def __init__(self, receive: Receive, send: Send, limit: int | None, idle: float | None,
                 too_large: str) -> None:
        self._receive, self._send = receive, send
        self.limit, self.idle, self.too_large = limit, idle, too_large
        self.received = 0
        self.body_done = self.started = False
        self.refusal: tuple[int, str, str] | None = None

    async def receive(self) -> Message:
        if self.refusal is not None:
            return {"type": "http.disconnect"}
        if self.body_done:  # e.g. waiting for a disconnect while streaming: not a body gap
            return await self._receive()
        try:
            async with asyncio.timeout(self.idle):
                message = await self._receive()
        except TimeoutError:
            self.refusal = (408, "REQUEST_TIMEOUT",
                            f"No request body data for {self.idle:g} s; the request was dropped")
            raise _Refused from None
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.body_done = True
        if self.limit is not None:
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                self.refusal = (413, "REQUEST_LIMIT_EXCEEDED", self.too_large)
                raise _Refused
        return message

    async def send(self, message: Message) -> None:
        if self.refusal is not None:  # the app's own answer to the refusal: ours goes instead
            return
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


class RequestBodyLimit:
    """413 for bodies over ``limit`` bytes (artifact uploads excepted), 408 for bodies that stop
    arriving for ``idle_timeout`` seconds. Pure ASGI; a request without a body (most reads)
    only costs a look at its headers."""

    def __init__(self, app: ASGIApp, limit: int, idle_timeout: float) -> None:
        self.app = app
        self.limit = limit
        self.idle_timeout = idle_timeout or None
        self.too_large = (f"Request body larger than {limit} bytes (server.max_request_body); "
                          "artifacts go through the artifact API, which has no such bound")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length, chunked = body_framing(scope["headers"])
        if not chunked and not length:  # no body to bound or wait for
            await self.app(scope, receive, send)
            return
        limit: int | None = self.limit
        if is_artifact_upload(scope):
            limit = None
        elif length is not None and length > self.limit:
            await send_error(send, 413, "REQUEST_LIMIT_EXCEEDED", self.too_large, close=True)
            return
        transfer = _Transfer(receive, send, limit if chunked else None, self.idle_timeout,
                             self.too_large)
        try:
            await self.app(scope, transfer.receive, transfer.send)
        except Exception:  # whatever the app turned _Refused into
            if transfer.refusal is None:
                raise
        if transfer.refusal is not None and not transfer.started:
            await send_error(send, *transfer.refusal, close=True)


# --------------------------------------------------------------------------------------------
# request-head timeout (uvicorn protocol classes)

_TIMER = "_mlflow_stack_head_timer"


def _require(cls: type, name: str, params: list[str]) -> Callable[..., Any]:
    # The class's own method: a patch of an inherited one would change the parent class.
    if name not in vars(cls):
        raise UpstreamChanged(f"{cls.__module__}.{cls.__name__}.{name} is not defined on the "
                              f"class: the request-head timeout in {__name__} must be revisited")
    return require(cls, name, params)


def _patch_protocol(cls: type, seconds: float,
                    head_pending: Callable[[Any], bool]) -> None:
    """Close a connection of ``cls`` that waits longer than ``seconds`` for a complete request
    head, counted from the connection or from its previous response. ``head_pending(protocol)``
    says whether it is still waiting."""
    if getattr(cls, "_mlflow_stack_head_timeout", None) is not None:
        return
    made = _require(cls, "connection_made", ["self", "transport"])
    lost = _require(cls, "connection_lost", ["self", "exc"])
    done = _require(cls, "on_response_complete", ["self"])

    def expire(self: Any) -> None:
        setattr(self, _TIMER, None)
        transport = self.transport
        if transport is not None and not transport.is_closing() and head_pending(self):
            transport.close()

    def arm(self: Any) -> None:
        timer = getattr(self, _TIMER, None)
        if timer is not None:
            timer.cancel()
        setattr(self, _TIMER, self.loop.call_later(seconds, expire, self))

    def connection_made(self: Any, transport: Any) -> None:
        made(self, transport)
        arm(self)

    def connection_lost(self: Any, exc: Exception | None) -> None:
        timer = getattr(self, _TIMER, None)
        if timer is not None:
            timer.cancel()
            setattr(self, _TIMER, None)
        lost(self, exc)

    def on_response_complete(self: Any) -> None:
        arm(self)  # before: a pipelined request handled inside counts against the new timer
        done(self)

    cls.connection_made = connection_made  # type: ignore[attr-defined]
    cls.connection_lost = connection_lost  # type: ignore[attr-defined]
    cls.on_response_complete = on_response_complete  # type: ignore[attr-defined]
    cls._mlflow_stack_head_timeout = seconds  # type: ignore[attr-defined]


def patch_header_timeout(seconds: float) -> None:
    """Apply the request-head timeout to uvicorn's h11 protocol, the one the server always runs
    (build_server_launch passes ``--http h11``). 0 leaves uvicorn as is."""
    if seconds <= 0:
        return
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    # h11 stays IDLE on the client's side until a whole request head has been parsed, and goes
    # back to IDLE only when a request/response cycle is finished.
    _patch_protocol(H11Protocol, seconds,
                    lambda self: self.conn.their_state is h11.IDLE)
