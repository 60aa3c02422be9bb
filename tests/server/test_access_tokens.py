"""Which routes issue long-lived tokens, and how a Keycloak account decides an access token
(the live behaviour is in test_attacks_identity.py)."""

from __future__ import annotations

import pytest

from mlflow_stack.server.access_tokens import account_refusal, issues_token
from mlflow_stack.server.directory import GONE, Account, DirectoryError, admin_base


@pytest.mark.parametrize(("method", "path", "issues"), [
    ("POST", "/api/2.0/mlflow/users/current/tokens", True),
    ("POST", "/ajax-api/2.0/mlflow/users/current/tokens", True),
    ("PATCH", "/api/2.0/mlflow/users/access-token", True),
    ("POST", "/api/2.0/mlflow/users/bob%40example.test/tokens", True),
    ("GET", "/api/2.0/mlflow/users/current/tokens", False),  # listing own tokens
    ("DELETE", "/api/2.0/mlflow/users/current/tokens/3", False),  # revoking one
    ("POST", "/api/2.0/mlflow/experiments/create", False),
])
def test_token_issuing_routes(method: str, path: str, issues: bool) -> None:
    assert issues_token(method, path) is issues


def _admit(groups: list[str]) -> tuple[bool, bool]:
    return ("mlflow-user" in groups or "mlflow-admin" in groups), "mlflow-admin" in groups


def _groups(account: Account) -> list[str]:
    return list(account.realm_roles)


ME = "ann@example.test"
GOOD = Account(exists=True, enabled=True, email=ME, email_verified=True,
               realm_roles=("mlflow-user",))


@pytest.mark.parametrize(("account", "reason"), [
    (GONE, "no longer exists"),
    (Account(True, False, ME, True, ("mlflow-user",)), "disabled"),
    (Account(True, True, "other@example.test", True, ("mlflow-user",)), "verified email"),
    (Account(True, True, ME, False, ("mlflow-user",)), "verified email"),
    (Account(True, True, ME, True, ("offline_access",)), "neither MLflow role"),
])
def test_an_account_keycloak_no_longer_backs_is_refused(account: Account, reason: str) -> None:
    refused, _, _ = account_refusal(ME, account, _admit, _groups)
    assert reason in refused


def test_a_backed_account_keeps_its_roles_as_groups_and_admin_flag() -> None:
    admin = Account(True, True, ME, True, ("mlflow-user", "mlflow-admin"))
    assert account_refusal(ME, GOOD, _admit, _groups) == ("", ["mlflow-user"], False)
    assert account_refusal(ME, admin, _admit, _groups)[2] is True


def test_the_admin_api_base_comes_from_the_issuer() -> None:
    assert admin_base("https://kc.example/realms/thinkube") == \
        "https://kc.example/admin/realms/thinkube"
    assert admin_base("https://kc.example/auth/realms/r/") == \
        "https://kc.example/auth/admin/realms/r"
    with pytest.raises(DirectoryError):
        admin_base("https://kc.example/")
