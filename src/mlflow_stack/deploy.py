"""`plan` and `apply` across the external systems, in dependency order.

COMPONENTS is the extension point: one entry per system, in the order apply runs them
(keycloak -> postgres -> bucket; kubernetes and discovery go after bucket). Each entry says when
the config enables it, where it works (for headings) and how to plan and apply it. The CLI only
prints what plan()/apply() return.

apply() first plans every enabled system after the first (reads only: logins, realms, users,
buckets are checked; the first checks itself before its first write), so a wrong password or an
unreachable service in a later system stops the run before anything is written to an earlier one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mlflow_stack.components.base import Change
from mlflow_stack.config.model import Settings
from mlflow_stack.progress import NullProgress, Progress


@dataclass(frozen=True)
class Component:
    system: str
    skip_reason: Callable[[Settings], str | None]  # None: enabled
    describe: Callable[[Settings], str]
    plan: Callable[[Settings], list[Change]]
    apply: Callable[[Settings, Progress], list[Change]]


@dataclass
class SystemResult:
    system: str
    where: str
    changes: list[Change] = field(default_factory=list)
    skipped: str | None = None  # why the system did not run

    @property
    def pending(self) -> list[Change]:
        return [c for c in self.changes if c.is_change]


# Heavy client libraries (python-keycloak, psycopg, boto3) are imported only when used.

def _keycloak_plan(settings: Settings) -> list[Change]:
    from mlflow_stack.components import keycloak

    return keycloak.plan(settings)


def _keycloak_apply(settings: Settings, progress: Progress) -> list[Change]:
    from mlflow_stack.components import keycloak

    return keycloak.apply(settings, progress)


def _keycloak_where(settings: Settings) -> str:
    return f"realm {settings.auth.realm} at {settings.auth.keycloak_url}"


def _databases(settings: Settings) -> list[str]:
    """The MLflow database, and the SSO layer's own database when SSO is on."""
    names = [settings.database.name]
    if settings.auth.provider == "keycloak" and settings.database.auth_name not in names:
        names.append(settings.database.auth_name)
    return names


def _dedupe(changes: list[Change]) -> list[Change]:
    """The owner role is reported once per database; keep the first record of each target."""
    seen: set[str] = set()
    result = []
    for change in changes:
        if change.target not in seen:
            seen.add(change.target)
            result.append(change)
    return result


def _postgres_plan(settings: Settings) -> list[Change]:
    from mlflow_stack.components import postgres

    changes: list[Change] = []
    for name in _databases(settings):
        changes += postgres.plan_database(settings, name)
    return _dedupe(changes)


def _postgres_apply(settings: Settings, progress: Progress) -> list[Change]:
    from mlflow_stack.components import postgres

    changes: list[Change] = []
    with progress.step(f"postgres: databases on {_postgres_where(settings)}"):
        for name in _databases(settings):
            changes += postgres.ensure_database(settings, name)
        changes = _dedupe(changes)
        for c in changes:
            if c.is_change:
                progress.detail(f"{c.action} {c.target}")
    return changes


def _postgres_where(settings: Settings) -> str:
    return f"{settings.database.host}:{settings.database.port}"


def _bucket_plan(settings: Settings) -> list[Change]:
    from mlflow_stack.components import bucket

    return bucket.plan_bucket(settings)


def _bucket_apply(settings: Settings, progress: Progress) -> list[Change]:
    from mlflow_stack.components import bucket

    with progress.step(f"bucket: {settings.artifacts.bucket} at {_bucket_where(settings)}"):
        change = bucket.ensure_bucket(settings)
        if change.is_change:
            progress.detail(f"{change.action} {change.target}")
    return [change]


def _bucket_where(settings: Settings) -> str:
    return settings.artifacts.endpoint_url or "AWS S3"


def _unless(condition: Callable[[Settings], bool], reason: str) -> Callable[[Settings], str | None]:
    return lambda settings: None if condition(settings) else reason


COMPONENTS: list[Component] = [
    Component("keycloak",
              _unless(lambda s: s.auth.provider == "keycloak", "auth.provider is not keycloak"),
              _keycloak_where, _keycloak_plan, _keycloak_apply),
    Component("postgres",
              _unless(lambda s: s.database.backend == "postgresql",
                      "database.backend is not postgresql"),
              _postgres_where, _postgres_plan, _postgres_apply),
    Component("bucket",
              _unless(lambda s: s.artifacts.backend == "s3", "artifacts.backend is not s3"),
              _bucket_where, _bucket_plan, _bucket_apply),
    # Kubernetes objects and the discovery ConfigMap are appended here, after the bucket.
]


def plan(settings: Settings, progress: Progress | None = None,
         components: Sequence[Component] | None = None) -> list[SystemResult]:
    """What apply would change in each system, in apply's order. Reads only."""
    progress = progress or NullProgress()
    results: list[SystemResult] = []
    for comp in COMPONENTS if components is None else components:
        reason = comp.skip_reason(settings)
        if reason is not None:
            results.append(SystemResult(comp.system, "", skipped=reason))
            continue
        where = comp.describe(settings)
        with progress.step(f"{comp.system}: read {where}"):
            results.append(SystemResult(comp.system, where, comp.plan(settings)))
    return results


def apply(settings: Settings, progress: Progress | None = None,
          components: Sequence[Component] | None = None) -> list[SystemResult]:
    """Make every enabled system match the config, in dependency order. Idempotent.

    Every system is checked before the first write, so a refusal anywhere changes nothing.
    """
    progress = progress or NullProgress()
    comps = list(COMPONENTS if components is None else components)
    enabled = [c for c in comps if c.skip_reason(settings) is None]
    # The first system checks itself before its first write; the others are checked up front.
    plan(settings, progress, enabled[1:])
    results: list[SystemResult] = []
    for comp in comps:
        reason = comp.skip_reason(settings)
        if reason is not None:
            results.append(SystemResult(comp.system, "", skipped=reason))
            continue
        results.append(SystemResult(comp.system, comp.describe(settings),
                                    comp.apply(settings, progress)))
    return results
