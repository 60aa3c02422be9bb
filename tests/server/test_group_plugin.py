"""The group-detection plugin: verified claims only, built-in roles filtered."""

from __future__ import annotations

import base64
import json

import pytest

from mlflow_stack.server import group_plugin as kg

CLAIMS = {
    "sub": "1",
    "realm_access": {"roles": ["mlflow-user", "offline_access", "uma_authorization",
                               "default-roles-test", "team-a"]},
    "resource_access": {"mlflow": {"roles": ["reviewer"]}, "account": {"roles": ["view"]}},
}


def _unsigned_token(claims: dict[str, object]) -> str:
    def enc(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")
    return f"{enc({'alg': 'none'})}.{enc(claims)}.sig"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OIDC_GROUPS_ATTRIBUTE", "MLFLOW_KEYCLOAK_CLIENT_ROLES", "OIDC_CLIENT_ID"):
        monkeypatch.delenv(name, raising=False)


def test_bearer_path_reads_validated_claims() -> None:
    groups = kg.get_user_groups("ignored", token_response={"access_token": "x", "claims": CLAIMS})
    assert groups == ["mlflow-user", "team-a"]


def test_login_path_reads_verified_id_token_claims() -> None:
    response = {"access_token": "x", "id_token": "y", "userinfo": CLAIMS}
    assert kg.get_user_groups("x", token_response=response) == ["mlflow-user", "team-a"]


def test_never_decodes_the_raw_token() -> None:
    forged = _unsigned_token({"realm_access": {"roles": ["mlflow-admin"]}})
    assert kg.get_user_groups(forged) == []
    assert kg.get_user_groups(forged, token_response={"access_token": forged}) == []


def test_client_roles_when_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_KEYCLOAK_CLIENT_ROLES", "true")
    monkeypatch.setenv("OIDC_CLIENT_ID", "mlflow")
    groups = kg.get_user_groups("x", token_response={"claims": CLAIMS})
    assert groups == ["mlflow-user", "team-a", "reviewer"]  # not account's "view"


def test_custom_attribute_and_odd_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OIDC_GROUPS_ATTRIBUTE", "groups")
    assert kg.get_user_groups("x", token_response={"claims": {"groups": "solo"}}) == ["solo"]
    bad = {"claims": {"groups": [1, None, " ", "ok", "ok"]}}
    assert kg.get_user_groups("x", token_response=bad) == ["ok"]
    assert kg.get_user_groups("x", token_response={"claims": {"groups": {"a": 1}}}) == []


@pytest.mark.parametrize("role", ["offline_access", "uma_authorization", "default-roles-x"])
def test_builtin_roles_filtered(role: str) -> None:
    assert kg.is_builtin(role)
    assert not kg.is_builtin("mlflow-admin")


def test_compat_module_through_mlflow_oidc_auth_caller() -> None:
    """mlflow-oidc-auth's own caller passes token_response to us (our signature opts in)."""
    from mlflow_oidc_auth.utils.group_detection import call_group_detection_plugin

    groups = call_group_detection_plugin(
        "mlflow_keycloak_groups", "tok", {"access_token": "tok", "claims": CLAIMS})
    assert groups == ["mlflow-user", "team-a"]


def test_no_prints(capsys: pytest.CaptureFixture[str]) -> None:
    kg.get_user_groups("x", token_response={"claims": CLAIMS})
    kg.get_user_groups("x")
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_a_server_refuses_to_start_without_its_group_plugin(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(kg.PLUGIN_ENV, "mlflow_no_such_groups")
    with pytest.raises(RuntimeError, match=r"'mlflow_no_such_groups'.*cannot be imported.*"
                       r"Install mlflow-stack"):
        kg.require_configured_plugin()
    monkeypatch.setenv(kg.PLUGIN_ENV, "mlflow_keycloak_groups")
    kg.require_configured_plugin()  # the one we ship
