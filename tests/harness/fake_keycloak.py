"""A fake Keycloak token endpoint for unit tests: httpx transport or a real loopback HTTP server.

Tokens are JWT-shaped (unsigned) with `iat` from the given clock, so the clock-skew check and the
user name display work on them. Every grant is counted.
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import httpx

from .http_server import QuietHandler, serving

TOKEN_URL = "https://kc.example.test/realms/r/protocol/openid-connect/token"


def fake_jwt(claims: dict[str, Any]) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    return f"{b64(b'{}')}.{b64(json.dumps(claims).encode())}.sig"


@dataclass
class FakeKeycloak:
    clock: Callable[[], float] = time.time
    lifespan: int = 30
    refresh_lifespan: int = 1800
    users: dict[str, str] = field(default_factory=lambda: {"alice": "alice-pw-1"})
    client_secret: str | None = "client-secret-1"
    delay: float = 0.0  # seconds each answer takes (to make concurrent callers overlap)
    grants: Counter[str] = field(default_factory=Counter)
    revoked: set[str] = field(default_factory=set)
    down: bool = False
    _serial: Iterator[int] = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """(status, JSON body) for a token-endpoint form."""
        if self.delay:
            time.sleep(self.delay)
        grant = form.get("grant_type", "")
        with self._lock:
            self.grants[grant] += 1
            serial = next(self._serial)
        if self.client_secret is not None and form.get("client_secret") != self.client_secret:
            return 401, {"error": "unauthorized_client",
                         "error_description": "Invalid client or Invalid client credentials"}
        user = "service-account-ci"
        if grant == "password":
            user = form.get("username", "")
            if self.users.get(user) != form.get("password"):
                return 400, {"error": "invalid_grant",
                             "error_description": "Invalid user credentials"}
        elif grant == "refresh_token":
            refresh = form.get("refresh_token", "")
            if refresh in self.revoked or not refresh.startswith("refresh-"):
                return 400, {"error": "invalid_grant", "error_description": "Session not active"}
            user = refresh.split("-")[1]
        elif grant != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}
        now = int(self.clock())
        body: dict[str, Any] = {
            "access_token": fake_jwt({"iat": now, "exp": now + self.lifespan,
                                      "preferred_username": user, "n": serial}),
            "expires_in": self.lifespan, "token_type": "Bearer", "scope": "profile email"}
        if grant != "client_credentials":
            body["refresh_token"] = f"refresh-{user}-{serial}"
            body["refresh_expires_in"] = self.refresh_lifespan
        return 200, body

    def transport(self) -> httpx.MockTransport:
        def handler(request: httpx.Request) -> httpx.Response:
            if self.down:
                raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
            form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
            status, body = self.answer(form)
            return httpx.Response(status, json=body)

        return httpx.MockTransport(handler)

    def http(self) -> httpx.Client:
        return httpx.Client(transport=self.transport())


@contextmanager
def serve(fake: FakeKeycloak) -> Iterator[str]:
    """Run fake on 127.0.0.1 (a real HTTP server, for other processes); yields the token URL."""

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            status, body = fake.answer(form)
            self.send_body(status, json.dumps(body).encode())

    with serving(Handler) as url:
        yield f"{url}/realms/r/protocol/openid-connect/token"


class FakeClock:
    def __init__(self, start: float | None = None) -> None:
        self.now = float(int(time.time())) if start is None else start  # whole seconds, like iat

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def process_token(url: str, cache_path: str, queue: Any) -> None:
    """In a child process: one token for alice from url through the cache at cache_path."""
    from pathlib import Path

    from mlflow_stack.client.oidc import KeycloakClient
    from mlflow_stack.client.token_cache import TokenCache
    from mlflow_stack.client.tokens import TokenManager, TokenSource

    client = KeycloakClient(url, "mlflow", "client-secret-1")
    source = TokenSource("password", client, "alice", "alice-pw-1")
    queue.put(TokenManager(source, TokenCache(Path(cache_path))).token())
