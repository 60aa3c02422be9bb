"""Flask on a thread pool (speed; no check changes).

mlflow-oidc-auth mounts MLflow's Flask app through asgiref's ``WsgiToAsgi``, which runs every
request of a worker on *one* shared thread, one after the other; plain ``mlflow server`` runs
them on a pool. Here the same adapter (same body spooling, same auth context injection) runs on
a pool of ``MLFLOW_STACK_FLASK_THREADS`` (default 40, anyio's default that plain MLflow gets).

The adapter also writes every request body to a temporary file before Flask sees it
(``SpooledTemporaryFile``, on disk past 64 KiB). For artifact uploads through the server
(``PUT .../mlflow-artifacts/artifacts/...``: files up to MLflow's 500 MiB multipart threshold
from plain clients) that was a whole copy of the file on the server's disk. Those bodies are
instead read from the connection as Flask reads them (``ReceivedBody``), and MLflow's upload
handler passes them on to the store as they arrive (server/s3_repository.py streams them to
S3). Every other body is spooled as before.

The adapter hands every response message from Flask's thread to the event loop and waits for
it (asgiref's ``AsyncToSync``): three hand-offs per API call (start, body, end), each waking
the loop and waiting for the GIL to come back, ~15 % of a small call's samples on 2 cores.
Here the thread keeps the messages (the body joined into one) and the loop sends them when the
thread is done, as server/wsgi_bridge.py does for the server without SSO; a response that
grows past ``wsgi_bridge.BUFFER_LIMIT`` (a streamed file) is handed over message by message
as before, so memory stays bounded.

Flask's call is submitted to the pool with a copy of the request's context variables
(``loop.run_in_executor``), not through asgiref's ``SyncToAsync``: its per-call machinery
(thread-sensitivity bookkeeping, copying every context variable Flask's thread set back into
the event loop's context afterwards) was 40-90 µs of a metric-history call (in process,
alternating), against the ~1.2 ms the whole call cost with SSO. Nothing on the loop's side
reads a variable Flask sets (the audit trail's per-request record is one dict, shared); the
server without SSO runs Flask the same way (anyio copies the context and does not copy it
back). The rest is asgiref's own adapter code: its environ (duplicate-header limit included),
its response rules, its body reading (whole, in a file spooled to disk past 64 KiB; that file
is only made for such a body).
"""

from __future__ import annotations

import asyncio
import contextvars
import io
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

from mlflow_stack.server.guards import Shape, UpstreamChanged
from mlflow_stack.server.request_limits import is_artifact_upload
from mlflow_stack.server.streams import PulledReader
from mlflow_stack.server.tunables import seconds
from mlflow_stack.server.wsgi_bridge import BUFFER_LIMIT

SPOOL_AT = 65536  # bytes of a request body kept in memory, as asgiref's adapter keeps them

RUN_WSGI_APP = Shape("asgiref.wsgi", "WsgiToAsgiInstance.run_wsgi_app", ("self", "body"))
ADAPTER = Shape("asgiref.wsgi", "WsgiToAsgi", ("wsgi_application", "duplicate_header_limit"))
INSTANCE = Shape("asgiref.wsgi", "WsgiToAsgiInstance",
                 ("wsgi_application", "duplicate_header_limit"))
# AuthAwareWSGIMiddleware builds its adapter per request from this module-level name.
MOUNT_ADAPTER = Shape("mlflow_oidc_auth.middleware.auth_aware_wsgi_middleware", "WSGIMiddleware",
                      ("wsgi_application", "duplicate_header_limit"))
CALL = Shape("asgiref.wsgi", "WsgiToAsgiInstance.__call__", ("self", "scope", "receive", "send"))
UPSTREAM = (RUN_WSGI_APP, ADAPTER, INSTANCE, MOUNT_ADAPTER, CALL)


class ReceivedBody(PulledReader):
    """A request body read from the ASGI connection as the WSGI app reads it:
    ``wsgi.input`` without a copy. Made in the event loop's thread; read from any thread (the
    app's, or the store's upload threads), each read running ``receive`` on that loop."""

    def __init__(self, receive: Any) -> None:
        super().__init__()
        self._loop = asyncio.get_running_loop()
        self._receive = receive
        self._last = False

    def _pull(self) -> bytes | None:
        if self._last:
            return None
        message = asyncio.run_coroutine_threadsafe(self._receive(), self._loop).result()
        if message["type"] == "http.disconnect":
            raise OSError("the client went away during the upload")
        if message["type"] != "http.request":
            raise ValueError(f"unexpected ASGI message {message['type']!r} in a request body")
        self._last = not message.get("more_body")
        return bytes(message.get("body", b""))


