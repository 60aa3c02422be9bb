"""The server Deployment, the migration Job and the PodDisruptionBudget.

The container runs exactly what `build_server_launch` returns (the command line the local target
runs), with secret values turned into Secret references.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import PurePosixPath
from typing import Any

from mlflow_stack import MLFLOW_VERSION
from mlflow_stack.config.existing_secrets import pull_secret_name
from mlflow_stack.config.model import Settings
from mlflow_stack.errors import ConfigError
from mlflow_stack.launch.command import SERVER_COMMAND, build_server_launch
from mlflow_stack.launch.spec import ServerLaunch, ServerPaths
from mlflow_stack.manifests import labels as lb

# The image's user (image/Dockerfile creates it with these ids).
RUN_AS_UID = 10001
HOME_DIR = "/home/mlflow"
LOCAL_MOUNT = PurePosixPath("/mlflow/local-artifacts")  # the reference's mount of mlflow-storage

POD_PATHS = ServerPaths(
    data_dir=LOCAL_MOUNT,
    artifacts_dir=LOCAL_MOUNT / "artifacts",
    prometheus_dir=PurePosixPath("/mlflow/prometheus"),
    tmp_dir=PurePosixPath("/tmp"),
    audit_log="-",  # stdout: the cluster's log collector takes it (lines carry "log": "audit")
)
MIGRATE_MODULE = "mlflow_stack.server.migrate_job"
CA_VOLUME = "ca-bundle"
CA_MOUNT = PurePosixPath("/etc/mlflow-stack/ca")
CA_FILE = "ca.crt"
GENERATED_CA_CONFIGMAP = "mlflow-ca-bundle"  # from artifacts.ca_bundle / auth.ca_bundle


def image(settings: Settings) -> str:
    r = settings.registry
    return "/".join(p for p in (r.host, r.project, r.image) if p) + f":{r.tag}"


def internal_hosts(settings: Settings) -> list[str]:
    """Host headers in-cluster clients send to the Service (MLflow refuses unknown hosts)."""
    ns = settings.kubernetes.namespace
    names = [lb.APP, f"{lb.APP}.{ns}", f"{lb.APP}.{ns}.svc", f"{lb.APP}.{ns}.svc.cluster.local"]
    return names + [f"{n}:{settings.server.port}" for n in names]


def ca_configmap(settings: Settings) -> str | None:
    """The ConfigMap the pods' CA bundle comes from: the named one, or the one render makes
    from the CA files of the config; None: the pods use the image's trust store."""
    if settings.kubernetes.ca_bundle.configmap:
        return settings.kubernetes.ca_bundle.configmap
    if settings.artifacts.ca_bundle or settings.auth.ca_bundle:
        return GENERATED_CA_CONFIGMAP
    return None


def ca_key(settings: Settings) -> str:
    return settings.kubernetes.ca_bundle.key if settings.kubernetes.ca_bundle.configmap \
        else CA_FILE


def pod_paths(settings: Settings) -> ServerPaths:
    """Where things are in the pod; the CA files of the config are on the deployer's machine,
    so the pods read the bundle from its mounted ConfigMap instead."""
    if ca_configmap(settings) is None:
        return POD_PATHS
    return dataclasses.replace(POD_PATHS, ca_bundle=CA_MOUNT / CA_FILE)


def server_launch(settings: Settings) -> ServerLaunch:
    return build_server_launch(settings, pod_paths(settings), executable=SERVER_COMMAND,
                               bind_host="0.0.0.0", internal_hosts=internal_hosts(settings))


def uses_local_volume(settings: Settings) -> bool:
    """SQLite metadata or local artifacts live on the RWO mlflow-storage volume."""
    return settings.database.backend == "sqlite" or settings.artifacts.backend == "local"


