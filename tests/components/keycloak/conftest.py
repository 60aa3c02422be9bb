"""The `provisioned` fixture: a realm with alice, after one apply."""

from __future__ import annotations

import pytest
from keycloak import KeycloakAdmin

from components.keycloak.realm import make_settings, new_realm, realm_admin
from harness.keycloak import KeycloakServer
from mlflow_stack.components import keycloak as kc
from mlflow_stack.config.model import Settings
from mlflow_stack.deploy import apply_system


@pytest.fixture
def provisioned(keycloak: KeycloakServer) -> tuple[Settings, KeycloakAdmin]:
    """A realm with alice, after one apply."""
    realm = new_realm(keycloak)
    settings = make_settings(keycloak, realm)
    apply_system(kc.SYSTEM, settings)
    return settings, realm_admin(keycloak, realm)
