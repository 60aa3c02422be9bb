"""Keycloak: the realm roles, the confidential OIDC client (scopes, mappers) and the admin role
grants of the reference's 10_configure_keycloak, plus the public login client of
`mlflow-stack login`, reconciled through the Admin REST API.

Shape: desired(settings) -> observe (read only) -> steps (a Change plus the write that makes it)
-> apply. Everything is read and checked — login, realm, the users to grant — before the first
write, so a refused run changes nothing; a run that fails half-way can simply be repeated.

Choices (see also the README section "Keycloak provisioning"):
- The realm must exist: mlflow-stack configures a realm, it does not own one. A missing realm or
  missing user is a ConfigError (exit 2): the config names something that is not there.
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

import copy
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from keycloak import KeycloakAdmin, KeycloakOpenIDConnection
from keycloak.exceptions import KeycloakConnectionError, KeycloakError
from pydantic import SecretStr

from mlflow_stack.components.base import Action, Change
from mlflow_stack.config.model import Settings
from mlflow_stack.config.secrets import env_names
from mlflow_stack.errors import ConfigError, ServiceUnreachable, StackError
from mlflow_stack.progress import NullProgress, Progress

SYSTEM = "keycloak"
ADMIN_CLIENT = "admin-cli"
TIMEOUT_SECONDS = 15

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

# Client fields compared as sets (order is not meaningful to Keycloak).
_SET_FIELDS = ("redirectUris", "webOrigins")


class RealmNotFound(ConfigError):
    """The configured realm does not exist (exit 2: the config names something absent)."""


class ClientNotProvisioned(StackError):
    """The OIDC client does not exist yet (run `mlflow-stack apply`)."""

    exit_code = 1


# --------------------------------------------------------------------------------------------
# desired state


@dataclass(frozen=True)
class ClientSpec:
    client_id: str
    client: dict[str, Any]  # the managed ClientRepresentation fields
    default_scopes: tuple[str, ...]
    optional_scopes: tuple[str, ...]
    mappers: tuple[dict[str, Any], ...]

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
        # The secret read back by client_secret() is only meaningful for client-secret auth.
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
    clients = [ClientSpec(a.client_id, client, DEFAULT_SCOPES, OPTIONAL_SCOPES, mappers)]
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


# --------------------------------------------------------------------------------------------
# connection and error translation


def _base_url(settings: Settings) -> str:
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
    if a.provider != "keycloak" or not a.keycloak_url:
        raise ConfigError("Keycloak provisioning needs auth.provider: keycloak and "
                          "auth.keycloak_url")
    password = settings.secrets.effective_keycloak_admin_password
    if password is None:
        raise ConfigError(
            f"the Keycloak admin password is missing: set {env_names('keycloak_admin_password')}"
            f" or {env_names('admin_password')}",
            hint="Secrets are read from the environment or ~/.env, never from the config file.",
        )
    url = _base_url(settings)
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
            raise RealmNotFound(
                f"realm {a.realm!r} does not exist in Keycloak at {url}",
                hint="Create the realm first (mlflow-stack configures a realm, it does not "
                "create one) or fix auth.realm (keycloak_realm).",
            ) from None
        raise session.error("read the realm", exc) from None
    return session


# --------------------------------------------------------------------------------------------
# observed state


@dataclass
class ObservedClient:
    rep: dict[str, Any] | None  # None: the client does not exist
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


def _observe(s: AdminSession, want: Desired) -> Observed:
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
    with s.call("read client scopes"):
        oidc = {sc["name"]: sc["id"] for sc in admin.get_client_scopes()
                if sc.get("protocol", "openid-connect") == "openid-connect"}
        by_id = {v: k for k, v in oidc.items()}
        realm_default = [by_id[sc["id"]] for sc in admin.get_default_default_client_scopes()
                         if sc["id"] in by_id]
        realm_optional = [by_id[sc["id"]] for sc in admin.get_default_optional_client_scopes()
                          if sc["id"] in by_id]
    obs = Observed(roles=roles, scope_ids=oidc,
                   realm_default_scopes=realm_default, realm_optional_scopes=realm_optional)
    for spec in want.clients:
        obs.clients[spec.client_id] = _observe_client(s, spec.client_id)
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
            obs.identity_editors = _identity_editors(admin.get_realm_users_profile())
    server = obs.clients[want.clients[0].client_id].rep
    if want.directory_roles and server and server.get("serviceAccountsEnabled"):
        with s.call("read the service account's roles"):
            obs.service_roles = {r["name"] for r in admin.get_composite_client_roles_of_user(
                _service_user(s, want.clients[0].client_id),
                _client_uuid(s, REALM_MANAGEMENT))}
    if missing:
        raise ConfigError(
            f"user(s) {', '.join(repr(u) for u in missing)} in auth.realm_admin_users "
            f"(auth_realm_username) do not exist in realm {want.realm!r} at {s.url}",
            hint="Create the user(s) in Keycloak first or fix the setting; nothing was changed.",
        )
    return obs


def _observe_client(s: AdminSession, client_id: str) -> ObservedClient:
    admin = s.admin
    with s.call(f"read client {client_id}"):
        uuid = admin.get_client_id(client_id)
        if not uuid:
            return ObservedClient(None)
        have = ObservedClient(admin.get_client(uuid))
    s.client_uuids[client_id] = uuid
    with s.call(f"read client {client_id} scopes and mappers"):
        have.default_scopes = {sc["name"] for sc in admin.get_client_default_client_scopes(uuid)}
        have.optional_scopes = {sc["name"] for sc in
                                admin.get_client_optional_client_scopes(uuid)}
        have.mappers = {m["name"]: m for m in admin.get_mappers_from_client(uuid)}
    return have


# --------------------------------------------------------------------------------------------
# diff


@dataclass(frozen=True)
class _Step:
    change: Change
    run: Callable[[], None] | None = None  # None: nothing to do, or done by an earlier step


def _change(action: Action, target: str, detail: str = "") -> Change:
    return Change(SYSTEM, action, target, detail)


def _fmt(value: Any) -> str:
    return "(unset)" if value is None else json.dumps(value) if isinstance(value, bool) \
        else str(value)


def _client_diff(current: dict[str, Any], want: dict[str, Any]) -> list[str]:
    """Field-level differences, e.g. 'redirectUris: + https://h/callback'."""
    lines: list[str] = []
    for key, value in want.items():
        if key == "attributes":
            have = current.get("attributes") or {}
            for attr, attr_value in value.items():
                if have.get(attr) != attr_value:
                    lines.append(f"attributes.{attr}: {_fmt(have.get(attr))} → {attr_value}")
        elif key in _SET_FIELDS:
            have_list = current.get(key) or []
            added = [v for v in value if v not in have_list]
            removed = [v for v in have_list if v not in value]
            parts = [f"+ {v}" for v in added] + [f"- {v}" for v in removed]
            if parts:
                lines.append(f"{key}: {', '.join(parts)}")
        elif current.get(key) != value:
            lines.append(f"{key}: {_fmt(current.get(key))} → {_fmt(value)}")
    return lines


def _mapper_diff(current: dict[str, Any], want: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    if current.get("protocolMapper") != want["protocolMapper"]:
        lines.append(f"protocolMapper: {current.get('protocolMapper')} → "
                     f"{want['protocolMapper']}")
    have = current.get("config") or {}
    for key, value in want["config"].items():
        if have.get(key) != value:
            lines.append(f"config.{key}: {_fmt(have.get(key))} → {value}")
    return lines


def _describe_mapper(m: dict[str, Any]) -> str:
    c = m["config"]
    tokens = [name for name, key in (("id", "id.token.claim"), ("access", "access.token.claim"),
                                     ("userinfo", "userinfo.token.claim")) if c.get(key) == "true"]
    what = c.get("claim.name") or f"aud {c.get('included.client.audience')}"
    return f"{m['protocolMapper']}: {what} ({', '.join(tokens)} token)"


def _scope_plan(want: ClientSpec, obs: Observed,
                have_client: ObservedClient) -> tuple[dict[str, str], list[str]]:
    """{scope: 'default'|'optional'} to attach (moving it if attached the other way) and notes."""
    moves: dict[str, str] = {}
    notes: list[str] = []
    for kind, names, have in (("default", want.default_scopes, have_client.default_scopes),
                              ("optional", want.optional_scopes, have_client.optional_scopes)):
        for name in names:
            if name in IMPLICIT_SCOPES and name not in obs.scope_ids:
                notes.append(f"{name}: implicit in OIDC, not a client scope")
            elif name not in obs.scope_ids:
                notes.append(f"{name}: no such client scope in the realm, skipped")
            elif name not in have:
                moves[name] = kind
    return moves, notes


def _scope_detail(moves: dict[str, str], have: ObservedClient) -> list[str]:
    parts = []
    for name, kind in moves.items():
        was = have.optional_scopes if kind == "default" else have.default_scopes
        moved = f" (moved from {'optional' if kind == 'default' else 'default'})" \
            if name in was else ""
        parts.append(f"{kind}: + {name}{moved}")
    return parts


def _role_steps(s: AdminSession, want: Desired, obs: Observed) -> list[_Step]:
    steps: list[_Step] = []
    for name, description in want.roles.items():
        if name in obs.roles:
            steps.append(_Step(_change("unchanged", f"role {name}")))
            continue

        def create_role(name: str = name, description: str = description) -> None:
            with s.call(f"create realm role {name}"):
                s.admin.create_realm_role({"name": name, "description": description},
                                          skip_exists=True)
        steps.append(_Step(_change("create", f"role {name}", description), create_role))
    return steps


def _kind(spec: ClientSpec) -> str:
    c = spec.client
    if not spec.public:
        return f"confidential {c['protocol']}"
    grants = ["PKCE S256" if c["attributes"].get("pkce.code.challenge.method") == "S256"
              else "code flow"]
    if c["attributes"].get("oauth2.device.authorization.grant.enabled") == "true":
        grants.append("device grant")
    return f"public {c['protocol']} ({', '.join(grants)})"


def _new_client_steps(s: AdminSession, want: ClientSpec, obs: Observed) -> list[_Step]:
    """One POST creates the client with its scopes and mappers; the other records describe it."""
    cid, c = want.client_id, want.client
    rep = copy.deepcopy(c)
    # Keycloak's realm defaults (basic, acr, web-origins, ...) plus the reference's lists: an
    # explicit list in the POST replaces the defaults instead of adding to them.
    defaults = [n for n in (*obs.realm_default_scopes, *want.default_scopes)
                if n in obs.scope_ids and n not in want.optional_scopes]
    optionals = [n for n in (*obs.realm_optional_scopes, *want.optional_scopes)
                 if n in obs.scope_ids and n not in want.default_scopes]
    rep["defaultClientScopes"] = list(dict.fromkeys(defaults))
    rep["optionalClientScopes"] = list(dict.fromkeys(optionals))
    rep["protocolMappers"] = [copy.deepcopy(m) for m in want.mappers]

    def create_client() -> None:
        with s.call(f"create client {cid}"):
            s.client_uuids[cid] = s.admin.create_client(rep)

    _, notes = _scope_plan(want, obs, ObservedClient(None))
    extra = [n for n in rep["defaultClientScopes"] if n not in want.default_scopes]
    ours = [n for n in want.default_scopes if n in rep["defaultClientScopes"]]
    optional = [n for n in want.optional_scopes if n in obs.scope_ids]
    scopes = (f"default: {', '.join(ours)}"
              + (f" (+ realm defaults {', '.join(extra)})" if extra else "")
              + f"; optional: {', '.join(optional)}")
    origins = f"; webOrigins: {', '.join(c['webOrigins'])}" if c["webOrigins"] else ""
    return [
        _Step(_change("create", f"client {cid}",
                      f"{_kind(want)}; redirectUris: {', '.join(c['redirectUris'])}{origins}"
                      f"; access.token.lifespan {c['attributes']['access.token.lifespan']}"),
              create_client),
        _Step(_change("create", f"client {cid} scopes", "; ".join([scopes, *notes]))),
        *(_Step(_change("create", f"client {cid} mapper {m['name']}", _describe_mapper(m)))
          for m in want.mappers),
    ]


def _client_steps(s: AdminSession, want: ClientSpec, obs: Observed) -> list[_Step]:
    """Repairs of an existing client: its settings, scopes and mappers, each its own record."""
    have_client = obs.clients[want.client_id]
    assert have_client.rep is not None
    admin, uuid, cid = s.admin, s.client_uuids[want.client_id], want.client_id
    steps: list[_Step] = []

    diff = _client_diff(have_client.rep, want.client)
    if diff:
        payload = copy.deepcopy(want.client)
        payload["attributes"] = {**(have_client.rep.get("attributes") or {}),
                                 **want.client["attributes"]}

        def update_client() -> None:
            with s.call(f"update client {cid}"):
                admin.update_client(uuid, payload)
        steps.append(_Step(_change("update", f"client {cid}", "; ".join(diff)), update_client))
    else:
        steps.append(_Step(_change("unchanged", f"client {cid}")))

    moves, notes = _scope_plan(want, obs, have_client)
    if moves:
        def fix_scopes() -> None:
            with s.call(f"change the client scopes of {cid}"):
                for name, kind in moves.items():
                    sid = obs.scope_ids[name]
                    # Attaching a scope that is attached the other way is silently ignored by
                    # Keycloak: detach it first.
                    if kind == "default":
                        if name in have_client.optional_scopes:
                            admin.delete_client_optional_client_scope(uuid, sid)
                        admin.add_client_default_client_scope(uuid, sid, {})
                    else:
                        if name in have_client.default_scopes:
                            admin.delete_client_default_client_scope(uuid, sid)
                        admin.add_client_optional_client_scope(uuid, sid, {})
        steps.append(_Step(_change("update", f"client {cid} scopes",
                                   "; ".join(_scope_detail(moves, have_client) + notes)),
                           fix_scopes))
    else:
        steps.append(_Step(_change("unchanged", f"client {cid} scopes", "; ".join(notes))))

    for m in want.mappers:
        target = f"client {cid} mapper {m['name']}"
        have = have_client.mappers.get(m["name"])
        if have is None:
            def add_mapper(m: dict[str, Any] = m) -> None:
                with s.call(f"add mapper {m['name']} to client {cid}"):
                    admin.add_mapper_to_client(uuid, m)
            steps.append(_Step(_change("create", target, _describe_mapper(m)), add_mapper))
            continue
        mdiff = _mapper_diff(have, m)
        if not mdiff:
            steps.append(_Step(_change("unchanged", target)))
            continue

        def fix_mapper(m: dict[str, Any] = m, have: dict[str, Any] = have) -> None:
            with s.call(f"update mapper {m['name']} of client {cid}"):
                if have.get("protocolMapper") != m["protocolMapper"]:
                    # A mapper's type cannot be changed in place.
                    admin.remove_client_mapper(uuid, have["id"])
                    admin.add_mapper_to_client(uuid, m)
                else:
                    admin.update_client_mapper(uuid, have["id"], {**m, "id": have["id"]})
        steps.append(_Step(_change("update", target, "; ".join(mdiff)), fix_mapper))
    return steps


def _grant_steps(s: AdminSession, want: Desired, obs: Observed) -> list[_Step]:
    steps: list[_Step] = []
    role = want.admin_role
    for username in want.admin_users:
        target = f"user {username} role {role}"
        if role in obs.user_roles.get(username, set()):
            steps.append(_Step(_change("unchanged", target)))
            continue

        def grant(username: str = username) -> None:
            with s.call(f"grant role {role} to user {username}"):
                # Read at run time: the role may have been created by an earlier step.
                s.admin.assign_realm_roles(obs.users[username], [s.admin.get_realm_role(role)])
        steps.append(_Step(_change("create", target, f"grant realm role {role}"), grant))
    return steps


def _identity_editors(profile: dict[str, Any]) -> list[str]:
    for attribute in profile.get("attributes") or []:
        if attribute.get("name") == IDENTITY_ATTRIBUTE:
            return sorted((attribute.get("permissions") or {}).get("edit") or [])
    return []


def _client_uuid(s: AdminSession, client_id: str) -> str:
    uuid = s.client_uuids.get(client_id) or s.admin.get_client_id(client_id)
    if not uuid:
        raise StackError(f"client {client_id!r} is missing from the realm at {s.url}",
                         hint="Run `mlflow-stack apply` again.")
    return str(uuid)


def _service_user(s: AdminSession, client_id: str) -> str:
    return str(s.admin.get_client_service_account_user(_client_uuid(s, client_id))["id"])


def _identity_steps(s: AdminSession, want: Desired, obs: Observed) -> list[_Step]:
    """The MLflow account is named by the email: users must not set their own (a self-set
    address of a deleted colleague would name the colleague's account)."""
    if not want.lock_identity or obs.identity_editors is None:
        return []
    target = f"realm user profile attribute {IDENTITY_ATTRIBUTE}"
    if obs.identity_editors == ["admin"]:
        return [_Step(_change("unchanged", target, "edited by administrators only"))]

    def lock() -> None:
        with s.call("update the realm's user profile"):
            # Read again at run time and change only this attribute's edit permission.
            profile = s.admin.get_realm_users_profile()
            for attribute in profile.get("attributes") or []:
                if attribute.get("name") == IDENTITY_ATTRIBUTE:
                    attribute.setdefault("permissions", {})["edit"] = ["admin"]
            s.admin.update_realm_users_profile(profile)
    editors = ", ".join(obs.identity_editors) or "nobody"
    return [_Step(_change("update", target, f"edit: {editors} → admin (users of every client "
                          "in the realm can no longer change their own email)"), lock)]


def _service_account_steps(s: AdminSession, want: Desired, obs: Observed) -> list[_Step]:
    if not want.directory_roles:
        return []
    cid = want.clients[0].client_id
    target = f"client {cid} service account roles"
    have = obs.service_roles or set()
    missing = [r for r in want.directory_roles if r not in have]
    if not missing:
        return [_Step(_change("unchanged", target, ", ".join(want.directory_roles)))]

    def grant() -> None:
        with s.call(f"grant {', '.join(missing)} to the service account of {cid}"):
            # Read at run time: the service account may have been enabled by an earlier step.
            mgmt = _client_uuid(s, REALM_MANAGEMENT)
            roles = [s.admin.get_client_role(mgmt, name) for name in missing]
            s.admin.assign_client_role(_service_user(s, cid), mgmt, roles)
    return [_Step(_change("create", target, f"{REALM_MANAGEMENT}: {', '.join(missing)} (read "
                          "users to check access tokens)"), grant)]


def _steps(s: AdminSession, want: Desired, obs: Observed) -> list[_Step]:
    """In the order they must run: roles, clients (scopes, mappers), grants, realm settings."""
    clients: list[_Step] = []
    for spec in want.clients:
        exists = obs.clients[spec.client_id].rep is not None
        clients += (_client_steps if exists else _new_client_steps)(s, spec, obs)
    return [*_role_steps(s, want, obs), *clients, *_grant_steps(s, want, obs),
            *_service_account_steps(s, want, obs), *_identity_steps(s, want, obs)]


def _read(settings: Settings) -> tuple[AdminSession, list[_Step]]:
    session = connect(settings)
    want = desired(settings)
    return session, _steps(session, want, _observe(session, want))


# --------------------------------------------------------------------------------------------
# public API


def describe(settings: Settings) -> str:
    """Where this component works, for headings: 'realm thinkube at https://auth.example.com'."""
    url = settings.auth.keycloak_url.rstrip("/") if settings.auth.keycloak_url else "(unset)"
    return f"realm {settings.auth.realm} at {url}"


def plan(settings: Settings) -> list[Change]:
    """Every change apply would make, and what is already right. Reads only."""
    _, steps = _read(settings)
    return [step.change for step in steps]


def apply(settings: Settings, progress: Progress | None = None) -> list[Change]:
    """Make the realm match the config. Idempotent: a second run returns only 'unchanged'."""
    progress = progress or NullProgress()
    with progress.step(f"keycloak: read {describe(settings)}"):
        _, steps = _read(settings)
    pending = [step for step in steps if step.change.is_change]
    if pending:
        with progress.step(f"keycloak: apply {len(pending)} change(s)"):
            for step in pending:
                if step.run is not None:
                    step.run()
                progress.detail(f"{step.change.action} {step.change.target}")
    return [step.change for step in steps]


def client_secret(settings: Settings) -> SecretStr:
    """The OIDC client's secret, read back from Keycloak (for the server config; never print)."""
    session = connect(settings)
    client_id = settings.auth.client_id
    with session.call(f"read client {client_id}"):
        uuid = session.admin.get_client_id(client_id)
        if uuid is None:
            raise ClientNotProvisioned(
                f"client {client_id!r} does not exist in realm {settings.auth.realm!r} at "
                f"{session.url}", hint="Run `mlflow-stack apply` first.")
        value = session.admin.get_client_secrets(uuid).get("value")
    if not value:
        raise ClientNotProvisioned(
            f"client {client_id!r} in realm {settings.auth.realm!r} has no secret (is it a "
            "public client?)", hint="Run `mlflow-stack apply` to make it confidential.")
    return SecretStr(str(value))


def destroy(settings: Settings, purge: bool = False, dry_run: bool = False) -> list[Change]:
    """Undo apply. Without purge nothing in Keycloak is removed; with purge the clients (with
    their mappers and secret) and the two realm roles are deleted.

    Why keep everything without purge: the client secret is referenced by deployed servers and
    helpers (a new client gets a new secret), and deleting a role deletes every user's grant of
    it, including grants made by hand that apply cannot tell from its own. Revoking only the
    grants apply makes was rejected for the same reason. The realm and users are never touched.
    A realm that does not exist means there is nothing to remove.
    """
    try:
        session = connect(settings)
    except RealmNotFound:
        return [_change("unchanged", f"realm {settings.auth.realm}",
                        "does not exist; nothing to remove")]
    admin = session.admin
    a = settings.auth
    changes: list[Change] = []
    for client_id in (a.client_id, a.cli_client_id):
        if client_id is None:
            continue
        with session.call(f"read client {client_id}"):
            uuid = admin.get_client_id(client_id)
        if uuid is None:
            changes.append(_change("unchanged", f"client {client_id}", "does not exist"))
        elif not purge:
            changes.append(_change("unchanged", f"client {client_id}",
                                   "kept (--purge deletes it)"))
        else:
            changes.append(_change("delete", f"client {client_id}",
                                   "with its mappers and secret"))
            if not dry_run:
                with session.call(f"delete client {client_id}"):
                    admin.delete_client(uuid)
    for role in (a.admin_role, a.user_role):
        with session.call(f"read realm role {role}"):
            try:
                members = len(admin.get_realm_role_members(role))
            except KeycloakError as exc:
                if exc.response_code != 404:
                    raise
                changes.append(_change("unchanged", f"role {role}", "does not exist"))
                continue
        held = f"held directly by {members} user(s)"
        if not purge:
            changes.append(_change("unchanged", f"role {role}", f"kept, {held} (--purge "
                                   "deletes it)"))
            continue
        changes.append(_change("delete", f"role {role}", f"{held}; their grants go with it"))
        if not dry_run:
            with session.call(f"delete realm role {role}"):
                admin.delete_realm_role(role)
    return changes
