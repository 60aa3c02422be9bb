"""Flask on a thread pool (speed; no check changes).

mlflow-oidc-auth mounts MLflow's Flask app through asgiref's ``WsgiToAsgi``, which runs every
request of a worker on *one* shared thread, one after the other; plain ``mlflow server`` runs
them on a pool. Here the same adapter (same body spooling, same auth context injection) runs on
a pool of ``MLFLOW_STACK_FLASK_THREADS`` (default 40, anyio's default that plain MLflow gets).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mlflow_stack.server.guards import Shape, UpstreamChanged
from mlflow_stack.server.tunables import seconds

RUN_WSGI_APP = Shape("asgiref.wsgi", "WsgiToAsgiInstance.run_wsgi_app", ("self", "body"))
ADAPTER = Shape("asgiref.wsgi", "WsgiToAsgi", ("wsgi_application", "duplicate_header_limit"))
INSTANCE = Shape("asgiref.wsgi", "WsgiToAsgiInstance",
                 ("wsgi_application", "duplicate_header_limit"))
# AuthAwareWSGIMiddleware builds its adapter per request from this module-level name.
MOUNT_ADAPTER = Shape("mlflow_oidc_auth.middleware.auth_aware_wsgi_middleware", "WSGIMiddleware",
                      ("wsgi_application", "duplicate_header_limit"))
UPSTREAM = (RUN_WSGI_APP, ADAPTER, INSTANCE, MOUNT_ADAPTER)


def apply() -> None:
    for shape in (RUN_WSGI_APP, ADAPTER, INSTANCE):
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

    class PooledInstance(WsgiToAsgiInstance):
        run_wsgi_app = SyncToAsync(func, thread_sensitive=False, executor=pool)

    class PooledWsgiToAsgi(WsgiToAsgi):
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            instance = PooledInstance(self.wsgi_application,  # type: ignore[no-untyped-call]
                                      self.duplicate_header_limit)
            await instance(scope, receive, send)

    MOUNT_ADAPTER.owner().WSGIMiddleware = PooledWsgiToAsgi
