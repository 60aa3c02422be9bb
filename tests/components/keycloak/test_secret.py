"""The client secret read back from a real Keycloak, and a configured one given to a new client."""

from __future__ import annotations

import secrets

import pytest

from components.keycloak.realm import ALICE_PW, by_target, make_settings, new_realm, pending
from harness.keycloak import KeycloakServer, jwt_claims, password_grant
from mlflow_stack.components import keycloak as kc
from mlflow_stack.deploy import apply_system, plan_system

pytestmark = pytest.mark.integration


def test_client_secret_before_apply(keycloak: KeycloakServer) -> None:
    settings = make_settings(keycloak, new_realm(keycloak))
    with pytest.raises(kc.ClientNotProvisioned, match="client 'mlflow' does not exist") as info:
        kc.client_secret(settings)
    assert "mlflow-stack apply" in str(info.value.hint)


def test_read_client_secret_is_none_before_apply(keycloak: KeycloakServer) -> None:
    settings = make_settings(keycloak, new_realm(keycloak))
    assert kc.read_client_secret(kc.SYSTEM.connect(settings), settings) is None


def test_new_client_gets_the_configured_secret(keycloak: KeycloakServer) -> None:
    """A set secret is what servers and helpers already use: the client apply creates takes it
    instead of a generated one that would disagree."""
    configured = "configured-" + secrets.token_urlsafe(24)
    realm = new_realm(keycloak)
    settings = make_settings(keycloak, realm, client_secret=configured)
    created = by_target(plan_system(kc.SYSTEM, settings))["client mlflow"]
    assert "secret: the configured one" in created.detail
    assert configured not in created.detail
    apply_system(kc.SYSTEM, settings)

    session = kc.SYSTEM.connect(settings)
    read = kc.read_client_secret(session, settings)
    assert read is not None and read.get_secret_value() == configured
    token = password_grant(keycloak, realm, "mlflow", "alice", ALICE_PW, configured)
    assert "mlflow-admin" in jwt_claims(token["access_token"])["realm_access"]["roles"]
    # The public login client is given no secret; a second run changes nothing.
    assert pending(apply_system(kc.SYSTEM, settings)) == []
    assert kc.client_secret(settings).get_secret_value() == configured


def test_existing_client_keeps_its_secret(keycloak: KeycloakServer) -> None:
    """Only a client being created takes the configured secret: an existing client's secret is
    left alone (doctor reports a mismatch), so deployed servers keep working."""
    realm = new_realm(keycloak)
    apply_system(kc.SYSTEM, make_settings(keycloak, realm))
    settings = make_settings(keycloak, realm)
    generated = kc.client_secret(settings).get_secret_value()
    other = make_settings(keycloak, realm, client_secret="another-" + secrets.token_hex(8))
    assert pending(apply_system(kc.SYSTEM, other)) == []
    assert kc.client_secret(settings).get_secret_value() == generated
