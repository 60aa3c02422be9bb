"""The pieces of issue 11 §3's hardening on their own: Host parsing, artifact path checks, the
auth-failure log limit, and the request bounds in a real uvicorn (each HTTP protocol it can use).
The same behaviour against a whole SSO server: test_hardening_live.py."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.ports import free_port, wait_for_port
from harness.waits import wait_until
from mlflow_stack.server.artifact_paths import internal_markers, path_problem
from mlflow_stack.server.hardening import AuthFailureLogLimit, is_auth_failure, valid_host

# --------------------------------------------------------------------------------------------
# Host


@pytest.mark.parametrize("host", [
    "127.0.0.1", "127.0.0.1:5000", "localhost", "localhost:65535", "mlflow.example.com",
    "mlflow.example.com.", "mlflow.mlflow.svc.cluster.local:5000", "[::1]", "[::1]:8080",
    "[fe80::1:2]:1", "my_host",
])
def test_well_formed_hosts(host: str) -> None:
    assert valid_host(host.encode())


@pytest.mark.parametrize("host", [
    "127.0.0.1:5000@evil.example", "127.0.0.1:evil", "127.0.0.1:", "127.0.0.1:0",
    "127.0.0.1:65536", "127.0.0.1:05000", "127.0.0.1:5000:1", "user@host", "evil.example/x",
    "a b", "", ":5000", "[::1", "[::g]", "[127.0.0.1]", "-bad.example", "bad-.example",
    "a..b", "host\x00", "h\u00f6st", "1" * 64,
])
def test_malformed_hosts(host: str) -> None:
    assert not valid_host(host.encode("utf-8"))


# --------------------------------------------------------------------------------------------
# artifact paths


@pytest.mark.parametrize("path", [
    "model/MLmodel", "a/b/c.txt", "eval_2024-01-01T10:00:00.json", "dir/", "x..y", ".hidden",
    "1/abc/artifacts/file with spaces.txt", "caf%C3%A9.txt",
])
def test_ordinary_artifact_paths_pass(path: str) -> None:
    assert not path_problem(path)


@pytest.mark.parametrize("path", [
    "..\\..\\etc\\passwd", "x/..\\..\\y", "..%5c..%5cx", "a%255c..%255cb", "../x", "a/../../b",
    "a/%2e%2e/b", "/etc/passwd", "%2Fetc%2Fpasswd", "s3://bucket/artifacts/x", "s3:/bucket/x",
    "file:///etc/passwd", "C:\\win", "C:/win", "a#b", "a\x00b", "a%00b", "a\nb",
    "%" + "25" * 11 + "2e",  # decoded more often than MLflow does (10)
    "1/abc/artifacts//tmp/x", "1/abc/artifacts/%2Ftmp%2Fx",  # absolute after the run's root
])
def test_bad_artifact_paths_are_caught(path: str) -> None:
    assert path_problem(path)


def test_internal_markers_name_the_store_and_temp_dir() -> None:
    s3 = internal_markers({"_MLFLOW_SERVER_ARTIFACT_DESTINATION": "s3://bucket-1/artifacts",
                           "TMPDIR": "/state/run/tmp"})
    assert {"s3://bucket-1/artifacts", "s3://bucket-1", "/bucket-1/", "/state/run/tmp"} <= set(s3)
    local = internal_markers({"_MLFLOW_SERVER_ARTIFACT_DESTINATION": "/state/artifacts"})
    assert "/state/artifacts" in local


# --------------------------------------------------------------------------------------------
# auth-failure log lines


def _record(name: str, msg: str, args: tuple[object, ...] = ()) -> logging.LogRecord:
    return logging.LogRecord(name, logging.INFO, __file__, 1, msg, args, None)


def test_auth_failures_are_recognised() -> None:
    access = '%s - "%s %s HTTP/%s" %d'
    assert is_auth_failure(_record("uvicorn.access", access, ("c", "GET", "/api", "1.1", 401)))
    assert not is_auth_failure(_record("uvicorn.access", access, ("c", "GET", "/", "1.1", 200)))
    assert is_auth_failure(_record("uvicorn", "Authentication failed for /api/x: Invalid token"))
    assert is_auth_failure(_record("uvicorn", "Token validation failed with bad signature "
                                              "for provider %s: %s", ("default", "x")))
    assert is_auth_failure(_record("uvicorn", "Bearer auth error: %s: %s", ("E", "x")))
    assert not is_auth_failure(_record("uvicorn", "Started server process [%d]", (1,)))


def test_log_limit_lets_a_burst_through_and_summarises_the_rest() -> None:
    now = [0.0]
    summaries: list[tuple[int, float]] = []
    limit = AuthFailureLogLimit(60.0, 3, lambda n, s: summaries.append((n, s)),
                                clock=lambda: now[0])
    failure = _record("uvicorn", "Bearer auth error: %s", ("x",))
    other = _record("uvicorn", "Application startup complete.")
    try:
        passed = [limit.filter(failure) for _ in range(100)]
        assert passed == [True] * 3 + [False] * 97
        assert limit.filter(other)  # other lines are never held back
        limit.flush()
        assert summaries == [(97, 60.0)]
        now[0] = 61.0  # the next interval starts with a fresh burst
        assert [limit.filter(failure) for _ in range(4)] == [True, True, True, False]
        limit.flush()
        assert summaries[-1] == (1, 60.0)
        limit.flush()
        assert len(summaries) == 2  # nothing suppressed: no summary line
    finally:
        if limit._timer is not None:
            limit._timer.cancel()


def test_log_limit_writes_the_summary_by_itself_at_the_end_of_the_interval() -> None:
    summaries: list[int] = []
    limit = AuthFailureLogLimit(0.3, 1, lambda n, s: summaries.append(n))
    failure = _record("uvicorn", "Bearer auth error: %s", ("x",))
    for _ in range(5):
        limit.filter(failure)
    wait_until(lambda: summaries, timeout=5, interval=0.05)  # the limit's own timer writes it
    assert summaries == [4]


# --------------------------------------------------------------------------------------------
# request bounds in a real uvicorn

APP = textwrap.dedent("""
    from mlflow_stack.server import request_limits

    request_limits.patch_header_timeout(1.0)

    async def echo(scope, receive, send):
        if scope["type"] != "http":
            return
        size, more = 0, True
        while more:
            message = await receive()
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        body = str(size).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    app = request_limits.RequestBodyLimit(echo, limit=1000, idle_timeout=1.0)
""")


@pytest.fixture
def uvicorn_port(tmp_path: Path) -> Iterator[int]:
    (tmp_path / "limited_app.py").write_text(APP)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])])}
    log = tmp_path / "uvicorn.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "limited_app:app", "--host", "127.0.0.1",
             "--port", str(port), "--http", "h11", "--no-access-log"],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        assert wait_for_port(port, 30), log.read_text()
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def _exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
            if b"\r\n\r\n" in received and not received.startswith(b"HTTP/1.1 100"):
                head, _, body = received.partition(b"\r\n\r\n")
                length = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")]
                if length and len(body) >= length[0]:
                    break
        return received


def _closed_after(sock: socket.socket, limit: float) -> float | None:
    start = time.monotonic()
    sock.settimeout(limit)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return None
    except OSError:
        pass
    return time.monotonic() - start


def test_request_head_timeout(uvicorn_port: int) -> None:
    with socket.create_connection(("127.0.0.1", uvicorn_port)) as idle, \
            socket.create_connection(("127.0.0.1", uvicorn_port)) as partial:
        partial.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-")
        assert (_closed_after(idle, 10) or 99) < 5
        assert (_closed_after(partial, 10) or 99) < 5
    ok = _exchange(uvicorn_port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
    assert ok.startswith(b"HTTP/1.1 200") and ok.endswith(b"3")


def test_body_bounds(uvicorn_port: int) -> None:
    declared = _exchange(uvicorn_port,
                         b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
    assert declared.startswith(b"HTTP/1.1 413") and b"REQUEST_LIMIT_EXCEEDED" in declared
    chunks = b"".join(b"64\r\n" + b"c" * 100 + b"\r\n" for _ in range(11)) + b"0\r\n\r\n"
    chunked = _exchange(uvicorn_port, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
                        b"chunked\r\n\r\n" + chunks)
    assert chunked.startswith(b"HTTP/1.1 413")
    start = time.monotonic()
    stalled = _exchange(uvicorn_port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab",
                        timeout=10)
    assert stalled.startswith(b"HTTP/1.1 408") and 0.8 < time.monotonic() - start < 5
    fits = _exchange(uvicorn_port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
                     + b"f" * 1000)
    assert fits.startswith(b"HTTP/1.1 200") and fits.endswith(b"1000")
