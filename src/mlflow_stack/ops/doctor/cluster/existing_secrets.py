"""Secrets the cluster already has (kubernetes.existing_secrets): each exists and holds the keys
the config names. A missing one keeps the pods from starting (CreateContainerConfigError) or
the Ingress from serving its certificate; the finding names the Secret, the key and the
setting, e.g. "Secret mlflow/db-creds has no key 'pw'
(kubernetes.existing_secrets.database.password_key)"."""

from __future__ import annotations

from lightkube.resources.core_v1 import Secret

from mlflow_stack.config.existing_secrets import in_use
from mlflow_stack.config.model import Settings
from mlflow_stack.errors import StackError
from mlflow_stack.kubernetes.client import Kube, connect, get_or_none
from mlflow_stack.ops.doctor.cluster.common import kube_problem
from mlflow_stack.ops.doctor.findings import Finding, ok, problem

EXISTING_SECRETS = "existing Secrets"
_FIX = ("mlflow-stack never writes these Secrets: create the missing ones or keys (or fix "
        "their ExternalSecret / SealedSecret and its sync status), or change "
        "kubernetes.existing_secrets to the Secret and key that hold the value")


def check_existing_secrets(settings: Settings, kube: Kube | None = None) -> Finding:
    used = in_use(settings)
    if not used:
        return ok(EXISTING_SECRETS, "none named (kubernetes.existing_secrets)")
    problems: list[str] = []
    try:
        kube = kube or connect(settings)
        for existing in used:
            secret = get_or_none(kube, Secret, existing.name, existing.namespace)
            problems += existing.problems(None if secret is None else secret.data or {})
    except StackError as exc:
        return kube_problem(EXISTING_SECRETS, exc)
    if problems:
        return problem(EXISTING_SECRETS, "; ".join(problems), _FIX)
    return ok(EXISTING_SECRETS, ", ".join(
        f"{e.target} ({', '.join(u.key for u in e.keys)})" for e in used) + ": present")
