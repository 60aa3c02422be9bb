"""Single sign-on inside the server: the group plugin it loads. Keycloak's own checks
(discovery, client and roles, client secret, clock skew) are the keycloak system's
(components/keycloak/health.py), which doctor runs with every system's."""

from __future__ import annotations

import importlib.util

from mlflow_stack.config.model import Settings
from mlflow_stack.local.state import StateDir
from mlflow_stack.ops.doctor.findings import Finding, ok, problem, skipped


def check_group_plugin(settings: Settings, state: StateDir) -> Finding:
    name = "group plugin"
    module = settings.auth.group_plugin
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        return problem(name, f"{module!r} is not importable by the server",
                       "install mlflow-stack into the server's environment (it ships "
                       "mlflow_keycloak_groups) or fix auth.group_plugin")
    return ok(name, f"{module} importable")


def check_group_plugin_deployed(settings: Settings) -> Finding:
    """Deployed, the plugin must be in the image, not where doctor runs: the server checks it
    at start and a pod without it never becomes ready (the pods check names it)."""
    return skipped("group plugin", f"{settings.auth.group_plugin} is checked by the server in "
                   "its pod at start: a pod without it does not start (see pods and its log)")
