"""Smaller holes of the SSO app closed (issue 11 §3), found by attacking a live platform.

``install(app)`` runs once per worker, from ``sso_app`` after the app is built and before it
serves; each piece checks the upstream shape it relies on and refuses to start on another one.
Middleware order, outermost first (Starlette runs the last added outermost):

1. ``StrictHost`` — a Host header that is not exactly a host name, IPv4 address or bracketed
   IPv6 address with an optional port 1-65535 is refused with 400. MLflow's own check matches
   patterns with fnmatch, so ``127.0.0.1:*`` let ``127.0.0.1:5000@evil.example`` and
   ``127.0.0.1:evil`` through. Outermost: nothing else looks at a request with such a Host.
2. ``RequestBodyLimit`` (request_limits.py) — 413 for oversized bodies before they are read,
   408 for bodies that stop arriving; before authentication, so an unauthenticated flood of
   large bodies costs no token check either.
3. MLflow's host allow-list (patches/host_validation.py), then mlflow-oidc-auth's stack (proxy
   headers, session, authentication, permissions).
4. ``ArtifactGuard`` (artifact_paths.py) — innermost, so callers are authenticated first: bad
   artifact paths 400, no store internals in artifact error bodies.

5. ``AdminsOnlyListings`` — innermost as well (it needs the authenticated caller): the account
   and group listings for administrators only.

Besides middleware: uvicorn's request-head timeout (request_limits.py) and at most a few
auth-failure log lines per interval (``AuthFailureLogLimit``).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from mlflow_stack.server import artifact_paths, request_limits
from mlflow_stack.server.asgi import ASGIApp, Receive, Scope, Send, routed_path, send_error
from mlflow_stack.server.guards import UpstreamChanged

AUTH_LOG_INTERVAL_ENV = "MLFLOW_STACK_AUTH_LOG_INTERVAL_SECONDS"
DEFAULT_AUTH_LOG_INTERVAL = 60.0
AUTH_LOG_BURST = 10  # auth-failure lines let through per interval and process

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
_HOST_RE = re.compile(rf"(?:(?P<name>{_LABEL}(?:\.{_LABEL})*\.?)|\[(?P<ip6>[0-9A-Fa-f:.]+)\])"
                      r"(?::(?P<port>[1-9][0-9]{0,4}))?")


def valid_host(value: bytes) -> bool:
    """A Host header value of reg-name / IPv4 / [IPv6], optional ``:port`` (1-65535), no more."""
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return False
    match = _HOST_RE.fullmatch(text)
    if match is None:
        return False
    name, ip6, port = match.group("name", "ip6", "port")
    if port is not None and int(port) > 65535:
        return False
    if name is not None:
        return len(name) <= 254
    try:
        ipaddress.IPv6Address(ip6)
    except ValueError:
        return False
    return True


class StrictHost:
    """400 for a malformed or repeated Host header (a missing one is MLflow's check's to refuse:
    HTTP/1.0 probes of /health send none)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._seen: set[bytes] = set()  # well-formed values seen: the same few on every request

    def _valid(self, host: bytes) -> bool:
        if host in self._seen:
            return True
        if not valid_host(host):
            return False
        if len(self._seen) >= 256:
            self._seen.clear()
        self._seen.add(host)
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            hosts = [value for name, value in scope["headers"] if name == b"host"]
            if len(hosts) > 1 or (hosts and not self._valid(hosts[0])):
                if scope["type"] == "http":
                    await send_error(send, 400, "INVALID_PARAMETER_VALUE", "Invalid Host header",
                                     close=True)
                else:
                    await send({"type": "websocket.close", "code": 1008})
                return
        await self.app(scope, receive, send)


# --------------------------------------------------------------------------------------------
# account and group listings


ADMINS_ONLY = ("Listing accounts and groups is for administrators. To grant access to a "
               "resource you manage, name the user or group: POST "
               "/api/2.0/mlflow/permissions/users/<user>/experiments/<id>")


def listing_routes() -> frozenset[str]:
    """mlflow-oidc-auth's routes that list every account (``?service=true``: every service
    account) or every group, in their /api and /ajax-api spellings; checked to exist."""
    from fastapi.routing import APIRoute
    from mlflow_oidc_auth.routers import get_all_routers
    from mlflow_oidc_auth.routers._prefix import (
        GROUP_PERMISSIONS_ROUTER_PREFIX,
        USERS_ROUTER_PREFIX,
        to_ajax_path,
    )

    paths = [USERS_ROUTER_PREFIX, GROUP_PERMISSIONS_ROUTER_PREFIX]
    served = {r.path for router in get_all_routers() for r in router.routes
              if isinstance(r, APIRoute) and "GET" in (r.methods or ())}
    if not set(paths) <= served:
        raise UpstreamChanged(
            f"mlflow-oidc-auth no longer serves GET {paths}: revisit {__name__}.AdminsOnly")
    return frozenset(paths + [p for p in map(to_ajax_path, paths) if p])


