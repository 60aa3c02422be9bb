"""Object names, labels and metadata shared by every rendered object.

The names the rest of the reference platform relies on (DESIGN §5) are fixed here, once.
"""

from __future__ import annotations

from typing import Any

from mlflow_stack.config.model import Settings

APP = "mlflow"  # Deployment and Service name, and the `app` label other tools select on
PORT_NAME = "http"
MANAGED_BY = "mlflow-stack"
PART_OF = "mlflow-stack"
FIELD_MANAGER = "mlflow-stack"

# Names of objects this tool owns (the compatibility names come from the reference).
PLUGIN_CONFIGMAP = "mlflow-group-plugin"
CLIENT_ENV_SECRET = "mlflow-client-env"
HELPERS_CONFIGMAP = "mlflow-auth-helpers"
MIGRATION_JOB_PREFIX = "mlflow-db-migrate"
NETWORK_POLICY = "mlflow"
PDB = "mlflow"

# The models volume keeps the labels the reference gives it: other platform parts select on them.
MODELS_PVC_LABELS = {"app.kubernetes.io/name": "ml-models",
                     "app.kubernetes.io/managed-by": "thinkube"}


def standard_labels(settings: Settings, component: str) -> dict[str, str]:
    """`app.kubernetes.io/*` labels; `instance` is the namespace (one installation each)."""
    return {
        "app.kubernetes.io/name": APP,
        "app.kubernetes.io/instance": settings.kubernetes.namespace,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def server_selector() -> dict[str, str]:
    """The reference's selector. Deployment selectors are immutable, so it must stay exactly this
    for `apply` to take over a Deployment the reference's playbook created."""
    return {"app": APP}


def metadata(
    settings: Settings,
    name: str,
    component: str,
    *,
    namespace: str | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    cluster_scoped: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if not cluster_scoped:
        meta["namespace"] = namespace or settings.kubernetes.namespace
    meta["labels"] = {**standard_labels(settings, component), **(labels or {})}
    if annotations:
        meta["annotations"] = annotations
    return meta
