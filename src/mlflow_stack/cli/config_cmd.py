"""`config check | show | schema`."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
import yaml
from rich.markup import escape

from mlflow_stack.cli.console import err, out
from mlflow_stack.cli.options import ConfigOpt, Output, OutputOpt
from mlflow_stack.config.loader import LoadedConfig, load_config
from mlflow_stack.config.model import Settings

app = typer.Typer(help="Validate and inspect the configuration.", no_args_is_help=True)

VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v",
                                          help="List inventory keys that were ignored.")]


def _describe(loaded: LoadedConfig) -> str:
    return f"{loaded.source} ({loaded.format} format)" if loaded.source else "embedded defaults"


def _ignored(loaded: LoadedConfig, verbose: bool) -> None:
    if loaded.ignored_keys:
        if verbose:
            err.print(f"ignored {len(loaded.ignored_keys)} inventory key(s) not used by "
                      f"mlflow-stack: {escape(', '.join(loaded.ignored_keys))}")
        else:
            err.print(f"[dim]ignored {len(loaded.ignored_keys)} inventory key(s); "
                      "--verbose lists them[/]")


@app.command()
def check(config: ConfigOpt = None, verbose: VerboseOpt = False) -> None:
    """Validate the config and the secrets it needs; exit 0 if good, 2 if not.

    Example:  mlflow-stack config check -c inventory.yaml --verbose
    """
    loaded = load_config(config)
    _ignored(loaded, verbose)
    out.print(f"[green]config OK[/]: {escape(_describe(loaded))}")


def effective(settings: Settings) -> dict[str, Any]:
    """Settings as plain data plus derived values and secrets (masked, with their source)."""
    data = settings.model_dump(mode="json")
    data["derived"] = {
        "public_url": settings.public_url,
        "local_url": settings.local_url,
        "workers": settings.effective_workers,
    }
    data["secrets"] = {name: f"****** (from {source})"
                       for name, source in settings.secrets.sources().items()}
    return data


@app.command()
def show(config: ConfigOpt = None, output: OutputOpt = Output.text,
         verbose: VerboseOpt = False) -> None:
    """Print the effective settings (defaults filled in, secrets masked).

    Example:  mlflow-stack config show -c mlflow-stack.yaml --output json
    """
    loaded = load_config(config, require_secrets=False)
    _ignored(loaded, verbose)
    data = effective(loaded.settings)
    if output == Output.json:
        out.print_json(json.dumps(data))
    else:
        err.print(f"[dim]# {escape(_describe(loaded))}[/]")
        out.out(yaml.safe_dump(data, sort_keys=False).rstrip())


@app.command()
def schema() -> None:
    """Print the JSON schema of the native config format (for editors and CI).

    Example:  mlflow-stack config schema > mlflow-stack.schema.json
    """
    schema = Settings.model_json_schema()
    schema.get("properties", {}).pop("secrets", None)
    out.out(json.dumps(schema, indent=2))
