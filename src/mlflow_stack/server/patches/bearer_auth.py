"""Bearer tokens: whose account they act as, roles that follow the token, verified once.

- **Identity.** Before mlflow-oidc-auth provisions or resolves anything from a token of our
  issuer, it must be an access token and its verified claims may act only as the account they
  name (identity.py); the claims are kept for the role check below.
- **Roles follow the token.** mlflow-oidc-auth records a user's groups and admin flag at first
  sight and never re-reads them from later bearer tokens, so a role taken away in Keycloak
  keeps working. Here every newly seen bearer token re-derives the groups from the verified
  claims (through the configured group-detection plugin): without the user or admin role the
  request is refused, and changed groups or admin status are written to the auth DB. This runs
  for every new token in every worker process (a repeated token is answered by the cache
  below): a per-process "already synced these groups" shortcut was wrong with several
  workers, where another process may have written other roles since.
- **A new account's first requests all pass.** They often arrive together on several workers
  (a client's threads): while one worker creates the account, binds it to the token's subject
  and writes its roles, another's writes of the same rows collide and it was refused ("could
  not check the token's roles", "this account cannot be used here"). Such a refusal is checked
  again, whole, after a short pause (up to ``ATTEMPTS`` times); a refusal for a real reason
  refuses again.
- **A verified token is verified once.** mlflow-oidc-auth checks signature, expiry, audience
  and issuer and then queries the auth DB (does the user exist?) on every request, on the
  event loop. Here a token that passed all of that — and the role check — is remembered, keyed
  by the SHA-256 of the whole token string, until its ``exp`` (and at most
  ``MLFLOW_STACK_TOKEN_CACHE_SECONDS``, default the JWKS cache lifetime, so a verification is
  never trusted longer than the keys behind it). Any other string — a changed signature, a new
  token with new roles — is a miss and goes through every check. Failures are never cached.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mlflow_stack.server import identity, roles
from mlflow_stack.server.caches import ExpiringCache
from mlflow_stack.server.guards import Shape, wrapping
from mlflow_stack.server.log import server_log
from mlflow_stack.server.patches.user_facts import USER_FACTS
from mlflow_stack.server.tunables import seconds

_MIDDLEWARE = "mlflow_oidc_auth.middleware.auth_middleware"
VALIDATE = Shape(_MIDDLEWARE, "validate_token", ("token",))
AUTHENTICATE = Shape(_MIDDLEWARE, "AuthMiddleware._authenticate_bearer_token",
                     ("self", "auth_header"))
# What the full path establishes for the rest of the request, replayed on a cache hit.
WORKLOAD_BEARER = Shape(_MIDDLEWARE, "_WORKLOAD_BEARER")
BEARER_IDENTITY = Shape(_MIDDLEWARE, "_BEARER_IDENTITY")
EXTRACT_USERNAME = Shape("mlflow_oidc_auth.utils.oidc_field_extraction", "extract_username",
                         ("payload", "source"))
BEARER_SOURCE = Shape("mlflow_oidc_auth.utils.oidc_field_extraction", "BEARER_TOKEN_SOURCE")
UPSTREAM = (VALIDATE, AUTHENTICATE, WORKLOAD_BEARER, BEARER_IDENTITY, EXTRACT_USERNAME,
            BEARER_SOURCE)

#: Refusals a new account's first requests can meet while another worker is still writing
#: that account (creating it, binding it to the token's subject, writing its roles).
FIRST_SIGHT_RACES = frozenset({"This account cannot be used here",
                               "Could not check the token's roles"})
ATTEMPTS = 4
PAUSE = 0.05  # seconds, times the attempt: a provisioning commits within milliseconds

_VALIDATED_CLAIMS: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "mlflow_stack_validated_claims", default=None)


@dataclass(frozen=True)
class BearerAuth:
    """What authenticating one bearer token established, replayed while it is cached."""

    username: str
    workload: bool  # mlflow-oidc-auth's _WORKLOAD_BEARER for this token
    identity: object  # mlflow-oidc-auth's _BEARER_IDENTITY: (provider, subject)


def token_key(token: str) -> bytes:
    """The cache key of a token: a digest of the *whole* string (header, claims, signature)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def verified_ttl(claims: Mapping[str, Any], cap: float,
                 now: Callable[[], float] = time.time) -> float:
    """How long a verification of a token with these claims may be reused: until ``exp``, at
    most ``cap``. 0 (do not cache) without a numeric ``exp``."""
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return 0.0
    return max(0.0, min(float(exp) - now(), cap))


