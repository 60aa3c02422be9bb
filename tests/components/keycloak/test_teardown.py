"""Teardown (uninstall) against a real Keycloak: keep without purge, delete with it."""

from __future__ import annotations

import uuid

import pytest
from keycloak import KeycloakAdmin

from components.keycloak.realm import (
    EXPECTED_TARGETS,
    by_target,
    make_settings,
    pending,
    realm_state,
)
from harness.keycloak import KeycloakServer
from mlflow_stack.components import keycloak as kc
from mlflow_stack.config.model import Settings
from mlflow_stack.deploy import apply_system, teardown_system

pytestmark = pytest.mark.integration


def test_destroy_keeps_everything_without_purge(
    keycloak: KeycloakServer, provisioned: tuple[Settings, KeycloakAdmin]
) -> None:
    settings, admin = provisioned
    before = realm_state(admin)
    secret = kc.client_secret(settings)
    changes = teardown_system(kc.SYSTEM, settings)
    assert pending(changes) == []
    assert "kept" in by_target(changes)["client mlflow"].detail
    assert "kept" in by_target(changes)["client mlflow-cli"].detail
    assert "held directly by 1 user(s)" in by_target(changes)["role mlflow-admin"].detail
    assert realm_state(admin) == before
    assert kc.client_secret(settings).get_secret_value() == secret.get_secret_value()


def test_destroy_with_purge(keycloak: KeycloakServer,
                            provisioned: tuple[Settings, KeycloakAdmin]) -> None:
    settings, admin = provisioned
    dry = teardown_system(kc.SYSTEM, settings, purge=True, dry_run=True)
    assert [(c.action, c.target) for c in dry] == [
        ("delete", "client mlflow"), ("delete", "client mlflow-cli"),
        ("delete", "role mlflow-admin"), ("delete", "role mlflow-user")]
    assert {"mlflow", "mlflow-cli"} <= set(realm_state(admin)["clients"])
    assert teardown_system(kc.SYSTEM, settings, purge=True) == dry
    state = realm_state(admin)
    assert not {"mlflow", "mlflow-cli"} & set(state["clients"])
    assert not {"mlflow-admin", "mlflow-user"} & set(state["roles"])
    assert admin.get_user_id("alice") is not None, "users are never deleted"
    assert pending(teardown_system(kc.SYSTEM, settings, purge=True)) == []
    # And apply brings it all back (the email lock was kept: a realm setting, not an object).
    assert len(pending(apply_system(kc.SYSTEM, settings))) == len(EXPECTED_TARGETS) - 1


def test_destroy_of_missing_realm_is_a_no_op(keycloak: KeycloakServer) -> None:
    settings = make_settings(keycloak, f"absent-{uuid.uuid4().hex[:8]}")
    changes = teardown_system(kc.SYSTEM, settings, purge=True)
    assert pending(changes) == [] and "nothing to remove" in changes[0].detail
