"""Who `verify` runs as: a temporary Keycloak user holding only the user role (with a config
and the Keycloak admin password), or the user's own credentials as the MLflow plugin finds
them. Each Identity knows how to undo itself (the temporary user is deleted)."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from mlflow_stack.config.model import Settings

TEMP_PREFIX = "mlflow-verify-"


@dataclass
class Identity:
    """A bearer-token source for the verification and how to undo it."""

    description: str
    token: Callable[[], str] = field(repr=False)
    temporary: bool = False  # a temporary mlflow-user: the role check must run as it
    remove: Callable[[], str] | None = field(default=None, repr=False)


def temporary_user(settings: Settings) -> Identity:
    """A realm user holding only the user role, signed in with the password grant."""
    from keycloak.exceptions import KeycloakError

    from mlflow_stack.client.oidc import KeycloakClient
    from mlflow_stack.client.tokens import TokenManager, TokenSource
    from mlflow_stack.components import keycloak as kc
    from mlflow_stack.launch.oidc_auth import issuer
    from mlflow_stack.resolve import resolve

    a = settings.auth
    session = kc.connect(settings)
    username = f"{TEMP_PREFIX}{secrets.token_hex(4)}"
    # Satisfies the usual password policies (length, upper, lower, digit, special).
    password = secrets.token_urlsafe(24) + "Aa1!"
    with session.call(f"read realm role {a.user_role}"):
        role = session.admin.get_realm_role(a.user_role)
    with session.call(f"create the temporary user {username}"):
        user_id = session.admin.create_user({
            "username": username, "enabled": True, "email": f"{username}@mlflow-stack.invalid",
            "emailVerified": True, "firstName": "MLflow", "lastName": "Verify",
            "requiredActions": [],
            "credentials": [{"type": "password", "value": password, "temporary": False}],
        })

    def remove() -> str:
        try:
            session.admin.delete_user(user_id)
        except KeycloakError as exc:
            if exc.response_code != 404:
                raise session.error(f"delete the temporary user {username}", exc) from None
        return f"Keycloak user {username} deleted"

    try:
        with session.call(f"grant {a.user_role} to {username}"):
            session.admin.assign_realm_roles(user_id, [role])
        secret = resolve(settings, cluster=False, client_secret="read").secrets.oidc_client_secret
        assert secret is not None  # resolve raises when it cannot find one
        client = KeycloakClient.for_issuer(issuer(settings), a.client_id,
                                           secret.get_secret_value(),
                                           str(a.ca_bundle) if a.ca_bundle else None)
        manager = TokenManager(TokenSource("password", client, username, password), None)
    except BaseException:
        with contextlib.suppress(Exception):  # the original error is the one to report
            remove()
        raise
    return Identity(f"temporary Keycloak user {username} (realm role {a.user_role})",
                    manager.token, temporary=True, remove=remove)


_KEYCLOAK_ENV = ("MLFLOW_KEYCLOAK_TOKEN_URL", "MLFLOW_AUTH_USERNAME", "MLFLOW_AUTH_PASSWORD",
                 "MLFLOW_CLIENT_SECRET")


def environment_identity(env: Mapping[str, str]) -> Identity | None:
    """The user's own credentials, as MLflow would use them; None when there are none."""
    from mlflow_stack.client import tokens
    from mlflow_stack.client.oidc import TokenConfigError

    plugin = (env.get("MLFLOW_TRACKING_AUTH") or "").strip().lower() == "keycloak"
    static = env.get("MLFLOW_TRACKING_TOKEN")
    if static and not plugin:
        return Identity("MLFLOW_TRACKING_TOKEN", lambda: static)
    try:
        manager = tokens.manager_from_env(env)
    except TokenConfigError:
        if plugin or any(env.get(name) for name in _KEYCLOAK_ENV):
            raise
        return None
    return Identity(manager.source.describe(), manager.token)
