"""What Keycloak says about an account now, for credentials Keycloak did not issue.

mlflow-oidc-auth's own long-lived access tokens (HTTP Basic ``email:token``) are checked against
its database only: role removal, a disabled account or a demoted admin never reach them. When
the platform allows such tokens (``auth.access_tokens``), every use is checked here instead:
the Keycloak user behind the account (by its bound subject) must exist, be enabled, still carry
the same verified email, and hold the roles. Callers keep an answer per server process for at
most ``MLFLOW_STACK_REVOCATION_SECONDS`` (1-60, default 30), so revocation takes at most that
long and Keycloak sees at most one lookup per user and interval per process.

The server reads the realm through its own client's service account (client credentials, the
realm-management roles ``view-users`` and ``query-clients``, granted by ``apply``). A lookup
that fails is an answer too: the credential is refused (fail closed) and nothing is cached.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from mlflow_stack.server.tls import verifying


class DirectoryError(Exception):
    """Keycloak could not be asked (unreachable, credentials refused, unexpected answer)."""


@dataclass(frozen=True)
class Account:
    """One Keycloak user as the server needs it (``exists=False``: deleted)."""

    exists: bool
    enabled: bool = False
    email: str | None = None
    email_verified: bool = False
    realm_roles: tuple[str, ...] = ()
    client_roles: tuple[str, ...] = ()


GONE = Account(exists=False)


def admin_base(issuer: str) -> str:
    """``https://kc/realms/R`` -> ``https://kc/admin/realms/R``."""
    base, sep, realm = issuer.rstrip("/").rpartition("/realms/")
    if not sep or not realm:
        raise DirectoryError(f"issuer {issuer!r} is not a Keycloak realm URL")
    return f"{base}/admin/realms/{realm}"


class KeycloakDirectory:
    """Reads accounts through the client's service account (callers cache the answers)."""

    def __init__(self, issuer: str, client_id: str, client_secret: str, *,
                 client_roles: bool = False, verify: bool | str = True,
                 http: httpx.Client | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.issuer = issuer.rstrip("/")
        self.admin = admin_base(issuer)
        self.client_id = client_id
        self._secret = client_secret
        self.client_roles = client_roles
        # Shared by the server's request threads: see mlflow_stack.server.tls.
        self._http = http or httpx.Client(timeout=10.0, verify=verifying(verify))
        self._clock = clock
        self._token: tuple[float, str] | None = None
        self._client_uuid: str | None = None
        self._lock = threading.Lock()

    def account(self, subject: str) -> Account:
        """The Keycloak user ``subject`` now (GONE when deleted)."""
        user_url = f"{self.admin}/users/{quote(subject, safe='')}"
        response = self._request("GET", user_url, missing_ok=True)
        if response.status_code == 404:
            return GONE
        user = response.json()
        realm_roles = self._names(f"{user_url}/role-mappings/realm/composite")
        client_roles: tuple[str, ...] = ()
        if self.client_roles:
            uuid = self._uuid_of_client()
            client_roles = self._names(f"{user_url}/role-mappings/clients/{uuid}/composite")
        email = user.get("email")
        return Account(exists=True, enabled=user.get("enabled") is True,
                       email=email.strip().lower() if isinstance(email, str) else None,
                       email_verified=user.get("emailVerified") is True,
                       realm_roles=realm_roles, client_roles=client_roles)

    def _service_token(self) -> str:
        with self._lock:
            if self._token is not None and self._clock() < self._token[0]:
                return self._token[1]
        response = self._request("POST", f"{self.issuer}/protocol/openid-connect/token", data={
            "grant_type": "client_credentials", "client_id": self.client_id,
            "client_secret": self._secret}, authorised=False)
        body = response.json()
        token = body.get("access_token")
        if not isinstance(token, str):
            raise DirectoryError("Keycloak's token answer carries no access_token")
        lifetime = float(body.get("expires_in") or 60)
        with self._lock:
            # Renewed a little early: a token must not expire between check and use.
            self._token = (self._clock() + max(1.0, lifetime - 10.0), token)
        return token

    def _request(self, method: str, url: str, *, authorised: bool = True,
                 missing_ok: bool = False, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self._service_token()}"} if authorised else {}
        try:
            response = self._http.request(method, url, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise DirectoryError(f"Keycloak unreachable: {type(exc).__name__}") from exc
        if missing_ok and response.status_code == 404:
            return response
        if response.status_code >= 400:
            hint = (" (does the client's service account hold realm-management view-users? "
                    "run `mlflow-stack apply`)") if response.status_code == 403 else ""
            raise DirectoryError(
                f"Keycloak answered {response.status_code} to {method} "
                f"{url.replace(self.issuer, '').replace(self.admin, '')}{hint}")
        return response

    def _names(self, url: str) -> tuple[str, ...]:
        roles = self._request("GET", url).json()
        return tuple(r["name"] for r in roles if isinstance(r, dict) and "name" in r)

    def _uuid_of_client(self) -> str:
        if self._client_uuid is None:
            found = self._request("GET", f"{self.admin}/clients",
                                  params={"clientId": self.client_id}).json()
            if not found:
                raise DirectoryError(f"client {self.client_id!r} not found in the realm")
            self._client_uuid = str(found[0]["id"])
        return self._client_uuid


def revocation_seconds() -> float:
    """How long an answer may be reused (``MLFLOW_STACK_REVOCATION_SECONDS``, 1-60)."""
    try:
        return min(60.0, max(1.0, float(os.environ.get("MLFLOW_STACK_REVOCATION_SECONDS", 30))))
    except ValueError:
        return 30.0


def from_environment() -> KeycloakDirectory:
    """The directory of the server's own realm and client (the env build_server_launch sets)."""
    issuer = os.environ.get("OIDC_ISSUER", "")
    client_id = os.environ.get("OIDC_CLIENT_ID", "")
    secret = os.environ.get("OIDC_CLIENT_SECRET", "")
    if not (issuer and client_id and secret):
        raise DirectoryError("OIDC_ISSUER, OIDC_CLIENT_ID and OIDC_CLIENT_SECRET must be set")
    verify: bool | str = os.environ.get("OIDC_VERIFY_SSL", "true").lower() != "false"
    if verify and os.environ.get("REQUESTS_CA_BUNDLE"):
        verify = os.environ["REQUESTS_CA_BUNDLE"]
    client_roles = os.environ.get("MLFLOW_KEYCLOAK_CLIENT_ROLES", "").lower() == "true"
    return KeycloakDirectory(issuer, client_id, secret, client_roles=client_roles,
                             verify=verify)
