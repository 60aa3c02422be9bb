"""Flask under mlflow-oidc-auth's mount on a pool, its response sent by the loop
(server/patches/flask_pool.py): an API answer is one start and one body message sent from the
event loop's thread, whatever the app yields; a large one streams message by message with
bounded memory; an upload body is read as Flask reads it. The app is a real WSGI app behind
the adapter mlflow-oidc-auth mounts, called as uvicorn calls it. Live: tests/server/
test_hardening_live.py (96 MiB through the SSO server without a copy)."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from harness.loops import run_alone
from mlflow_stack.server import wsgi_bridge
from mlflow_stack.server.patches import flask_pool

flask_pool.apply()
Adapter: Any = flask_pool.MOUNT_ADAPTER.owner().WSGIMiddleware
Start = Callable[[str, list[tuple[str, str]]], Any]


def _serve(app: Callable[[dict[str, Any], Start], Iterable[bytes]], body: bytes = b"",
           path: str = "/api/2.0/mlflow/experiments/get") -> list[tuple[dict[str, Any], bool]]:
    """Every message the adapter sends for one request, and whether the loop's thread sent
    it."""
    sent: list[tuple[dict[str, Any], bool]] = []

    async def main() -> None:
        loop_thread = threading.get_ident()
        pending = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            return pending.pop() if pending else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append((message, threading.get_ident() == loop_thread))

        scope = {"type": "http", "method": "PUT" if body else "GET", "path": path,
                 "root_path": "", "query_string": b"", "http_version": "1.1",
                 "headers": [(b"content-length", str(len(body)).encode())],
                 "server": ("127.0.0.1", 5000), "client": ("127.0.0.1", 40000)}
        await Adapter(app)(scope, receive, send)

    run_alone(main())
    return sent


def _chunks(*parts: bytes) -> Callable[[dict[str, Any], Start], Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: Start) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "application/json")])
        return list(parts)

    return app


def test_an_answer_is_one_start_and_one_body_sent_by_the_loop() -> None:
    sent = _serve(_chunks(b'{"a":', b"", b'"b"}'))
    assert [m["type"] for m, _ in sent] == ["http.response.start", "http.response.body"]
    assert sent[0][0]["status"] == 200
    assert (sent[1][0]["body"], sent[1][0]["more_body"]) == (b'{"a":"b"}', False)
    assert all(in_loop for _, in_loop in sent)


def test_an_empty_answer_still_starts_and_ends() -> None:
    sent = _serve(_chunks())
    assert [(m["type"], m.get("body")) for m, _ in sent] == [
        ("http.response.start", None), ("http.response.body", b"")]


def test_a_large_answer_streams_with_every_byte_in_order() -> None:
    piece = 256 * 1024
    parts = [bytes([i]) * piece for i in range(12)]  # 3 MiB, past the 1 MiB limit
    sent = _serve(_chunks(*parts))
    bodies = [m for m, _ in sent if m["type"] == "http.response.body"]
    assert b"".join(m.get("body", b"") for m in bodies) == b"".join(parts)
    assert [m.get("more_body", False) for m in bodies][-1] is False
    assert all(m["more_body"] for m in bodies[:-1])
    # Past the limit nothing more is kept: no message holds more than the limit and a piece.
    assert max(len(m.get("body", b"")) for m in bodies) <= wsgi_bridge.BUFFER_LIMIT + piece
    assert len(bodies) > 5


def test_a_failing_app_sends_nothing_and_raises() -> None:
    def app(environ: dict[str, Any], start_response: Start) -> Iterable[bytes]:
        start_response("200 OK", [])
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        _serve(app)


def _reading(got: list[bytes]) -> Callable[[dict[str, Any], Start], Iterable[bytes]]:
    """A WSGI app that reads the whole request body into ``got`` and answers ``{}``."""

    def app(environ: dict[str, Any], start_response: Start) -> Iterable[bytes]:
        got.append(environ["wsgi.input"].read())
        start_response("200 OK", [])
        return [b"{}"]

    return app


def test_an_upload_is_read_as_flask_reads_it_and_answered() -> None:
    got: list[bytes] = []
    app = _reading(got)
    path = "/api/2.0/mlflow-artifacts/artifacts/1/run/artifacts/model.bin"
    sent = _serve(app, body=b"x" * 1000, path=path)
    assert got == [b"x" * 1000]
    assert [(m["type"], m.get("body")) for m, _ in sent] == [
        ("http.response.start", None), ("http.response.body", b"{}")]


def test_kept_sends_hand_over_everything_once_past_the_limit() -> None:
    handed: list[dict[str, Any]] = []
    sends = flask_pool.KeptSends(handed.append, limit=4)
    sends({"type": "http.response.start", "status": 200, "headers": []})
    sends({"type": "http.response.body", "body": b"ab", "more_body": True})
    assert handed == []
    sends({"type": "http.response.body", "body": b"cde", "more_body": True})
    sends({"type": "http.response.body"})
    assert [m["type"] for m in handed] == ["http.response.start", "http.response.body",
                                           "http.response.body"]
    assert (handed[1]["body"], handed[1]["more_body"]) == (b"abcde", True)
    assert sends.kept() == []


def _received(*messages: dict[str, Any]) -> Callable[[], Any]:
    pending = list(messages)

    async def receive() -> dict[str, Any]:
        return pending.pop(0)

    return receive


def test_a_request_body_is_kept_in_memory_only_up_to_asgiref_s_64_kib() -> None:
    small = [{"type": "http.request", "body": b"a" * 1000, "more_body": True},
             {"type": "http.request", "body": b"b" * 1000, "more_body": False}]
    body = run_alone(flask_pool.read_body(_received(*small)))
    assert body.read() == b"a" * 1000 + b"b" * 1000
    assert not isinstance(body, tempfile.SpooledTemporaryFile)  # no file for a small body

    parts = [bytes([i]) * 20_000 for i in range(10)]  # 200 kB in ten messages
    large = [{"type": "http.request", "body": part, "more_body": i < 9}
             for i, part in enumerate(parts)]
    spooled = run_alone(flask_pool.read_body(_received(*large)))
    assert isinstance(spooled, tempfile.SpooledTemporaryFile)
    rolled: Any = spooled
    assert rolled._rolled  # on disk, as asgiref's adapter had it past 64 KiB
    assert spooled.read() == b"".join(parts)
    spooled.close()


def test_a_client_gone_mid_body_is_asgiref_s_error() -> None:
    gone: list[dict[str, Any]] = [
        {"type": "http.request", "body": b"x" * 70_000, "more_body": True},
        {"type": "http.disconnect"}]
    with pytest.raises(ValueError, match="non-HTTP-request message"):
        run_alone(flask_pool.read_body(_received(*gone)))


def test_a_large_request_body_reaches_flask_whole() -> None:
    got: list[bytes] = []
    app = _reading(got)
    body = bytes(range(256)) * 1000  # 256 kB: spooled, not an upload
    sent = _serve(app, body=body, path="/api/2.0/mlflow/runs/log-batch")
    assert got == [body]
    assert sent[0][0]["status"] == 200
