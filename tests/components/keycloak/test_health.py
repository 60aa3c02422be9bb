"""doctor's Keycloak checks against a real Keycloak: findings, never exceptions."""

from __future__ import annotations

import pytest
from keycloak import KeycloakAdmin

from components.keycloak.realm import PUBLIC, client_uuid, make_settings, new_realm
from harness.keycloak import KeycloakServer
from harness.ports import free_port
from mlflow_stack.components import keycloak as kc
from mlflow_stack.components.keycloak import health
from mlflow_stack.config.model import Settings

pytestmark = pytest.mark.integration

CHECKS = ["OIDC discovery", "Keycloak client and roles", "OIDC client secret",
          "clock skew to Keycloak"]


def test_provisioned_realm_passes(
    keycloak: KeycloakServer, provisioned: tuple[Settings, KeycloakAdmin]
) -> None:
    settings, _ = provisioned
    configured = settings.model_copy(update={"secrets": settings.secrets.model_copy(
        update={"oidc_client_secret": kc.client_secret(settings)})})
    findings = kc.SYSTEM.check(configured)
    assert [f.check for f in findings] == CHECKS
    # Keycloak's dev server sends no Date header: the skew check then says it cannot tell.
    assert [f.status for f in findings[:3]] == ["ok"] * 3, findings
    assert findings[3].status in ("ok", "skipped")
    assert findings[2].finding == "Keycloak accepts the configured client secret"


def test_drift_and_a_wrong_secret_are_problems(
    keycloak: KeycloakServer, provisioned: tuple[Settings, KeycloakAdmin]
) -> None:
    settings, admin = provisioned
    uid = client_uuid(admin)
    admin.update_client(uid, {"redirectUris": [f"{PUBLIC}/*"]})
    wrong = make_settings(keycloak, settings.auth.realm, client_secret="not-the-secret")
    findings = {f.check: f for f in kc.SYSTEM.check(wrong)}
    client = findings["Keycloak client and roles"]
    assert client.status == "problem" and "update client mlflow" in client.finding
    assert "mlflow-stack apply" in client.fix
    secret = findings["OIDC client secret"]
    assert secret.status == "problem" and "refuses" in secret.finding
    assert "not-the-secret" not in secret.finding + secret.fix


def test_missing_admin_user_is_a_finding(keycloak: KeycloakServer) -> None:
    realm = new_realm(keycloak, with_alice=False)
    settings = make_settings(keycloak, realm)
    finding = health.check_keycloak_client(kc.SYSTEM.connect(settings), settings)
    assert finding.status == "problem" and "'alice'" in finding.finding


def test_unreachable_keycloak(keycloak: KeycloakServer) -> None:
    settings = make_settings(keycloak, "anything", url=f"http://127.0.0.1:{free_port()}")
    discovery = health.check_oidc_discovery(settings)
    assert discovery.status == "problem" and "unreachable" in discovery.finding
    assert health.check_clock_skew(settings).status == "skipped"


def test_missing_realm_discovery(keycloak: KeycloakServer) -> None:
    settings = make_settings(keycloak, "no-such-realm")
    finding = health.check_oidc_discovery(settings)
    assert finding.status == "problem" and "404" in finding.finding
    assert "'no-such-realm'" in finding.fix
