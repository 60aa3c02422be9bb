"""The server's Keycloak directory over HTTPS, asked by several request threads at once."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from harness.http_server import QuietHandler, serving
from harness.tls import SslCalls, self_signed, server_context
from mlflow_stack.server.directory import KeycloakDirectory


@pytest.fixture
def https_keycloak(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(issuer, CA file) of an HTTPS stand-in for Keycloak's token and admin endpoints; user
    reads take 0.2 s, so that concurrent lookups need connections of their own."""
    cert, key = self_signed(tmp_path)

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_body(200, b'{"access_token": "service-token", "expires_in": 300}')

        def do_GET(self) -> None:
            if self.headers.get("Authorization") != "Bearer service-token":
                self.send_body(401, b"{}")
            elif self.path.endswith("/role-mappings/realm/composite"):
                self.send_body(200, b'[{"name": "mlflow-user"}]')
            else:
                time.sleep(0.2)
                user = self.path.rsplit("/", 1)[-1]
                self.send_body(200, json.dumps({"id": user, "enabled": True,
                                                "email": f"{user}@example.test",
                                                "emailVerified": True}).encode())

    with serving(Handler, tls=server_context(cert, key)) as url:
        yield f"{url}/realms/r", cert


def test_concurrent_lookups_share_one_tls_context_safely(
        https_keycloak: tuple[str, Path], ssl_calls: SslCalls) -> None:
    issuer, ca = https_keycloak
    directory = KeycloakDirectory(issuer, "mlflow", "secret", verify=str(ca))
    users = [f"user-{i}" for i in range(4)]
    with ThreadPoolExecutor(len(users)) as pool:
        accounts = list(pool.map(directory.account, users))
    assert [a.email for a in accounts] == [f"{u}@example.test" for u in users]
    assert all(a.enabled and a.realm_roles == ("mlflow-user",) for a in accounts)
    assert len(ssl_calls.wraps) >= 2, ssl_calls  # several connections were opened at once
    # Set once when the directory was made; httpcore's per-connection re-set (which races
    # the other threads' handshakes) never reaches OpenSSL.
    assert ssl_calls.alpn == [["http/1.1"]]
