"""Forged tokens and attacker-side helpers for the attack tests (tests/server/test_attacks_*).

Each forgery keeps the real claims of a genuine Keycloak access token, so a server that skipped
the one check being attacked would accept it: the header or the key is all that changes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import http.client
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .http_server import QuietHandler, serving

_HMAC = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _segment(obj: dict[str, Any]) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def split_token(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) of a compact JWS, unverified."""
    header, payload, _ = token.split(".")
    return json.loads(b64url_decode(header)), json.loads(b64url_decode(payload))


def unsigned(token: str, alg: str = "none") -> str:
    """The token's claims under ``alg: none`` (or a spelling of it) and an empty signature."""
    header, claims = split_token(token)
    header = {k: v for k, v in header.items() if k != "kid"} | {"alg": alg}
    return f"{_segment(header)}.{_segment(claims)}."


def hmac_signed(claims: dict[str, Any], secret: bytes, alg: str = "HS256",
                header: dict[str, Any] | None = None) -> str:
    """A JWS over claims with an HMAC of secret (any bytes, e.g. a public key's PEM)."""
    head = {"typ": "JWT", **(header or {}), "alg": alg}
    signing_input = f"{_segment(head)}.{_segment(claims)}"
    mac = hmac.new(secret, signing_input.encode(), _HMAC[alg]).digest()
    return f"{signing_input}.{b64url(mac)}"


def new_rsa_key() -> rsa.RSAPrivateKey:
    """An attacker's own RSA key."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _uint(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def public_jwk(key: rsa.RSAPrivateKey, kid: str | None = None) -> dict[str, Any]:
    numbers = key.public_key().public_numbers()
    jwk: dict[str, Any] = {"kty": "RSA", "alg": "RS256", "use": "sig",
                           "n": _uint(numbers.n), "e": _uint(numbers.e)}
    if kid is not None:
        jwk["kid"] = kid
    return jwk


def rsa_signed(claims: dict[str, Any], key: rsa.RSAPrivateKey,
               header: dict[str, Any] | None = None) -> str:
    """A genuine RS256 signature over claims, with the attacker's key and header fields."""
    head = {"typ": "JWT", **(header or {}), "alg": "RS256"}
    signing_input = f"{_segment(head)}.{_segment(claims)}"
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url(signature)}"


def realm_jwks(keycloak_url: str, realm: str) -> dict[str, Any]:
    """The realm's published key set (what any attacker can fetch)."""
    response = httpx.get(f"{keycloak_url}/realms/{realm}/protocol/openid-connect/certs",
                         timeout=30.0)
    response.raise_for_status()
    jwks: dict[str, Any] = response.json()
    return jwks


def signing_jwk(jwks: dict[str, Any]) -> dict[str, Any]:
    """The realm's RS256 signing key."""
    for key in jwks["keys"]:
        if key.get("use") == "sig" and key.get("alg") == "RS256":
            return dict(key)
    raise ValueError(f"no RS256 signing key in {[k.get('kid') for k in jwks['keys']]}")


def public_key_secrets(jwk: dict[str, Any]) -> dict[str, bytes]:
    """Every byte string a key-confusion attacker would try as the HMAC secret: the public key
    as SubjectPublicKeyInfo and PKCS#1 PEM (with and without the final newline), DER, the
    certificate PEM from x5c, and the JWK itself."""
    public = rsa.RSAPublicNumbers(int.from_bytes(b64url_decode(jwk["e"]), "big"),
                                  int.from_bytes(b64url_decode(jwk["n"]), "big")).public_key()
    spki = public.public_bytes(serialization.Encoding.PEM,
                               serialization.PublicFormat.SubjectPublicKeyInfo)
    pkcs1 = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    der = public.public_bytes(serialization.Encoding.DER,
                              serialization.PublicFormat.SubjectPublicKeyInfo)
    result = {"spki-pem": spki, "spki-pem-stripped": spki.rstrip(b"\n"),
              "pkcs1-pem": pkcs1, "spki-der": der,
              "jwk-json": json.dumps(jwk).encode()}
    if jwk.get("x5c"):
        body = jwk["x5c"][0]
        lines = [body[i:i + 64] for i in range(0, len(body), 64)]
        result["cert-pem"] = ("-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) +
                              "\n-----END CERTIFICATE-----\n").encode()
    return result


