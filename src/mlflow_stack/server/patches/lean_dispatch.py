"""mlflow-oidc-auth's authentication and permission middlewares without BaseHTTPMiddleware's
machinery when they pass a request on untouched (speed; the same decisions).

Both are Starlette ``BaseHTTPMiddleware``s: every request runs the app in a task of its own
and copies the response through a memory stream into a streaming response, whatever
``dispatch`` decides. On an SSO worker answering metric history after idle (the way users
call it) that machinery was ~10 % of the worker's samples. Yet ``AuthMiddleware.dispatch``
either answers by itself (401, redirect) or returns ``call_next``'s response as it is, and the
permission middleware does the same for every route it has no validator for (MLflow's Flask
routes: the API and the UI); it filters or rewrites responses only on FastAPI routes that
have one (gateway, OTLP, jobs, assistant, MCP).

Here ``dispatch`` runs with a ``call_next`` that calls the app directly, so the response goes
straight out; a response of dispatch's own is sent as before. The request is Starlette's
``_CachedRequest`` as BaseHTTPMiddleware makes it, and if dispatch read the body the app gets
it replayed exactly as BaseHTTPMiddleware replays it. The permission middleware takes this
path only where it has no validator; elsewhere (and for anything but HTTP) both run as
upstream wrote them. Should a dispatch ever return something other than what ``call_next``
gave it, after the app has answered, that is an error (``RuntimeError``), never a second
answer: the two dispatch functions are pinned by source digest (``mirrors.changed``), and
another mlflow-oidc-auth keeps BaseHTTPMiddleware, with a warning.
tests/server/patches/test_lean_dispatch.py.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from mlflow_stack.server.guards import Shape, UpstreamChanged, wrapping
from mlflow_stack.server.mirrors import changed

log = logging.getLogger(__name__)

AUTH = "mlflow_oidc_auth.middleware.auth_middleware"
PERMISSION = "mlflow_oidc_auth.middleware.fastapi_permission_middleware"
AUTH_CALL = Shape(AUTH, "AuthMiddleware.__call__", ("self", "scope", "receive", "send"))
AUTH_DISPATCH = Shape(AUTH, "AuthMiddleware.dispatch", ("self", "request", "call_next"))
FIND_VALIDATOR = Shape(PERMISSION, "_find_fastapi_validator", ("path",))
ROUTED_PATH = Shape("mlflow_oidc_auth.middleware.route_path", "routed_path", ("scope",))
CACHED_REQUEST = Shape("starlette.middleware.base", "_CachedRequest",
                       ("scope", "receive", "send"))
UPSTREAM = (AUTH_CALL, AUTH_DISPATCH, FIND_VALIDATOR, ROUTED_PATH, CACHED_REQUEST)

#: "dispatch returns call_next's response untouched, or one of its own" rests on these.
PINS: dict[str, str] = {
    f"{AUTH}:AuthMiddleware.dispatch":
        "b0de7e62969dc422f10b4df3eb8f72980fa5d14e04ba7de19650634ff2165ec9",
    f"{PERMISSION}:add_fastapi_permission_middleware":
        "f72245d19e9468ac959d9d73e8418e3795d6278d5d95b893772992f2c8f3d84f",
    f"{PERMISSION}:_find_fastapi_validator":
        "772a3895f91d492d6419a92f156981646126ef8df054c843cdcfa1636dc066db",
}

Dispatch = Callable[[Any, Callable[[Any], Awaitable[Any]]], Awaitable[Any]]


class _Passed:
    """What ``call_next`` returns here: the app's response, already sent."""


PASSED = _Passed()


async def run_lean(app: Any, dispatch: Dispatch, request_type: Any, scope: Any, receive: Any,
                   send: Any) -> None:
    """``dispatch`` as BaseHTTPMiddleware runs it, the app's response sent as it comes.
    ``request_type``: Starlette's ``_CachedRequest``, looked up once by the caller."""
    request = request_type(scope, receive, send)
    called = False

    async def call_next(_request: Any) -> _Passed:
        nonlocal called
        if called:
            raise RuntimeError("call_next called twice")
        called = True
        body_read = getattr(request, "_body", None) is not None or request._stream_consumed
        await app(scope, request.wrapped_receive if body_read else receive, send)
        return PASSED

    response = await dispatch(request, call_next)
    if response is PASSED:
        return
    if called:
        raise RuntimeError("dispatch replaced a response the app had already sent")
    await response(scope, receive, send)


class LeanPermission:
    """The permission middleware: lean where it has no validator, BaseHTTPMiddleware
    elsewhere."""

    def __init__(self, app: Any, dispatch: Dispatch) -> None:
        from starlette.middleware.base import BaseHTTPMiddleware

        self.app = app
        self.dispatch = dispatch
        self.full = BaseHTTPMiddleware(app, dispatch=dispatch)
        self.find_validator = FIND_VALIDATOR.require()
        self.routed_path = ROUTED_PATH.require()
        self.request_type = CACHED_REQUEST.require()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.find_validator(self.routed_path(scope)) is None:
            await run_lean(self.app, self.dispatch, self.request_type, scope, receive, send)
        else:
            await self.full(scope, receive, send)


def install(app: Any) -> bool:
    """Both middlewares lean on ``app`` (before it has served: Starlette builds its middleware
    on the first request). False, with a warning, when a pinned function changed."""
    differs = changed(PINS)
    if differs:
        log.warning("authentication and permission middlewares: BaseHTTPMiddleware kept (these "
                    "changed since the lean path was checked: %s)", ", ".join(differs))
        return False
    if app.middleware_stack is not None:
        raise RuntimeError("the app has already built its middleware; install before serving")
    from starlette.middleware import Middleware
    from starlette.middleware.base import BaseHTTPMiddleware

    found = False
    for index, entry in enumerate(app.user_middleware):
        dispatch: Any = entry.kwargs.get("dispatch") if entry.cls is BaseHTTPMiddleware else None
        if getattr(dispatch, "__module__", None) == PERMISSION and \
                getattr(dispatch, "__name__", None) == "fastapi_permission_middleware":
            app.user_middleware[index] = Middleware(LeanPermission, dispatch=dispatch)
            found = True
    if not found and not any(entry.cls is LeanPermission for entry in app.user_middleware):
        raise UpstreamChanged("mlflow-oidc-auth's fastapi_permission_middleware is not on its "
                              "app: the lean dispatch patch must be revisited")
    owner = AUTH_CALL.owner()
    if not getattr(owner.__call__, "lean_dispatch", False):
        full_call = AUTH_CALL.require()
        request_type = CACHED_REQUEST.require()

        @wrapping(full_call)
        async def lean_call(self: Any, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await full_call(self, scope, receive, send)
            else:
                await run_lean(self.app, self.dispatch_func, request_type, scope, receive, send)

        setattr(lean_call, "lean_dispatch", True)  # noqa: B010  (a marker on a function)
        owner.__call__ = lean_call
    return True


def apply(app: Any) -> None:
    for shape in UPSTREAM:
        shape.require()
    install(app)
