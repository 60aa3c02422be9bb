"""Entry point of the `mlflow-stack` command."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from mlflow_stack import MLFLOW_OIDC_AUTH_VERSION, MLFLOW_VERSION, __version__
from mlflow_stack.cli import (
    client_cmd,
    config_cmd,
    deploy_cmd,
    kube_cmd,
    local_cmd,
    ops_cmd,
    upgrade_cmd,
    verify_cmd,
)
from mlflow_stack.cli.console import out, print_error

app = typer.Typer(
    name="mlflow-stack",
    help="A secure MLflow platform (Keycloak SSO, PostgreSQL, S3) locally and on Kubernetes.\n\n"
    "Example:  mlflow-stack up",
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


app.command()(local_cmd.up)
app.command()(local_cmd.down)
app.command()(local_cmd.status)
app.command()(local_cmd.logs)
app.command()(deploy_cmd.plan)
app.command()(deploy_cmd.apply)
app.command()(deploy_cmd.deploy)
app.command()(deploy_cmd.uninstall)
app.command()(kube_cmd.render)
app.command()(ops_cmd.backup)
app.command()(ops_cmd.restore)
app.command()(ops_cmd.doctor)
app.command()(upgrade_cmd.upgrade)
app.command()(verify_cmd.verify)
app.command()(client_cmd.token)
app.command()(client_cmd.login)
app.command()(client_cmd.logout)
app.command()(client_cmd.helpers)
app.add_typer(config_cmd.app, name="config")


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
