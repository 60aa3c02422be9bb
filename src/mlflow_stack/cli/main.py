"""Entry point of the `mlflow-stack` command."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Annotated

import typer

from mlflow_stack import MLFLOW_OIDC_AUTH_VERSION, MLFLOW_VERSION, __version__
from mlflow_stack.cli import (
    client_cmd,
    config_cmd,
    deploy_cmd,
    help,
    kube_cmd,
    local_cmd,
    ops_cmd,
    permissions_cmd,
    upgrade_cmd,
    verify_cmd,
)
from mlflow_stack.cli.console import out, print_error

app = typer.Typer(
    name="mlflow-stack",
    help="A secure MLflow platform (Keycloak SSO, PostgreSQL, S3) locally and on Kubernetes.\n\n"
    "Example:  mlflow-stack up",
    cls=help.Group,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
_debug = {"on": bool(os.environ.get("MLFLOW_STACK_DEBUG"))}


def _version(value: bool) -> None:
    if value:
        out.print(f"mlflow-stack {__version__} (mlflow {MLFLOW_VERSION}, "
                  f"mlflow-oidc-auth {MLFLOW_OIDC_AUTH_VERSION})")
        raise typer.Exit()


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show versions and exit.")] = False,
) -> None:
    _debug["on"] = _debug["on"] or debug


COMMANDS: list[tuple[str, list[Callable[..., None]]]] = [
    (help.LOCAL, [local_cmd.up, local_cmd.down, local_cmd.status, local_cmd.logs]),
    (help.PROVISIONING, [deploy_cmd.plan, deploy_cmd.apply, deploy_cmd.deploy,
                         deploy_cmd.uninstall, kube_cmd.render]),
    (help.SSO, [client_cmd.login, client_cmd.logout, client_cmd.token, client_cmd.helpers]),
    (help.OPERATIONS, [verify_cmd.verify, ops_cmd.doctor, ops_cmd.backup, ops_cmd.restore,
                       upgrade_cmd.upgrade]),
]
for panel, commands in COMMANDS:
    for command in commands:
        app.command(cls=help.Command, rich_help_panel=panel)(command)
app.add_typer(config_cmd.app, name="config", rich_help_panel=help.CONFIG)
app.add_typer(permissions_cmd.app, name="permissions", rich_help_panel=help.PROVISIONING)


def run() -> None:
    try:
        app()
    except SystemExit:
        raise
    except BaseException as exc:  # one readable line instead of a traceback
        if isinstance(exc, KeyboardInterrupt):
            sys.exit(130)
        sys.exit(print_error(exc, _debug["on"] or "--debug" in sys.argv))


if __name__ == "__main__":
    run()
