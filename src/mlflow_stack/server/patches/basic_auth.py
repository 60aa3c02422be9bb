"""mlflow-oidc-auth's own long-lived access tokens (HTTP Basic): refused, or checked against
Keycloak on every sign-in (access_tokens.py has the rule and the checker)."""

from __future__ import annotations

import asyncio
from typing import Any

from mlflow_stack.server import access_tokens, identity, roles
from mlflow_stack.server.guards import Shape, wrapping
from mlflow_stack.server.patches.user_facts import USER_FACTS

BASIC = Shape("mlflow_oidc_auth.middleware.auth_middleware",
              "AuthMiddleware._authenticate_basic_auth", ("self", "auth_header"))
UPSTREAM = (BASIC,)


def apply(app: Any) -> None:
    original = BASIC.require()
    if not access_tokens.enabled():
        app.add_middleware(access_tokens.AccessTokensOff)
        return
    checker_factory = access_tokens.default_checker(
        roles.admission_of, roles.groups_of_account, roles.sync_user, USER_FACTS.discard)
    checker: access_tokens.BasicChecker | None = None

    @wrapping(original)
    async def basic_checked(self: Any, auth_header: str) -> tuple[bool, str | None, str]:
        nonlocal checker
        ok, username, error = await original(self, auth_header)
        if not ok or not username:
            return ok, username, error
        if checker is None:
            checker = checker_factory()
        reason = await asyncio.to_thread(checker.refusal, username)
        if reason:
            identity.REFUSAL.set(reason)
            return False, None, reason
        return ok, username, error

    BASIC.owner()._authenticate_basic_auth = basic_checked
