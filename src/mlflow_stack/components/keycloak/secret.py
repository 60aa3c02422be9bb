"""The confidential client's secret as Keycloak holds it (for the server config; never print)."""

from __future__ import annotations

from pydantic import SecretStr

from mlflow_stack.components.keycloak.session import (
    AdminSession,
    ClientNotProvisioned,
    find_client,
)
from mlflow_stack.config.model import Settings


def read_client_secret(s: AdminSession, settings: Settings) -> SecretStr | None:
    """The OIDC client's secret, or None when the client does not exist yet (apply creates
    it). A client that exists without a secret (made public by hand) is an error."""
    client_id = settings.auth.client_id
    with s.call(f"read client {client_id}"):
        rep = find_client(s, client_id)
        if rep is None:
            return None
        # The representation carries a confidential client's secret for an admin who may see
        # it: one request; else ask the credentials endpoint, as before.
        value = None if rep.get("publicClient") else rep.get("secret")
        if not value:
            value = s.admin.get_client_secrets(str(rep["id"])).get("value")
    if not value:
        raise ClientNotProvisioned(
            f"client {client_id!r} in realm {settings.auth.realm!r} has no secret (is it a "
            "public client?)", hint="Run `mlflow-stack apply` to make it confidential.")
    return SecretStr(str(value))


def require_client_secret(s: AdminSession, settings: Settings) -> SecretStr:
    """As read_client_secret, but a client that does not exist yet is an error."""
    secret = read_client_secret(s, settings)
    if secret is None:
        raise ClientNotProvisioned(
            f"client {settings.auth.client_id!r} does not exist in realm "
            f"{settings.auth.realm!r} at {s.url}", hint="Run `mlflow-stack apply` first.")
    return secret
