"""Keycloak: the realm roles, the confidential OIDC client (scopes, mappers) and the admin role
grants of the reference's 10_configure_keycloak, plus the public login client of
`mlflow-stack login`, reconciled through the Admin REST API.

One module per concern: `desired` (what the realm should hold, pure), `session` (log in, error
translation), `observe` (every read), `plan` (the diff as steps), `teardown`, `health` (doctor's
checks), `secret` (the client secret read back). `SYSTEM` is the `components.protocol.System`
the registry walks.
"""

from __future__ import annotations

from pydantic import SecretStr

from mlflow_stack.components.keycloak import health
from mlflow_stack.components.keycloak.desired import NAME, ClientSpec, Desired, desired
from mlflow_stack.components.keycloak.observe import Observed, ObservedClient, observe
from mlflow_stack.components.keycloak.plan import plan as plan_steps
from mlflow_stack.components.keycloak.secret import read_client_secret, require_client_secret
from mlflow_stack.components.keycloak.session import (
    AdminSession,
    ClientNotProvisioned,
    RealmNotFound,
    base_url,
    connect,
)
from mlflow_stack.components.keycloak.teardown import teardown
from mlflow_stack.components.protocol import Finding, Step
from mlflow_stack.config.model import Settings

__all__ = [
    "SYSTEM", "AdminSession", "ClientNotProvisioned", "ClientSpec", "Desired", "Observed",
    "ObservedClient", "RealmNotFound", "client_secret", "connect", "desired",
    "read_client_secret", "require_client_secret",
]


class Keycloak:
    """The realm as a `components.protocol.System`."""

    name = NAME

    def where(self, settings: Settings) -> str:
        """'realm thinkube at https://auth.example.com'."""
        url = base_url(settings) if settings.auth.keycloak_url else "(unset)"
        return f"realm {settings.auth.realm} at {url}"

    def connect(self, settings: Settings) -> AdminSession:
        return connect(settings)

    def observe(self, client: AdminSession, settings: Settings) -> Observed:
        return observe(client, settings)

    def plan(self, client: AdminSession, settings: Settings, observed: Observed) -> list[Step]:
        return plan_steps(client, settings, observed)

    def teardown(self, client: AdminSession, settings: Settings, *, purge: bool) -> list[Step]:
        return teardown(client, settings, purge=purge)

    def check(self, settings: Settings) -> list[Finding]:
        return health.check(settings)


SYSTEM = Keycloak()


def client_secret(settings: Settings) -> SecretStr:
    """The OIDC client's secret, read back from Keycloak (for the server config; never print).
    Raises ClientNotProvisioned before apply."""
    return require_client_secret(SYSTEM.connect(settings), settings)
