"""Exactly ``GET``/``HEAD /metrics`` passes MLflow's Host checks (ASGI and Flask), nothing else.

The live servers are in tests/server/test_metrics_live.py; here the decision itself and the two
wrappers over MLflow's real middleware and Flask hook.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from flask import Flask
from mlflow.server.fastapi_security import HostValidationMiddleware
from starlette.responses import PlainTextResponse

from mlflow_stack.server.asgi import Message, Scope
from mlflow_stack.server.guards import UpstreamChanged
from mlflow_stack.server.patches import metrics_scrape
from mlflow_stack.server.patches.metrics_scrape import (
    ScrapeExempt,
    flask_is_scrape,
    is_scrape,
)

ALLOWED = ["localhost", "localhost:5000"]
POD = "10.244.0.7:5000"


def scope(raw: bytes, method: str = "GET", host: str = POD, **extra: Any) -> Scope:
    """What uvicorn's h11 protocol makes of a request target (path percent-decoded)."""
    from urllib.parse import unquote

    raw_path, _, query = raw.partition(b"?")
    return {"type": "http", "method": method, "raw_path": raw_path,
            "path": unquote(raw_path.decode("ascii")), "query_string": query, "root_path": "",
            "headers": [(b"host", host.encode())], **extra}


# Request targets that must not count as a scrape (each would reach a Host check).
NOT_SCRAPES = [b"/metrics/", b"/metrics/x", b"/metrics?x", b"/metrics?", b"//metrics",
               b"/%6detrics", b"/%6Detrics", b"/metric%73", b"/metrics%2f", b"/metrics%00",
               b"/./metrics", b"/x/../metrics", b"/METRICS", b"/metrics;x", b"/metrics#x",
               b"http://evil.example/metrics", b"/metricsx", b"/health/../metrics", b"/api"]


def test_only_the_exact_target_is_a_scrape() -> None:
    assert is_scrape(scope(b"/metrics"))
    assert is_scrape(scope(b"/metrics", "HEAD"))
    # A bare "?" leaves the query empty: uvicorn hands over the same scope as for /metrics.
    for raw in NOT_SCRAPES:
        s = scope(raw)
        if raw == b"/metrics?":
            assert is_scrape(s)
            continue
        assert not is_scrape(s), raw
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH"):
        assert not is_scrape(scope(b"/metrics", method))
    assert not is_scrape(scope(b"/metrics", type="websocket"))
    assert not is_scrape(scope(b"/metrics", root_path="/mlflow"))


def test_the_flask_view_of_a_scrape() -> None:
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/metrics", "SCRIPT_NAME": "",
               "QUERY_STRING": ""}
    assert flask_is_scrape(environ)
    assert flask_is_scrape({**environ, "REQUEST_METHOD": "HEAD"})
    for change in ({"PATH_INFO": "//metrics"}, {"PATH_INFO": "/metrics/"},
                   {"QUERY_STRING": "x"}, {"SCRIPT_NAME": "/mlflow"},
                   {"REQUEST_METHOD": "POST"}):
        assert not flask_is_scrape({**environ, **change}), change


def _served(app: Any, s: Scope) -> int:
    # A loop of its own in a thread of its own: an earlier test in the session (Playwright's
    # sync API) may leave an event loop running in this thread, and asyncio.run refuses then.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _serve(app, s)).result()


async def _serve(app: Any, s: Scope) -> int:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(s, receive, send)
    return int(sent[0]["status"])


def test_mlflow_host_middleware_is_skipped_for_a_scrape_alone() -> None:
    async def inner(s: Scope, receive: Any, send: Any) -> None:
        await PlainTextResponse("# HELP x\n")(s, receive, send)

    guarded = ScrapeExempt(inner, checked=HostValidationMiddleware, allowed_hosts=ALLOWED)
    assert _served(guarded, scope(b"/metrics")) == 200
    assert _served(guarded, scope(b"/metrics", "HEAD")) == 200
    for raw in NOT_SCRAPES:
        if raw != b"/metrics?":
            assert _served(guarded, scope(raw)) == 403, raw
    assert _served(guarded, scope(b"/metrics", "POST")) == 403
    assert _served(guarded, scope(b"/api", host="localhost:5000")) == 200
    assert _served(guarded, scope(b"/health")) == 200  # MLflow's own exemption