def check(settings: Settings) -> None:
    """Refuse settings that would render a Deployment that cannot work."""
    k = settings.kubernetes
    if uses_local_volume(settings):
        what = "SQLite metadata" if settings.database.backend == "sqlite" else "local artifacts"
        if not settings.storage.local_pvc:
            raise ConfigError(
                f"{what} need the local volume on Kubernetes: set storage.local_pvc: true, or use "
                "database.backend: postgresql and artifacts.backend: s3"
            )
        if k.replicas > 1:
            raise ConfigError(
                f"kubernetes.replicas is {k.replicas}, but {what} sit on a ReadWriteOnce volume "
                "that only one pod can use: use PostgreSQL and S3 for more than one replica"
            )
        if k.autoscaling.enabled and k.autoscaling.max_replicas > 1:
            raise ConfigError(
                f"kubernetes.autoscaling.max_replicas is {k.autoscaling.max_replicas}, but "
                f"{what} sit on a ReadWriteOnce volume that only one pod can use: use "
                "PostgreSQL and S3 to autoscale")
    for path, field in ((settings.artifacts.ca_bundle, "artifacts.ca_bundle"),
                        (settings.auth.ca_bundle, "auth.ca_bundle")):
        if path and not k.ca_bundle.configmap and not path.is_file():
            raise ConfigError(
                f"{field}: {path} is not a file; the pods get the bundle in a ConfigMap made "
                "from it, or set kubernetes.ca_bundle.configmap to one the cluster has")
    for key in k.pod.labels:
        if key in lb.server_selector() or key.startswith("app.kubernetes.io/"):
            raise ConfigError(
                f"kubernetes.pod.labels: {key!r} is one of the platform's own labels (the "
                "Service selects server pods by `app`): choose another key")
    launch_env = {var.name for var in server_launch(settings).env} | set(_POD_ENV)
    for var in k.pod.extra_env:
        if var["name"] in launch_env:
            raise ConfigError(
                f"kubernetes.pod.extra_env: {var['name']} is set by the platform from the "
                "config; change the setting behind it instead (see the README's Configuration)")


def max_replicas(settings: Settings) -> int:
    """The most server pods there can be: the HPA's maximum, else the fixed count."""
    a = settings.kubernetes.autoscaling
    return a.max_replicas if a.enabled else settings.kubernetes.replicas


def ca_bundle_data(settings: Settings) -> str:
    """The bundle for the generated ConfigMap: the config's CA files, concatenated."""
    parts: list[str] = []
    for path in dict.fromkeys(p for p in (settings.artifacts.ca_bundle, settings.auth.ca_bundle)
                              if p):
        try:
            parts.append(path.read_text().strip() + "\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the CA bundle {path}: {exc}") from None
    return "".join(parts)


def ca_bundle_configmap(settings: Settings) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": lb.metadata(settings, GENERATED_CA_CONFIGMAP, "ca-bundle"),
            "data": {CA_FILE: ca_bundle_data(settings)}}


# Set in the pod besides the launch's env (extra_env may not override them either).
_POD_ENV = ("SSL_CERT_FILE",)


def container_env(settings: Settings, launch: ServerLaunch) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = []
    for var in launch.env:
        if var.secret is not None:
            env.append({"name": var.name, "valueFrom": {"secretKeyRef": {
                "name": var.secret.secret_name, "key": var.secret.key}}})
        else:
            env.append({"name": var.name, "value": var.value or ""})
    if ca_configmap(settings):
        # httpx and the ssl module's default context read this one (requests and boto3 read
        # REQUESTS_CA_BUNDLE / AWS_CA_BUNDLE, set by the launch).
        env.append({"name": "SSL_CERT_FILE", "value": str(CA_MOUNT / CA_FILE)})
    env += settings.kubernetes.pod.extra_env
    return env


def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_UID,
        "runAsGroup": RUN_AS_UID,
        "fsGroup": RUN_AS_UID,  # the volumes become writable for the image's user
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


Volumes = tuple[list[dict[str, Any]], list[dict[str, Any]]]


def pod_volumes(settings: Settings, *, server: bool) -> Volumes:
    """(volumes, mounts). The root filesystem is read-only, so every place MLflow writes is a
    volume: temp files (artifact uploads spool there), $HOME (libraries' caches, relative paths),
    the Prometheus multiprocess directory."""
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}},
                                     {"name": "home", "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [
        {"name": "tmp", "mountPath": str(POD_PATHS.tmp_dir)},
        {"name": "home", "mountPath": HOME_DIR},
    ]
    if server and settings.server.prometheus:
        volumes.append({"name": "prometheus", "emptyDir": {}})
        mounts.append({"name": "prometheus", "mountPath": str(POD_PATHS.prometheus_dir)})
    st = settings.storage
    if uses_local_volume(settings):
        volumes.append({"name": "local-storage",
                        "persistentVolumeClaim": {"claimName": st.local_pvc_name}})
        mounts.append({"name": "local-storage", "mountPath": str(LOCAL_MOUNT)})
    if server and st.models.enabled:
        # Experiments the reference created keep artifact locations under /models; the server
        # must still reach them there.
        volumes.append({"name": "models",
                        "persistentVolumeClaim": {"claimName": st.models.name}})
        mounts.append({"name": "models", "mountPath": st.models.mount_path})
    if configmap := ca_configmap(settings):
        volumes.append({"name": CA_VOLUME, "configMap": {
            "name": configmap, "items": [{"key": ca_key(settings), "path": CA_FILE}]}})
        mounts.append({"name": CA_VOLUME, "mountPath": str(CA_MOUNT), "readOnly": True})
    pod = settings.kubernetes.pod
    return volumes + pod.extra_volumes, mounts + pod.extra_volume_mounts


