"""What the realm should hold for a config: roles, clients (scopes, mappers), grants. Pure.

Choices (see also the README section "Keycloak provisioning"):
- Client scopes are ensured, not made exclusive: Keycloak's own defaults stay attached. `basic`
  carries the `sub` claim since Keycloak 25; the reference's literal list would drop it.
  `openid` is not a client scope in Keycloak (the OIDC protocol grants it to every request), so
  it is reported as implicit unless a realm really defines a scope of that name.
- Redirect URIs and web origins are exact: a URI added by hand is an open redirect, so apply
  removes it and plan shows that.
- Role grants are ensured for the configured users only; grants to anyone else are left alone.
- The login client (auth.cli_client_id, default mlflow-cli) is public: a secret on a laptop is no
  secret. It allows only what a CLI needs: the code flow with PKCE S256 on a loopback redirect
  (RFC 8252; Keycloak lets `http://127.0.0.1/*` match any port) and the device grant. Its tokens
  carry the server client's audience and roles, so the server accepts them as its own.
  offline_access is optional there: `login --offline` asks for it, a plain login does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from mlflow_stack.config.model import Settings

NAME = "keycloak"  # Change.system of every record this package makes
REALM_ROLE_MAPPER = "mlflow-realm-role-mapper"
AUDIENCE_MAPPER = "mlflow-audience-mapper"
CLIENT_ROLE_MAPPER = "mlflow-client-role-mapper"

# The reference's scope lists.
DEFAULT_SCOPES = ("email", "profile", "roles", "openid", "offline_access")
OPTIONAL_SCOPES = ("address", "phone")
CLI_DEFAULT_SCOPES = ("email", "profile", "roles", "openid")
CLI_OPTIONAL_SCOPES = ("offline_access", "address", "phone")
LOOPBACK_REDIRECT = "http://127.0.0.1/*"
REALM_MANAGEMENT = "realm-management"
# What the server's service account may read to check access-token users against the realm
# (server/directory.py): users and their role mappings, and the client's own id.
DIRECTORY_ROLES = ("view-users", "query-clients")
IDENTITY_ATTRIBUTE = "email"
# Protocol scopes Keycloak grants to every OIDC request without a client scope object.
IMPLICIT_SCOPES = frozenset({"openid"})


@dataclass(frozen=True)
class ClientSpec:
    client_id: str
    client: dict[str, Any]  # the managed ClientRepresentation fields
    default_scopes: tuple[str, ...]
    optional_scopes: tuple[str, ...]
    mappers: tuple[dict[str, Any], ...]
    # Sent only when the client is created (Keycloak generates one otherwise); never compared,
    # never shown.
    secret: SecretStr | None = None

    @property
    def public(self) -> bool:
        return bool(self.client.get("publicClient"))


@dataclass(frozen=True)
class Desired:
    realm: str
    roles: dict[str, str]  # name -> description
    clients: tuple[ClientSpec, ...]  # the server's client first
    admin_role: str
    admin_users: tuple[str, ...]
    directory_roles: tuple[str, ...] = ()  # for the server client's service account
    lock_identity: bool = False  # email editable by administrators only


def _claims(id_token: bool, access: bool, userinfo: bool) -> dict[str, str]:
    def flag(value: bool) -> str:
        return "true" if value else "false"

    # introspection is Keycloak's own default for new mappers; pinning it keeps plan quiet.
    return {"id.token.claim": flag(id_token), "access.token.claim": flag(access),
            "userinfo.token.claim": flag(userinfo), "introspection.token.claim": "true"}


def _mapper(name: str, kind: str, config: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "protocol": "openid-connect", "protocolMapper": kind, "config": config}


def desired(settings: Settings) -> Desired:
    """What the realm should hold for this config (pure: no network)."""
    a = settings.auth
    url = settings.public_url.rstrip("/")
    client = {
        "clientId": a.client_id,
        "protocol": "openid-connect",
        "enabled": True,
        "publicClient": False,
        # The secret read back by read_client_secret() is only meaningful for client-secret auth.
        "clientAuthenticatorType": "client-secret",
        "standardFlowEnabled": True,
        "implicitFlowEnabled": False,
        "directAccessGrantsEnabled": True,
        # Only to read the realm when access tokens are on (its tokens hold no MLflow role).
        "serviceAccountsEnabled": a.access_tokens,
        "redirectUris": [f"{url}/*", f"{url}/oauth2/callback", f"{url}/callback"],
        "webOrigins": [url, "+"],
        "attributes": {
            "access.token.lifespan": str(a.access_token_lifespan),
            "post.logout.redirect.uris": "+",
        },
    }
    mappers = (
        _mapper(REALM_ROLE_MAPPER, "oidc-usermodel-realm-role-mapper", {
            "claim.name": "realm_access.roles", "jsonType.label": "String",
            "multivalued": "true", **_claims(True, True, True)}),
        _mapper(AUDIENCE_MAPPER, "oidc-audience-mapper", {
            "included.client.audience": a.client_id, "included.custom.audience": a.client_id,
            **_claims(False, True, False)}),
        _mapper(CLIENT_ROLE_MAPPER, "oidc-usermodel-client-role-mapper", {
            "claim.name": "resource_access.${client_id}.roles", "jsonType.label": "String",
            "usermodel.clientRoleMapping.clientId": a.client_id, "multivalued": "true",
            **_claims(True, True, True)}),
    )
    # A configured secret is the one servers and helpers already use: a client created now
    # gets that secret instead of a new one that would disagree with it.
    clients = [ClientSpec(a.client_id, client, DEFAULT_SCOPES, OPTIONAL_SCOPES, mappers,
                          secret=settings.secrets.oidc_client_secret)]
    if a.cli_client_id:
        cli = {
            "clientId": a.cli_client_id,
            "protocol": "openid-connect",
            "enabled": True,
            "publicClient": True,
            "standardFlowEnabled": True,
            "implicitFlowEnabled": False,
            "directAccessGrantsEnabled": False,
            "serviceAccountsEnabled": False,
            "redirectUris": [LOOPBACK_REDIRECT],
            "webOrigins": [],
            "attributes": {
                "pkce.code.challenge.method": "S256",
                "oauth2.device.authorization.grant.enabled": "true",
                "access.token.lifespan": str(a.access_token_lifespan),
            },
        }
        # The same mappers: aud and roles name the server's client, whichever client logs in.
        clients.append(ClientSpec(a.cli_client_id, cli, CLI_DEFAULT_SCOPES,
                                  CLI_OPTIONAL_SCOPES, mappers))
    return Desired(
        realm=a.realm,
        roles={a.admin_role: "MLflow administrator role", a.user_role: "MLflow standard user role"},
        clients=tuple(clients),
        admin_role=a.admin_role,
        admin_users=tuple(dict.fromkeys(a.realm_admin_users)),
        directory_roles=DIRECTORY_ROLES if a.access_tokens else (),
        lock_identity=a.lock_identity_attribute,
    )
