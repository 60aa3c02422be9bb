"""Upgrades: a backup first, the migrations once, then the server on the new version.

Migrations change only the databases, so the backup taken first is databases-only: fast, and
all a rollback needs (artifacts are never rewritten by a migration).

- Local: the running server (started by the previous install) keeps serving while MLflow's and
  the SSO layer's migrations run (local.schema, the path `up` takes too when it finds an old
  schema). Only when both succeeded is it restarted on the installed version.
- Kubernetes: `apply` runs the migration Job of the new image before it changes the Deployment,
  and the old pods keep serving until the Job completes (maxUnavailable 0); a failed Job stops
  apply there. `backup_before_image_change` is the hook that takes the backup first when the
  image (and so MLflow) changes.

A failed migration raises UpgradeFailed (local.schema): the old version still serves, and the
message says where the backup is and how to return to it.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mlflow_stack import deploy
from mlflow_stack.config.loader import LoadedConfig, default_env_files, load_config
from mlflow_stack.config.model import Settings
from mlflow_stack.config.secrets import Secrets
from mlflow_stack.deploy import Clients, SystemResult, Target
from mlflow_stack.errors import ConfigError, ServerError, StackError
from mlflow_stack.launch import migrations
from mlflow_stack.local import backup as backups
from mlflow_stack.local import platform, process
from mlflow_stack.local.process import ServerRecord, installed_versions
from mlflow_stack.local.schema import UpgradeFailed, default_backup_dir, migrate, schema_behind
from mlflow_stack.local.state import StateDir, default_state_dir
from mlflow_stack.progress import NullProgress, Progress

if TYPE_CHECKING:
    from mlflow_stack.kubernetes.client import Kube


@dataclass
class UpgradeResult:
    target: str  # "local" | "kubernetes"
    reasons: list[str]  # why an upgrade was needed; empty: already up to date
    backup: Path | None = None
    done: list[str] = field(default_factory=list)
    url: str | None = None
    restarted: bool = False

    @property
    def up_to_date(self) -> bool:
        return not self.reasons


def restart_settings(settings: Settings, record: ServerRecord) -> Settings:
    """The settings a restart of `record`'s server runs with: its own address (port and bind
    address), whatever the config's defaults say."""
    server = settings.server.model_copy(update={
        "port": record.port, "bind_host": record.host or settings.server.bind_host})
    return settings.model_copy(update={"server": server})


def restart_config(state: StateDir, given: Path | None, *,
                   require_secrets: bool = True) -> LoadedConfig:
    """The config to upgrade the local platform of `state` with: the one its running server was
    started with (recorded by `up`), so that the restart changes nothing but the version.
    A different `-c` is refused (exit 2) before anything changes."""
    record = process.find_running(state).record
    if record is None or not record.knows_start:  # nothing running, or an older record
        return load_config(given, require_secrets=require_secrets)
    recorded = Path(record.config) if record.config else None
    if given is not None:
        if recorded is not None and recorded.is_file() \
                and given.expanduser().resolve() != recorded:
            raise ConfigError(
                f"the server of {state.root} was started with -c {recorded}, not {given}",
                hint="upgrade restarts it as it was started: pass the same -c, or none. To "
                     "change the config: mlflow-stack down, then up with the new one.")
        if recorded is None:
            raise ConfigError(
                f"the server of {state.root} was started on the embedded defaults, not {given}",
                hint="upgrade restarts it as it was started: run it without -c. To change the "
                     "config: mlflow-stack down, then up with the new one.")
        return load_config(given, require_secrets=require_secrets)
    if recorded is None:  # embedded defaults, even where ./mlflow-stack.yaml exists
        loaded = LoadedConfig(Settings(), None, "defaults")
        loaded.settings = loaded.settings.model_copy(
            update={"secrets": Secrets.load(default_env_files())})
        return loaded
    if not recorded.is_file():
        raise ConfigError(
            f"the server of {state.root} was started with -c {recorded}, which no longer exists",
            hint="pass -c with the config to restart it with")
    return load_config(recorded, require_secrets=require_secrets)


def start_command(settings: Settings, state: StateDir, config: Path | None) -> str:
    """`mlflow-stack up ...` that starts this platform as `settings` say, without the options
    that are the default anyway."""
    args = ["mlflow-stack", "up"]
    if config is not None:
        args += ["-c", str(config)]
    configured = load_config(config, require_secrets=False).settings if config else Settings()
    if settings.server.port != configured.server.port:
        args += ["--port", str(settings.server.port)]
    if state.root != default_state_dir().expanduser().resolve():
        args += ["--state-dir", str(state.root)]
    return " ".join(shlex.quote(a) for a in [*args, "--detach"])