# --------------------------------------------------------------------------------------------
# an attacker's web server that must never be asked for anything


@dataclass
class Trap:
    """A loopback HTTP server that records every request it gets (and serves the attacker's
    key set, so a server that did follow ``jku`` would find a key that verifies)."""

    url: str
    requests: list[str] = field(default_factory=list)
    body: bytes = b"{}"


@contextmanager
def trap_server(body: bytes = b"{}") -> Iterator[Trap]:
    trap = Trap(url="", body=body)
    lock = threading.Lock()

    class Handler(QuietHandler):
        def _record(self) -> None:
            with lock:
                trap.requests.append(f"{self.command} {self.path}")
            self.send_body(200, trap.body)

        do_GET = do_POST = do_HEAD = _record

    with serving(Handler, name="attack-trap") as url:
        trap.url = url
        yield trap


# --------------------------------------------------------------------------------------------
# requests exactly as an attacker sends them


def raw_request(url: str, method: str, path: str, body: bytes = b"",
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One request with `path` sent byte for byte (httpx normalises `..` segments away)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def browser_target(base: str, location: str) -> str:
    """Where a browser goes for `Location: location` on a page at `base` (WHATWG URL parsing:
    leading C0 controls and spaces stripped, tabs and newlines removed, `\\` read as `/`)."""
    cleaned = location.lstrip("".join(chr(c) for c in range(0x21)))
    cleaned = re.sub(r"[\t\n\r]", "", cleaned).replace("\\", "/")
    return urljoin(base, cleaned)


def origin_of(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def _keep_cookies(response: httpx.Response, jar: dict[str, str]) -> None:
    # Keycloak's cookies are `Secure`; a browser sends them to http://127.0.0.1 (a trustworthy
    # origin), httpx does not: carry them by hand.
    for header in response.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        jar[name.strip()] = rest.split(";", 1)[0]


@dataclass
class FormLogin:
    """A login through the server's /login and Keycloak's own login form, up to (not into) the
    server's /callback."""

    login_location: str  # where /login sent the browser
    callback: str  # where Keycloak sends it back after the password


def login_until_callback(client: httpx.Client, server_url: str, username: str, password: str,
                         params: dict[str, str] | None = None) -> FormLogin:
    """Start a login on `client` (which keeps the server's session cookie) and submit
    Keycloak's form; the caller decides what to do with the callback URL."""
    start = client.get(f"{server_url}/login", params=params or {}, follow_redirects=False)
    assert start.status_code in (302, 303, 307), (start.status_code, start.text[:300])
    location = start.headers["location"]
    jar: dict[str, str] = {}
    page = client.get(location, follow_redirects=False)
    _keep_cookies(page, jar)
    form = re.search(r'<form[^>]*id="kc-form-login"[^>]*action="([^"]+)"', page.text)
    assert form is not None, page.text[:500]
    submitted = client.post(html.unescape(form.group(1)), follow_redirects=False,
                            data={"username": username, "password": password,
                                  "credentialId": ""},
                            headers={"Cookie": "; ".join(f"{k}={v}" for k, v in jar.items())})
    assert submitted.status_code == 302, (submitted.status_code, submitted.text[:300])
    return FormLogin(location, submitted.headers["location"])


def browser_session_cookie(browser: Any, server_url: str, issuer: str, username: str,
                           password: str) -> str:
    """Log in with Chromium through Keycloak's login page; the server's session cookie."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{server_url}/")  # automatic login redirect: straight to Keycloak
        page.wait_for_url(f"{issuer}/**", timeout=30_000)
        page.fill("#username", username)
        page.fill("#password", password)
        page.click("#kc-login")
        page.wait_for_url(f"{server_url}/**", timeout=30_000)
        page.wait_for_load_state("load")
        cookies = [c for c in context.cookies(server_url) if c["name"] == "session"]
        assert len(cookies) == 1, [c["name"] for c in context.cookies()]
        return str(cookies[0]["value"])
    finally:
        context.close()
