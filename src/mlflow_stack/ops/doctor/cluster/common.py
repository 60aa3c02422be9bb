"""What the cluster checks share: a finding for a failed Kubernetes call, and an object's
conditions and reasons read out."""

from __future__ import annotations

from typing import Any

from mlflow_stack.errors import StackError
from mlflow_stack.ops.doctor.findings import Finding, problem


def kube_problem(name: str, exc: StackError) -> Finding:
    return problem(name, exc.message, exc.hint or "check the kubeconfig and the cluster")


def conditions_of(obj: Any) -> dict[str, Any]:
    status = getattr(obj, "status", None)
    return {c.type: c for c in (getattr(status, "conditions", None) or [])}


def reason_text(reason: str | None, message: str | None) -> str:
    return ": ".join(p for p in (reason, (message or "").strip()) if p) or "no reason given"
