"""`plan`, `apply` (alias `deploy`), `uninstall`: Keycloak, PostgreSQL, the S3 bucket and the
Kubernetes objects.

The order and the systems live in mlflow_stack.deploy; this module only prints.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from mlflow_stack import deploy as deploy_lib
from mlflow_stack.cli.console import RichProgress, out
from mlflow_stack.cli.local_cmd import state_dir_for
from mlflow_stack.cli.options import (
    BackupDirOpt,
    ConfigOpt,
    NoBackupOpt,
    Output,
    OutputOpt,
    StateDirOpt,
)
from mlflow_stack.config.loader import check_secrets, load_config
from mlflow_stack.config.model import Settings
from mlflow_stack.resolve import ClientSecret


class Target(StrEnum):
    auto = "auto"
    kubernetes = "kubernetes"
    services = "services"


TargetOpt = Annotated[Target, typer.Option(
    "--target", "-t",
    help="auto: Kubernetes too when the config names a cluster (kubernetes.kubeconfig or "
         "kubernetes.context); kubernetes: always, with the default kubeconfig if none is "
         "named; services: Keycloak, PostgreSQL and S3 only.")]
PurgeOpt = Annotated[bool, typer.Option(
    "--purge", help="Also delete the data: PVCs, the namespace, the databases, the bucket "
    "and the Keycloak client and roles.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Show what would be removed.")]


def deploy_settings(config: Path | None, target: Target,
                    client_secret: ClientSecret = "create") -> Settings:
    """The resolved settings (mlflow_stack.resolve): secrets may come from the cluster (S3
    keys) and Keycloak (the OIDC client secret), so they are checked after those lookups."""
    loaded = load_config(config, require_secrets=False)
    settings = deploy_lib.resolve_for(loaded.settings, target.value, client_secret=client_secret)
    check_secrets(settings, loaded.source)
    return settings


def _unresolved(config: Path | None) -> tuple[Settings, Callable[[Settings], None]]:
    """The config's settings, and the secrets check plan/apply run once they resolved them
    (in the same run that reads the systems: one Keycloak login for both)."""
    loaded = load_config(config, require_secrets=False)
    return loaded.settings, lambda settings: check_secrets(settings, loaded.source)

_STYLE = {"create": ("+", "green"), "update": ("~", "yellow"), "delete": ("-", "red"),
          "unchanged": ("=", "dim")}


def _summary(results: list[deploy_lib.SystemResult]) -> dict[str, int]:
    counts: Counter[str] = Counter(c.action for r in results for c in r.changes)
    return {action: counts[action] for action in _STYLE}


def _as_json(command: str, results: list[deploy_lib.SystemResult]) -> dict[str, Any]:
    return {
        "command": command,
        "systems": [
            {"system": r.system, "where": r.where or None, "skipped": r.skipped,
             "changes": [{"action": c.action, "target": c.target, "detail": c.detail}
                         for c in r.changes]}
            for r in results
        ],
        "summary": _summary(results),
    }


def _print(command: str, results: list[deploy_lib.SystemResult], output: Output) -> None:
    if output == Output.json:
        out.print_json(json.dumps(_as_json(command, results)))
        return
    table = Table(show_lines=False, pad_edge=False, box=None)
    for column in ("system", "action", "target", "detail"):
        table.add_column(column, overflow="fold")
    for r in results:
        if r.skipped is not None:
            table.add_row(r.system, "[dim]skip[/]", "", f"[dim]{escape(r.skipped)}[/]")
            continue
        for c in r.changes:
            sign, style = _STYLE[c.action]
            # One difference per line: field-level details get long.
            table.add_row(r.system, f"[{style}]{sign} {c.action}[/]", escape(c.target),
                          escape(c.detail.replace("; ", "\n")))
    out.print(table)
    s = _summary(results)
    changed = s["create"] + s["update"] + s["delete"]
    ran = [r for r in results if r.skipped is None]
    if not ran:
        out.print("Nothing to provision: the config enables no external system "
                  "(auth.provider keycloak, database.backend postgresql, artifacts.backend s3).")
    elif command == "uninstall":
        out.print(f"Removed: {s['delete']} deleted, {s['unchanged']} kept." if s["delete"] else
                  f"Nothing to remove: {s['unchanged']} kept.")
    elif command == "plan":
        out.print(f"Plan: {s['create']} to create, {s['update']} to update, {s['delete']} to "
                  f"delete, {s['unchanged']} unchanged." if changed else
                  f"No changes: {s['unchanged']} object(s) match the config.")
    else:
        out.print(f"Applied: {s['create']} created, {s['update']} updated, {s['delete']} "
                  f"deleted, {s['unchanged']} unchanged." if changed else
                  f"No changes: {s['unchanged']} object(s) already match the config.")


def plan(config: ConfigOpt = None, output: OutputOpt = Output.text,
         target: TargetOpt = Target.auto) -> None:
    """Show every change `apply` would make, system by system. Reads only.

    Systems the config enables, in apply's order: Keycloak (auth.provider
    keycloak), PostgreSQL (database.backend postgresql), the S3 bucket
    (artifacts.backend s3), the Kubernetes objects (see --target), each with a
    field-level diff against what is live.
    Secrets come from the environment: KEYCLOAK_ADMIN_PASSWORD or ADMIN_PASSWORD,
    plus the database and S3 variables (`mlflow-stack config show` lists them).

    Example:  ADMIN_PASSWORD=... mlflow-stack plan -c inventory.yaml --output json
    """
    settings, check = _unresolved(config)
    _print("plan", deploy_lib.plan(settings, RichProgress(), target=target.value, check=check),
           output)


def apply(config: ConfigOpt = None, output: OutputOpt = Output.text,
          target: TargetOpt = Target.auto, backup_dir: BackupDirOpt = None,
          no_backup: NoBackupOpt = False, state_dir: StateDirOpt = None) -> None:
    """Create or repair what the config describes in Keycloak, PostgreSQL, S3 and Kubernetes.

    Every enabled system is checked (login, realm, users, bucket, a server-side dry
    run of each object) before the first write; then they are provisioned in
    dependency order: Keycloak, PostgreSQL, the bucket, then the Kubernetes objects
    (server-side apply, field manager mlflow-stack), waiting for the migration Job
    and the rollout. Idempotent: a second run reports no changes and writes nothing,
    and a failed or interrupted run can simply be repeated.
    When the server image (and so MLflow) changes, the databases are backed up
    first (--backup-dir, --no-backup); a failed migration Job leaves the previous
    pods serving. No secret is ever printed.

    Example:  ADMIN_PASSWORD=... mlflow-stack apply -c mlflow-stack.yaml
    """
    from mlflow_stack.ops import upgrade

    settings, check = _unresolved(config)
    results, backup = upgrade.apply_guarded(
        settings, state_dir_for(state_dir), RichProgress(), target=target.value,
        backup_dir=backup_dir, skip_backup=no_backup, check=check)
    _print("apply", results, output)
    if backup is not None and output == Output.text:
        out.print(f"Databases backed up before the upgrade to {escape(str(backup))}")
    if output == Output.text and any(r.system == "kubernetes" and r.skipped is None
                                     for r in results):
        from mlflow_stack.manifests.discovery import tracking_uri

        out.print(f"MLflow: {escape(tracking_uri(settings))}")


def deploy(config: ConfigOpt = None, output: OutputOpt = Output.text,
           target: TargetOpt = Target.auto, backup_dir: BackupDirOpt = None,
           no_backup: NoBackupOpt = False, state_dir: StateDirOpt = None) -> None:
    """Alias of `apply`: provision Keycloak, PostgreSQL, S3 and Kubernetes from the config.

    Example:  ADMIN_PASSWORD=... mlflow-stack deploy -c inventory.yaml
    """
    apply(config, output, target, backup_dir, no_backup, state_dir)


def uninstall(config: ConfigOpt = None, output: OutputOpt = Output.text,
              target: TargetOpt = Target.auto, purge: PurgeOpt = False,
              dry_run: DryRunOpt = False) -> None:
    """Remove what `apply` created, in reverse order; keep the data unless --purge.

    Kubernetes: every object apply created is deleted except the PVCs and the
    namespace; the code-server Deployment only loses what apply added to it.
    The databases, the bucket and the Keycloak client and roles are kept.
    With --purge those go too (the database and the bucket with their contents).

    Example:  mlflow-stack uninstall -c inventory.yaml --dry-run
    """
    settings = load_config(config, require_secrets=False).settings
    results = deploy_lib.uninstall(settings, purge=purge, progress=RichProgress(),
                                   target=target.value, dry_run=dry_run)
    _print("plan" if dry_run else "uninstall", results, output)