def place(settings: Settings, pod_spec: dict[str, Any]) -> dict[str, Any]:
    """`pod_spec` with the configured placement (every pod of the platform)."""
    pod = settings.kubernetes.pod
    if pod.node_selector:
        pod_spec["nodeSelector"] = dict(pod.node_selector)
    if pod.tolerations:
        pod_spec["tolerations"] = list(pod.tolerations)
    if pod.affinity:
        pod_spec["affinity"] = pod.affinity
    if pod.priority_class:
        pod_spec["priorityClassName"] = pod.priority_class
    return pod_spec


def pod_metadata(settings: Settings, labels: dict[str, str]) -> dict[str, Any]:
    """A pod template's metadata: the configured labels and annotations, ours win."""
    pod = settings.kubernetes.pod
    meta: dict[str, Any] = {"labels": {**pod.labels, **labels}}
    if pod.annotations:
        meta["annotations"] = dict(pod.annotations)
    return meta


def _resources(settings: Settings) -> dict[str, Any]:
    k = settings.kubernetes
    return {
        "requests": {"cpu": k.requests.cpu, "memory": k.requests.memory},
        "limits": {"cpu": k.limits.cpu, "memory": k.limits.memory},
    }


def pod_pull_secrets(settings: Settings) -> list[dict[str, str]]:
    return [{"name": pull_secret_name(settings)}] if settings.registry.host else []


def _probe(settings: Settings, period: int, failures: int) -> dict[str, Any]:
    # /health is exempt from MLflow's host check and from the SSO layer, so kubelet gets through.
    return {"httpGet": {"path": "/health", "port": lb.PORT_NAME}, "periodSeconds": period,
            "timeoutSeconds": 5, "failureThreshold": failures}


