"""Whose MLflow account a Keycloak identity may act as: bound to the subject, not the email.

mlflow-oidc-auth names accounts by the token's ``email`` claim. With a single provider it never
compares the token's subject (``sub``) with the account's, and accepts unverified addresses: a
user who sets their own email to that of a deleted colleague gets the colleague's account, with
every grant it holds. Here (for the bearer path and for browser login alike):

- a person is named by ``email`` only, and it must be verified (``email_verified: true``); the
  fallback to ``preferred_username`` (which users pick at self-registration) is kept for
  Keycloak service accounts alone: a client-credentials token carries no email, and Keycloak
  names its user ``service-account-<client>`` and adds a ``client_id`` claim that user tokens
  never carry;
- the account is bound to ``(provider, sub)`` the first time it is used (mlflow-oidc-auth's
  ``user_identities`` table, which its logins and bearer provisioning also write);
- a subject bound to another account (the user's email changed) and an account bound to another
  subject (someone took over an address) are refused, with a message saying why.

The bearer path (patches/bearer_auth.py) and browser login (patches/login_identity.py)
apply these rules.

Bearer tokens must also be *access* tokens (``typ: Bearer``): an ID token has the same issuer,
signature and (for the server's own client) audience, but is meant for the client, not the API.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from typing import Any

#: Why the current request's credential was refused, for the 401 body (the presenter's own
#: valid token or login: telling them why leaks nothing they do not hold).
REFUSAL: contextvars.ContextVar[str] = contextvars.ContextVar("mlflow_stack_refusal", default="")

ACCESS_TOKEN_TYPE = "Bearer"


class IdentityRefused(ValueError):
    """A verified token or login that may not act as the account it names."""


def _repo() -> Any:
    from mlflow_oidc_auth.store import store

    return store.user_identity_repo


def _provider() -> str:
    from mlflow_oidc_auth.provider_registry import DEFAULT_PROVIDER_ID

    return str(DEFAULT_PROVIDER_ID)


def token_type_refusal(claims: Mapping[str, Any]) -> str:
    """'' for a Keycloak access token; why not for an ID, refresh or other token."""
    typ = claims.get("typ")
    if typ != ACCESS_TOKEN_TYPE:
        return (f"a token of type {typ!r} is not an access token: send the access_token of "
                "Keycloak's token response")
    return ""


def bound_subjects(username: str) -> list[str]:
    """Subjects of our provider bound to ``username`` (the identity migration's placeholder,
    the username itself, is no binding)."""
    me = _provider()
    return [s for p, s in _repo().list_identities_for_username(username)
            if p == me and s != username]


def _is_service_account(username: str, claims: Mapping[str, Any]) -> bool:
    client = claims.get("client_id")
    return isinstance(client, str) and bool(client) and \
        username == f"service-account-{client}".lower()


def refusal(username: str | None, claims: Mapping[str, Any]) -> str:
    """'' when these *verified* claims may act as ``username``, else why not (for the user)."""
    email = claims.get("email")
    if not isinstance(email, str) or not email.strip():
        if username and _is_service_account(username, claims):
            pass  # a client's service account: named by Keycloak, bound to its subject below
        else:
            return "the token carries no email address; MLflow accounts are named by email"
    elif username != email.strip().lower():
        return "the token's email address does not name its account"
    elif claims.get("email_verified") is not True:
        return (f"the email address {username} is not verified in Keycloak; MLflow accounts "
                "are named by verified email: ask a Keycloak administrator to verify it")
    assert username is not None
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject.strip():
        return "the token names no subject (sub)"
    bound = _repo().get_username_by_identity(_provider(), subject.strip())
    if bound is not None and bound != username:
        return ("the email address of this Keycloak account changed since it was first used "
                "here, and MLflow accounts stay with the Keycloak user they belong to: ask an "
                "MLflow administrator")
    # Bound to another subject: another Keycloak user's account. (Bound to this very subject
    # is this user: the lookup above can miss a binding another worker committed between the
    # two reads, during an account's first requests.)
    if bound is None and any(s != subject.strip() for s in bound_subjects(username)):
        return (f"the MLflow account {username} belongs to another Keycloak user; ask an "
                "MLflow administrator")
    return ""


def bind(username: str, claims: Mapping[str, Any]) -> None:
    """Bind an existing account to the token's subject if nothing is bound to it yet (an
    account from before bindings, or one mlflow-oidc-auth created without binding)."""
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject.strip():
        return
    from mlflow_oidc_auth.store import store

    if store.has_user(username) and not bound_subjects(username):
        # link() is idempotent and refuses a subject bound elsewhere (a race loses safely).
        _repo().link(_provider(), subject.strip(), username)


def check(username: str | None, claims: Mapping[str, Any]) -> None:
    """Raise IdentityRefused (and record why for the response) unless the claims may act as
    ``username``."""
    reason = refusal(username, claims)
    if reason:
        REFUSAL.set(reason)
        raise IdentityRefused(reason)