def sync(username: str, claims: Mapping[str, Any], groups: list[str], allowed: bool,
         is_admin: bool) -> None:
    """Bind the account to the token's subject (when allowed) and write its roles."""
    if allowed:
        identity.bind(username, claims)
    roles.sync_user(username, groups, is_admin)


def apply() -> None:
    original_validate = VALIDATE.require()
    original_bearer = AUTHENTICATE.require()
    workload_bearer = WORKLOAD_BEARER.require()
    bearer_identity = BEARER_IDENTITY.require()
    extract_username = EXTRACT_USERNAME.require()
    bearer_source = BEARER_SOURCE.require()
    from mlflow_oidc_auth.config import config

    tokens: ExpiringCache[bytes, BearerAuth] = ExpiringCache()
    token_cap = seconds("MLFLOW_STACK_TOKEN_CACHE_SECONDS",
                        float(config.OIDC_JWKS_CACHE_TTL_SECONDS))

    @wrapping(original_validate)
    def validate_and_keep(token: str) -> Any:
        payload = original_validate(token)
        if payload.get("iss") == config.OIDC_ISSUER:
            # Before mlflow-oidc-auth provisions or resolves anything from this token.
            reason = identity.token_type_refusal(payload)
            if reason:
                identity.REFUSAL.set(reason)
                raise identity.IdentityRefused(reason)
            username, _ = extract_username(payload, source=bearer_source)
            identity.check(username, payload)
        _VALIDATED_CLAIMS.set(payload)
        return payload

    async def verify_and_sync(self: Any, auth_header: str, token: str,
                              ) -> tuple[bool, str | None, str, Mapping[str, Any] | None]:
        """mlflow-oidc-auth's full bearer check, then our role gate and sync."""
        marker = _VALIDATED_CLAIMS.set(None)
        try:
            ok, username, error = await original_bearer(self, auth_header)
            claims = _VALIDATED_CLAIMS.get()
        finally:
            _VALIDATED_CLAIMS.reset(marker)
        # Only tokens of our own issuer carry our roles (service-account and other providers'
        # tokens keep mlflow-oidc-auth's handling, and are not cached).
        if not ok or not username or claims is None or claims.get("iss") != config.OIDC_ISSUER:
            return ok, username, error, None
        try:
            groups = roles.groups_from(token, claims)
            allowed, is_admin = roles.admission_of(groups)
            sync(username, claims, groups, allowed, is_admin)
        except Exception as exc:  # fail closed: a sync we cannot do must not grant access
            server_log().warning("Bearer sync for %s failed: %s", username, type(exc).__name__)
            identity.REFUSAL.set("the token's roles could not be applied to this account (is "
                                 "it MLflow's last administrator? grant mlflow-admin to "
                                 "another user)")
            return False, None, "Could not check the token's roles", None
        if not allowed:
            return False, None, "Not in an allowed group", None
        return ok, username, error, claims

    @wrapping(original_bearer)
    async def bearer_cached(self: Any, auth_header: str) -> tuple[bool, str | None, str]:
        token = auth_header.split(" ", 1)[1]  # exactly the string mlflow-oidc-auth verifies
        key = token_key(token)
        hit = tokens.get(key)
        if hit is not None:
            # This exact string passed every check before and has not expired: replay what
            # the full path establishes for the rest of the request.
            workload_bearer.set(hit.workload)
            bearer_identity.set(hit.identity)
            return True, hit.username, ""
        ok, username, error, claims = await verify_and_sync(self, auth_header, token)
        attempt = 1
        while not ok and error in FIRST_SIGHT_RACES and attempt < ATTEMPTS:
            # A new account's first requests arrive together on several workers: while one
            # creates, binds and syncs the account, another's writes of the same rows collide
            # and it is refused. Once the first has committed, the whole check passes (or
            # refuses again for a real reason, e.g. an account bound to another subject).
            await asyncio.sleep(PAUSE * attempt)
            identity.REFUSAL.set("")
            ok, username, error, claims = await verify_and_sync(self, auth_header, token)
            attempt += 1
        if ok and username and claims is not None:
            # A new token is where role changes arrive: read the user's flags fresh for it.
            USER_FACTS.discard(username)
            tokens.put(key, BearerAuth(username, workload_bearer.get(), bearer_identity.get()),
                       verified_ttl(claims, token_cap))
        return ok, username, error

    VALIDATE.owner().validate_token = validate_and_keep
    AUTHENTICATE.owner()._authenticate_bearer_token = bearer_cached
