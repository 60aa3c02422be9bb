"""The guards on upstream functions the server runtime patches: a reshaped function stops the
server at start-up instead of silently dropping a fix."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import types
from typing import cast

import pytest
from fastapi import FastAPI

from mlflow_stack.server import patches
from mlflow_stack.server.guards import Shape, UpstreamChanged, require, wrapping


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


# --------------------------------------------------------------------------------------------
# Shape: a target named by module and dotted path


def test_a_shape_names_what_is_missing() -> None:
    with pytest.raises(UpstreamChanged, match=r"no_such_module_xyz cannot be imported"):
        Shape("no_such_module_xyz", "f", ()).require()
    with pytest.raises(UpstreamChanged, match=r"inspect\.Nope\.f no longer exists"):
        Shape("inspect", "Nope.f", ()).require()
    with pytest.raises(UpstreamChanged, match=r"inspect\.NOPE no longer exists"):
        Shape("inspect", "NOPE").require()
    assert Shape("inspect", "Signature.bind", ("self", "args", "kwargs")).require() \
        is inspect.Signature.bind
    assert Shape("inspect", "CO_VARARGS").require() == inspect.CO_VARARGS


def test_a_replacement_marked_as_wrapping_shows_the_upstream_shape() -> None:
    def upstream(self: object, auth_header: str) -> None: ...

    @wrapping(upstream)
    def replacement(*args: object) -> None: ...

    owner = _owner(authenticate=replacement)
    assert require(owner, "authenticate", ["self", "auth_header"]) is replacement
    assert replacement.__name__ == "replacement"  # tracebacks still name ours


# --------------------------------------------------------------------------------------------
# Every patch module of the SSO app: its guards pass on the pinned versions, and its apply()
# refuses each upstream target it relies on once that target has another shape.

PATCH_MODULES = [importlib.import_module(f"{patches.__name__}.{info.name}")
                 for info in sorted(pkgutil.iter_modules(patches.__path__))]
CASES = [pytest.param(module, shape, id=f"{module.__name__.rpartition('.')[2]}:{shape.path}")
         for module in PATCH_MODULES for shape in module.UPSTREAM]


def test_every_patch_module_is_applied_and_guarded() -> None:
    from mlflow_stack.server import sso_app

    applied = [cast(types.ModuleType, m) for m in (*sso_app.BEFORE_APP, *sso_app.ON_APP)]
    assert sorted(m.__name__ for m in applied) == sorted(m.__name__ for m in PATCH_MODULES)
    assert len(set(applied)) == len(applied)
    for module in PATCH_MODULES:
        assert module.UPSTREAM, f"{module.__name__} names no upstream shape it relies on"


@pytest.mark.parametrize(("patch", "shape"), CASES)
def test_the_pinned_upstream_has_the_shape_each_patch_expects(
        patch: types.ModuleType, shape: Shape) -> None:
    # Also after the patches are in (another test imported sso_app): the guard sees the
    # upstream shape through our replacement.
    assert shape.require() is not None


@pytest.mark.parametrize(("patch", "shape"), CASES)
def test_a_patch_refuses_to_apply_over_a_reshaped_upstream(
        patch: types.ModuleType, shape: Shape, monkeypatch: pytest.MonkeyPatch) -> None:
    owner = shape.owner()
    if shape.params is None:
        monkeypatch.delattr(owner, shape.name)
    else:
        def reshaped(*_: object) -> None: ...

        monkeypatch.setattr(owner, shape.name, reshaped)
    takes_app = bool(inspect.signature(patch.apply).parameters)
    with pytest.raises(UpstreamChanged, match=re.escape(shape.path)):
        if takes_app:
            patch.apply(FastAPI())  # refused before the app is touched
        else:
            patch.apply()