def deployment(settings: Settings, launch: ServerLaunch) -> dict[str, Any]:
    k = settings.kubernetes
    split = launch.argv.index("server")
    volumes, mounts = pod_volumes(settings, server=True)
    startup = _probe(settings, 5, max(1, math.ceil(settings.server.health_timeout / 5)))
    container: dict[str, Any] = {
        "name": "mlflow",
        "image": image(settings),
        "imagePullPolicy": "IfNotPresent",
        "command": launch.argv[:split],
        "args": launch.argv[split:],
        "workingDir": HOME_DIR,  # anything written to a relative path lands on a volume
        "env": container_env(settings, launch),
        "ports": [{"name": lb.PORT_NAME, "containerPort": settings.server.port,
                   "protocol": "TCP"}],
        "startupProbe": startup,
        "readinessProbe": _probe(settings, 10, 3),
        "livenessProbe": _probe(settings, 20, 3),
        "resources": _resources(settings),
        "securityContext": container_security_context(),
        "volumeMounts": mounts,
    }
    if k.drain_seconds:
        # Endpoint removal reaches kube-proxy and the ingress controller a moment after the pod
        # starts terminating: until then requests still arrive and must be served.
        container["lifecycle"] = {"preStop": {"exec": {
            "command": ["sleep", str(k.drain_seconds)]}}}
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,  # the server never talks to the API server
        # A Service named `mlflow` would inject MLFLOW_PORT=tcp://... and friends into the pod,
        # which collide with MLflow's own MLFLOW_* settings.
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        # The drain wait, then up to 30 s for in-flight requests once the server is told to stop.
        "terminationGracePeriodSeconds": k.drain_seconds + 30,
        "containers": [container],
        "volumes": volumes,
    }
    if pulls := pod_pull_secrets(settings):
        pod_spec["imagePullSecrets"] = pulls
    place(settings, pod_spec)
    if k.pod.topology_spread is not None:
        pod_spec["topologySpreadConstraints"] = list(k.pod.topology_spread)
    elif max_replicas(settings) > 1:
        pod_spec["topologySpreadConstraints"] = [{
            "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": lb.server_selector()},
        }]
    # A ReadWriteOnce volume can't be attached to the old and the new pod at once.
    strategy: dict[str, Any] = (
        {"type": "Recreate"} if uses_local_volume(settings)
        else {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    )
    spec: dict[str, Any] = {
        "revisionHistoryLimit": 5,
        "selector": {"matchLabels": lb.server_selector()},
        "strategy": strategy,
        "template": {
            "metadata": pod_metadata(settings, {**lb.server_selector(),
                                                **lb.standard_labels(settings, "server")}),
            "spec": pod_spec,
        },
    }
    if not k.autoscaling.enabled:
        # With an HPA the field is the HPA's: sending it would undo every scaling decision.
        spec = {"replicas": k.replicas, **spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": lb.metadata(settings, lb.APP, "server", labels=lb.server_selector()),
        "spec": spec,
    }


def migration_job_name(settings: Settings, launch: ServerLaunch) -> str:
    """A new name for each image and database, so each upgrade runs once (Jobs are immutable)."""
    uri = launch.argv[launch.argv.index("--backend-store-uri") + 1]
    digest = hashlib.sha256(f"{image(settings)}|{uri}|{MLFLOW_VERSION}".encode()).hexdigest()
    return f"{lb.MIGRATION_JOB_PREFIX}-{digest[:10]}"


def migration_job(settings: Settings, launch: ServerLaunch) -> dict[str, Any]:
    """Bring MLflow's schema and the SSO layer's to head before the new pods start.

    `apply` waits for it before rolling the Deployment; GitOps tools that know hooks (Argo CD)
    run it first by the annotations. Either way a server pod refuses to start on an old schema,
    so the previous pods keep serving until the Job is done (maxUnavailable 0).
    """
    volumes, mounts = pod_volumes(settings, server=False)
    uri = launch.argv[launch.argv.index("--backend-store-uri") + 1]
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": [{
            "name": "migrate",
            "image": image(settings),
            "imagePullPolicy": "IfNotPresent",
            "command": ["python", "-m", MIGRATE_MODULE],
            "args": ["--backend-store-uri", uri],
            "workingDir": HOME_DIR,
            "env": container_env(settings, launch),
            "resources": _resources(settings),
            "securityContext": container_security_context(),
            "volumeMounts": mounts,
        }],
        "volumes": volumes,
    }
    place(settings, pod_spec)
    if pulls := pod_pull_secrets(settings):
        pod_spec["imagePullSecrets"] = pulls
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": lb.metadata(
            settings, migration_job_name(settings, launch), "migration",
            annotations={"argocd.argoproj.io/hook": "PreSync",
                         "argocd.argoproj.io/hook-delete-policy": "BeforeHookCreation"},
        ),
        "spec": {
            "backoffLimit": 3,
            "activeDeadlineSeconds": 1800,
            # No `app: mlflow` label: the Service must never send traffic to this pod.
            "template": {"metadata": pod_metadata(settings,
                                                  lb.standard_labels(settings, "migration")),
                         "spec": pod_spec},
        },
    }


def pod_disruption_budget(settings: Settings) -> dict[str, Any]:
    """One pod at most down at a time. With an HPA the count varies: maxUnavailable 1 follows
    it (a lone pod can still be drained; minAvailable 1 would block that drain forever)."""
    budget: dict[str, Any] = ({"maxUnavailable": 1} if settings.kubernetes.autoscaling.enabled
                              else {"minAvailable": 1})
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": lb.metadata(settings, lb.PDB, "server"),
        "spec": {**budget, "selector": {"matchLabels": lb.server_selector()}},
    }


def autoscaler(settings: Settings) -> dict[str, Any]:
    """The server's HorizontalPodAutoscaler (autoscaling/v2), targets relative to requests."""
    a = settings.kubernetes.autoscaling
    metrics = [{"type": "Resource", "resource": {"name": name, "target": {
        "type": "Utilization", "averageUtilization": target}}}
        for name, target in (("cpu", a.cpu_utilization), ("memory", a.memory_utilization))
        if target is not None]
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": lb.metadata(settings, lb.APP, "server"),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": lb.APP},
            "minReplicas": a.min_replicas,
            "maxReplicas": a.max_replicas,
            "metrics": metrics,
        },
    }
