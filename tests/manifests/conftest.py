"""Fixtures of the rendering tests (helpers live in harness.kube)."""

from __future__ import annotations

import pytest

from harness.kube import all_secrets, reference_settings
from mlflow_stack.config.model import Settings


@pytest.fixture
def reference() -> Settings:
    """The reference inventory, no secrets known."""
    return reference_settings()


@pytest.fixture
def reference_with_secrets() -> Settings:
    """The reference inventory with a distinctive value for every secret."""
    return reference_settings(all_secrets())
