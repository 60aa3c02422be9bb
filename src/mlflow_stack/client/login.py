"""Interactive sign-in to Keycloak for `mlflow-stack login`, and `logout`.

- ``BrowserLogin``: authorization code with PKCE (S256) on a loopback redirect
  (``http://127.0.0.1:<port>/callback``, RFC 8252). The Keycloak client must allow the redirect:
  ``http://127.0.0.1/*`` matches any port.
- ``DeviceLogin``: the OAuth 2.0 device authorization grant (RFC 8628) for machines without a
  browser; the user opens a URL elsewhere and types a short code.

Both end with a token set whose refresh token ``store_login`` keeps in the token cache;
``TokenManager`` renews access tokens from it. ``logout`` revokes the refresh token at Keycloak
(RFC 7009) and deletes it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from mlflow_stack.client.oidc import (
    DEFAULT_MAX_SKEW,
    Clock,
    KeycloakClient,
    KeycloakRefused,
    KeycloakUnreachable,
    TokenError,
    TokenSet,
    json_body,
    new_http_client,
    raise_for_keycloak,
    send_form,
    token_request,
    tokens_from_body,
)
from mlflow_stack.client.token_cache import TokenCache, remove_login

CALLBACK_PATH = "/callback"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_LOGIN_CLIENT_ID = "mlflow-cli"
DEFAULT_TIMEOUT = 300.0


class LoginFailed(TokenError):
    """The sign-in did not complete: refused, cancelled, timed out, or tampered with."""


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge)."""
    verifier = secrets.token_urlsafe(64)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def _scope(offline: bool, scope: str) -> str:
    words = scope.split()
    if offline and "offline_access" not in words:
        words.append("offline_access")
    return " ".join(words)


def check_realm(http: httpx.Client, client: KeycloakClient) -> None:
    """Raise the usual errors if the realm's discovery document is not there."""
    url = f"{client.issuer}/.well-known/openid-configuration"
    try:
        response = http.get(url)
    except httpx.HTTPError as exc:
        raise KeycloakUnreachable(f"cannot reach Keycloak at {url} ({exc})",
                                  hint="check the URL and that Keycloak is reachable") from exc
    raise_for_keycloak(response, client, url, "authorization_code")


# --------------------------------------------------------------------------------------------
# browser: authorization code + PKCE on a loopback redirect

_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title></head>
<body style="font-family: sans-serif; margin: 3em"><h1>{title}</h1><p>{text}</p></body></html>
"""


class _CallbackHandler(BaseHTTPRequestHandler):
    server: _CallbackServer

    def do_GET(self) -> None:  # http.server's naming
        parts = urlsplit(self.path)
        if parts.path != CALLBACK_PATH:
            self._answer(404, "Not found", "This is the sign-in callback of mlflow-stack.")
            return
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        ok, text = self.server.flow._callback(query)
        if ok:
            self._answer(200, "Signed in to MLflow", text)
        else:
            self._answer(400, "Sign-in failed", text)

    def _answer(self, status: int, title: str, text: str) -> None:
        body = _PAGE.format(title=html.escape(title), text=html.escape(text)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the query string holds the authorization code: keep it out of stderr


class _CallbackServer(HTTPServer):
    def __init__(self, port: int, flow: BrowserLogin) -> None:
        super().__init__(("127.0.0.1", port), _CallbackHandler)
        self.flow = flow


class BrowserLogin:
    """Authorization code + PKCE. Use as a context manager: print `authorization_url`, open it
    in a browser, then `wait()` for the redirect to the loopback callback."""

    def __init__(self, client: KeycloakClient, *, scope: str = "openid", offline: bool = False,
                 port: int = 0, clock: Clock = time.time, max_skew: float = DEFAULT_MAX_SKEW,
                 http: httpx.Client | None = None) -> None:
        self.client = client
        self._issuer = client.issuer  # validates the URL before a port is opened
        self._scope = _scope(offline, scope)
        self._port = port
        self._clock = clock
        self._max_skew = max_skew
        self._http = http or new_http_client(client)
        self._state = secrets.token_urlsafe(24)
        self._verifier, self._challenge = pkce_pair()
        self._done = threading.Event()
        self._result: TokenSet | None = None
        self._error: TokenError | None = None
        self._server: _CallbackServer | None = None
        self._thread: threading.Thread | None = None
        self.redirect_uri = ""
        self.authorization_url = ""

    def __enter__(self) -> BrowserLogin:
        check_realm(self._http, self.client)  # fail now, not after the user has waited
        try:
            self._server = _CallbackServer(self._port, self)
        except OSError as exc:
            raise LoginFailed(f"cannot listen on 127.0.0.1:{self._port} for the sign-in "
                              f"callback ({exc})", hint="pick another --port, or 0 for any free "
                              "port") from exc
        port = self._server.server_address[1]
        self.redirect_uri = f"http://127.0.0.1:{port}{CALLBACK_PATH}"
        self.authorization_url = self.client.endpoint("auth") + "?" + urlencode({
            "response_type": "code", "client_id": self.client.client_id,
            "redirect_uri": self.redirect_uri, "scope": self._scope, "state": self._state,
            "code_challenge": self._challenge, "code_challenge_method": "S256",
        })
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="mlflow-stack-login-callback", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _callback(self, query: dict[str, str]) -> tuple[bool, str]:
        """Runs in the callback server's thread. Returns (ok, text for the browser)."""
        if self._done.is_set():
            return False, "This sign-in has already finished; return to the terminal."
        if not secrets.compare_digest(query.get("state", ""), self._state):
            # Not ours (a stale tab, or a forged request): ignore it and keep waiting.
            return False, "Unexpected sign-in response (state mismatch); it was ignored."
        try:
            if "error" in query:
                said = query.get("error_description") or query["error"]
                raise LoginFailed(f"Keycloak ended the sign-in: {said}",
                                  hint="check the Keycloak client's redirect URIs "
                                       "(http://127.0.0.1/* for the loopback redirect) and "
                                       "that the standard flow is enabled")
            code = query.get("code")
            if not code:
                raise LoginFailed("the sign-in callback carried no authorization code")
            self._result = token_request(
                self._http, self.client,
                {"grant_type": "authorization_code", "code": code,
                 "redirect_uri": self.redirect_uri, "code_verifier": self._verifier},
                clock=self._clock, max_skew=self._max_skew)
        except TokenError as exc:
            self._error = exc
            return False, f"{exc}. Return to the terminal."
        finally:
            self._done.set()
        who = self._result.username or "you"
        return True, f"Signed in as {who}. You can close this tab and return to the terminal."

    def wait(self, timeout: float = DEFAULT_TIMEOUT) -> TokenSet:
        if not self._done.wait(timeout):
            raise LoginFailed(f"no sign-in within {timeout:.0f} s",
                              hint="open the printed URL in a browser on this machine and sign "
                                   "in; use --device where there is no browser")
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


