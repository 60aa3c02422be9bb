"""Keycloak's OpenID Connect endpoints as the MLflow client uses them, and the errors they cause.

``KeycloakClient`` is the client we act as (token endpoint, id, secret, TLS trust); ``TokenSet``
what the token endpoint returns, with expiry on this machine's clock; ``token_request`` asks for
tokens and turns every refusal into an error a user can act on (wrong password, client not
allowed the grant, Keycloak unreachable, untrusted certificate, clock skew).

Secrets (passwords, client secrets, tokens) are never logged and never part of a ``repr``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from mlflow_stack.errors import ConfigError, ServiceUnreachable, StackError

# The reference's variables (17_configure_discovery), plus a few of our own.
ENV_TOKEN_URL = "MLFLOW_KEYCLOAK_TOKEN_URL"
ENV_CLIENT_ID = "MLFLOW_KEYCLOAK_CLIENT_ID"
ENV_CLIENT_SECRET = "MLFLOW_CLIENT_SECRET"
ENV_USERNAME = "MLFLOW_AUTH_USERNAME"
ENV_PASSWORD = "MLFLOW_AUTH_PASSWORD"
ENV_CA_BUNDLE = "MLFLOW_CA_BUNDLE"  # the same variable the shell helpers read
ENV_GRANT = "MLFLOW_KEYCLOAK_GRANT"
ENV_CACHE = "MLFLOW_KEYCLOAK_TOKEN_CACHE"
ENV_MAX_SKEW = "MLFLOW_KEYCLOAK_MAX_CLOCK_SKEW"

DEFAULT_CLIENT_ID = "mlflow"
DEFAULT_MAX_SKEW = 120.0  # seconds between this machine's clock and Keycloak's
TOKEN_PATH_SUFFIX = "/protocol/openid-connect/token"
HTTP_TIMEOUT = httpx.Timeout(15.0, connect=5.0)
# A refresh token this close to its expiry is not worth sending.
REFRESH_TOKEN_MARGIN = 5.0

Clock = Callable[[], float]


# --------------------------------------------------------------------------------------------
# errors


class TokenError(StackError):
    """A token could not be had. str() carries the hint too: MLflow shows only str(exc)."""

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


class TokenConfigError(TokenError, ConfigError):
    """Missing or inconsistent client settings (variables, cache file)."""


class KeycloakUnreachable(TokenError, ServiceUnreachable):
    """No answer from Keycloak (connection, TLS, timeout, 5xx)."""


class InvalidCredentials(TokenError):
    """Keycloak refused the username/password or the client id/secret."""


class GrantNotAllowed(TokenError):
    """The Keycloak client is not configured for the grant we used."""


class ClockSkewError(TokenError):
    """This machine's clock and Keycloak's disagree by more than the allowed skew."""


class LoginRequired(TokenError):
    """No stored login (or it expired) and no other credentials to fall back on."""


class KeycloakRefused(TokenError):
    """Any other refusal of the token endpoint."""


class RefreshRejected(KeycloakRefused):
    """The refresh token is no longer accepted (session ended, revoked, expired)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"Keycloak no longer accepts the refresh token ({reason})")
        self.reason = reason


# --------------------------------------------------------------------------------------------
# the client we act as


def is_keycloak_token_url(url: str) -> bool:
    return urlsplit(url).path.rstrip("/").endswith(TOKEN_PATH_SUFFIX)