def _app_with_mlflow_host_check(monkeypatch: pytest.MonkeyPatch) -> FastAPI:
    monkeypatch.setenv("MLFLOW_SERVER_ALLOWED_HOSTS", ",".join(ALLOWED))
    monkeypatch.delenv("MLFLOW_SERVER_DISABLE_SECURITY_MIDDLEWARE", raising=False)
    app = FastAPI()
    app.add_middleware(HostValidationMiddleware, allowed_hosts=ALLOWED)

    @app.get("/metrics")
    @app.get("/other")
    def metrics() -> PlainTextResponse:
        return PlainTextResponse("# HELP x\n")

    return app


def test_apply_wraps_the_middleware_on_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    app = _app_with_mlflow_host_check(monkeypatch)
    metrics_scrape.apply(app)
    metrics_scrape.apply(app)  # idempotent: wrapped once
    assert [m.cls for m in app.user_middleware] == [cast(Any, ScrapeExempt)]
    client = TestClient(app, base_url=f"http://{POD}")
    assert client.get("/metrics").status_code == 200
    assert client.get("/other").status_code == 403
    assert client.get("/metrics?x=1").status_code == 403
    assert client.get("/other", headers={"Host": "localhost"}).status_code == 200


def test_apply_refuses_an_app_whose_host_check_is_elsewhere(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_SERVER_ALLOWED_HOSTS", ",".join(ALLOWED))
    monkeypatch.delenv("MLFLOW_SERVER_DISABLE_SECURITY_MIDDLEWARE", raising=False)
    with pytest.raises(UpstreamChanged, match="HostValidationMiddleware is not among"):
        metrics_scrape.apply(FastAPI())


def test_nothing_is_wrapped_without_a_host_check(monkeypatch: pytest.MonkeyPatch) -> None:
    app = FastAPI()
    monkeypatch.setenv("MLFLOW_SERVER_ALLOWED_HOSTS", "*")
    metrics_scrape.apply(app)
    monkeypatch.setenv("MLFLOW_SERVER_ALLOWED_HOSTS", "localhost")
    monkeypatch.setenv("MLFLOW_SERVER_DISABLE_SECURITY_MIDDLEWARE", "true")
    metrics_scrape.apply(app)
    assert app.user_middleware == []


def test_flask_host_check_lets_the_scrape_alone_through(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.server.security import init_security_middleware

    monkeypatch.setenv("MLFLOW_SERVER_ALLOWED_HOSTS", ",".join(ALLOWED))
    flask_app = Flask(__name__)
    init_security_middleware(flask_app)

    @flask_app.route("/metrics")
    @flask_app.route("/other", endpoint="other")
    def metrics() -> str:
        return "# HELP x\n"

    client = flask_app.test_client()
    assert client.get("/metrics", headers={"Host": POD}).status_code == 403  # upstream's check
    assert metrics_scrape._wrap_flask_check(flask_app) == 1
    assert metrics_scrape._wrap_flask_check(flask_app) == 1  # found again, not wrapped twice
    assert client.get("/metrics", headers={"Host": POD}).status_code == 200
    assert client.head("/metrics", headers={"Host": POD}).status_code == 200
    for target in ("/other", "/metrics?x"):
        assert client.get(target, headers={"Host": POD}).status_code == 403, target
    # Werkzeug routes //metrics to /metrics (request.path folds the slashes): the hook must not.
    double = client.get("/", environ_overrides={"PATH_INFO": "//metrics"}, headers={"Host": POD})
    assert double.status_code == 403
    assert client.post("/metrics", headers={"Host": POD}).status_code == 403
    assert client.get("/other", headers={"Host": "localhost"}).status_code == 200
