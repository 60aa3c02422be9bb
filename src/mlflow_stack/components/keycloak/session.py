"""The Keycloak admin session: log in, check the realm exists, and turn python-keycloak's
errors into errors naming the URL, the user and the realm.

The realm must exist: mlflow-stack configures a realm, it does not own one. A missing realm or
missing user is a ConfigError (exit 2): the config names something that is not there.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from keycloak import KeycloakAdmin, KeycloakOpenIDConnection, urls_patterns
from keycloak.exceptions import (
    KeycloakConnectionError,
    KeycloakError,
    KeycloakGetError,
    raise_error_from_response,
)

from mlflow_stack.components.protocol import Absent
from mlflow_stack.config.model import Settings
from mlflow_stack.config.secrets import env_names
from mlflow_stack.errors import ConfigError, ServiceUnreachable, StackError

ADMIN_CLIENT = "admin-cli"
TIMEOUT_SECONDS = 15


class RealmNotFound(ConfigError, Absent):
    """The configured realm does not exist (exit 2: the config names something absent; for
    uninstall, nothing to remove)."""

    def __init__(self, realm: str, url: str) -> None:
        ConfigError.__init__(
            self, f"realm {realm!r} does not exist in Keycloak at {url}",
            hint="Create the realm first (mlflow-stack configures a realm, it does not "
            "create one) or fix auth.realm (keycloak_realm).")
        self.target = f"realm {realm}"


class ClientNotProvisioned(StackError):
    """The OIDC client does not exist yet (run `mlflow-stack apply`)."""

    exit_code = 1


def base_url(settings: Settings) -> str:
    assert settings.auth.keycloak_url is not None
    return settings.auth.keycloak_url.rstrip("/")


def _reason(exc: KeycloakError) -> str:
    """Keycloak's own words for a refusal (error_description / error / errorMessage)."""
    body = exc.response_body
    text = body.decode(errors="replace") if isinstance(body, bytes) else str(body or "")
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        for key in ("error_description", "errorMessage", "error"):
            if data.get(key):
                return str(data[key])
    text = text.strip() or str(exc.error_message or "")
    return text[:200] if text else type(exc).__name__


def _cause(exc: BaseException) -> str:
    """The underlying network error of a KeycloakConnectionError, briefly."""
    inner = exc.__cause__ or exc
    text = str(inner)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "TLS certificate verification failed"
    if "Connection refused" in text:
        return "connection refused"
    if "timed out" in text.lower():
        return "timed out"
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "host name not found"
    return type(inner).__name__


@dataclass
class AdminSession:
    admin: KeycloakAdmin
    url: str
    user: str
    realm: str
    client_uuids: dict[str, str] = field(default_factory=dict)  # clientId -> internal id

    def error(self, what: str, exc: KeycloakError) -> StackError:
        """A python-keycloak error as an error naming the URL, the user and the realm."""
        if isinstance(exc, KeycloakConnectionError):
            return ServiceUnreachable(
                f"Keycloak at {self.url} became unreachable while trying to {what}: "
                f"{_cause(exc)}", hint="Apply is safe to re-run once Keycloak answers.")
        if exc.response_code == 403:
            return ServiceUnreachable(
                f"Keycloak at {self.url}: user {self.user!r} may not {what} in realm "
                f"{self.realm!r} (HTTP 403)",
                hint="Use an admin of the master realm, or give the user the realm-management "
                "roles manage-realm, manage-clients and manage-users.")
        return ServiceUnreachable(
            f"Keycloak at {self.url} refused to {what} in realm {self.realm!r}: "
            f"HTTP {exc.response_code} {_reason(exc)}", hint="Apply is safe to re-run.")

    @contextmanager
    def call(self, what: str) -> Iterator[None]:
        try:
            yield
        except KeycloakError as exc:
            raise self.error(what, exc) from None


