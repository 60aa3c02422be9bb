"""`render`: the Kubernetes manifests as files, for GitOps."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from mlflow_stack.cli import console
from mlflow_stack.cli.options import ConfigOpt
from mlflow_stack.config.loader import load_config
from mlflow_stack.manifests import render as kube_render

OutDirOpt = Annotated[Path, typer.Option(
    "--out", "-O", help="Directory for the manifests and kustomization.yaml (created if "
    "missing; may hold an earlier render).")]
IncludeSecretsOpt = Annotated[bool, typer.Option(
    "--include-secrets",
    help="Also write the Secrets whose values are known (environment or ~/.env). Without it "
         "the manifests refer to Secrets by name only.")]


def render(config: ConfigOpt = None, *, out: OutDirOpt,
           include_secrets: IncludeSecretsOpt = False) -> None:
    """Write the Kubernetes manifests and a kustomization.yaml, from the config alone.

    Nothing is looked up in a cluster. The Secrets to provide are listed at the end.

    With --include-secrets the SSO session key is MLFLOW_STACK_SECRET_KEY or the one in DIR;
    failing both it is created once: keep that file, a new key logs every user out.

    Example:  mlflow-stack render -c inventory.yaml --out deploy/mlflow --include-secrets
    """
    loaded = load_config(config, require_secrets=False)
    secret_key = None
    # An existing session-key Secret (kubernetes.existing_secrets.session_key) is not ours.
    if include_secrets and loaded.settings.sso \
            and not loaded.settings.kubernetes.existing_secrets.session_key:
        # An explicit MLFLOW_STACK_SECRET_KEY wins, then the key an earlier render wrote.
        secret_key = loaded.settings.secrets.secret_key or kube_render.read_secret_key(out)
        if secret_key is None:
            secret_key = kube_render.new_secret_key()
            console.err.print("created a new SSO session key (SECRET_KEY); later renders into "
                              "this directory reuse it")
    rendered = kube_render.render(loaded.settings, include_secrets=include_secrets,
                                  secret_key=secret_key)
    written = kube_render.write_manifests(rendered, out)
    console.out.print(f"wrote {len(rendered.objects)} objects to {escape(str(out))} "
                      f"({escape(kube_render.KUSTOMIZATION)})")
    for patch in rendered.patches:
        console.out.print(f"  patch for {patch.kind} {patch.namespace}/{patch.name} in "
                          f"{kube_render.PATCHES_DIR}/: {escape(patch.description)}")
    for note in rendered.notes:
        console.err.print(f"[dim]note: {escape(note)}[/]")
    if rendered.secrets_needed:
        console.err.print("Secrets to provide before applying (referenced by name, not written):")
        for s in rendered.secrets_needed:
            unknown = f" (unknown: {', '.join(s.missing)})" if include_secrets and s.missing \
                else ""
            console.err.print(f"  {escape(s.namespace)}/{escape(s.name)}{escape(unknown)}: "
                              f"{escape(s.how)}")
    for path in written.stale:
        console.err.print(f"[yellow]stale[/]: {escape(str(path))} is from an earlier render and "
                          "no longer listed in kustomization.yaml; delete it")
