"""Everything plan needs to know about the realm, read once (reads only).

Everything is read and checked — the realm's roles, scopes, the clients, the users to grant —
before the first write, so a refused run changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from keycloak.exceptions import KeycloakError

from mlflow_stack.components.keycloak.desired import (
    IDENTITY_ATTRIBUTE,
    REALM_MANAGEMENT,
    Desired,
    desired,
)
from mlflow_stack.components.keycloak.session import (
    AdminSession,
    client_uuid,
    find_client,
    service_user,
)
from mlflow_stack.config.model import Settings
from mlflow_stack.errors import ConfigError


@dataclass
class ObservedClient:
    rep: dict[str, Any] | None  # None: the client does not exist
    uuid: str | None = None  # Keycloak's internal id of the client
    default_scopes: set[str] = field(default_factory=set)
    optional_scopes: set[str] = field(default_factory=set)
    mappers: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Observed:
    roles: set[str]  # which of the desired roles exist
    clients: dict[str, ObservedClient] = field(default_factory=dict)
    scope_ids: dict[str, str] = field(default_factory=dict)  # the realm's OIDC scopes
    realm_default_scopes: list[str] = field(default_factory=list)  # attached to new clients
    realm_optional_scopes: list[str] = field(default_factory=list)
    users: dict[str, str] = field(default_factory=dict)  # username -> id
    user_roles: dict[str, set[str]] = field(default_factory=dict)  # effective realm roles
    identity_editors: list[str] | None = None  # who may edit `email` (None: not read)
    service_roles: set[str] | None = None  # realm-management roles of the service account


def observe(s: AdminSession, settings: Settings) -> Observed:
    """The realm as it is, for the config's desired state. Raises ConfigError for a configured
    admin user that does not exist (before anything is written)."""
    return observe_desired(s, desired(settings))


def observe_desired(s: AdminSession, want: Desired) -> Observed:
    admin = s.admin
    roles: set[str] = set()
    with s.call("read realm roles"):
        for name in want.roles:
            try:
                admin.get_realm_role(name)
                roles.add(name)
            except KeycloakError as exc:
                if exc.response_code != 404:
                    raise
    clients = {spec.client_id: _observe_client(s, spec.client_id) for spec in want.clients}
    with s.call("read client scopes"):
        oidc = {sc["name"]: sc["id"] for sc in admin.get_client_scopes()
                if sc.get("protocol", "openid-connect") == "openid-connect"}
        by_id = {v: k for k, v in oidc.items()}
        realm_default: list[str] = []
        realm_optional: list[str] = []
        # The realm's defaults only matter to a client that is created (plan's only use).
        if any(c.rep is None for c in clients.values()):
            realm_default = [by_id[sc["id"]] for sc in admin.get_default_default_client_scopes()
                             if sc["id"] in by_id]
            realm_optional = [by_id[sc["id"]] for sc in
                              admin.get_default_optional_client_scopes() if sc["id"] in by_id]
    obs = Observed(roles=roles, clients=clients, scope_ids=oidc,
                   realm_default_scopes=realm_default, realm_optional_scopes=realm_optional)
    missing: list[str] = []
    with s.call("read users"):
        for username in want.admin_users:
            user_id = admin.get_user_id(username)
            if user_id is None:
                missing.append(username)
                continue
            obs.users[username] = user_id
            # Effective roles: a grant through a group or composite role counts.
            obs.user_roles[username] = {
                r["name"] for r in admin.get_composite_realm_roles_of_user(user_id)}
    if want.lock_identity:
        with s.call("read the realm's user profile"):
            obs.identity_editors = identity_editors(admin.get_realm_users_profile())
    server = obs.clients[want.clients[0].client_id].rep
    if want.directory_roles and server and server.get("serviceAccountsEnabled"):
        with s.call("read the service account's roles"):
            obs.service_roles = {r["name"] for r in admin.get_composite_client_roles_of_user(
                service_user(s, want.clients[0].client_id),
                client_uuid(s, REALM_MANAGEMENT))}
    if missing:
        raise ConfigError(
            f"user(s) {', '.join(repr(u) for u in missing)} in auth.realm_admin_users "
            f"(auth_realm_username) do not exist in realm {want.realm!r} at {s.url}",
            hint="Create the user(s) in Keycloak first or fix the setting; nothing was changed.",
        )
    return obs


def _observe_client(s: AdminSession, client_id: str) -> ObservedClient:
    """One GET: the client's full representation carries its scope names and mappers too."""
    admin = s.admin
    with s.call(f"read client {client_id}"):
        rep = find_client(s, client_id)
        if rep is None:
            return ObservedClient(None)
    uuid = str(rep["id"])
    s.client_uuids[client_id] = uuid
    if "defaultClientScopes" in rep:
        return ObservedClient(
            rep, uuid=uuid, default_scopes=set(rep["defaultClientScopes"]),
            optional_scopes=set(rep.get("optionalClientScopes") or ()),
            # Keycloak leaves the field out when the client has no mapper.
            mappers={m["name"]: m for m in rep.get("protocolMappers") or ()})
    # A brief representation (an admin who may only query clients): read each part.
    with s.call(f"read client {client_id} scopes and mappers"):
        return ObservedClient(
            admin.get_client(uuid), uuid=uuid,
            default_scopes={sc["name"] for sc in admin.get_client_default_client_scopes(uuid)},
            optional_scopes={sc["name"] for sc in admin.get_client_optional_client_scopes(uuid)},
            mappers={m["name"]: m for m in admin.get_mappers_from_client(uuid)})


def identity_editors(profile: dict[str, Any]) -> list[str]:
    for attribute in profile.get("attributes") or []:
        if attribute.get("name") == IDENTITY_ATTRIBUTE:
            return sorted((attribute.get("permissions") or {}).get("edit") or [])
    return []
