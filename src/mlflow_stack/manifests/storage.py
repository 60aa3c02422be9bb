"""PersistentVolumeClaims: the local volume (RWO) and the shared models volume (RWX)."""

from __future__ import annotations

from typing import Any

from mlflow_stack.config.model import Settings
from mlflow_stack.manifests import labels as lb


def _pvc(meta: dict[str, Any], mode: str, storage_class: str, size: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": meta,
        "spec": {
            "accessModes": [mode],
            "storageClassName": storage_class,
            "resources": {"requests": {"storage": size}},
        },
    }


def local_pvc(settings: Settings) -> dict[str, Any]:
    st = settings.storage
    return _pvc(lb.metadata(settings, st.local_pvc_name, "storage"), "ReadWriteOnce",
                st.storage_class, st.capacity)


def models_pvc(settings: Settings) -> dict[str, Any]:
    m = settings.storage.models
    meta = lb.metadata(settings, m.name, "storage", labels=lb.MODELS_PVC_LABELS)
    return _pvc(meta, "ReadWriteMany", m.storage_class, m.capacity)


def pvcs(settings: Settings) -> list[dict[str, Any]]:
    result = []
    if settings.storage.local_pvc:
        result.append(local_pvc(settings))
    if settings.storage.models.enabled:
        result.append(models_pvc(settings))
    return result
