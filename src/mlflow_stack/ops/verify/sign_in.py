"""The token step: who verifies (a temporary mlflow-user, or the user's own credentials), or
why no token is needed (no SSO)."""

from __future__ import annotations

from mlflow_stack.ops.verify import access
from mlflow_stack.ops.verify.context import Skip, StepFailed, Verification
from mlflow_stack.ops.verify.credentials import environment_identity, temporary_user


def token(v: Verification) -> str:
    s = v.settings
    if s is not None and not s.sso:
        v.auth_on = False
        v.auth_off_reason = "auth.provider is none (no SSO)"
        raise Skip(v.auth_off_reason)
    if s is not None and s.secrets.effective_keycloak_admin_password is not None:
        v.identity = temporary_user(s)
    else:
        v.identity = environment_identity(v.env)
    if v.identity is None:
        code = access.anonymous_status(v)
        if code == 200:
            v.auth_on = False
            v.auth_off_reason = ("no credentials given and the server answers tracking "
                                 "calls without a token (no SSO)")
            raise Skip(v.auth_off_reason)
        hint = ("set KEYCLOAK_ADMIN_PASSWORD (or ADMIN_PASSWORD) to verify as a temporary "
                "mlflow-user" if s is not None else "")
        raise StepFailed(
            f"the server requires a token (anonymous call: HTTP {code}) and no credentials "
            "were found: run `mlflow-stack login`, set MLFLOW_KEYCLOAK_TOKEN_URL with "
            "MLFLOW_AUTH_USERNAME/MLFLOW_AUTH_PASSWORD, or MLFLOW_TRACKING_TOKEN"
            + (f"; or {hint}" if hint else ""))
    v.auth_on = True
    from mlflow_stack.client.oidc import unverified_claims

    token = v.identity.token()
    who = unverified_claims(token).get("preferred_username")
    return f"{v.identity.description}" + (f", signed in as {who}" if who and
                                           who not in v.identity.description else "")
