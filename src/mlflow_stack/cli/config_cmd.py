"""`config check | show | schema`."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
import yaml
from rich.markup import escape

from mlflow_stack.cli import help
from mlflow_stack.cli.console import err, out
from mlflow_stack.cli.options import ConfigOpt, Output, OutputOpt
from mlflow_stack.config.loader import LoadedConfig, load_config
from mlflow_stack.config.model import Settings

app = typer.Typer(help="Validate and inspect the configuration.\n\n"
                  "Example:  mlflow-stack config check -c mlflow-stack.yaml",
                  no_args_is_help=True,
                  cls=help.Group)

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


@app.command(cls=help.Command)
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


# What only a deployment on Kubernetes uses: left out of `config show` for a local platform.
KUBERNETES_SECTIONS = ("storage", "registry", "kubernetes", "discovery")
KUBERNETES_FIELDS = {"database": ("namespace", "release_name"),
                     "artifacts": ("credentials_secret", "credentials_namespace")}


def applicable(settings: Settings, data: dict[str, Any], kubernetes: bool) -> dict[str, Any]:
    """`effective` data without what the target in use never reads: the Kubernetes sections
    for a local platform, the PostgreSQL / S3 / Keycloak settings when those are not used, the
    public host settings when there is no public host name."""
    shown = {k: v for k, v in data.items()
             if kubernetes or k not in KUBERNETES_SECTIONS}
    if not kubernetes:
        for section, names in KUBERNETES_FIELDS.items():
            shown[section] = {k: v for k, v in shown[section].items() if k not in names}
    if settings.database.backend == "sqlite":
        shown["database"] = {"backend": "sqlite"}
    if settings.artifacts.backend == "local":
        shown["artifacts"] = {k: v for k, v in shown["artifacts"].items()
                              if k in ("backend", "models_dir")}
    if not settings.sso:
        shown["auth"] = {"provider": "none"}
    if settings.public_hostname is None:
        shown["server"] = {k: v for k, v in shown["server"].items()
                           if k not in ("hostname", "public_scheme")}
        if shown.get("domain") is None:
            shown.pop("domain", None)
    if shown["derived"].get("public_url") == shown["derived"].get("local_url"):
        shown["derived"] = {k: v for k, v in shown["derived"].items() if k != "public_url"}
    return shown


@app.command(cls=help.Command)
def show(config: ConfigOpt = None, output: OutputOpt = Output.text,
         verbose: VerboseOpt = False,
         all_settings: Annotated[bool, typer.Option(
             "--all", "-a", help="Every setting, including those the target in use never "
             "reads (e.g. the Kubernetes sections for a local platform).")] = False) -> None:
    """Print the effective settings (defaults filled in, secrets masked).

    Only what applies to the target in use: for a local platform (the config names no
    cluster) the Kubernetes sections are left out, and so are the PostgreSQL, S3 and Keycloak
    settings when the config does not use them. --all prints every setting.

    Example:  mlflow-stack config show -c mlflow-stack.yaml --output json

    Example:  mlflow-stack config show --all
    """
    from mlflow_stack.deploy import includes_kubernetes

    loaded = load_config(config, require_secrets=False)
    _ignored(loaded, verbose)
    data = effective(loaded.settings)
    kubernetes = includes_kubernetes(loaded.settings)
    if not all_settings:
        data = applicable(loaded.settings, data, kubernetes)
    if output == Output.json:
        out.print_json(json.dumps(data))
    else:
        scope = "every setting" if all_settings else (
            "what a deployment on Kubernetes uses" if kubernetes
            else "what the local platform uses; --all shows every setting")
        err.print(f"[dim]# {escape(_describe(loaded))}: {scope}[/]")
        out.out(yaml.safe_dump(data, sort_keys=False).rstrip())


@app.command(cls=help.Command)
def schema() -> None:
    """Print the JSON schema of the native config format (for editors and CI).

    Example:  mlflow-stack config schema > mlflow-stack.schema.json
    """
    schema = Settings.model_json_schema()
    schema.get("properties", {}).pop("secrets", None)
    out.out(json.dumps(schema, indent=2))
