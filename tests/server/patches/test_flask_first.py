"""Flask's paths go straight to the Flask mount (server/patches/flask_first.py), on both apps:
every request is routed where the router would have routed it (FastAPI routes keep theirs),
the Flask ones by the first route, and putting it first again changes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.routing import Match

from mlflow_stack.server import plain_app, sso_app
from mlflow_stack.server.patches import flask_first

APPS = {"plain": plain_app.app, "sso": sso_app.app}
REQUESTS = [
    ("GET", "/ajax-api/2.0/mlflow/metrics/get-history"),
    ("POST", "/api/2.0/mlflow/runs/search"),
    ("GET", "/api/2.0/mlflow/registered-models/search"),
    ("GET", "/"),
    ("GET", "/static-files/index.html"),
    ("POST", "/v1/traces"),                              # FastAPI: OTLP ingest
    ("GET", "/ajax-api/3.0/mlflow/gateway/endpoints"),   # FastAPI where the app has it
    ("POST", "/gateway/my-endpoint/mlflow/invocations"),
    ("GET", "/health"),
    ("GET", "/metrics"),
    ("GET", "/oidc/ui"),
    ("DELETE", "/api/2.0/mlflow/experiments/delete"),
]


def _scope(method: str, path: str) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "root_path": "", "headers": [],
            "query_string": b""}


def _routed(routes: list[Any], method: str, path: str) -> Any:
    """The route the router picks: the first full match (or the first partial one)."""
    partial = None
    for route in routes:
        match, _ = route.matches(_scope(method, path))
        if match == Match.FULL:
            return route
        if match == Match.PARTIAL and partial is None:
            partial = route
    return partial


@pytest.mark.parametrize("name", sorted(APPS))
def test_every_request_is_routed_where_it_was(name: str) -> None:
    routes = APPS[name].router.routes
    first = routes[0]
    assert getattr(first, "flask_first", False), name
    without = [r for r in routes if r is not first]
    flask_claimed = 0
    for method, path in REQUESTS * 2:  # the second time from what the first remembered
        before = _routed(without, method, path)
        after = _routed(routes, method, path)
        if after is first:
            flask_claimed += 1
            assert before is not None and before.app is first.app, (name, method, path, before)
        else:
            assert after is before, (name, method, path, after, before)
    assert flask_claimed >= 10, name  # the API and UI paths


@pytest.mark.parametrize("name", sorted(APPS))
def test_putting_it_first_again_changes_nothing(name: str) -> None:
    routes = list(APPS[name].router.routes)
    adapter = type(routes[0].app)
    assert flask_first.put_first(APPS[name].router, adapter)
    assert APPS[name].router.routes == routes
