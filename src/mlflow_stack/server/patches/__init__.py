"""mlflow-oidc-auth's gaps closed, one concern per module; ``sso_app`` applies them in order.

Every module lists the upstream functions, classes and attributes it wraps or relies on as
``UPSTREAM`` (``guards.Shape``) and has an ``apply`` that checks them (``Shape.require``)
before it replaces anything: another shape in a new pinned version stops the server at
start-up with ``UpstreamChanged`` instead of silently dropping a fix
(tests/server/test_guards.py proves it for every module).
"""

from __future__ import annotations

from typing import Any, Protocol

from mlflow_stack.server.guards import Shape


class BeforeApp(Protocol):
    """A patch applied before mlflow-oidc-auth builds its app (it changes what the app uses)."""

    @property
    def UPSTREAM(self) -> tuple[Shape, ...]: ...  # a module constant

    def apply(self) -> None: ...


class OnApp(Protocol):
    """A patch applied to the built app (routes and middleware in place)."""

    @property
    def UPSTREAM(self) -> tuple[Shape, ...]: ...  # a module constant

    def apply(self, app: Any) -> None: ...
