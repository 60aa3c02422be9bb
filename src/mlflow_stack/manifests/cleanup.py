"""The gc CronJob: `mlflow gc` on a schedule (kubernetes.gc), in the server's image.

Its pod is the migration Job's (workload.py): same image, security contexts, volumes (CA bundle
and extra volumes included), placement and pod metadata, and the server's environment reduced
to what gc reads (database password, S3 keys and endpoint, CA bundles, temp dirs, the
configured extra env) - the SSO layer's secrets stay out of it. It runs server.gc_job, which is
`mlflow gc` with the server's mlflow-artifacts URIs resolved in the artifact store itself.
"""

from __future__ import annotations

from typing import Any

from mlflow_stack.config.model import Settings
from mlflow_stack.launch.spec import ServerLaunch
from mlflow_stack.manifests import labels as lb
from mlflow_stack.manifests import workload

CRONJOB = "mlflow-gc"
COMPONENT = "gc"
GC_MODULE = "mlflow_stack.server.gc_job"
# What gc reads of the server launch's environment (names, or prefixes ending in `_`); what the
# pod adds to it (SSL_CERT_FILE, kubernetes.pod.extra_env) is kept as well.
_ENV = ("PGPASSWORD", "AWS_", "MLFLOW_S3_", "TMPDIR", "MLFLOW_TMP_DIR", "REQUESTS_CA_BUNDLE",
        "MLFLOW_ENABLE_WORKSPACES", "MLFLOW_DISABLE_TELEMETRY")


def _wanted(name: str) -> bool:
    return any(name.startswith(e) if e.endswith("_") else name == e for e in _ENV)


def gc_args(settings: Settings, launch: ServerLaunch) -> list[str]:
    """`mlflow gc`'s options: the server's stores, the retention, every workspace."""
    argv = launch.argv
    args = ["--backend-store-uri", argv[argv.index("--backend-store-uri") + 1],
            "--artifacts-destination", argv[argv.index("--artifacts-destination") + 1],
            "--older-than", settings.kubernetes.gc.retention]
    if settings.server.workspaces:
        args.append("--all-workspaces")
    return args


def cronjob(settings: Settings, launch: ServerLaunch) -> dict[str, Any]:
    gc = settings.kubernetes.gc
    volumes, mounts = workload.pod_volumes(settings, server=False)
    st = settings.storage
    if st.models.enabled:
        # Runs of experiments the reference created keep their artifacts on the models volume.
        volumes.append({"name": "models",
                        "persistentVolumeClaim": {"claimName": st.models.name}})
        mounts.append({"name": "models", "mountPath": st.models.mount_path})
    dropped = {v.name for v in launch.env if not _wanted(v.name)}
    env = [e for e in workload.container_env(settings, launch) if e["name"] not in dropped]
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": workload.pod_security_context(),
        "containers": [{
            "name": COMPONENT,
            "image": workload.image(settings),
            "imagePullPolicy": "IfNotPresent",
            "command": ["python", "-m", GC_MODULE],
            "args": gc_args(settings, launch),
            "workingDir": workload.HOME_DIR,
            "env": env,
            "resources": {
                "requests": {"cpu": gc.requests.cpu, "memory": gc.requests.memory},
                "limits": {"cpu": gc.limits.cpu, "memory": gc.limits.memory},
            },
            "securityContext": workload.container_security_context(),
            "volumeMounts": mounts,
        }],
        "volumes": volumes,
    }
    workload.place(settings, pod_spec)
    if pulls := workload.pod_pull_secrets(settings):
        pod_spec["imagePullSecrets"] = pulls
    # No `app: mlflow` label: the Service must never send traffic to this pod.
    labels = lb.standard_labels(settings, COMPONENT)
    spec: dict[str, Any] = {
        "schedule": gc.schedule,
        # One gc at a time; a run missed by more than an hour (controller down) is skipped,
        # not made up in a burst.
        "concurrencyPolicy": "Forbid",
        "startingDeadlineSeconds": 3600,
        "successfulJobsHistoryLimit": gc.successful_jobs_history,
        "failedJobsHistoryLimit": gc.failed_jobs_history,
        "jobTemplate": {
            "metadata": {"labels": labels},
            "spec": {
                "backoffLimit": 1,
                "activeDeadlineSeconds": gc.deadline_seconds,
                "template": {"metadata": workload.pod_metadata(settings, labels),
                             "spec": pod_spec},
            },
        },
    }
    if gc.time_zone:
        spec["timeZone"] = gc.time_zone
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": lb.metadata(settings, CRONJOB, COMPONENT),
        "spec": spec,
    }
