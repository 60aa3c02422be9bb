"""`permissions export`: the live grants as `permissions:` config (the rest is plan/apply)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from mlflow_stack import __version__
from mlflow_stack.cli import help
from mlflow_stack.cli.console import err, out
from mlflow_stack.cli.local_cmd import state_dir_for
from mlflow_stack.cli.options import ConfigOpt, StateDirOpt
from mlflow_stack.config.loader import load_config
from mlflow_stack.errors import ConfigError

app = typer.Typer(help="Grants as code: export today's grants to keep them in the config.\n\n"
                  "Example:  mlflow-stack permissions export -c mlflow-stack.yaml -f grants.yaml",
                  no_args_is_help=True, cls=help.Group)

FileOpt = Annotated[Path | None, typer.Option(
    "--file", "-f", help="Write the YAML here (refused if it exists) instead of stdout.")]


@app.command(cls=help.Command)
def export(config: ConfigOpt = None, state_dir: StateDirOpt = None,
           file: FileOpt = None) -> None:
    """Write every live experiment, registered-model and prompt grant as a `permissions:`
    section (scope: all), to paste into the config: `plan` then shows no change.

    Reads the SSO database the config names (PostgreSQL), or the local platform's sqlite one
    under --state-dir. Grants on deleted experiments are listed on stderr, not exported.

    Example:  mlflow-stack permissions export -c mlflow-stack.yaml -f grants.yaml
    """
    from mlflow_stack.components import permissions
    from mlflow_stack.permissions.export import export as export_grants

    settings = load_config(config).settings
    if not settings.sso:
        raise ConfigError("auth.provider is not keycloak: without SSO there are no grants",
                          hint="Point -c at the platform's config.")
    if file is not None and file.exists():
        raise ConfigError(f"--file {file}: already exists", hint="Choose a new file name.")
    client = permissions.open_local(settings, str(state_dir_for(state_dir).data_dir))
    try:
        if not client.has_schema():
            raise ConfigError(f"the SSO database {client.where} has no schema yet",
                              hint="Start the platform once (`up` or `apply`).")
        header = (f"Live grants of {client.where}, exported by mlflow-stack {__version__} "
                  f"at {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.")
        result = export_grants(client, header=header)
    finally:
        client.close()
    for skipped in result.skipped:
        err.print(f"[yellow]not exported[/]: {escape(skipped)}")
    if file is None:
        out.print(result.text, end="", markup=False, highlight=False, soft_wrap=True)
        return
    file.write_text(result.text)
    err.print(f"{result.grants} grant(s) written to {escape(str(file))}")
