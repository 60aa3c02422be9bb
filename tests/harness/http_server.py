"""Small HTTP servers on 127.0.0.1 for tests: fake token endpoints, traps, proxies.

Real sockets (not mocked transports), so other processes (shell helpers, the MLflow server) can
reach them too.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that keeps its access log off the test output."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def send_body(self, status: int, body: bytes,
                  content_type: str | None = "application/json") -> None:
        """A whole response with a Content-Length (no body on HEAD)."""
        self.send_response(status)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler], *, port: int = 0,
            tls: ssl.SSLContext | None = None, name: str | None = None) -> Iterator[str]:
    """Serve `handler` on 127.0.0.1 (`port` 0: a free one) in a thread, one thread a request;
    yields the base URL (https:// with `tls`). Stopped and its socket closed on exit."""
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
