"""Which verified claims may name an account at all (before any binding is looked up); the
bindings themselves are exercised against real Keycloak in test_attacks_identity.py."""

from __future__ import annotations

import pytest

from mlflow_stack.server.identity import refusal, token_type_refusal


@pytest.mark.parametrize(("username", "claims", "reason"), [
    # A person without an email, e.g. someone who self-registered a name like a service account.
    ("service-account-ci", {"preferred_username": "service-account-ci", "sub": "s"},
     "carries no email"),
    # client_id names another client than the username does.
    ("service-account-ci", {"client_id": "other", "sub": "s"}, "carries no email"),
    ("ann@example.test", {"email": "ann@example.test", "email_verified": False, "sub": "s"},
     "not verified"),
    ("ann@example.test", {"email": "ann@example.test", "email_verified": "true", "sub": "s"},
     "not verified"),  # only a literal true counts
    ("bob@example.test", {"email": "ann@example.test", "email_verified": True, "sub": "s"},
     "does not name its account"),
    (None, {"sub": "s"}, "carries no email"),
])
def test_claims_that_cannot_name_an_account(username: str | None, claims: dict[str, object],
                                             reason: str) -> None:
    assert reason in refusal(username, claims)


@pytest.mark.parametrize(("typ", "refused"), [("Bearer", False), ("ID", True),
                                              ("Refresh", True), (None, True)])
def test_only_access_tokens_are_api_tokens(typ: str | None, refused: bool) -> None:
    assert bool(token_type_refusal({"typ": typ} if typ else {})) is refused