class KeptSends:
    """The adapter's ``sync_send``, in Flask's thread: a response is kept (start, and the body
    joined) for the loop to send; past ``limit`` bytes every message goes through ``handoff``
    (asgiref's thread-to-loop send) at once, the kept ones first."""

    def __init__(self, handoff: Callable[[dict[str, Any]], None],
                 limit: int = BUFFER_LIMIT) -> None:
        self.handoff = handoff
        self.limit = limit
        self.start: dict[str, Any] | None = None
        self.body: list[bytes] = []
        self.size = 0
        self.streaming = False

    def __call__(self, message: dict[str, Any]) -> None:
        if self.streaming:
            self.handoff(message)
        elif message["type"] == "http.response.start":
            self.start = message
        else:
            chunk = message.get("body", b"")
            if chunk:
                self.body.append(chunk)
                self.size += len(chunk)
            if self.size > self.limit:
                kept = self.kept(more_body=True)
                self.streaming, self.body = True, []
                for message in kept:
                    self.handoff(message)

    def kept(self, more_body: bool = False) -> list[dict[str, Any]]:
        """What is left for the loop to send (nothing once streaming)."""
        if self.streaming:
            return []
        start = [self.start] if self.start is not None else []
        return [*start, {"type": "http.response.body", "body": b"".join(self.body),
                         "more_body": more_body}]


async def read_body(receive: Any, in_memory: int = SPOOL_AT) -> IO[bytes]:
    """The whole request body, as asgiref's adapter reads it (the same checks): in memory up
    to ``in_memory`` bytes, in a file spooled to disk past that (asgiref's 64 KiB), so a large
    body costs each request no more memory than before. The file is positioned at its start.
    """
    chunks: list[bytes] = []
    size = 0
    spooled: IO[bytes] | None = None
    try:
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise ValueError("WSGI wrapper received a non-HTTP-request message")
            chunk = message.get("body", b"")
            if spooled is not None:
                spooled.write(chunk)
            elif chunk:
                chunks.append(chunk)
                size += len(chunk)
                if size > in_memory:
                    # Closed by the caller once Flask is done with it (or below, on error).
                    spooled = tempfile.SpooledTemporaryFile(max_size=in_memory)  # noqa: SIM115
                    spooled.writelines(chunks)
                    chunks = []
            if not message.get("more_body"):
                break
    except BaseException:
        if spooled is not None:
            spooled.close()
        raise
    if spooled is None:
        return io.BytesIO(b"".join(chunks))
    spooled.seek(0)
    return spooled


def apply() -> None:
    for shape in (RUN_WSGI_APP, ADAPTER, INSTANCE, CALL):
        shape.require()
    mounted = MOUNT_ADAPTER.require()
    from asgiref.sync import SyncToAsync
    from asgiref.wsgi import WsgiToAsgi, WsgiToAsgiInstance

    if not (isinstance(mounted, type) and issubclass(mounted, WsgiToAsgi)):
        raise UpstreamChanged(f"{MOUNT_ADAPTER.module}.WSGIMiddleware is {mounted!r}, not "
                              "asgiref's WsgiToAsgi: the Flask pool patch must be revisited")
    threads = int(seconds("MLFLOW_STACK_FLASK_THREADS", 40.0)) or 40
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mlflow-stack-flask")
    # The undecorated method: asgiref wraps it in a thread-sensitive SyncToAsync (one thread).
    wrapped = vars(WsgiToAsgiInstance)["run_wsgi_app"]
    func = wrapped.func if isinstance(wrapped, SyncToAsync) else wrapped

    def run_keeping(instance: Any, body: Any, handoff: Callable[[dict[str, Any]], None]
                    ) -> list[dict[str, Any]]:
        sends = KeptSends(handoff)
        instance.sync_send = sends
        func(instance, body)
        return sends.kept()

    class PooledInstance(WsgiToAsgiInstance):
        async def run_wsgi_app(self, body: Any) -> None:
            loop = asyncio.get_running_loop()
            send = self.loop_send

            def handoff(message: dict[str, Any]) -> None:  # from Flask's thread, streaming
                asyncio.run_coroutine_threadsafe(send(message), loop).result()

            context = contextvars.copy_context()
            kept = await loop.run_in_executor(pool, context.run, run_keeping, self, body,
                                              handoff)
            for message in kept:
                await send(message)

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                raise ValueError("WSGI wrapper received a non-HTTP scope")  # as asgiref
            self.scope = scope
            self.loop_send = send
            if is_artifact_upload(scope):  # read as Flask reads it, not spooled first
                await self.run_wsgi_app(ReceivedBody(receive))
                return
            body = await read_body(receive)
            try:
                await self.run_wsgi_app(body)
            finally:
                body.close()

    class PooledWsgiToAsgi(WsgiToAsgi):
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            instance = PooledInstance(self.wsgi_application,  # type: ignore[no-untyped-call]
                                      self.duplicate_header_limit)
            await instance(scope, receive, send)

    MOUNT_ADAPTER.owner().WSGIMiddleware = PooledWsgiToAsgi
