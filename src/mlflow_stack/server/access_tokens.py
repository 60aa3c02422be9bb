"""mlflow-oidc-auth's own long-lived access tokens: off, or checked against Keycloak.

mlflow-oidc-auth lets any user mint a token (up to a year) and sign in with HTTP Basic
``email:token``. Those tokens are checked against its own database only, so after Keycloak
removes a role, disables the account or demotes an admin, the token kept working.

- ``MLFLOW_STACK_ACCESS_TOKENS=false`` (``auth.access_tokens: false``, the default): Basic
  credentials are refused with 401 and the routes that issue tokens with 403, each with a
  message naming the setting. Listing and deleting existing tokens still work.
- ``true``: every Basic sign-in is checked against Keycloak (server/directory.py) through the
  account's bound subject: the user must exist, be enabled, still have the account's verified
  email and hold the user or admin role; the groups and admin flag are re-synced from the roles.
  The answer is reused per process for ``MLFLOW_STACK_REVOCATION_SECONDS`` (default 30, at
  most 60): that is how long a revocation takes. A lookup that fails refuses the credential.

patches/basic_auth.py puts this in front of mlflow-oidc-auth's Basic sign-in.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable

from mlflow_stack.server import identity
from mlflow_stack.server.asgi import ASGIApp, Receive, Scope, Send, send_error
from mlflow_stack.server.caches import ExpiringCache
from mlflow_stack.server.directory import (
    Account,
    DirectoryError,
    KeycloakDirectory,
    from_environment,
    revocation_seconds,
)

logger = logging.getLogger(__name__)


# The routes that issue tokens (own and, for admins, others'), under /api and /ajax-api.
_ISSUE = re.compile(r"^/(?:ajax-)?api/2\.0/mlflow/users/(?:access-token|current/tokens"
                    r"|[^/]+/tokens)/?$")

OFF_BASIC = ("HTTP Basic access tokens are turned off on this platform (auth.access_tokens: "
             "false): send a Keycloak access token as 'Authorization: Bearer ...' "
             "(mlflow-stack login / MLFLOW_TRACKING_AUTH=keycloak)")
OFF_ISSUE = ("long-lived access tokens are turned off on this platform (auth.access_tokens: "
             "false); an administrator can turn them on in the platform config")


def enabled() -> bool:
    return os.environ.get("MLFLOW_STACK_ACCESS_TOKENS", "false").strip().lower() == "true"


def issues_token(method: str, path: str) -> bool:
    if not _ISSUE.match(path):
        return False
    if path.rstrip("/").endswith("/access-token"):
        return method == "PATCH"
    return method == "POST"


class AccessTokensOff:
    """Pure ASGI: refuses Basic credentials and token issuance before anything reads them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope.get("headers", ()):
                if name == b"authorization" and value[:6].lower() == b"basic ":
                    await send_error(send, 401, "UNAUTHENTICATED", OFF_BASIC)
                    return
            if issues_token(scope["method"], scope["path"]):
                await send_error(send, 403, "PERMISSION_DENIED", OFF_ISSUE)
                return
        await self.app(scope, receive, send)


# --------------------------------------------------------------------------------------------
# tokens on: every Basic sign-in checked against Keycloak


def account_refusal(username: str, account: Account, admission: Callable[[list[str]],
                    tuple[bool, bool]], groups_of: Callable[[Account], list[str]],
                    ) -> tuple[str, list[str], bool]:
    """(why refused or '', groups, is_admin) for the Keycloak account behind ``username``."""
    if not account.exists:
        return "the Keycloak user of this account no longer exists", [], False
    if not account.enabled:
        return "the Keycloak user of this account is disabled", [], False
    if account.email != username or not account.email_verified:
        return ("the Keycloak user of this account no longer has its verified email "
                f"{username}"), [], False
    groups = groups_of(account)
    allowed, is_admin = admission(groups)
    if not allowed:
        return "the Keycloak user of this account holds neither MLflow role", [], False
    return "", groups, is_admin


class BasicChecker:
    """Decides, per account and at most every ``ttl`` seconds, whether Keycloak still agrees."""

    def __init__(self, directory: KeycloakDirectory, ttl: float,
                 admission: Callable[[list[str]], tuple[bool, bool]],
                 groups_of: Callable[[Account], list[str]],
                 sync: Callable[[str, list[str], bool], bool],
                 on_change: Callable[[str], None]) -> None:
        self.directory = directory
        self.ttl = ttl
        self._admission = admission
        self._groups_of = groups_of
        self._sync = sync
        self._on_change = on_change
        self._decisions: ExpiringCache[str, str] = ExpiringCache()

    def refusal(self, username: str) -> str:
        hit = self._decisions.get(username)
        if hit is not None:
            return hit
        try:
            subjects = identity.bound_subjects(username)
            if not subjects:
                reason = ("this account is not bound to a Keycloak user yet: sign in once with "
                          "Keycloak (browser or `mlflow-stack login`)")
            else:
                account = self.directory.account(subjects[0])
                reason, groups, is_admin = account_refusal(
                    username, account, self._admission, self._groups_of)
                if not reason:
                    self._sync(username, groups, is_admin)
                # Another worker may have written the flags: read them fresh after each check.
                self._on_change(username)
        except DirectoryError as exc:
            # Fail closed, and ask again next time: an outage must not freeze a decision.
            logger.warning("Access token of %s refused: %s", username, exc)
            return "Keycloak could not be asked whether this account may still sign in"
        except Exception as exc:  # a sync we cannot do must not grant access
            # e.g. mlflow-oidc-auth refuses to demote its last active administrator.
            logger.warning("Access token of %s refused: roles not applied (%s)", username,
                           type(exc).__name__)
            return ("Keycloak's current roles could not be applied to this account (is it "
                    "MLflow's last administrator? grant mlflow-admin to another user)")
        self._decisions.put(username, reason, self.ttl)
        return reason


def default_checker(admission: Callable[[list[str]], tuple[bool, bool]],
                    groups_of: Callable[[Account], list[str]],
                    sync: Callable[[str, list[str], bool], bool],
                    on_change: Callable[[str], None]) -> Callable[[], BasicChecker]:
    def build() -> BasicChecker:
        return BasicChecker(from_environment(), revocation_seconds(), admission, groups_of,
                            sync, on_change)
    return build
