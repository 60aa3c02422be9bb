"""Keycloak roles -> MLflow groups and admin flag, and writing them to mlflow-oidc-auth's DB.

Shared by the bearer-token patch (every new token) and the access-token check (every Basic
sign-in, tokens on): both admit with the same gate as interactive login and re-sync what
changed, so a role taken away in Keycloak stops working.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlflow_stack.server.directory import Account
from mlflow_stack.server.log import server_log


def admission(groups: list[str], user_groups: list[str], admin_groups: list[str],
              patterns: list[str]) -> tuple[bool, bool]:
    """(allowed, is_admin) for these groups, the same gate as interactive login."""
    from mlflow_oidc_auth.group_patterns import admitting_rule

    is_admin = any(g in admin_groups for g in groups)
    allowed = is_admin or admitting_rule(groups, user_groups, patterns) is not None
    return allowed, is_admin


def admission_of(groups: list[str]) -> tuple[bool, bool]:
    """``admission`` with the server's configured user, admin and pattern groups."""
    from mlflow_oidc_auth.config import config

    return admission(groups, list(config.OIDC_GROUP_NAME), list(config.OIDC_ADMIN_GROUP_NAME),
                     list(config.OIDC_GROUP_NAME_PATTERN))


def sync_user(username: str, groups: list[str], is_admin: bool) -> bool:
    """Write these groups and admin flag if they differ from the auth DB; True if it did."""
    from mlflow_oidc_auth.provider_registry import DEFAULT_PROVIDER_ID
    from mlflow_oidc_auth.store import store

    if not store.has_user(username):
        return False  # first sight: mlflow-oidc-auth's provisioning has just run (or refused)
    written_by = f"oidc:{DEFAULT_PROVIDER_ID}"
    changed = False
    profile = store.get_user_profile(username)
    if bool(profile.is_admin) != is_admin:
        store.update_user(username=username, is_admin=is_admin, written_by=written_by)
        server_log().info("Role sync: %s admin=%s from Keycloak's roles", username, is_admin)
        changed = True
    current = sorted(store.get_groups_for_user(username))
    if current != sorted(groups):
        store.populate_groups(group_names=groups, written_by=written_by)
        store.set_user_groups(username, groups, written_by=written_by)
        server_log().info("Role sync: %s groups updated from Keycloak's roles", username)
        changed = True
    return changed


def groups_from(token: str, claims: Mapping[str, Any]) -> list[str]:
    """The groups of these verified claims, through the configured group-detection plugin."""
    from mlflow_oidc_auth.config import config
    from mlflow_oidc_auth.group_patterns import normalize_group_values
    from mlflow_oidc_auth.utils.group_detection import call_group_detection_plugin

    if config.OIDC_GROUP_DETECTION_PLUGIN:
        raw = call_group_detection_plugin(config.OIDC_GROUP_DETECTION_PLUGIN, token,
                                          {"access_token": token, "claims": dict(claims)})
    else:
        raw = claims.get(config.OIDC_GROUPS_ATTRIBUTE, [])
    return list(normalize_group_values(raw))


def groups_of_account(account: Account) -> list[str]:
    """The groups the account's current Keycloak roles give, as a token of it would carry."""
    from mlflow_oidc_auth.config import config

    claims: dict[str, Any] = {}
    node = claims
    *parents, leaf = (config.OIDC_GROUPS_ATTRIBUTE or "realm_access.roles").split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = list(account.realm_roles)
    if account.client_roles:
        claims.setdefault("resource_access", {})[config.OIDC_CLIENT_ID] = {
            "roles": list(account.client_roles)}
    return groups_from("", claims)
