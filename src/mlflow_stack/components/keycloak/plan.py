"""The diff: what observe read against the desired state, as steps (a Change plus the write
that makes it), in the order they must run. Reads nothing: every `run` closure uses the session
it was given, and reads only what an earlier step may have created.

A run that fails half-way can simply be repeated.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from mlflow_stack.components.base import Action, Change
from mlflow_stack.components.keycloak.desired import (
    IDENTITY_ATTRIBUTE,
    IMPLICIT_SCOPES,
    NAME,
    REALM_MANAGEMENT,
    ClientSpec,
    Desired,
    desired,
)
from mlflow_stack.components.keycloak.observe import Observed, ObservedClient
from mlflow_stack.components.keycloak.session import AdminSession, client_uuid, service_user
from mlflow_stack.components.protocol import Step
from mlflow_stack.config.model import Settings
from mlflow_stack.progress import Progress

# Client fields compared as sets (order is not meaningful to Keycloak).
_SET_FIELDS = ("redirectUris", "webOrigins")


def change(action: Action, target: str, detail: str = "") -> Change:
    return Change(NAME, action, target, detail)


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


def _role_steps(s: AdminSession, want: Desired, obs: Observed) -> list[Step]:
    steps: list[Step] = []
    for name, description in want.roles.items():
        if name in obs.roles:
            steps.append(Step(change("unchanged", f"role {name}")))
            continue

        def create_role(_: Progress, name: str = name, description: str = description) -> None:
            with s.call(f"create realm role {name}"):
                s.admin.create_realm_role({"name": name, "description": description},
                                          skip_exists=True)
        steps.append(Step(change("create", f"role {name}", description), create_role))
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


def _new_client_steps(s: AdminSession, want: ClientSpec, obs: Observed) -> list[Step]:
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
    if want.secret is not None and not want.public:
        rep["secret"] = want.secret.get_secret_value()

    def create_client(_: Progress) -> None:
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
    secret = "; secret: the configured one" if "secret" in rep else ""
    return [
        Step(change("create", f"client {cid}",
                    f"{_kind(want)}; redirectUris: {', '.join(c['redirectUris'])}{origins}"
                    f"; access.token.lifespan {c['attributes']['access.token.lifespan']}"
                    + secret),
             create_client),
        Step(change("create", f"client {cid} scopes", "; ".join([scopes, *notes]))),
        *(Step(change("create", f"client {cid} mapper {m['name']}", _describe_mapper(m)))
          for m in want.mappers),
    ]


def _client_steps(s: AdminSession, want: ClientSpec, obs: Observed) -> list[Step]:
    """Repairs of an existing client: its settings, scopes and mappers, each its own record."""
    have_client = obs.clients[want.client_id]
    assert have_client.rep is not None
    assert have_client.uuid is not None
    admin, uuid, cid = s.admin, have_client.uuid, want.client_id
    steps: list[Step] = []

    diff = _client_diff(have_client.rep, want.client)
    if diff:
        payload = copy.deepcopy(want.client)
        payload["attributes"] = {**(have_client.rep.get("attributes") or {}),
                                 **want.client["attributes"]}

        def update_client(_: Progress) -> None:
            with s.call(f"update client {cid}"):
                admin.update_client(uuid, payload)
        steps.append(Step(change("update", f"client {cid}", "; ".join(diff)), update_client))
    else:
        steps.append(Step(change("unchanged", f"client {cid}")))

    moves, notes = _scope_plan(want, obs, have_client)
    if moves:
        def fix_scopes(_: Progress) -> None:
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
        steps.append(Step(change("update", f"client {cid} scopes",
                                 "; ".join(_scope_detail(moves, have_client) + notes)),
                          fix_scopes))
    else:
        steps.append(Step(change("unchanged", f"client {cid} scopes", "; ".join(notes))))

    for m in want.mappers:
        target = f"client {cid} mapper {m['name']}"
        have = have_client.mappers.get(m["name"])
        if have is None:
            def add_mapper(_: Progress, m: dict[str, Any] = m) -> None:
                with s.call(f"add mapper {m['name']} to client {cid}"):
                    admin.add_mapper_to_client(uuid, m)
            steps.append(Step(change("create", target, _describe_mapper(m)), add_mapper))
            continue
        mdiff = _mapper_diff(have, m)
        if not mdiff:
            steps.append(Step(change("unchanged", target)))
            continue

        def fix_mapper(_: Progress, m: dict[str, Any] = m, have: dict[str, Any] = have) -> None:
            with s.call(f"update mapper {m['name']} of client {cid}"):
                if have.get("protocolMapper") != m["protocolMapper"]:
                    # A mapper's type cannot be changed in place.
                    admin.remove_client_mapper(uuid, have["id"])
                    admin.add_mapper_to_client(uuid, m)
                else:
                    admin.update_client_mapper(uuid, have["id"], {**m, "id": have["id"]})
        steps.append(Step(change("update", target, "; ".join(mdiff)), fix_mapper))
    return steps


def _grant_steps(s: AdminSession, want: Desired, obs: Observed) -> list[Step]:
    steps: list[Step] = []
    role = want.admin_role
    for username in want.admin_users:
        target = f"user {username} role {role}"
        if role in obs.user_roles.get(username, set()):
            steps.append(Step(change("unchanged", target)))
            continue

        def grant(_: Progress, username: str = username) -> None:
            with s.call(f"grant role {role} to user {username}"):
                # Read at run time: the role may have been created by an earlier step.
                s.admin.assign_realm_roles(obs.users[username], [s.admin.get_realm_role(role)])
        steps.append(Step(change("create", target, f"grant realm role {role}"), grant))
    return steps


def _identity_steps(s: AdminSession, want: Desired, obs: Observed) -> list[Step]:
    """The MLflow account is named by the email: users must not set their own (a self-set
    address of a deleted colleague would name the colleague's account)."""
    if not want.lock_identity or obs.identity_editors is None:
        return []
    target = f"realm user profile attribute {IDENTITY_ATTRIBUTE}"
    if obs.identity_editors == ["admin"]:
        return [Step(change("unchanged", target, "edited by administrators only"))]

    def lock(_: Progress) -> None:
        with s.call("update the realm's user profile"):
            # Read again at run time and change only this attribute's edit permission.
            profile = s.admin.get_realm_users_profile()
            for attribute in profile.get("attributes") or []:
                if attribute.get("name") == IDENTITY_ATTRIBUTE:
                    attribute.setdefault("permissions", {})["edit"] = ["admin"]
            s.admin.update_realm_users_profile(profile)
    editors = ", ".join(obs.identity_editors) or "nobody"
    return [Step(change("update", target, f"edit: {editors} → admin (users of every client "
                        "in the realm can no longer change their own email)"), lock)]


def _service_account_steps(s: AdminSession, want: Desired, obs: Observed) -> list[Step]:
    if not want.directory_roles:
        return []
    cid = want.clients[0].client_id
    target = f"client {cid} service account roles"
    have = obs.service_roles or set()
    missing = [r for r in want.directory_roles if r not in have]
    if not missing:
        return [Step(change("unchanged", target, ", ".join(want.directory_roles)))]

    def grant(_: Progress) -> None:
        with s.call(f"grant {', '.join(missing)} to the service account of {cid}"):
            # Read at run time: the service account may have been enabled by an earlier step.
            mgmt = client_uuid(s, REALM_MANAGEMENT)
            roles = [s.admin.get_client_role(mgmt, name) for name in missing]
            s.admin.assign_client_role(service_user(s, cid), mgmt, roles)
    return [Step(change("create", target, f"{REALM_MANAGEMENT}: {', '.join(missing)} (read "
                        "users to check access tokens)"), grant)]


def plan(s: AdminSession, settings: Settings, observed: Observed) -> list[Step]:
    """The steps that make the realm match the config, from what observe read (no reads here:
    a `run` reads only what an earlier step may have just created)."""
    return steps(s, desired(settings), observed)


def steps(s: AdminSession, want: Desired, obs: Observed) -> list[Step]:
    """In the order they must run: roles, clients (scopes, mappers), grants, realm settings."""
    clients: list[Step] = []
    for spec in want.clients:
        exists = obs.clients[spec.client_id].rep is not None
        clients += (_client_steps if exists else _new_client_steps)(s, spec, obs)
    return [*_role_steps(s, want, obs), *clients, *_grant_steps(s, want, obs),
            *_service_account_steps(s, want, obs), *_identity_steps(s, want, obs)]