def _check_restartable(settings: Settings, record: ServerRecord, state: StateDir,
                       config: Path | None) -> None:
    """Refuse (before anything changes) when the restarted server could not get its address
    back: something other than the running server listens there."""
    host, port = settings.server.bind_host, settings.server.port
    others = process.port_holders_besides(record.pid, host, port)
    if others:
        who = ", ".join(f"pid {p}" for p in sorted(p for p in others if p is not None)) \
            or "a process of another user"
        raise ServerError(
            f"cannot upgrade: the server would restart on {host}:{port}, where {who} listens "
            f"besides the server; nothing was changed, and the server (pid {record.pid}) keeps "
            f"running at {record.url}",
            hint=f"stop what listens on port {port}, then run upgrade again "
                 f"(the server is restarted with: {start_command(settings, state, config)})")


def upgrade_local(settings: Settings, state: StateDir, progress: Progress, *,
                  backup_dir: Path | None = None, skip_backup: bool = False,
                  config: Path | None = None) -> UpgradeResult:
    """Upgrade the local platform of `state` to the installed version. Idempotent: a current
    platform is left alone.

    A running server is restarted exactly as it was started: on its recorded port and bind
    address, with `settings` (see restart_config) from `config` (None: embedded defaults).
    When that address is taken by something else, nothing changes and it keeps running."""
    with progress.step("compare versions"):
        revision, behind = schema_behind(settings, state)
        record = process.find_running(state).record
        installed = installed_versions()
        reasons: list[str] = []
        if behind:
            reasons.append(f"MLflow schema at revision {revision}, this MLflow needs "
                           f"{migrations.mlflow_head_revision()}")
        if record is not None and record.versions != installed:
            reasons.append(f"the server runs {record.versions or 'an earlier version'}; "
                           f"installed: {installed}")
        progress.detail("; ".join(reasons) or f"up to date ({installed})")
    result = UpgradeResult("local", reasons, url=record.url if record else None)
    if not reasons:
        return result
    if record is not None:
        settings = restart_settings(settings, record)
        _check_restartable(settings, record, state, config)
    state.prepare()
    if settings.sso:
        settings = platform.with_sso_secrets(settings, state)
    launch = platform.server_launch(settings, state)
    serving = (f"The server (pid {record.pid}, previous version) still serves at {record.url}."
               if record else "No server was running and none was started.")
    # Nothing to protect in a database that does not exist yet.
    if revision is not None and not skip_backup:
        result.backup = backup_dir or default_backup_dir(state)
    result.done = migrate(settings, state, launch, progress, backup_to=result.backup,
                          serving=serving)
    if settings.database.backend == "postgresql" and revision is not None:
        # An existing schema, now at head: the search indexes (a new one gets them from `up`).
        from mlflow_stack.components.postgres_indexes import ensure_indexes

        result.done += [f"{c.target}: created" for c in ensure_indexes(settings, progress)
                        if c.is_change]
    if record is not None:
        try:
            with platform.restarting(state):
                with progress.step(f"stop the previous server (pid {record.pid})"):
                    platform.down(state)
                started = platform.up(settings, state, progress, config=config)
        except StackError as exc:
            raise ServerError(
                f"the previous server (pid {record.pid}) was stopped for the upgrade and the "
                f"new one did not start: {exc.message}",
                hint=f"{exc.hint + ' ' if exc.hint else ''}The migrations are done; start the "
                     f"server with: {start_command(settings, state, config)}") from None
        result.url, result.restarted = started.record.url, True
        result.done.append(f"server restarted (pid {started.record.pid}) on {installed}, "
                           f"at {started.record.url} as before")
    return result


# --------------------------------------------------------------------------------------------
# Kubernetes


def live_image(settings: Settings, kube: Kube | None = None) -> str | None:
    """The image the deployed server runs; None if it is not deployed. `kube`: a client
    already connected (default: connect now)."""
    from lightkube.resources.apps_v1 import Deployment

    from mlflow_stack.kubernetes.client import connect, get_or_none
    from mlflow_stack.manifests import labels

    live = get_or_none(kube or connect(settings), Deployment, labels.APP,
                       settings.kubernetes.namespace)
    if live is None:
        return None
    containers = live.spec.template.spec.containers if live.spec and live.spec.template.spec \
        else []
    return next((c.image for c in containers if c.name == labels.APP), None)


def image_change(settings: Settings, kube: Kube | None = None) -> tuple[str, str] | None:
    """(deployed image, configured image) when they differ; None when equal or not deployed."""
    from mlflow_stack.manifests import workload

    live, want = live_image(settings, kube), workload.image(settings)
    return (live, want) if live is not None and live != want else None


