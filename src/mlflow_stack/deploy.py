"""`plan` and `apply` across the external systems, in dependency order.

COMPONENTS is the extension point: one entry per system, in the order apply runs them
(keycloak -> postgres -> bucket -> kubernetes, which includes discovery). Each entry says when
the config enables it, where it works (for headings) and how to plan and apply it. The CLI only
prints what plan()/apply() return.

apply() first plans every enabled system after the first (reads only: logins, realms, users,
buckets are checked; the first checks itself before its first write), so a wrong password or an
unreachable service in a later system stops the run before anything is written to an earlier one.

Which systems run (`target`):
- "auto" (default): every external system the config enables, and Kubernetes when the config
  names a cluster (kubernetes.kubeconfig or kubernetes.context; the reference inventory's
  `kubeconfig` sets the first).
- "kubernetes": the same, plus Kubernetes with the default kubeconfig ($KUBECONFIG,
  ~/.kube/config or the in-cluster service account).
- "services": Keycloak, PostgreSQL and the bucket only, never Kubernetes.
uninstall() runs the enabled systems in reverse order and keeps data unless `purge`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

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


def _kubernetes_plan(settings: Settings) -> list[Change]:
    from mlflow_stack.components import kubernetes

    return kubernetes.plan(settings)


def _kubernetes_apply(settings: Settings, progress: Progress) -> list[Change]:
    from mlflow_stack.components import kubernetes

    return kubernetes.apply(settings, progress)


def _kubernetes_where(settings: Settings) -> str:
    from mlflow_stack.components import kubernetes

    return kubernetes.describe(settings)


def _names_cluster(settings: Settings) -> bool:
    return bool(settings.kubernetes.kubeconfig or settings.kubernetes.context)


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
    Component("kubernetes",
              _unless(_names_cluster, "the config names no cluster (kubernetes.kubeconfig or "
                      "kubernetes.context); --target kubernetes uses the default kubeconfig"),
              _kubernetes_where, _kubernetes_plan, _kubernetes_apply),
]

Target = Literal["auto", "kubernetes", "services"]


def components_for(target: Target = "auto",
                   components: Sequence[Component] | None = None) -> list[Component]:
    """The systems for a target (see the module docstring)."""
    comps = list(COMPONENTS if components is None else components)
    if target == "auto":
        return comps
    if target == "services":
        return [c for c in comps if c.system != "kubernetes"]
    return [replace(c, skip_reason=lambda s: None) if c.system == "kubernetes" else c
            for c in comps]


def includes_kubernetes(settings: Settings, target: Target = "auto") -> bool:
    return any(c.system == "kubernetes" and c.skip_reason(settings) is None
               for c in components_for(target))


def resolve_secrets(settings: Settings, target: Target = "auto") -> Settings:
    """Secrets that may come from the cluster: the S3 keys from the reference's
    `seaweedfs-s3-config` Secret (artifacts.credentials_secret) when not in the environment.
    Every system uses them (the bucket too), so they are filled in before any runs."""
    a, s = settings.artifacts, settings.secrets
    if a.backend != "s3" or not a.credentials_secret or not includes_kubernetes(settings, target) \
            or (s.s3_access_key_id is not None and s.s3_secret_access_key is not None):
        return settings
    from mlflow_stack.kubernetes import client, sources

    return sources.with_s3_keys_from_cluster(client.connect(settings), settings)


def plan(settings: Settings, progress: Progress | None = None,
         components: Sequence[Component] | None = None,
         target: Target = "auto") -> list[SystemResult]:
    """What apply would change in each system, in apply's order. Reads only."""
    progress = progress or NullProgress()
    results: list[SystemResult] = []
    for comp in components_for(target, components):
        reason = comp.skip_reason(settings)
        if reason is not None:
            results.append(SystemResult(comp.system, "", skipped=reason))
            continue
        where = comp.describe(settings)
        with progress.step(f"{comp.system}: read {where}"):
            results.append(SystemResult(comp.system, where, comp.plan(settings)))
    return results


