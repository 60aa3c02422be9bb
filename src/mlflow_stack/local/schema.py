"""The databases' schemas brought to this MLflow's head before a server starts: `up` on an old
schema and `upgrade` both take this path, a databases-only backup first.

Migrations change only the databases, so that backup is all a rollback needs (artifacts are never
rewritten by a migration). A failed migration raises UpgradeFailed: whatever served before still
serves, and the message says where the backup is and how to return to it.
"""

from __future__ import annotations

import time
from pathlib import Path

from mlflow_stack.config.model import Settings
from mlflow_stack.errors import ServerError, StackError
from mlflow_stack.launch import migrations
from mlflow_stack.launch.spec import ServerLaunch
from mlflow_stack.local import backup as backups
from mlflow_stack.local.revision import current_revision
from mlflow_stack.local.state import StateDir
from mlflow_stack.progress import NullProgress, Progress


class UpgradeFailed(StackError):
    """A migration failed; the previous version keeps serving (exit 1)."""


def default_backup_dir(state: StateDir) -> Path:
    return state.root / "backups" / time.strftime("pre-upgrade-%Y%m%d-%H%M%S")


def schema_behind(settings: Settings, state: StateDir) -> tuple[str | None, bool]:
    """(revision, behind): the MLflow schema's revision and whether it is older than head."""
    revision = current_revision(settings, state.data_dir)
    return revision, revision is not None and revision != migrations.mlflow_head_revision()


def rollback_hint(backup: Path | None, serving: str) -> str:
    if backup is None:
        return f"{serving} No backup was taken (the database was new or already current)."
    return (f"{serving} The databases as they were before the migration are backed up in "
            f"{backup}. To return to them: mlflow-stack down; mlflow-stack restore --from "
            f"{backup} --replace (same -c/--state-dir; the current databases are kept aside "
            "under a new name); reinstall the previous version; mlflow-stack up.")


def migrate(settings: Settings, state: StateDir, launch: ServerLaunch, progress: Progress, *,
            backup_to: Path | None, serving: str) -> list[str]:
    """Back up the databases to `backup_to` (if given), then bring MLflow's schema and the SSO
    layer's to head. `serving` says what keeps running if a migration fails."""
    done: list[str] = []
    if backup_to is not None:
        with progress.step("backup of the databases before migrating"):
            manifest = backups.backup(settings, state, backup_to, NullProgress(),
                                      artifacts=False)
            done.append(f"backed up the databases ({len(manifest.files)} files) to {backup_to}")
            progress.detail(done[-1])
    with progress.step("migrations"):
        try:
            done.append(migrations.upgrade_if_needed(
                launch, state.root, current_revision(settings, state.data_dir)))
            progress.detail(done[-1])
            if settings.sso:
                # Once here, so the server's workers don't race to create the SSO tables.
                done.append(migrations.upgrade_auth_db(launch, state.root))
                progress.detail(done[-1])
        except ServerError as exc:
            raise UpgradeFailed(exc.message,
                                hint=rollback_hint(backup_to, serving)) from None
    return done
