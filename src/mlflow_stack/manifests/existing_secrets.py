"""Existing Secrets in the manifests (kubernetes.existing_secrets): references only.

- the server's env refers to the existing Secret and key instead of ours (launch.existing_secrets
  does that where the env is built, so every user of the launch sees the same references).
- `strip`: our Secrets lose the keys an existing Secret holds (a Secret left with nothing, or
  one named like an existing Secret, is not rendered at all).
- `needed`: each existing Secret as a `SecretNeeded` (the kustomization comment, `plan`'s
  check that it is there with its keys), marked `existing` so apply never writes, prunes or
  uninstalls it.
"""

from __future__ import annotations

from mlflow_stack.config.existing_secrets import ExistingSecret, in_use
from mlflow_stack.config.model import Settings
from mlflow_stack.launch.existing_secrets import moved_to
from mlflow_stack.manifests.secret_objects import SecretNeeded, SecretSpec


def strip(settings: Settings, specs: list[SecretSpec]) -> list[SecretSpec]:
    """Our Secrets without what existing Secrets hold (and never one under their names)."""
    names = {e.name for e in in_use(settings)}
    kept = []
    for spec in specs:
        if spec.name in names:
            continue
        moved = [k for k in spec.values if moved_to(settings, spec.name, k) is not None]
        for key in moved:
            del spec.values[key]
        if spec.values:
            kept.append(spec)
    return kept


def how(existing: ExistingSecret) -> str:
    keys = ", ".join(f"{u.key} ({u.what})" for u in existing.keys)
    return (f"an existing Secret ({existing.field}) that must hold {keys}; mlflow-stack refers "
            "to it and never writes it")


def needed(settings: Settings) -> list[SecretNeeded]:
    return [SecretNeeded(e.namespace, e.name, e.type, tuple(u.key for u in e.keys), (),
                         how(e), existing=e) for e in in_use(settings)]
