"""`upgrade`: backup, migrations, then the server on the new version (local or Kubernetes)."""

from __future__ import annotations

import json
from dataclasses import asdict

from rich.markup import escape

from mlflow_stack import deploy as deploy_lib
from mlflow_stack.cli.console import RichProgress, out, program
from mlflow_stack.cli.deploy_cmd import Target, TargetOpt, deploy_settings
from mlflow_stack.cli.local_cmd import state_dir_for, state_dir_option
from mlflow_stack.cli.options import (
    BackupDirOpt,
    ConfigOpt,
    NoBackupOpt,
    Output,
    OutputOpt,
    StateDirOpt,
)
from mlflow_stack.config.loader import check_secrets, load_config
from mlflow_stack.ops import upgrade as upgrades


def upgrade(
    config: ConfigOpt = None,
    state_dir: StateDirOpt = None,
    target: TargetOpt = Target.auto,
    backup_dir: BackupDirOpt = None,
    no_backup: NoBackupOpt = False,
    output: OutputOpt = Output.text,
) -> None:
    """Move the platform to the installed MLflow (local) or the configured image (Kubernetes,
    registry.tag).

    Backs up the databases, runs MLflow's and the SSO layer's migrations once, then restarts
    the local server / rolls the Deployment. A failed migration leaves the previous version
    serving and says how to return to the backup. When nothing changed it says so and touches
    nothing.

    The local server comes back exactly as `up` started it: the same config, port, address
    and state directory (a different -c is refused). If its address is taken by something
    else, nothing changes and the old server keeps running.

    Example:  pip install -U mlflow-stack && mlflow-stack upgrade
    """
    state = state_dir_for(state_dir)
    progress = RichProgress()
    # A running local server comes back as it was started: its config, port and address. A
    # config for a cluster upgrades the cluster, whatever runs locally.
    given = load_config(config, require_secrets=False) if config is not None else None
    if given is not None and deploy_lib.includes_kubernetes(given.settings, target.value):
        loaded = given
    else:
        loaded = upgrades.restart_config(state, config, require_secrets=False)
    if deploy_lib.includes_kubernetes(loaded.settings, target.value):
        result = upgrades.upgrade_kubernetes(
            deploy_settings(loaded.source, target), state, progress, target=target.value,
            backup_dir=backup_dir, skip_backup=no_backup)
    else:
        check_secrets(loaded.settings, loaded.source)
        result = upgrades.upgrade_local(loaded.settings, state, progress,
                                        backup_dir=backup_dir, skip_backup=no_backup,
                                        config=loaded.source)
    if output == Output.json:
        out.print_json(json.dumps(asdict(result), default=str))
        return
    if result.up_to_date:
        out.print(f"Already up to date ({result.target}); nothing changed.")
        return
    for reason in result.reasons:
        out.print(f"upgrade needed: {escape(reason)}")
    for line in result.done:
        out.print(f"[green]✓[/] {escape(line)}")
    if result.url and result.restarted:
        out.print(f"MLflow: {escape(result.url)}")
    elif not result.restarted:
        out.print(f"[dim]no server was running: start it with: "
                  f"{escape(program())} up{escape(state_dir_option(state))}[/]")
