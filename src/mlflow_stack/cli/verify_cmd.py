"""`verify`: an end-to-end check of a running platform, as a user would use it."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.markup import escape

from mlflow_stack.cli.console import err, out
from mlflow_stack.cli.local_cmd import state_dir_for
from mlflow_stack.cli.options import ConfigOpt, Output, OutputOpt, StateDirOpt
from mlflow_stack.config.loader import load_config

MARKS = {"ok": "[green]✓[/]", "failed": "[red]✗[/]", "skipped": "[dim]-[/]"}
STYLES = {"ok": "dim", "failed": "red", "skipped": "dim"}


def verify(
    config: ConfigOpt = None,
    url: Annotated[str | None, typer.Option(
        "--url", help="Verify the server at this URL instead (not with -c). Credentials: a "
        "stored `mlflow-stack login`, MLFLOW_KEYCLOAK_* variables or MLFLOW_TRACKING_TOKEN.")]
    = None,
    state_dir: StateDirOpt = None,
    output: OutputOpt = Output.text,
) -> None:
    """Check a running platform end to end, as a user would. Exit 1 on any failed step.

    Steps: a token, an experiment, params and metrics, a 20 MB artifact up and down (SHA-256
    compared), a model logged, registered, aliased and staged, an mlflow-user refused an
    admin-only call, an anonymous call refused (401); then what it created is deleted.

    Server: the local one of the state directory if it runs, else the config's public URL, or
    --url. With SSO, -c and the Keycloak admin password (KEYCLOAK_ADMIN_PASSWORD or
    ADMIN_PASSWORD), it signs in as a temporary mlflow-user it removes afterwards.

    Example:  mlflow-stack verify -c mlflow-stack.yaml
    """
    from mlflow_stack.ops.verify.runner import run
    from mlflow_stack.ops.verify.steps import STEPS, StepResult, failed
    from mlflow_stack.ops.verify.target import resolve_target

    settings = None
    state = None
    if url is None:
        settings = load_config(config, require_secrets=False).settings
        state = state_dir_for(state_dir)
    target = resolve_target(settings, state, url, config_given=config is not None)

    width = max(len(step) for step in STEPS)

    def show(r: StepResult) -> None:
        # One line per step as it ends (on stdout, once), its detail indented below: fits in
        # 80 columns, and a long detail wraps as prose instead of inside a table cell.
        if output == Output.text:
            took = "" if r.status == "skipped" else f" [dim]{r.seconds:5.1f}s[/]"
            out.print(f"{MARKS[r.status]} {escape(r.step.ljust(width))}{took}".rstrip())
            if r.detail:
                out.print(f"    [{STYLES[r.status]}]{escape(r.detail)}[/]")

    if output == Output.text:
        err.print(f"verifying {escape(target.url)} ({escape(target.source)})")
    results = run(target.url, settings, on_step=show)
    failures = failed(results)
    if output == Output.json:
        out.print_json(json.dumps({"url": target.url, "ok": not failures,
                                   "steps": [asdict(r) for r in results]}))
    else:
        out.print(f"{len(failures)} failed, "
                  f"{sum(r.status == 'skipped' for r in results)} skipped, "
                  f"{sum(r.status == 'ok' for r in results)} ok")
    if failures:
        raise typer.Exit(1)
