"""The Deployment lets the public host through MLflow's host check."""

from __future__ import annotations

from lightkube.resources.apps_v1 import Deployment

from mlflow_stack.config.model import Settings
from mlflow_stack.errors import StackError
from mlflow_stack.kubernetes.client import Kube, connect, get_or_none
from mlflow_stack.manifests import labels as lb
from mlflow_stack.ops.doctor.cluster.common import kube_problem
from mlflow_stack.ops.doctor.findings import Finding, host_allowed, ok, problem, skipped

ALLOWED_HOST = "public host allowed"  # the local check's name: the same question, asked here


def check_allowed_host(settings: Settings, kube: Kube | None = None) -> Finding:
    """The Deployment's MLFLOW_SERVER_ALLOWED_HOSTS must let the public host through."""
    ns = settings.kubernetes.namespace
    host = settings.public_hostname
    if host is None:
        return ok(ALLOWED_HOST, "no public host name configured (in-cluster only)")
    try:
        kube = kube or connect(settings)
        deployment = get_or_none(kube, Deployment, lb.APP, ns)
    except StackError as exc:
        return kube_problem(ALLOWED_HOST, exc)
    if deployment is None:
        return skipped(ALLOWED_HOST, f"no Deployment {ns}/{lb.APP} (see pods)")
    spec = deployment.spec.template.spec if deployment.spec else None
    containers = spec.containers if spec else []
    server = next((c for c in containers if c.name == "mlflow"), None)
    env = {e.name: e.value for e in (server.env or [])} if server else {}
    allowed = env.get("MLFLOW_SERVER_ALLOWED_HOSTS") or ""
    if not host_allowed(host, allowed):
        return problem(ALLOWED_HOST, f"Deployment {ns}/{lb.APP} refuses Host {host} (allowed: "
                       f"{allowed or 'MLflow defaults'})",
                       "mlflow-stack apply with this config (it was deployed with another "
                       "host name, or edited); set server.hostname / domain")
    return ok(ALLOWED_HOST, f"Host {host} allowed by Deployment {ns}/{lb.APP}")
