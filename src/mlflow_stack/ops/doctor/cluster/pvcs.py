"""The PVCs the server mounts (the local RWO volume when SQLite or local artifacts use it, the
shared models RWX volume): Bound, or why not (a missing storage class is named)."""

from __future__ import annotations

from typing import Any

from lightkube.resources.core_v1 import PersistentVolumeClaim
from lightkube.resources.storage_v1 import StorageClass

from mlflow_stack.config.model import Settings
from mlflow_stack.errors import StackError
from mlflow_stack.kubernetes.client import Kube, KubernetesError, connect, get_or_none
from mlflow_stack.manifests import workload
from mlflow_stack.ops.doctor.cluster.common import kube_problem
from mlflow_stack.ops.doctor.findings import Finding, ok, problem

PVCS = "PVCs"


def used_pvcs(settings: Settings) -> list[tuple[str, str, str]]:
    """(name, access mode, storage class) of each PVC the server's pods mount."""
    st = settings.storage
    used = []
    if st.local_pvc and workload.uses_local_volume(settings):
        used.append((st.local_pvc_name, "ReadWriteOnce", st.storage_class))
    if st.models.enabled:
        used.append((st.models.name, "ReadWriteMany", st.models.storage_class))
    return used


def _pending_cause(kube: Kube, pvc: Any, wanted_class: str) -> str:
    """Why a PVC may be Pending, from its storage class (when we may read storage classes)."""
    name = (pvc.spec.storageClassName if pvc.spec else None) or wanted_class
    try:
        sc = get_or_none(kube, StorageClass, name, None)
    except KubernetesError:  # e.g. no permission to read storage classes: say nothing
        return ""
    if sc is None:
        return f"storage class {name} does not exist"
    if sc.volumeBindingMode == "WaitForFirstConsumer":
        return f"storage class {name} binds when the first pod is scheduled (see pods)"
    return f"storage class {name} (provisioner {sc.provisioner}) has not provisioned a volume"


def check_pvcs(settings: Settings, kube: Kube | None = None) -> Finding:
    ns = settings.kubernetes.namespace
    used = used_pvcs(settings)
    if not used:
        return ok(PVCS, "the server mounts no PVC (PostgreSQL, S3, no models volume)")
    bound: list[str] = []
    issues: list[str] = []
    fixes: list[str] = []
    try:
        kube = kube or connect(settings)
        for name, mode, storage_class in used:
            pvc = get_or_none(kube, PersistentVolumeClaim, name, ns)
            if pvc is None:
                issues.append(f"PVC {ns}/{name} does not exist")
                fixes.append("mlflow-stack apply creates it")
                continue
            phase = (pvc.status.phase if pvc.status else None) or "Pending"
            if phase == "Bound":
                size = (pvc.status.capacity or {}).get("storage") if pvc.status else None
                bound.append(f"{name} ({mode}{', ' + str(size) if size else ''})")
                continue
            cause = _pending_cause(kube, pvc, storage_class) if phase == "Pending" else ""
            issues.append(f"PVC {ns}/{name} ({mode}) is {phase}" + (f": {cause}" if cause else ""))
            if phase == "Lost":
                fixes.append(f"its volume is gone: kubectl -n {ns} describe pvc {name}; restore "
                             "the data from a backup")
            else:
                fixes.append(f"kubectl -n {ns} describe pvc {name} (its Events say why); "
                             "kubectl get storageclass: the class must exist and provide "
                             f"{mode} (set it in the config, delete the Pending PVC, apply "
                             "again)")
    except StackError as exc:
        return kube_problem(PVCS, exc)
    if issues:
        return problem(PVCS, "; ".join(issues), "; ".join(dict.fromkeys(fixes)))
    return ok(PVCS, "Bound: " + ", ".join(bound))
