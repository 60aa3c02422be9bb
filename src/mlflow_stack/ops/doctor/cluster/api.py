"""The Kubernetes API: the kubeconfig works, the API server answers, the namespace exists."""

from __future__ import annotations

from lightkube.resources.core_v1 import Namespace

from mlflow_stack.config.model import Settings
from mlflow_stack.errors import StackError
from mlflow_stack.kubernetes.client import Kube, connect, get_or_none
from mlflow_stack.ops.doctor.cluster.common import kube_problem
from mlflow_stack.ops.doctor.findings import Finding, ok, problem

API = "Kubernetes API"


def check_api(settings: Settings, kube: Kube | None = None) -> Finding:
    ns = settings.kubernetes.namespace
    try:
        kube = kube or connect(settings)
        found = get_or_none(kube, Namespace, ns, None)
    except StackError as exc:
        return kube_problem(API, exc)
    if found is None:
        return problem(API, f"namespace {ns} does not exist at {kube.url}: the platform is not "
                       "deployed there", "mlflow-stack apply (check kubernetes.namespace and "
                       "kubernetes.context)")
    if found.metadata and found.metadata.deletionTimestamp:
        return problem(API, f"namespace {ns} is being deleted (Terminating)",
                       f"kubectl get all -n {ns}; wait for it to go, then mlflow-stack apply")
    return ok(API, f"{kube.url} answers; namespace {ns} exists")
