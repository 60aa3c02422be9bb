"""Tracking requests go straight to Flask (speed; no check changes).

MLflow's Flask app is mounted after mlflow-oidc-auth's ~45 routers (hundreds of routes), so
each tracking request was matched against all of them first. A copy of the Flask mount is put
first that claims a request only when no other route would fully match it — exactly when the
router would have reached the mount anyway. Worked out once per (method, path) and remembered.
The server without SSO gets the same for MLflow's own FastAPI app (``apply_mlflow``: its
routers cost ~0.1 ms of every Flask request, ~5 % of a metric-history call).
tests/server/patches/test_flask_first.py.
"""

from __future__ import annotations

import threading
from typing import Any

from mlflow_stack.server.guards import Shape
from mlflow_stack.server.log import server_log

FLASK_MOUNT = Shape("mlflow_oidc_auth.middleware", "AuthAwareWSGIMiddleware", ("flask_app",))
MOUNT_MATCHES = Shape("starlette.routing", "Mount.matches", ("self", "scope"))
UPSTREAM = (FLASK_MOUNT, MOUNT_MATCHES)


def apply(app: Any) -> None:
    """On the SSO app: the mount of mlflow-oidc-auth's Flask adapter."""
    put_first(app.router, FLASK_MOUNT.require())


def apply_mlflow(app: Any) -> None:
    """On MLflow's own FastAPI app (no SSO), once wsgi_bridge has put its adapter on the
    mount."""
    from mlflow_stack.server.wsgi_bridge import LeanWSGIMiddleware

    put_first(app.router, LeanWSGIMiddleware)


def put_first(router: Any, adapter: type) -> bool:
    """A first route that claims what would reach the one mount serving ``adapter`` anyway;
    False (routes unchanged, a warning) for another layout. Idempotent."""
    MOUNT_MATCHES.require()
    from starlette.routing import Host, Match, Mount
    from starlette.types import Scope

    if router.routes and getattr(router.routes[0], "flask_first", False):
        return True
    mounts = [r for r in router.routes
              if isinstance(r, Mount) and isinstance(r.app, adapter)]
    if len(mounts) != 1 or any(isinstance(r, Host) for r in router.routes):
        server_log().warning("Unexpected route layout; Flask paths are matched the usual way")
        return False
    flask = mounts[0]

    class FlaskFirst(Mount):
        flask_first = True

        def __init__(self) -> None:
            super().__init__(flask.path, app=flask.app, name=flask.name)
            self._flask_only: dict[tuple[str, str, str], bool] = {}
            self._routes_seen = len(router.routes)
            self._lock = threading.Lock()

        def _no_other_route(self, scope: Scope) -> bool:
            for route in list(router.routes):
                if route is self or route is flask:
                    continue
                if route.matches(scope)[0] == Match.FULL:
                    return False
            return True

        def matches(self, scope: Scope) -> tuple[Match, Scope]:
            if scope["type"] != "http":
                return Match.NONE, {}
            # Everything route matching depends on here (no Host routes: checked above).
            key = (scope["method"], scope.get("root_path", ""), scope["path"])
            with self._lock:
                if len(router.routes) != self._routes_seen or len(self._flask_only) > 10_000:
                    self._flask_only.clear()  # routes changed, or bounded memory
                    self._routes_seen = len(router.routes)
                flask_only = self._flask_only.get(key)
            if flask_only is None:
                flask_only = self._no_other_route(scope)
                with self._lock:
                    self._flask_only[key] = flask_only
            if not flask_only:
                return Match.NONE, {}
            return super().matches(scope)

    router.routes.insert(0, FlaskFirst())
    return True