class AdminsOnlyListings:
    """Any signed-in user could list every account (their e-mail addresses) and every group:
    GET /api/2.0/mlflow/users and /api/2.0/mlflow/permissions/groups (and /ajax-api/...) now
    answer 403 to everyone but administrators. Granting stays with whoever manages a resource,
    by user or group name. Innermost: mlflow-oidc-auth's AuthMiddleware has set
    ``request.state.is_admin`` (and answered 401 without credentials) by then."""

    def __init__(self, app: ASGIApp, paths: frozenset[str]) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["method"] == "GET"
                and scope["path"].endswith(("/users", "/groups"))
                and routed_path(scope) in self.paths
                and scope.get("state", {}).get("is_admin") is not True):
            await send_error(send, 403, "PERMISSION_DENIED", ADMINS_ONLY)
            return
        await self.app(scope, receive, send)


# --------------------------------------------------------------------------------------------
# auth-failure log lines

# mlflow-oidc-auth 10.1.3's messages (record.msg, before formatting) for a refused credential.
AUTH_FAILURE_MESSAGES = (
    "Authentication failed for ", "Authentication denied for ", "Token validation failed",
    "Unexpected error during token validation", "Bearer auth error", "Basic auth error",
    "Refusing a bearer token", "Rejecting a token",
)
ACCESS_LOGGER = "uvicorn.access"


def is_auth_failure(record: logging.LogRecord) -> bool:
    if record.name == ACCESS_LOGGER:  # uvicorn's access line: args[4] is the status code
        args = record.args
        return isinstance(args, tuple) and len(args) >= 5 and args[4] == 401
    return isinstance(record.msg, str) and record.msg.startswith(AUTH_FAILURE_MESSAGES)


class AuthFailureLogLimit(logging.Filter):
    """Lets ``burst`` auth-failure lines per ``interval`` seconds through; of the rest, one
    summary line per interval says how many were left out. Each forged token cost ~430 bytes
    of server log (four lines), so an unauthenticated caller grew it without bound."""

    def __init__(self, interval: float, burst: int, summary: Callable[[int, float], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval = interval
        self.burst = burst
        self._summary = summary
        self._clock = clock
        self._window_start = -float("inf")
        self._passed = 0
        self._suppressed = 0
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if not is_auth_failure(record):
            return True
        with self._lock:
            now = self._clock()
            if now - self._window_start >= self.interval:
                self._window_start, self._passed = now, 0
            if self._passed < self.burst:
                self._passed += 1
                return True
            self._suppressed += 1
            if self._timer is None:  # report at the end of this window
                delay = max(0.0, self._window_start + self.interval - now)
                self._timer = threading.Timer(delay, self.flush)
                self._timer.daemon = True
                self._timer.start()
        return False

    def flush(self) -> None:
        """Write the summary line of the suppressed lines (if any)."""
        with self._lock:
            count, self._suppressed, self._timer = self._suppressed, 0, None
        if count:
            self._summary(count, self.interval)


def limit_auth_failure_logs(interval: float) -> AuthFailureLogLimit:
    """Install the limit on mlflow-oidc-auth's logger (ours too: sso_app logs through it) and
    on uvicorn's access log."""
    from mlflow_oidc_auth.logger import get_logger

    oidc_logger = get_logger()

    def summary(count: int, seconds: float) -> None:
        oidc_logger.warning("%d further authentication failures in the last %g s (at most %d "
                            "lines per interval are logged)", count, seconds, AUTH_LOG_BURST)

    limit = AuthFailureLogLimit(interval, AUTH_LOG_BURST, summary)
    for target in (oidc_logger, logging.getLogger(ACCESS_LOGGER)):
        for old in [f for f in target.filters if isinstance(f, AuthFailureLogLimit)]:
            target.removeFilter(old)
        target.addFilter(limit)
    return limit


# --------------------------------------------------------------------------------------------


def install(app: Any, *, sso: bool = True) -> None:
    """Everything above, on mlflow-oidc-auth's app, or (``sso=False``) the parts that do not
    need it on MLflow's own app — before it serves its first request."""
    from starlette.middleware import Middleware

    if getattr(app, "middleware_stack", None) is not None:
        raise RuntimeError("hardening.install must run before the app serves a request")
    env = request_limits.env_number
    request_limits.patch_header_timeout(env(request_limits.HEADER_TIMEOUT_ENV,
                                            request_limits.DEFAULT_HEADER_TIMEOUT))
    if sso:
        app.user_middleware.append(Middleware(AdminsOnlyListings, paths=listing_routes()))
        interval = env(AUTH_LOG_INTERVAL_ENV, DEFAULT_AUTH_LOG_INTERVAL)
        if interval > 0:
            limit_auth_failure_logs(interval)
    app.user_middleware.append(Middleware(artifact_paths.ArtifactGuard))  # innermost
    limit = int(env(request_limits.MAX_BODY_ENV, request_limits.DEFAULT_MAX_BODY))
    app.add_middleware(request_limits.RequestBodyLimit, limit=limit or
                       request_limits.DEFAULT_MAX_BODY,
                       idle_timeout=env(request_limits.BODY_IDLE_TIMEOUT_ENV,
                                        request_limits.DEFAULT_BODY_IDLE_TIMEOUT))
    app.add_middleware(StrictHost)  # outermost