def connect(settings: Settings) -> AdminSession:
    """Log in and check the realm exists. Raises before anything is written."""
    a = settings.auth
    if not settings.sso or not a.keycloak_url:
        raise ConfigError("Keycloak provisioning needs auth.provider: keycloak and "
                          "auth.keycloak_url")
    password = settings.secrets.effective_keycloak_admin_password
    if password is None:
        raise ConfigError(
            f"the Keycloak admin password is missing: set {env_names('keycloak_admin_password')}"
            f" or {env_names('admin_password')}",
            hint="Secrets are read from the environment or ~/.env, never from the config file.",
        )
    url = base_url(settings)
    verify: bool | str = str(a.ca_bundle) if a.ca_bundle else a.verify_tls
    connection = KeycloakOpenIDConnection(
        server_url=url + "/",  # a trailing slash keeps a path prefix such as /auth in urljoin
        username=a.admin_username, password=password.get_secret_value(),
        realm_name=a.realm, user_realm_name=a.admin_realm, client_id=ADMIN_CLIENT,
        verify=verify, timeout=TIMEOUT_SECONDS,
    )
    who = f"user {a.admin_username!r} (realm {a.admin_realm!r})"
    try:
        connection.get_token()
    except KeycloakConnectionError as exc:
        raise ServiceUnreachable(
            f"Keycloak at {url} is unreachable: {_cause(exc)}",
            hint="Check auth.keycloak_url (keycloak_url) and that Keycloak runs"
            + ("; set auth.ca_bundle for a private CA." if "TLS" in _cause(exc) else "."),
        ) from None
    except KeycloakError as exc:
        reason = _reason(exc)
        if exc.response_code == 404 and "realm" in reason.lower():
            raise ConfigError(
                f"Keycloak at {url} has no realm {a.admin_realm!r} to log the admin user into",
                hint="Fix auth.admin_realm (the realm the admin user lives in, usually master).",
            ) from None
        if exc.response_code == 404:
            raise ServiceUnreachable(
                f"no Keycloak token endpoint under {url} (HTTP 404)",
                hint="Check auth.keycloak_url; Keycloak before version 17 needs the /auth path.",
            ) from None
        if exc.response_code in (400, 401):
            raise ServiceUnreachable(
                f"Keycloak at {url} refused the admin login of {who}: {reason}",
                hint="Check auth.admin_username and KEYCLOAK_ADMIN_PASSWORD / ADMIN_PASSWORD.",
            ) from None
        raise ServiceUnreachable(
            f"Keycloak at {url} refused the admin login of {who}: "
            f"HTTP {exc.response_code} {reason}") from None
    session = AdminSession(KeycloakAdmin(connection=connection), url, a.admin_username, a.realm)
    try:
        session.admin.get_realm(a.realm)
    except KeycloakError as exc:
        if exc.response_code == 404:
            raise RealmNotFound(a.realm, url) from None
        raise session.error("read the realm", exc) from None
    return session


def find_client(s: AdminSession, client_id: str) -> dict[str, Any] | None:
    """The client's representation, or None when the realm has no such client. One GET (the
    query python-keycloak's get_client_id makes, whose answer it throws away but the id)."""
    url = urls_patterns.URL_ADMIN_CLIENTS.format(**{"realm-name": s.realm})
    found = raise_error_from_response(s.admin.connection.raw_get(url, clientId=client_id),
                                      KeycloakGetError)
    if not isinstance(found, list):
        raise TypeError(f"Keycloak answered a client query with {type(found).__name__}")
    return next((c for c in found if c.get("clientId") == client_id), None)


def client_uuid(s: AdminSession, client_id: str) -> str:
    """The internal id of a client apply made or found (read when not known yet)."""
    uuid = s.client_uuids.get(client_id) or s.admin.get_client_id(client_id)
    if not uuid:
        raise StackError(f"client {client_id!r} is missing from the realm at {s.url}",
                         hint="Run `mlflow-stack apply` again.")
    return str(uuid)


def service_user(s: AdminSession, client_id: str) -> str:
    """The id of the user behind a client's service account."""
    return str(s.admin.get_client_service_account_user(client_uuid(s, client_id))["id"])
