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
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mlflow_stack.server.guards import Shape, UpstreamChanged
from mlflow_stack.server.request_limits import is_artifact_upload
from mlflow_stack.server.streams import PulledReader
from mlflow_stack.server.tunables import seconds

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


def apply() -> None:
    for shape in (RUN_WSGI_APP, ADAPTER, INSTANCE, CALL):
        shape.require()
    mounted = MOUNT_ADAPTER.require()
    from asgiref.sync import AsyncToSync, SyncToAsync
    from asgiref.wsgi import WsgiToAsgi, WsgiToAsgiInstance

    if not (isinstance(mounted, type) and issubclass(mounted, WsgiToAsgi)):
        raise UpstreamChanged(f"{MOUNT_ADAPTER.module}.WSGIMiddleware is {mounted!r}, not "
                              "asgiref's WsgiToAsgi: the Flask pool patch must be revisited")
    threads = int(seconds("MLFLOW_STACK_FLASK_THREADS", 40.0)) or 40
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mlflow-stack-flask")
    # The undecorated method: asgiref wraps it in a thread-sensitive SyncToAsync (one thread).
    wrapped = vars(WsgiToAsgiInstance)["run_wsgi_app"]
    func = wrapped.func if isinstance(wrapped, SyncToAsync) else wrapped

    class PooledInstance(WsgiToAsgiInstance):
        run_wsgi_app = SyncToAsync(func, thread_sensitive=False, executor=pool)

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http" or not is_artifact_upload(scope):
                await super().__call__(scope, receive, send)  # type: ignore[no-untyped-call]
                return
            # What the adapter's __call__ does, without spooling the body first.
            self.scope = scope
            self.sync_send = AsyncToSync(send)
            await self.run_wsgi_app(ReceivedBody(receive))

    class PooledWsgiToAsgi(WsgiToAsgi):
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            instance = PooledInstance(self.wsgi_application,  # type: ignore[no-untyped-call]
                                      self.duplicate_header_limit)
            await instance(scope, receive, send)

    MOUNT_ADAPTER.owner().WSGIMiddleware = PooledWsgiToAsgi
