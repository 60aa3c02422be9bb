"""Shareable TLS client contexts: the ALPN list is set once, whatever httpcore does after."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from harness.http_server import QuietHandler, serving
from harness.tls import SslCalls, self_signed, server_context
from mlflow_stack.server.tls import SteadyAlpnContext, shareable, verifying


@pytest.fixture
def pki(tmp_path: Path) -> tuple[Path, Path]:
    return self_signed(tmp_path)


def test_the_same_list_again_does_not_reach_openssl(ssl_calls: SslCalls) -> None:
    ctx = shareable(ssl.create_default_context())
    assert isinstance(ctx, SteadyAlpnContext)
    ctx.set_alpn_protocols(["http/1.1"])
    ctx.set_alpn_protocols(["http/1.1"])
    assert ssl_calls.alpn == [["http/1.1"]]  # shareable's own
    ctx.set_alpn_protocols(["h2", "http/1.1"])  # a different list is still applied
    assert ssl_calls.alpn == [["http/1.1"], ["h2", "http/1.1"]]


def test_other_context_classes_are_left_as_they_are() -> None:
    class Other(ssl.SSLContext):
        pass

    ctx = Other(ssl.PROTOCOL_TLS_CLIENT)
    assert type(shareable(ctx)) is Other


def test_verifying_keeps_what_httpx_would_trust(pki: tuple[Path, Path]) -> None:
    cert, _ = pki
    assert verifying(False).verify_mode == ssl.CERT_NONE
    assert verifying(True).verify_mode == ssl.CERT_REQUIRED
    assert verifying(True).cert_store_stats()["x509_ca"] > 0  # httpx's default bundle
    from_file = verifying(str(cert))
    assert from_file.verify_mode == ssl.CERT_REQUIRED and from_file.check_hostname
    assert from_file.cert_store_stats()["x509_ca"] == 1
    assert all(isinstance(c, SteadyAlpnContext) for c in (verifying(False), from_file))


@pytest.fixture
def slow_https(pki: tuple[Path, Path]) -> Iterator[str]:
    """An HTTPS server whose answers take 0.3 s and name the negotiated ALPN protocol."""

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            time.sleep(0.3)
            conn = self.connection
            alpn = conn.selected_alpn_protocol() if isinstance(conn, ssl.SSLSocket) else None
            self.send_body(200, str(alpn).encode(), "text/plain")

    with serving(Handler, tls=server_context(*pki)) as url:
        yield url


def test_threads_sharing_a_client_open_connections_without_resetting_alpn(
        pki: tuple[Path, Path], slow_https: str, ssl_calls: SslCalls) -> None:
    with httpx.Client(verify=verifying(str(pki[0])), timeout=10) as http, \
            ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: http.get(f"{slow_https}/"), range(4)))
    assert [a.text for a in answers] == ["http/1.1"] * 4  # the list still goes out
    assert len(ssl_calls.wraps) >= 2, ssl_calls  # overlapping requests: several connections
    assert ssl_calls.alpn == [["http/1.1"]]  # set by verifying, never per connection


def test_handshakes_survive_a_thread_setting_the_list_meanwhile(pki: tuple[Path, Path]) -> None:
    """The race itself: threads handshaking on one context while another sets the same ALPN
    list (what httpcore does per connection). With a plain SSLContext this garbles ClientHellos
    ("tlsv1 alert decode error": 23-31 of these 4 seconds' handshakes, measured); with a
    shareable one, none."""
    server = server_context(*pki)
    listener = socket.create_server(("127.0.0.1", 0), backlog=256)
    port = listener.getsockname()[1]
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                server.wrap_socket(conn, server_side=True).close()
            except (ssl.SSLError, OSError):
                conn.close()

    client = shareable(ssl.create_default_context(cafile=str(pki[0])))
    failures: list[str] = []
    handshakes: list[int] = []  # appended to by several threads (atomic, unlike +=)
    deadline = time.monotonic() + 4.0

    def reset_alpn() -> None:
        while time.monotonic() < deadline:
            client.set_alpn_protocols(["http/1.1"])

    def connect(_: int) -> None:
        while time.monotonic() < deadline:
            with socket.create_connection(("127.0.0.1", port)) as raw:
                try:
                    client.wrap_socket(raw, server_hostname="127.0.0.1").close()
                    handshakes.append(1)
                except ssl.SSLError as exc:
                    failures.append(str(exc))

    threads = [threading.Thread(target=accept, daemon=True),
               threading.Thread(target=reset_alpn, daemon=True)]
    for t in threads:
        t.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(connect, range(4)))
    finally:
        stop.set()
        listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone does not
        listener.close()
        for t in threads:
            t.join(10)
    assert failures == []
    assert len(handshakes) > 100  # the race was given its chance
