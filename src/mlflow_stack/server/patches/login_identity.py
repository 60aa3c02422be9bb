"""Browser logins follow the same identity rule as bearer tokens (identity.py).

Before mlflow-oidc-auth provisions or binds an account at login, the verified userinfo must
name it by verified email and belong to the Keycloak subject the account is bound to.
"""

from __future__ import annotations

from typing import Any

from mlflow_stack.server import identity
from mlflow_stack.server.guards import Shape, wrapping

PROVISION_LOGIN = Shape("mlflow_oidc_auth.routers.auth", "_provision_login",
                        ("provider", "username", "display_name", "userinfo", "user_groups",
                         "access_token", "method"))
DEFAULT_PROVIDER = Shape("mlflow_oidc_auth.provider_registry", "DEFAULT_PROVIDER_ID")
UPSTREAM = (PROVISION_LOGIN, DEFAULT_PROVIDER)


def apply() -> None:
    original = PROVISION_LOGIN.require()
    default_provider = DEFAULT_PROVIDER.require()
    if getattr(original, "_mlflow_stack", False):
        return

    @wrapping(original)
    def provision_login(provider: Any, *, username: str, userinfo: dict[str, Any],
                        **kwargs: Any) -> tuple[str | None, list[str]]:
        if getattr(provider, "id", None) == default_provider:
            reason = identity.refusal(username, userinfo)
            if reason:
                return None, [reason]
        result: tuple[str | None, list[str]] = original(
            provider, username=username, userinfo=userinfo, **kwargs)
        return result

    provision_login._mlflow_stack = True  # type: ignore[attr-defined]
    PROVISION_LOGIN.owner()._provision_login = provision_login
