"""Prometheus scrapes ``/metrics`` by pod IP; no other route opens to a wrong Host.

MLflow's Host header check (DNS-rebinding protection) lets only /health and /version through
with a Host it does not allow. Prometheus scrapes a pod at its IP (``Host: 10.244.0.7:5000``),
which no allow-list can name in advance, so ``/metrics`` answered 403. Exactly ``GET`` or
``HEAD /metrics`` (the request target byte for byte, no query) now skips both of MLflow's Host
checks, on the SSO app and on the plain one:

- the ASGI middleware (``HostValidationMiddleware``: ours from ``host_validation`` on the SSO
  app, MLflow's own on the plain one) runs behind ``ScrapeExempt``, which alone decides what a
  scrape is, from the raw request target: ``/metrics/x``, ``/metrics?x``, ``//metrics`` and
  percent-encoded spellings (``/%6detrics``) still get 403;
- the Flask app's ``before_request`` check (``init_security_middleware``'s ``validate_host``)
  lets the same method and WSGI path through: only what the ASGI check let pass reaches it with
  a wrong Host, and that path routes to the exporter alone.

``StrictHost`` (hardening) still refuses a malformed Host first. ``/metrics`` needs no login
with SSO on either: mlflow-oidc-auth lists it as unprotected (Prometheus sends no token) and
this keeps it so. What it shows (request counts and latencies per route and status, the MLflow
version) is limited by network: on Kubernetes the NetworkPolicy admits only the monitoring
namespace the config names (``kubernetes.metrics_namespace``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from mlflow_stack.server.asgi import ASGIApp, Receive, Scope, Send
from mlflow_stack.server.guards import Shape, UpstreamChanged

# The same upstream Host check host_validation installs on the SSO app.
from mlflow_stack.server.patches.host_validation import (
    ALLOWED_HOSTS,
    HOST_VALIDATION,
    SECURITY_OFF,
)

METRICS_PATH = "/metrics"  # prometheus_flask_exporter's default, which MLflow keeps
SCRAPE_METHODS = ("GET", "HEAD")

# The Flask app and its Host check: a before_request function named validate_host defined in
# init_security_middleware, registered only in a server process (mlflow.server's
# is_running_as_server, a value that is None elsewhere, so read in apply rather than a Shape).
FLASK_APP = Shape("mlflow.server", "app")
FLASK_SECURITY = Shape("mlflow.server.security", "init_security_middleware", ("app",))
UPSTREAM = (HOST_VALIDATION, ALLOWED_HOSTS, SECURITY_OFF, FLASK_APP, FLASK_SECURITY)

_FLASK_CHECK = "init_security_middleware.<locals>.validate_host"


def is_scrape(scope: Scope) -> bool:
    """An HTTP ``GET``/``HEAD`` whose request target is exactly ``/metrics``: no query string (a
    bare trailing ``?`` leaves it empty: the same resource), no extra slash, no percent-encoding,
    no absolute form, no root path."""
    return (scope["type"] == "http"
            and scope.get("method") in SCRAPE_METHODS
            and scope.get("raw_path") == METRICS_PATH.encode()
            and scope.get("path") == METRICS_PATH
            and not scope.get("query_string")
            and not scope.get("root_path"))


class ScrapeExempt:
    """``checked`` (MLflow's Host check middleware, built with the same arguments) for every
    request but a scrape, which goes straight to ``app``."""

    def __init__(self, app: ASGIApp, checked: Callable[..., ASGIApp],
                 allowed_hosts: list[str]) -> None:
        self.app = app
        self.checked = checked(app, allowed_hosts=allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if is_scrape(scope):
            await self.app(scope, receive, send)
        else:
            await self.checked(scope, receive, send)


def flask_is_scrape(environ: dict[str, Any]) -> bool:
    """The WSGI view of a scrape (Werkzeug's ``request.path`` folds ``//metrics`` into
    ``/metrics``, so the environ is read instead; the raw target is not in it)."""
    return (environ.get("REQUEST_METHOD") in SCRAPE_METHODS
            and environ.get("PATH_INFO") == METRICS_PATH
            and not environ.get("SCRIPT_NAME")
            and not environ.get("QUERY_STRING"))


def _exempting(check: Callable[[], Any]) -> Callable[[], Any]:
    import flask

    @functools.wraps(check)  # keeps validate_host's name: a second apply finds it wrapped
    def validate_host() -> Any:
        if flask_is_scrape(flask.request.environ):
            return None
        return check()

    validate_host.scrape_exempt = True  # type: ignore[attr-defined]
    return validate_host


def _wrap_asgi_checks(app: Any, middleware: type) -> int:
    from starlette.middleware import Middleware

    found = 0
    for index, entry in enumerate(app.user_middleware):
        if entry.cls is middleware:
            # (app, allowed_hosts), as HOST_VALIDATION guards: by keyword or by position
            hosts = entry.kwargs.get("allowed_hosts", entry.args[0] if entry.args else None)
            app.user_middleware[index] = Middleware(ScrapeExempt, checked=middleware,
                                                    allowed_hosts=hosts)
            found += 1
        elif entry.cls is ScrapeExempt:
            found += 1
    return found


def _wrap_flask_check(flask_app: Any) -> int:
    checks = flask_app.before_request_funcs.get(None, [])
    found = 0
    for index, check in enumerate(checks):
        if (getattr(check, "__qualname__", None) == _FLASK_CHECK
                and getattr(check, "__module__", None) == FLASK_SECURITY.module):
            if not getattr(check, "scrape_exempt", False):
                checks[index] = _exempting(check)
            found += 1
    return found


def apply(app: Any) -> None:
    middleware = HOST_VALIDATION.require()
    allowed_hosts = ALLOWED_HOSTS.require()
    security_off = SECURITY_OFF.require()
    flask_app = FLASK_APP.require()
    FLASK_SECURITY.require()
    # Gone or renamed: expect the check (a missing one is then reported, not assumed away).
    flask_checks = getattr(FLASK_APP.owner(), "is_running_as_server", True)
    if security_off.get() == "true":
        return
    hosts = allowed_hosts()
    if not hosts or "*" in hosts:  # no Host check at all: nothing to exempt from
        return
    # Both checks must be found where they are expected: a reshaped upstream would otherwise
    # keep answering scrapes 403 with nothing at start-up saying why.
    if not _wrap_asgi_checks(app, middleware):
        raise UpstreamChanged(f"{HOST_VALIDATION.module}.{HOST_VALIDATION.path} is not among the "
                              f"app's middleware: revisit {__name__} for this version")
    if not _wrap_flask_check(flask_app) and flask_checks:
        raise UpstreamChanged(f"{FLASK_SECURITY.module}.{FLASK_SECURITY.path} no longer "
                              f"registers validate_host on the Flask app: revisit {__name__} "
                              "for this version")
