"""The Flask mount of the server without SSO (server/wsgi_bridge.py): every response reaches the
client as MLflow's own adapter delivers it (status, headers, body, errors), small ones without a
single thread hand-off, big ones streamed in bounded pieces; the installed app uses it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, Response, request, stream_with_context
from mlflow.server.fastapi_app import _EfficientWSGIMiddleware

from harness.loops import run_alone
from mlflow_stack.server import wsgi_bridge
from mlflow_stack.server.wsgi_bridge import LeanWSGIMiddleware

LIMIT = 64 * 1024
closed: list[str] = []


def _flask() -> Flask:
    app = Flask("bridge-probe")

    @app.get("/small")
    def small() -> Any:
        return {"answer": 42, "unicode": "ü"}

    @app.post("/echo")
    def echo() -> Any:
        body = request.get_data()
        return Response(body[::-1], status=201, headers={"X-Len": str(len(body))},
                        mimetype="application/octet-stream")

    @app.get("/big")
    def big() -> Any:
        def chunks() -> Iterator[bytes]:
            try:
                for n in range(40):
                    yield bytes([n]) * 10_000
            finally:
                closed.append("big")

        return Response(stream_with_context(chunks()), mimetype="application/octet-stream")

    @app.get("/empty")
    def empty() -> Any:
        return Response(status=204)

    @app.get("/boom")
    def boom() -> Any:
        raise RuntimeError("boom")

    return app


async def _call(app: Any, method: str, path: str, body: bytes = b"",
                parts: int = 1) -> tuple[list[dict[str, Any]], Exception | None]:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "headers": [(b"host", b"testserver")],
             "client": ("127.0.0.1", 5000), "server": ("testserver", 80)}
    pieces = [body[i::parts] for i in range(parts)] if parts > 1 else [body]
    incoming = [{"type": "http.request", "body": piece, "more_body": i < len(pieces) - 1}
                for i, piece in enumerate(pieces)]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    try:
        await app(scope, receive, send)
    except Exception as error:  # compared between the two adapters
        return sent, error
    return sent, None



def _delivered(sent: list[dict[str, Any]]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    assert sent[0]["type"] == "http.response.start"
    assert all(m["type"] == "http.response.body" for m in sent[1:])
    assert not sent[-1].get("more_body", False)
    return sent[0]["status"], sent[0]["headers"], b"".join(m["body"] for m in sent[1:])


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "/small", b""), ("POST", "/echo", bytes(range(256)) * 300), ("GET", "/big", b""),
    ("GET", "/empty", b""), ("GET", "/missing", b"")])
def test_responses_are_delivered_as_mlflow_s_adapter_delivers_them(
        method: str, path: str, body: bytes) -> None:
    flask_app = _flask()
    theirs, error = run_alone(_call(_EfficientWSGIMiddleware(flask_app), method, path, body))
    assert error is None
    ours, error = run_alone(_call(LeanWSGIMiddleware(flask_app, LIMIT), method, path, body,
                                    parts=3))
    assert error is None
    assert _delivered(ours) == _delivered(theirs)


def test_an_error_in_the_app_is_flask_s_500_both_ways() -> None:
    flask_app = _flask()
    theirs, _ = run_alone(_call(_EfficientWSGIMiddleware(flask_app), "GET", "/boom"))
    ours, _ = run_alone(_call(LeanWSGIMiddleware(flask_app, LIMIT), "GET", "/boom"))
    assert _delivered(ours)[0] == _delivered(theirs)[0] == 500


def test_small_responses_need_no_hand_off_and_big_ones_stream_bounded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    handed: list[Any] = []
    real = asyncio.run_coroutine_threadsafe

    def counted(coro: Any, loop: Any) -> Any:
        handed.append(coro)
        return real(coro, loop)

    monkeypatch.setattr(asyncio, "run_coroutine_threadsafe", counted)
    sent, _ = run_alone(_call(LeanWSGIMiddleware(_flask(), LIMIT), "GET", "/small"))
    assert handed == [] and len(sent) == 2  # start, then the whole body at once
    closed.clear()
    sent, _ = run_alone(_call(LeanWSGIMiddleware(_flask(), LIMIT), "GET", "/big"))
    assert len(handed) > 10  # past the limit: chunk by chunk, as it is made
    assert max(len(m.get("body", b"")) for m in sent) <= LIMIT + 10_000
    assert _delivered(sent)[2] == b"".join(bytes([n]) * 10_000 for n in range(40))
    assert closed == ["big"]  # the response iterable was closed


def test_websockets_are_refused_and_other_scopes_ignored() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {}

    bridge = LeanWSGIMiddleware(_flask())
    run_alone(bridge({"type": "websocket", "path": "/"}, receive, send))
    run_alone(bridge({"type": "lifespan"}, receive, send))
    assert sent == [{"type": "websocket.close", "code": 1000}]


def test_the_server_without_sso_serves_flask_through_it() -> None:
    from mlflow_stack.server import plain_app

    mounts = [r for r in plain_app.app.router.routes
              if isinstance(getattr(r, "app", None), LeanWSGIMiddleware)
              and not getattr(r, "flask_first", False)]  # patches/flask_first.py's copy
    assert len(mounts) == 1
    assert wsgi_bridge.install(plain_app.app) is False  # nothing of MLflow's left to replace
