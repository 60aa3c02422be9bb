"""Keycloak: the realm roles, the confidential OIDC client (scopes, mappers) and the admin role
grants of the reference's 10_configure_keycloak, plus the public login client of
`mlflow-stack login`, reconciled through the Admin REST API.

One module per concern: `desired` (what the realm should hold, pure), `session` (log in, error
translation), `observe` (every read), `plan` (the diff as steps), `teardown`, `health` (doctor's
checks), `secret` (the client secret read back). `SYSTEM` is the `components.protocol.System`
the registry walks.
"""

from __future__ import annotations

from pydantic import SecretStr

from mlflow_stack.components.base import Change
from mlflow_stack.components.keycloak import health
from mlflow_stack.components.keycloak.desired import NAME, ClientSpec, Desired, desired
from mlflow_stack.components.keycloak.observe import Observed, ObservedClient, observe
from mlflow_stack.components.keycloak.plan import change
from mlflow_stack.components.keycloak.plan import plan as plan_steps
from mlflow_stack.components.keycloak.secret import read_client_secret, require_client_secret
from mlflow_stack.components.keycloak.session import (
    AdminSession,
    ClientNotProvisioned,
    RealmNotFound,
    base_url,
    connect,
)
from mlflow_stack.components.keycloak.teardown import teardown
from mlflow_stack.components.protocol import Finding, Step, changes
from mlflow_stack.config.model import Settings
from mlflow_stack.progress import NullProgress, Progress

__all__ = [
    "SYSTEM", "AdminSession", "ClientNotProvisioned", "ClientSpec", "Desired", "Observed",
    "ObservedClient", "RealmNotFound", "apply", "client_secret", "connect", "describe",
    "desired", "destroy", "plan", "read_client_secret",
]


class Keycloak:
    """The realm as a `components.protocol.System`."""

    name = NAME

    def where(self, settings: Settings) -> str:
        """'realm thinkube at https://auth.example.com'."""
        url = base_url(settings) if settings.auth.keycloak_url else "(unset)"
        return f"realm {settings.auth.realm} at {url}"

    def connect(self, settings: Settings) -> AdminSession:
        return connect(settings)

    def observe(self, client: AdminSession, settings: Settings) -> Observed:
        return observe(client, settings)

    def plan(self, client: AdminSession, settings: Settings, observed: Observed) -> list[Step]:
        return plan_steps(client, settings, observed)

    def teardown(self, client: AdminSession, settings: Settings, *, purge: bool) -> list[Step]:
        return teardown(client, settings, purge=purge)

    def check(self, client: AdminSession, settings: Settings) -> list[Finding]:
        return health.check(client, settings)


SYSTEM = Keycloak()


# --------------------------------------------------------------------------------------------
# the module-level API of before the System protocol, kept for callers being moved over to it


def describe(settings: Settings) -> str:
    return SYSTEM.where(settings)


def _read(settings: Settings) -> list[Step]:
    session = SYSTEM.connect(settings)
    return SYSTEM.plan(session, settings, SYSTEM.observe(session, settings))


def plan(settings: Settings) -> list[Change]:
    """Every change apply would make, and what is already right. Reads only."""
    return changes(_read(settings))


def apply(settings: Settings, progress: Progress | None = None) -> list[Change]:
    """Make the realm match the config. Idempotent: a second run returns only 'unchanged'."""
    progress = progress or NullProgress()
    with progress.step(f"keycloak: read {describe(settings)}"):
        steps = _read(settings)
    pending = [step for step in steps if step.pending]
    if pending:
        with progress.step(f"keycloak: apply {len(pending)} change(s)"):
            for step in pending:
                if step.run is not None:
                    step.run(progress)
                progress.detail(f"{step.change.action} {step.change.target}")
    return changes(steps)


def client_secret(settings: Settings) -> SecretStr:
    """The OIDC client's secret, read back from Keycloak (for the server config; never print).
    Raises ClientNotProvisioned before apply."""
    return require_client_secret(SYSTEM.connect(settings), settings)


def destroy(settings: Settings, purge: bool = False, dry_run: bool = False) -> list[Change]:
    """Undo apply (see teardown); a realm that does not exist has nothing to remove."""
    try:
        session = SYSTEM.connect(settings)
    except RealmNotFound as absent:
        return [change("unchanged", absent.target, "does not exist; nothing to remove")]
    steps = SYSTEM.teardown(session, settings, purge=purge)
    if not dry_run:
        for step in steps:
            if step.run is not None:
                step.run(NullProgress())
    return changes(steps)
