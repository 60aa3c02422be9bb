"""Every route checks the Host header.

MLflow's DNS-rebinding protection (the Host header check) lives in its Flask app, which
mlflow-oidc-auth mounts under its own routes: /login, /callback, the permission UI and API
answered any Host. The same check, with MLflow's own middleware and allowed hosts, now guards
the whole app (/health stays open for probes).
"""

from __future__ import annotations

from typing import Any

from mlflow_stack.server.guards import Shape

HOST_VALIDATION = Shape("mlflow.server.fastapi_security", "HostValidationMiddleware",
                        ("app", "allowed_hosts"))
ALLOWED_HOSTS = Shape("mlflow.server.fastapi_security", "get_allowed_hosts", ())
SECURITY_OFF = Shape("mlflow.environment_variables", "MLFLOW_SERVER_DISABLE_SECURITY_MIDDLEWARE")
UPSTREAM = (HOST_VALIDATION, ALLOWED_HOSTS, SECURITY_OFF)


def apply(app: Any) -> None:
    middleware = HOST_VALIDATION.require()
    allowed_hosts = ALLOWED_HOSTS.require()
    if SECURITY_OFF.require().get() == "true":
        return
    hosts = allowed_hosts()
    if hosts and "*" not in hosts:
        app.add_middleware(middleware, allowed_hosts=hosts)
