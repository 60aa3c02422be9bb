"""A Keycloak realm set up the way `apply` provisions it, for SSO tests.

Mirrors the reference's client: confidential, standard flow + direct access grants, redirect URIs
to the server's /callback, the audience mapper (aud: <client>) and the realm-role mapper
(realm_access.roles in ID, access and userinfo tokens). Used until components/keycloak.py exists.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from mlflow_stack.config.model import Settings
from mlflow_stack.config.secrets import Secrets
from mlflow_stack.local import platform
from mlflow_stack.local.state import StateDir
from mlflow_stack.progress import NullProgress

from .keycloak import (
    KeycloakServer,
    admin_client,
    create_client,
    create_realm,
    create_user,
    password_grant,
)

ADMIN_ROLE = "mlflow-admin"
USER_ROLE = "mlflow-user"


@dataclass
class SsoUser:
    username: str
    password: str
    email: str
    user_id: str


@dataclass
class SsoRealm:
    server: KeycloakServer
    realm: str
    client_id: str
    client_secret: str
    users: dict[str, SsoUser] = field(default_factory=dict)
    _grants: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def issuer(self) -> str:
        return self.server.issuer(self.realm)

    def new_grant(self, who: str) -> dict[str, Any]:
        """A new password grant for the user: Keycloak's whole token response."""
        u = self.users[who]
        return password_grant(self.server, self.realm, self.client_id, u.username, u.password,
                              self.client_secret)

    def new_token(self, who: str) -> str:
        """A new access token of the user, carrying the roles the user has now."""
        return str(self.new_grant(who)["access_token"])

    def grant(self, who: str) -> dict[str, Any]:
        """The user's token response, one per user for the realm's life (a grant per request
        would make Keycloak the bottleneck; tokens live the realm's lifespan, an hour by
        default). Its roles are those the user had at the first call: after `set_roles`, use
        `new_token`."""
        if who not in self._grants:
            self._grants[who] = self.new_grant(who)
        return self._grants[who]

    def token(self, who: str) -> str:
        """The access token of the cached `grant`."""
        return str(self.grant(who)["access_token"])

    def set_roles(self, who: str, roles: list[str]) -> None:
        """Make the user's mlflow roles exactly `roles`."""
        admin = admin_client(self.server, self.realm)
        user_id = self.users[who].user_id
        current = {r["name"] for r in admin.get_realm_roles_of_user(user_id)}
        wanted = set(roles)
        mlflow_roles = {ADMIN_ROLE, USER_ROLE}
        remove = [admin.get_realm_role(n) for n in (current & mlflow_roles) - wanted]
        add = [admin.get_realm_role(n) for n in wanted - current]
        if remove:
            admin.delete_realm_roles_of_user(user_id, remove)
        if add:
            admin.assign_realm_roles(user_id, add)


def realm_role_mapper() -> dict[str, Any]:
    return {
        "name": "realm roles", "protocol": "openid-connect",
        "protocolMapper": "oidc-usermodel-realm-role-mapper",
        "config": {"claim.name": "realm_access.roles", "multivalued": "true",
                   "jsonType.label": "String", "id.token.claim": "true",
                   "access.token.claim": "true", "userinfo.token.claim": "true"},
    }


def audience_mapper(client_id: str) -> dict[str, Any]:
    return {
        "name": "mlflow audience", "protocol": "openid-connect",
        "protocolMapper": "oidc-audience-mapper",
        "config": {"included.client.audience": client_id, "access.token.claim": "true",
                   "id.token.claim": "false"},
    }


def provision_realm(server: KeycloakServer, realm: str, base_url: str, *,
                    client_id: str = "mlflow", users: dict[str, list[str]] | None = None,
                    access_token_lifespan: int = 3600) -> SsoRealm:
    """Realm, roles, the mlflow client with its mappers, and users with the given roles."""
    create_realm(server, realm, accessTokenLifespan=access_token_lifespan)
    admin = admin_client(server, realm)
    for role in (ADMIN_ROLE, USER_ROLE):
        admin.create_realm_role({"name": role})
    secret = create_client(
        server, realm, client_id, redirect_uris=[f"{base_url}/*", f"{base_url}/callback"],
        webOrigins=[base_url, "+"], implicitFlowEnabled=False,
        protocolMappers=[realm_role_mapper(), audience_mapper(client_id)],
        attributes={"post.logout.redirect.uris": "+"},
    )
    assert secret is not None
    result = SsoRealm(server, realm, client_id, secret)
    for name, roles in (users or {}).items():
        password = secrets.token_urlsafe(12)
        email = f"{name}@example.test"
        user_id = create_user(server, realm, name, password, email)
        result.users[name] = SsoUser(name, password, email, user_id)
        result.set_roles(name, roles)
    return result


@dataclass
class SsoServer:
    settings: Settings
    state: StateDir
    url: str


def sso_settings(realm: SsoRealm, port: int, **server: object) -> Settings:
    settings = Settings.model_validate({
        "server": {"port": port, **server},  # default worker count, as users get it
        "auth": {"provider": "keycloak", "keycloak_url": realm.server.url,
                 "realm": realm.realm, "client_id": realm.client_id},
    })
    return settings.model_copy(update={"secrets": Secrets.model_construct(
        oidc_client_secret=SecretStr(realm.client_secret))})


@contextmanager
def running(settings: Settings, state_dir: Path) -> Iterator[SsoServer]:
    state = StateDir(state_dir)
    result = platform.up(settings, state, NullProgress())
    try:
        yield SsoServer(settings, state, result.record.url)
    finally:
        platform.down(state)
