"""Say why a credential was refused.

A credential refused for a reason its holder can act on (their own valid token: an unverified
email, an ID token, revoked Keycloak access) says so in the 401 body (``identity.REFUSAL``,
set by the identity and role checks).
"""

from __future__ import annotations

from typing import Any

from mlflow_stack.server import identity
from mlflow_stack.server.guards import Shape, wrapping

DENY = Shape("mlflow_oidc_auth.middleware.auth_middleware", "AuthMiddleware._deny",
             ("self", "request", "path"))
UPSTREAM = (DENY,)


def apply() -> None:
    original = DENY.require()
    from fastapi.responses import JSONResponse

    @wrapping(original)
    async def deny(self: Any, request: Any, path: str) -> Any:
        reason = identity.REFUSAL.get()
        response = await original(self, request, path)
        if reason and response.status_code == 401:
            return JSONResponse(status_code=401,
                                content={"detail": "Authentication required", "reason": reason})
        return response

    DENY.owner()._deny = deny