def backup_before_image_change(
    state: StateDir, backup_dir: Path | None, skip: bool,
    found: list[Path] | None = None,
) -> Callable[[Settings, Progress, Clients], None]:
    """deploy.apply's pre-write hook: when the server image changes, back up the databases
    first (or refuse when this machine cannot reach them, unless `skip`). The backup's path
    is appended to `found`."""
    def hook(settings: Settings, progress: Progress, clients: Clients) -> None:
        from mlflow_stack.components import kubernetes

        # The cluster client apply has just read the objects with.
        change = image_change(settings, clients.connect(kubernetes.SYSTEM, settings))
        if change is None:
            return
        progress.detail(f"server image changes: {change[0]} → {change[1]} (MLflow upgrade: "
                        "the migration Job runs before the rollout)")
        if skip:
            progress.detail("no backup taken (--no-backup)")
            return
        if settings.database.backend != "postgresql":
            raise ConfigError(
                "the image changes, so the database is migrated, but the SQLite database lives "
                f"on the PVC {settings.storage.local_pvc_name}: this machine cannot back it up",
                hint="snapshot the volume, then run again with --no-backup")
        target = backup_dir or default_backup_dir(state)
        with progress.step("backup of the databases before the upgrade"):
            manifest = backups.backup(settings, state, target, NullProgress(), artifacts=False)
            progress.detail(f"{len(manifest.files)} files in {target}")
        if found is not None:
            found.append(target)
    return hook


def kubernetes_rollback_hint(settings: Settings, backup: Path | None) -> str:
    ns = settings.kubernetes.namespace
    where = (f"The databases as they were are backed up in {backup}; to return to them: "
             f"kubectl -n {ns} scale deployment/mlflow --replicas=0, then mlflow-stack restore "
             f"--from {backup} --replace." if backup else "No backup was taken.")
    return (f"The Deployment was not changed: the previous pods keep serving. See kubectl logs "
            f"-n {ns} -l app.kubernetes.io/component=migration. {where} Fix the cause and run "
            "again (or apply with the previous registry.tag).")


def apply_guarded(settings: Settings, state: StateDir, progress: Progress, *,
                  target: Target = "auto", backup_dir: Path | None = None,
                  skip_backup: bool = False, check: Callable[[Settings], None] | None = None,
                  ) -> tuple[list[SystemResult], Path | None]:
    """deploy.apply with the upgrade guard: a backup first when the server image changes, and
    a failed migration Job reported with where the backup is and what still serves.
    `check`: as deploy.apply's."""
    from mlflow_stack.kubernetes.wait import MigrationFailed

    taken: list[Path] = []
    hook = (backup_before_image_change(state, backup_dir, skip_backup, taken)
            if deploy.includes_kubernetes(settings, target) else None)
    try:
        results = deploy.apply(settings, progress, target=target, before_writes=hook,
                               check=check)
    except MigrationFailed as exc:
        hint = f"{exc.hint} {kubernetes_rollback_hint(settings, taken[0] if taken else None)}"
        raise UpgradeFailed(exc.message, hint=hint) from None
    return results, (taken[0] if taken else None)


def upgrade_kubernetes(settings: Settings, state: StateDir, progress: Progress, *,
                       target: Target = "auto", backup_dir: Path | None = None,
                       skip_backup: bool = False) -> UpgradeResult:
    """Roll the deployed platform to the configured image (registry.tag): backup, migration
    Job, rollout. Idempotent: the same image already deployed is left alone."""
    from mlflow_stack.manifests import workload
    from mlflow_stack.manifests.discovery import tracking_uri

    with progress.step("compare versions"):
        live = live_image(settings)
        if live is None:
            raise ConfigError(
                f"no MLflow Deployment in namespace {settings.kubernetes.namespace} to upgrade",
                hint="mlflow-stack apply installs it")
        want = workload.image(settings)
        reasons = [f"server image {live} → {want}"] if live != want else []
        progress.detail(reasons[0] if reasons else f"up to date ({want})")
    result = UpgradeResult("kubernetes", reasons, url=tracking_uri(settings))
    if not reasons:
        return result
    results, result.backup = apply_guarded(settings, state, progress, target=target,
                                           backup_dir=backup_dir, skip_backup=skip_backup)
    changed = sum(len(r.pending) for r in results)
    result.done.append(f"applied {changed} change(s); the migration Job completed and the "
                       f"Deployment rolled out {want}")
    result.restarted = True
    return result
