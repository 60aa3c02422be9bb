"""Keycloak realm roles (and optionally client roles) as mlflow-oidc-auth groups.

mlflow-oidc-auth calls ``get_user_groups(access_token, token_response=...)``:

- at browser login ``token_response`` is authlib's token response, whose ``userinfo`` holds the
  claims of the ID token authlib has already verified (signature, issuer, audience, nonce);
- on the bearer path it is ``{"access_token": ..., "claims": <validated payload>}``.

Only those verified claims are read. The raw ``access_token`` is never decoded: an unverified
decode (what the reference plugin did) lets anyone who can mint a token choose their groups.
Without verified claims the answer is "no groups", which admits nobody.

Environment (read on each call, so tests and operators can change it without a reload):

- ``OIDC_GROUPS_ATTRIBUTE``: dotted path of the roles claim (default ``realm_access.roles``);
- ``MLFLOW_KEYCLOAK_CLIENT_ROLES``: ``true`` to add ``resource_access.<client>.roles``;
- ``OIDC_CLIENT_ID``: that client (default ``mlflow``).
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_ATTRIBUTE = "realm_access.roles"
# Roles Keycloak gives every user; as groups they would only add noise to the permissions UI.
BUILTIN_ROLES = frozenset({"offline_access", "uma_authorization"})
BUILTIN_PREFIXES = ("default-roles-",)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def verified_claims(token_response: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The claims mlflow-oidc-auth has verified: ``claims`` (bearer) or ``userinfo`` (login)."""
    if not isinstance(token_response, Mapping):
        return {}
    for key in ("claims", "userinfo"):
        value = token_response.get(key)
        if isinstance(value, Mapping) and value:
            return value
    return {}


def _at_path(claims: Mapping[str, Any], path: str) -> object:
    node: object = claims
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def _names(value: object) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        return []
    return [v.strip() for v in value if isinstance(v, str) and v.strip()]


def is_builtin(role: str) -> bool:
    return role in BUILTIN_ROLES or role.startswith(BUILTIN_PREFIXES)


def groups_from_claims(
    claims: Mapping[str, Any],
    *,
    attribute: str = DEFAULT_ATTRIBUTE,
    client_id: str | None = None,
    include_client_roles: bool = False,
) -> list[str]:
    """Realm roles at ``attribute`` (plus the client's roles), built-ins removed, order kept."""
    roles = _names(_at_path(claims, attribute))
    if include_client_roles and client_id:
        access = claims.get("resource_access")
        if isinstance(access, Mapping):
            client = access.get(client_id)
            if isinstance(client, Mapping):
                roles += _names(client.get("roles"))
    return list(dict.fromkeys(r for r in roles if not is_builtin(r)))


def get_user_groups(
    access_token: str, token_response: Mapping[str, Any] | None = None
) -> list[str]:
    """The mlflow-oidc-auth plugin hook. ``access_token`` is deliberately unused (unverified)."""
    del access_token
    claims = verified_claims(token_response)
    if not claims:
        logger.warning("keycloak_groups: no verified claims passed in; granting no groups")
        return []
    return groups_from_claims(
        claims,
        attribute=os.environ.get("OIDC_GROUPS_ATTRIBUTE") or DEFAULT_ATTRIBUTE,
        client_id=os.environ.get("OIDC_CLIENT_ID") or "mlflow",
        include_client_roles=_truthy(os.environ.get("MLFLOW_KEYCLOAK_CLIENT_ROLES")),
    )


PLUGIN_ENV = "OIDC_GROUP_DETECTION_PLUGIN"


def require_configured_plugin() -> None:
    """Refuse to start a server whose group plugin cannot be imported (mlflow-oidc-auth loads it
    at each sign-in): every sign-in would fail, one at a time, and from outside a pod nobody
    could tell why. A pod that cannot start shows in `doctor`'s pods check, with this message in
    its log."""
    name = os.environ.get(PLUGIN_ENV)
    if not name:
        return
    try:
        importlib.import_module(name)
    except ImportError as exc:
        raise RuntimeError(
            f"the group plugin {name!r} ({PLUGIN_ENV}, auth.group_plugin) cannot be imported "
            f"by this server: {exc}. Install mlflow-stack into the server's environment (it "
            "ships mlflow_keycloak_groups) or fix auth.group_plugin.") from None