# --------------------------------------------------------------------------------------------
# device authorization grant


@dataclass(frozen=True)
class DeviceCode:
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: float
    interval: float


class DeviceLogin:
    """Device flow: `start()` returns the code to show the user, `wait()` polls for the result."""

    def __init__(self, client: KeycloakClient, *, scope: str = "openid", offline: bool = False,
                 clock: Clock = time.time, max_skew: float = DEFAULT_MAX_SKEW,
                 http: httpx.Client | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.client = client
        self._scope = _scope(offline, scope)
        self._clock = clock
        self._max_skew = max_skew
        self._http = http or new_http_client(client)
        self._sleep = sleep
        self._verifier, self._challenge = pkce_pair()
        self._device_code: str | None = None
        self.code: DeviceCode | None = None

    def start(self) -> DeviceCode:
        url = self.client.endpoint("auth/device")
        body = json_body(_checked(send_form(
            self._http, self.client, url,
            {"scope": self._scope, "code_challenge": self._challenge,
             "code_challenge_method": "S256"}), self.client, url, DEVICE_GRANT), url)
        try:
            self._device_code = str(body["device_code"])
            self.code = DeviceCode(
                user_code=str(body["user_code"]),
                verification_uri=str(body["verification_uri"]),
                verification_uri_complete=body.get("verification_uri_complete"),
                expires_in=float(body.get("expires_in") or 600),
                interval=float(body.get("interval") or 5))
        except KeyError as exc:
            raise KeycloakRefused(f"{url} answered without {exc}") from exc
        return self.code

    def wait(self, timeout: float | None = None) -> TokenSet:
        """Poll until the user has signed in; at most timeout s (default: the code's life)."""
        if self.code is None or self._device_code is None:
            raise RuntimeError("call start() first")
        limit = self.code.expires_in if timeout is None else min(timeout, self.code.expires_in)
        deadline = self._clock() + limit
        interval = self.code.interval
        form = {"grant_type": DEVICE_GRANT, "device_code": self._device_code,
                "code_verifier": self._verifier}
        while True:
            self._sleep(interval)
            sent_at = self._clock()
            response = send_form(self._http, self.client, self.client.token_url, form)
            if response.status_code == 200:
                return tokens_from_body(json_body(response, self.client.token_url), sent_at,
                                        clock=self._clock, max_skew=self._max_skew,
                                        url=self.client.token_url)
            error = ""
            with contextlib.suppress(ValueError, AttributeError):
                error = str(response.json().get("error") or "")
            if error in ("authorization_pending", "slow_down") and self._clock() < deadline:
                if error == "slow_down":
                    interval += 5  # RFC 8628 §3.5
                continue
            if error == "access_denied":
                raise LoginFailed("the sign-in was denied in the browser")
            if error in ("expired_token", "authorization_pending", "slow_down"):
                raise LoginFailed(f"no sign-in within {limit:.0f} s (the code is no longer "
                                  "waited for)", hint="run `mlflow-stack login --device` again")
            raise_for_keycloak(response, self.client, self.client.token_url, DEVICE_GRANT)
            raise KeycloakRefused(f"unexpected answer from {self.client.token_url} "
                                  f"(HTTP {response.status_code})")


def _checked(response: httpx.Response, client: KeycloakClient, url: str,
             grant: str) -> httpx.Response:
    raise_for_keycloak(response, client, url, grant)
    return response


# --------------------------------------------------------------------------------------------
# logout


@dataclass
class LogoutResult:
    client: KeycloakClient
    had_login: bool
    revoked: bool
    error: TokenError | None = None


def logout(cache: TokenCache, client: KeycloakClient,
           http: httpx.Client | None = None) -> LogoutResult:
    """Delete the stored login for client and revoke its refresh token at Keycloak.

    The local copy is deleted even when Keycloak cannot be reached; `error` then says why the
    token could not be revoked (it stays valid until it expires).
    """
    tokens = remove_login(cache, client)
    if tokens is None or tokens.refresh_token is None:
        return LogoutResult(client, had_login=tokens is not None, revoked=False)
    url = client.endpoint("revoke")
    own_http = http is None
    http = http or new_http_client(client)
    try:
        response = send_form(http, client, url, {"token": tokens.refresh_token,
                                                 "token_type_hint": "refresh_token"})
        raise_for_keycloak(response, client, url, "revoke")
    except TokenError as exc:
        return LogoutResult(client, had_login=True, revoked=False, error=exc)
    finally:
        if own_http:
            http.close()
    return LogoutResult(client, had_login=True, revoked=True)
