"""Shared by the real-Keycloak tests of the keycloak package: settings for a test realm, a realm
with alice, and readers of what apply touched. Each test works in its own realm."""

from __future__ import annotations

import uuid
from typing import Any

from keycloak import KeycloakAdmin
from pydantic import SecretStr

from harness.keycloak import KeycloakServer, admin_client, create_realm, create_user
from mlflow_stack.components.base import Change
from mlflow_stack.config.model import Settings
from mlflow_stack.config.secrets import Secrets

PUBLIC = "http://127.0.0.1:5123"  # settings.public_url with no hostname: the local URL
ALICE_PW = "alice-pw-1"


def make_settings(server: KeycloakServer, realm: str, password: str | None = None,
                  url: str | None = None, client_secret: str | None = None,
                  **auth: Any) -> Settings:
    settings = Settings.model_validate({
        "server": {"port": 5123},
        "auth": {"provider": "keycloak", "keycloak_url": url or server.url, "realm": realm,
                 "admin_username": server.admin_user, "realm_admin_users": ["alice"], **auth},
    })
    secret = SecretStr(server.admin_password if password is None else password)
    oidc = SecretStr(client_secret) if client_secret is not None else None
    return settings.model_copy(update={"secrets": Secrets.model_construct(
        keycloak_admin_password=secret, oidc_client_secret=oidc)})


def new_realm(server: KeycloakServer, with_alice: bool = True) -> str:
    realm = f"t-{uuid.uuid4().hex[:10]}"
    create_realm(server, realm)
    if with_alice:
        create_user(server, realm, "alice", ALICE_PW, "alice@example.test")
    return realm


def realm_admin(server: KeycloakServer, realm: str) -> KeycloakAdmin:
    return admin_client(server, realm)


def client_uuid(admin: KeycloakAdmin, client_id: str = "mlflow") -> str:
    found = admin.get_client_id(client_id)
    assert found is not None
    return found


def pending(changes: list[Change]) -> list[Change]:
    return [c for c in changes if c.is_change]


def by_target(changes: list[Change]) -> dict[str, Change]:
    return {c.target: c for c in changes}


def realm_state(admin: KeycloakAdmin) -> dict[str, Any]:
    """What apply would touch: roles, clients, role grants of alice."""
    alice = admin.get_user_id("alice")
    return {
        "roles": sorted(r["name"] for r in admin.get_realm_roles()),
        "clients": sorted(c["clientId"] for c in admin.get_clients()),
        "alice": sorted(r["name"] for r in admin.get_realm_roles_of_user(alice)) if alice else [],
    }


MAPPERS = ("mlflow-realm-role-mapper", "mlflow-audience-mapper", "mlflow-client-role-mapper")
EXPECTED_TARGETS = [
    "role mlflow-admin", "role mlflow-user",
    "client mlflow", "client mlflow scopes", *(f"client mlflow mapper {m}" for m in MAPPERS),
    "client mlflow-cli", "client mlflow-cli scopes",
    *(f"client mlflow-cli mapper {m}" for m in MAPPERS),
    "user alice role mlflow-admin",
    "realm user profile attribute email",  # the identity attribute, locked (an update)
]
LOCK = "realm user profile attribute email"