def apply(settings: Settings, progress: Progress | None = None,
          components: Sequence[Component] | None = None,
          target: Target = "auto",
          before_writes: Callable[[Settings, Progress], None] | None = None,
          ) -> list[SystemResult]:
    """Make every enabled system match the config, in dependency order. Idempotent.

    Every system is checked before the first write, so a refusal anywhere changes nothing.
    `before_writes` runs after those checks and before the first write (the upgrade backup).
    """
    progress = progress or NullProgress()
    comps = components_for(target, components)
    enabled = [c for c in comps if c.skip_reason(settings) is None]
    # The first system checks itself before its first write; the others are checked up front.
    plan(settings, progress, enabled[1:])
    if before_writes is not None:
        before_writes(settings, progress)
    results: list[SystemResult] = []
    for comp in comps:
        reason = comp.skip_reason(settings)
        if reason is not None:
            results.append(SystemResult(comp.system, "", skipped=reason))
            continue
        results.append(SystemResult(comp.system, comp.describe(settings),
                                    comp.apply(settings, progress)))
    return results


def uninstall(settings: Settings, *, purge: bool = False, progress: Progress | None = None,
              target: Target = "auto", dry_run: bool = False) -> list[SystemResult]:
    """Undo apply, in reverse order: the Kubernetes objects first (so nothing uses the data
    any more), then the bucket, the databases and the Keycloak client.

    Without `purge` the data stays: PVCs, the namespace, the databases, the bucket and the
    Keycloak client and roles are reported as kept. With it they are deleted too (the
    reference's rollback drops the database and bucket unconditionally; this does not).
    """
    progress = progress or NullProgress()
    results: list[SystemResult] = []
    for comp in reversed(components_for(target)):
        reason = comp.skip_reason(settings)
        if reason is not None:
            results.append(SystemResult(comp.system, "", skipped=reason))
            continue
        results.append(SystemResult(comp.system, comp.describe(settings),
                                    _UNINSTALL[comp.system](settings, purge, dry_run, progress)))
    return results


def _kubernetes_uninstall(settings: Settings, purge: bool, dry_run: bool,
                          progress: Progress) -> list[Change]:
    from mlflow_stack.components import kubernetes

    return kubernetes.uninstall(settings, purge=purge, dry_run=dry_run, progress=progress)


def _bucket_uninstall(settings: Settings, purge: bool, dry_run: bool,
                      progress: Progress) -> list[Change]:
    from mlflow_stack.components import purge as purging

    if not purge:
        return [Change("bucket", "unchanged", f"bucket {settings.artifacts.bucket}",
                       "kept (--purge deletes it and every artifact in it)")]
    with progress.step(f"bucket: delete {settings.artifacts.bucket}"):
        return [purging.delete_bucket(settings, dry_run=dry_run)]


def _postgres_uninstall(settings: Settings, purge: bool, dry_run: bool,
                        progress: Progress) -> list[Change]:
    from mlflow_stack.components import purge as purging

    changes: list[Change] = []
    for name in _databases(settings):
        if not purge:
            changes.append(Change("postgres", "unchanged", f"database {name}",
                                  "kept (--purge drops it)"))
            continue
        with progress.step(f"postgres: drop database {name}"):
            changes.append(purging.drop_database(settings, name, dry_run=dry_run))
    return changes


def _keycloak_uninstall(settings: Settings, purge: bool, dry_run: bool,
                        progress: Progress) -> list[Change]:
    from mlflow_stack.components import keycloak

    with progress.step(f"keycloak: {'remove' if purge else 'check'} client and roles"):
        return keycloak.destroy(settings, purge=purge, dry_run=dry_run)


_UNINSTALL: dict[str, Callable[[Settings, bool, bool, Progress], list[Change]]] = {
    "kubernetes": _kubernetes_uninstall,
    "bucket": _bucket_uninstall,
    "postgres": _postgres_uninstall,
    "keycloak": _keycloak_uninstall,
}
