"""The guards on upstream functions the server runtime patches: a reshaped function stops the
server at start-up instead of silently dropping a fix."""

from __future__ import annotations

import types

import pytest

from mlflow_stack.server.guards import UpstreamChanged, require


def _owner(**members: object) -> types.SimpleNamespace:
    return types.SimpleNamespace(__name__="upstream", **members)


def test_a_function_of_the_expected_shape_is_returned() -> None:
    def authenticate(self: object, auth_header: str) -> None: ...

    owner = _owner(authenticate=authenticate)
    assert require(owner, "authenticate", ["self", "auth_header"]) is authenticate


def test_a_changed_signature_is_refused_with_both_shapes() -> None:
    def authenticate(self: object, request: object, auth_header: str) -> None: ...

    with pytest.raises(UpstreamChanged, match=r"upstream\.authenticate takes \(self, request, "
                       r"auth_header\), the patch expects \(self, auth_header\)"):
        require(_owner(authenticate=authenticate), "authenticate", ["self", "auth_header"])


def test_a_missing_function_is_refused() -> None:
    with pytest.raises(UpstreamChanged, match="no longer exists"):
        require(_owner(), "authenticate", ["self", "auth_header"])


def test_the_pinned_versions_have_every_shape_the_patches_need() -> None:
    # Importing the app runs every patch's guard against the installed mlflow-oidc-auth.
    from mlflow_stack.server import sso_app

    assert sso_app.app is not None