@dataclass(frozen=True)
class KeycloakClient:
    """A Keycloak OIDC client: its token endpoint, id, optional secret and TLS trust."""

    token_url: str
    client_id: str = DEFAULT_CLIENT_ID
    client_secret: str | None = field(default=None, repr=False)
    ca_bundle: str | None = None

    def __post_init__(self) -> None:
        parts = urlsplit(self.token_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise TokenConfigError(
                f"{self.token_url!r} is not an http(s) URL",
                hint=f"set {ENV_TOKEN_URL} to https://HOST/realms/REALM{TOKEN_PATH_SUFFIX}")
        if not self.client_id:
            raise TokenConfigError("the Keycloak client id is empty",
                                   hint=f"set {ENV_CLIENT_ID} (the reference uses 'mlflow')")
        if self.ca_bundle and not Path(self.ca_bundle).is_file():
            raise TokenConfigError(f"CA bundle {self.ca_bundle} does not exist",
                                   hint=f"point {ENV_CA_BUNDLE} at a PEM file of your CA")

    @classmethod
    def for_issuer(cls, issuer: str, client_id: str = DEFAULT_CLIENT_ID,
                   client_secret: str | None = None,
                   ca_bundle: str | None = None) -> KeycloakClient:
        """From a realm URL such as https://auth.example.com/realms/thinkube."""
        return cls(issuer.rstrip("/") + TOKEN_PATH_SUFFIX, client_id, client_secret, ca_bundle)

    @property
    def issuer(self) -> str:
        """The realm URL, derived from the token endpoint (Keycloak's fixed layout)."""
        if not is_keycloak_token_url(self.token_url):
            raise TokenConfigError(
                f"{self.token_url} is not a Keycloak token endpoint",
                hint=f"expected https://HOST/realms/REALM{TOKEN_PATH_SUFFIX}")
        return self.token_url.rstrip("/").removesuffix(TOKEN_PATH_SUFFIX)

    def endpoint(self, name: str) -> str:
        """Another OpenID Connect endpoint of the realm: auth, auth/device, revoke, logout."""
        return f"{self.issuer}/protocol/openid-connect/{name}"

    def ssl_context(self) -> ssl.SSLContext:
        """Certificates are always verified: against ca_bundle if set, else the system's trust
        store (SSL_CERT_FILE / SSL_CERT_DIR honoured, as curl in the shell helpers does), else
        certifi's bundle on a Python that has no system store."""
        if self.ca_bundle:
            return ssl.create_default_context(cafile=self.ca_bundle)
        context = ssl.create_default_context()
        if not context.cert_store_stats().get("x509_ca"):
            import certifi

            context.load_verify_locations(certifi.where())
        return context

    def credentials(self) -> dict[str, str]:
        """The client's part of every token-endpoint form (secret only for confidential ones)."""
        form = {"client_id": self.client_id}
        if self.client_secret:
            form["client_secret"] = self.client_secret
        return form


def new_http_client(client: KeycloakClient) -> httpx.Client:
    # No redirects: a token endpoint that redirects is a login proxy or a wrong URL.
    return httpx.Client(timeout=HTTP_TIMEOUT, verify=client.ssl_context(), follow_redirects=False,
                        headers={"Accept": "application/json"})


# --------------------------------------------------------------------------------------------
# tokens


def refresh_margin(lifetime: float) -> float:
    """How long before expiry a token is renewed: 10 % of its lifetime, within 2 s .. 60 s.

    Small enough that a 30 s token is used for 27 s (one token request per lifetime), large
    enough to cover a request in flight.
    """
    return min(60.0, max(2.0, 0.1 * lifetime))


@dataclass
class TokenSet:
    """What the token endpoint returned, with expiry times on this machine's clock."""

    access_token: str = field(repr=False)
    expires_at: float
    obtained_at: float
    refresh_token: str | None = field(default=None, repr=False)
    refresh_expires_at: float | None = None  # None: no fixed expiry (offline token) / unknown
    username: str | None = None
    scope: str | None = None

    def due(self, now: float) -> bool:
        """Time to renew: inside the margin before expiry (or past it)."""
        lifetime = self.expires_at - self.obtained_at
        return now >= self.expires_at - refresh_margin(lifetime)

    def usable(self, now: float) -> bool:
        """Not yet expired (with a second to spare for the request)."""
        return now < self.expires_at - 1.0

    def refreshable(self, now: float) -> bool:
        return self.refresh_token is not None and (
            self.refresh_expires_at is None
            or now < self.refresh_expires_at - REFRESH_TOKEN_MARGIN)

    def to_json(self) -> dict[str, Any]:
        return {"access_token": self.access_token, "expires_at": self.expires_at,
                "obtained_at": self.obtained_at, "refresh_token": self.refresh_token,
                "refresh_expires_at": self.refresh_expires_at, "username": self.username,
                "scope": self.scope}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TokenSet:
        return cls(access_token=str(data["access_token"]),
                   expires_at=float(data["expires_at"]),
                   obtained_at=float(data["obtained_at"]),
                   refresh_token=data.get("refresh_token"),
                   refresh_expires_at=data.get("refresh_expires_at"),
                   username=data.get("username"), scope=data.get("scope"))


def unverified_claims(token: str) -> dict[str, Any]:
    """A JWT's payload *without* verifying it.

    Only for things that cannot hurt if the token lied: the issue time (clock-skew check) and
    the user name (display). The MLflow server verifies every token it is given.
    """
    try:
        payload = token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def check_clock_skew(access_token: str, now: float, max_skew: float) -> None:
    """Raise ClockSkewError when the token's issue time is far from our clock.

    Expiry here is computed from `expires_in` on our own clock, so skew does not break this
    client; but it breaks everything that reads `exp` (the shell helpers' expiry time, other
    tools, often the server on the same host) and it means the machine's time sync is broken.
    """
    iat = unverified_claims(access_token).get("iat")
    if max_skew <= 0 or not isinstance(iat, int | float):
        return
    skew = now - float(iat)
    if abs(skew) <= max_skew:
        return
    direction = "ahead of" if skew > 0 else "behind"

    def utc(t: float) -> str:
        return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

    raise ClockSkewError(
        f"this machine's clock is {abs(skew):.0f} s {direction} Keycloak's (Keycloak issued the "
        f"token at {utc(float(iat))}, local time is {utc(now)})",
        hint="synchronise the clock (e.g. `timedatectl set-ntp true`, `chronyc makestep`); "
             f"{ENV_MAX_SKEW}=<seconds> changes the tolerance, 0 turns the check off")


# --------------------------------------------------------------------------------------------
# token endpoint

_GRANT_LABELS = {
    "password": ("password grant", "'Direct access grants'"),
    "client_credentials": ("client-credentials grant", "'Service accounts roles'"),
    "refresh_token": ("refresh-token grant", "'Standard flow' or 'Direct access grants'"),
    "authorization_code": ("browser login (authorization code)", "'Standard flow'"),
    "urn:ietf:params:oauth:grant-type:device_code": (
        "device login", "'OAuth 2.0 Device Authorization Grant'"),
}


def _describe_error(body: Any) -> tuple[str, str]:
    if isinstance(body, dict):
        return str(body.get("error") or ""), str(body.get("error_description") or "")
    return "", ""


def raise_for_keycloak(response: httpx.Response, client: KeycloakClient, url: str,
                       grant: str, username: str | None = None) -> None:
    """Turn a refusal from a Keycloak OIDC endpoint into an error a user can act on."""
    status = response.status_code
    if 200 <= status < 300:
        return
    try:
        body = response.json()
    except ValueError:
        body = None
    error, description = _describe_error(body)
    said = description or error or response.reason_phrase
    label, capability = _GRANT_LABELS.get(grant, (grant, "the grant"))
    where = f"client '{client.client_id}' at {client.token_url}"
    if status >= 500:
        raise KeycloakUnreachable(f"Keycloak answered HTTP {status} at {url} ({said})",
                                  hint="Keycloak is failing or restarting; try again shortly")
    if 300 <= status < 400:
        raise TokenConfigError(
            f"{url} redirects to {response.headers.get('location', '?')} instead of answering",
            hint=f"check {ENV_TOKEN_URL}: it must be Keycloak's own endpoint, "
                 f"https://HOST/realms/REALM{TOKEN_PATH_SUFFIX}, not a page behind a login proxy")
    if status == 404:
        raise TokenConfigError(
            f"no Keycloak realm endpoint at {url} (HTTP 404: {said})",
            hint=f"check {ENV_TOKEN_URL}: https://HOST/realms/REALM{TOKEN_PATH_SUFFIX}")
    if "invalid client" in description.lower() or error == "invalid_client":
        secret_note = "with its secret" if client.client_secret else "without a secret"
        raise InvalidCredentials(
            f"Keycloak refused {where} ({said}); it was sent {secret_note}",
            hint=f"check {ENV_CLIENT_ID} and {ENV_CLIENT_SECRET} (the client secret; the "
                 "reference keeps it in the oauth2-proxy-secret Secret)")
    if error == "unauthorized_client":
        raise GrantNotAllowed(
            f"Keycloak does not allow the {label} for {where} ({said})",
            hint=f"enable {capability} on client '{client.client_id}' in Keycloak (Clients → "
                 f"{client.client_id} → Settings → Capability config), or use another source: "
                 "`mlflow-stack login` for people, client credentials for services")
    if error == "invalid_grant" and grant == "password":
        raise InvalidCredentials(
            f"Keycloak refused the username or password of user '{username}' ({said})",
            hint=f"check {ENV_USERNAME} and {ENV_PASSWORD}; a disabled or temporarily locked "
                 "account (brute-force protection) is refused the same way")
    if error == "invalid_grant" and grant == "refresh_token":
        raise RefreshRejected(said)
    raise KeycloakRefused(f"Keycloak refused the {label} for {where}: HTTP {status} ({said})")


def send_form(http: httpx.Client, client: KeycloakClient, url: str,
              form: Mapping[str, str]) -> httpx.Response:
    """POST an OIDC form (client credentials added); transport failures become errors."""
    try:
        return http.post(url, data={**form, **client.credentials()})
    except httpx.TimeoutException as exc:
        raise KeycloakUnreachable(f"Keycloak did not answer in time at {url} ({exc})",
                                  hint="check the network path to Keycloak and retry") from exc
    except httpx.HTTPError as exc:
        reason = str(exc) or type(exc).__name__
        if "CERTIFICATE_VERIFY_FAILED" in reason or "certificate" in reason.lower():
            raise KeycloakUnreachable(
                f"the TLS certificate of {url} is not trusted ({reason})",
                hint=f"set {ENV_CA_BUNDLE} to the PEM file of the CA that signed it "
                     "(certificate checks are never turned off)") from exc
        raise KeycloakUnreachable(f"cannot reach Keycloak at {url} ({reason})",
                                  hint=f"check {ENV_TOKEN_URL} and that Keycloak is up and "
                                       "reachable from this machine") from exc


def json_body(response: httpx.Response, url: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise KeycloakRefused(
            f"{url} did not answer like a Keycloak endpoint (HTTP {response.status_code}, "
            f"{response.headers.get('content-type', 'no content type')})",
            hint=f"check {ENV_TOKEN_URL}")
    return body


def post_form(http: httpx.Client, client: KeycloakClient, url: str, form: Mapping[str, str],
              grant: str, username: str | None = None) -> dict[str, Any]:
    """POST an OIDC form and return the JSON answer; refusals become errors."""
    response = send_form(http, client, url, form)
    raise_for_keycloak(response, client, url, grant, username)
    return json_body(response, url)


def tokens_from_body(body: Mapping[str, Any], sent_at: float, *, clock: Clock,
                     max_skew: float, username: str | None = None,
                     url: str = "the token endpoint") -> TokenSet:
    """A TokenSet from a token response; expiry counted from just before the request."""
    access = body.get("access_token")
    if not isinstance(access, str) or not access:
        raise KeycloakRefused(f"{url} answered without an access token",
                              hint=f"check {ENV_TOKEN_URL}")
    check_clock_skew(access, clock(), max_skew)
    expires_in = float(body.get("expires_in") or 60)
    refresh_in = body.get("refresh_expires_in")
    refresh = body.get("refresh_token")
    claims = unverified_claims(access)
    return TokenSet(
        access_token=access, expires_at=sent_at + expires_in, obtained_at=sent_at,
        refresh_token=refresh if isinstance(refresh, str) else None,
        # Keycloak says 0 for offline tokens: no fixed expiry, only an idle timeout.
        refresh_expires_at=sent_at + float(refresh_in) if refresh_in else None,
        username=claims.get("preferred_username") or username,
        scope=body.get("scope"))


def token_request(http: httpx.Client, client: KeycloakClient, form: Mapping[str, str], *,
                  clock: Clock, max_skew: float, username: str | None = None) -> TokenSet:
    """Ask the token endpoint for tokens."""
    sent_at = clock()
    body = post_form(http, client, client.token_url, form, form.get("grant_type", "?"), username)
    return tokens_from_body(body, sent_at, clock=clock, max_skew=max_skew, username=username,
                            url=client.token_url)
