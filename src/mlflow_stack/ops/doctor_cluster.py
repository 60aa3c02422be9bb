"""`doctor` for a platform deployed on Kubernetes: what `apply` made, as the cluster sees it now.

Checks (reads only, through lightkube, with the same client and error mapping as `apply`):
- Kubernetes API: the kubeconfig works, the API server answers, the namespace exists. When it
  fails, the checks below say so instead of each failing (or timing out) again.
- pods: the Deployment's pods are running and ready; otherwise why not (CrashLoopBackOff,
  ImagePullBackOff, Pending/unschedulable, a container that cannot start, not ready).
- PVCs: the volumes the server mounts (the local RWO volume when SQLite or local artifacts use
  it, the shared models RWX volume) are Bound; a missing storage class is named.
- migration Job: the Job for this image and database exists and has not failed.
- TLS certificate: kubernetes.tls_secret exists, holds a certificate for the public host that is
  valid for more than 14 days, and the key that goes with it.
- public host allowed: the Deployment lets the public host through MLflow's host check.

Each check is `(settings) -> Finding`; `checks()` gives them bound to one connection per run.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from lightkube import ApiError
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Namespace, PersistentVolumeClaim, Pod, Secret
from lightkube.resources.storage_v1 import StorageClass

from mlflow_stack.config.model import Settings
from mlflow_stack.errors import StackError
from mlflow_stack.kubernetes import sources
from mlflow_stack.kubernetes.client import Kube, KubernetesError, call, connect, get_or_none
from mlflow_stack.kubernetes.wait import job_state, rollout_state
from mlflow_stack.manifests import labels as lb
from mlflow_stack.manifests import network, workload
from mlflow_stack.ops.doctor import Finding, host_allowed, ok, problem, skipped

API = "Kubernetes API"
PODS = "pods"
PVCS = "PVCs"
MIGRATION_JOB = "migration Job"
TLS = "TLS certificate"
ALLOWED_HOST = "public host allowed"  # the local check's name: the same question, asked here
CERT_MIN_DAYS = 14

_PULL_ERRORS = ("ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull")
_START_ERRORS = ("CreateContainerConfigError", "CreateContainerError", "RunContainerError")

ClusterCheck = Callable[[Settings], Finding]


def _failed(name: str, exc: StackError) -> Finding:
    return problem(name, exc.message, exc.hint or "check the kubeconfig and the cluster")


# --------------------------------------------------------------------------------------------
# Kubernetes API


def check_api(settings: Settings, kube: Kube | None = None) -> Finding:
    ns = settings.kubernetes.namespace
    try:
        kube = kube or connect(settings)
        found = get_or_none(kube, Namespace, ns, None)
    except StackError as exc:
        return _failed(API, exc)
    if found is None:
        return problem(API, f"namespace {ns} does not exist at {kube.url}: the platform is not "
                       "deployed there", "mlflow-stack apply (check kubernetes.namespace and "
                       "kubernetes.context)")
    if found.metadata and found.metadata.deletionTimestamp:
        return problem(API, f"namespace {ns} is being deleted (Terminating)",
                       f"kubectl get all -n {ns}; wait for it to go, then mlflow-stack apply")
    return ok(API, f"{kube.url} answers; namespace {ns} exists")


# --------------------------------------------------------------------------------------------
# pods


def _conditions(obj: Any) -> dict[str, Any]:
    status = getattr(obj, "status", None)
    return {c.type: c for c in (getattr(status, "conditions", None) or [])}


def _why(reason: str | None, message: str | None) -> str:
    return ": ".join(p for p in (reason, (message or "").strip()) if p) or "no reason given"


def pod_trouble(pod: Pod, settings: Settings) -> tuple[str, str] | None:
    """(what is wrong, the fix) for a pod that is not running and ready, else None."""
    ns = settings.kubernetes.namespace
    name = pod.metadata.name if pod.metadata else "?"
    status = pod.status
    phase = (status.phase if status else None) or "Unknown"
    describe = f"kubectl -n {ns} describe pod {name}"
    conds = _conditions(pod)
    scheduled = conds.get("PodScheduled")
    if phase == "Pending" and scheduled is not None and scheduled.status == "False":
        why = _why(scheduled.reason, scheduled.message)
        return (f"pod {name} is Pending, not scheduled ({why})",
                f"{describe}; lower kubernetes.requests or add node capacity, and check that "
                "its PVCs are bound (see PVCs)")
    containers = [*(status.initContainerStatuses or []), *(status.containerStatuses or [])] \
        if status else []
    for cs in containers:
        state = cs.state
        waiting = state.waiting if state else None
        reason = waiting.reason if waiting else None
        if reason in _PULL_ERRORS:
            pull = settings.registry.pull_secret if settings.registry.host else None
            creds = (f" and the pull secret {pull} (HARBOR_ROBOT_TOKEN, then mlflow-stack apply)"
                     if pull else "")
            return (f"pod {name}: image {cs.image} cannot be pulled "
                    f"({_why(reason, waiting.message if waiting else None)})",
                    f"{describe}; check registry.host/project/image/tag{creds}")
        if reason == "CrashLoopBackOff":
            last = cs.lastState.terminated if cs.lastState else None
            exit_info = (f", last exit code {last.exitCode}"
                         + (f" ({last.reason})" if last.reason else "")) if last else ""
            fix = (f"kubectl -n {ns} logs {name} --previous (or kubectl -n {ns} logs "
                   f"deploy/{lb.APP}); {describe}")
            if last is not None and last.reason == "OOMKilled":
                fix += ("; raise kubernetes.limits.memory, or lower server.workers (workers "
                        "are sized from server.memory_limit: keep it at most the pod's limit)")
            else:
                fix += "; the database, artifact store and OIDC checks below often name the cause"
            return (f"pod {name}: container {cs.name} is crash-looping (CrashLoopBackOff, "
                    f"{cs.restartCount} restarts{exit_info})", fix)
        if reason in _START_ERRORS:
            return (f"pod {name}: container {cs.name} cannot start "
                    f"({_why(reason, waiting.message if waiting else None)})",
                    f"{describe}; a Secret or ConfigMap key it needs may be missing: "
                    "mlflow-stack apply")
    if phase == "Pending":
        waiting_on = next((cs.state.waiting.reason for cs in containers
                           if cs.state and cs.state.waiting and cs.state.waiting.reason), None)
        return (f"pod {name} is Pending ({waiting_on or 'not started'})",
                f"{describe} (its Events say what it waits for: a volume to attach, the image)")
    if phase in ("Failed", "Unknown", "Succeeded"):
        why = _why(status.reason, status.message) if status else "no status"
        return (f"pod {name} is {phase} ({why})",
                f"{describe}; kubectl -n {ns} logs {name}")
    ready = conds.get("Ready")
    if ready is None or ready.status != "True":
        not_ready = [cs.name for cs in containers if not cs.ready]
        which = f"container {', '.join(not_ready)}" if not_ready else "the pod"
        return (f"pod {name} runs but {which} is not ready (readiness probe on /health)",
                f"kubectl -n {ns} logs {name}; {describe} (probe failures are in its Events)")
    return None


def check_pods(settings: Settings, kube: Kube | None = None) -> Finding:
    ns = settings.kubernetes.namespace
    describe = f"kubectl -n {ns} describe deployment/{lb.APP}"
    try:
        kube = kube or connect(settings)
        deployment = get_or_none(kube, Deployment, lb.APP, ns)
        if deployment is None:
            return problem(PODS, f"Deployment {ns}/{lb.APP} does not exist", "mlflow-stack apply")
        selector: dict[str, Any] = dict(lb.server_selector())
        with call(kube, f"list Pods in {ns}"):
            try:
                pods = [p for p in kube.client.list(Pod, namespace=ns, labels=selector)
                        if not (p.metadata and p.metadata.deletionTimestamp)]
            except ApiError as exc:
                if exc.status.code != 403:
                    raise
                # apply never reads pods, so the installer's roles need not allow it.
                return problem(PODS, f"not allowed to list Pods in {ns}: "
                               f"{exc.status.message or 'forbidden'}",
                               f"grant get and list on pods in {ns} to this identity (kubectl "
                               f"auth can-i list pods -n {ns}), or run doctor as a viewer")
    except StackError as exc:
        return _failed(PODS, exc)
    want = deployment.spec.replicas if deployment.spec and \
        deployment.spec.replicas is not None else 1
    if want == 0:
        return problem(PODS, f"Deployment {ns}/{lb.APP} is scaled to 0 replicas",
                       f"mlflow-stack apply (or kubectl -n {ns} scale deployment/{lb.APP} "
                       f"--replicas={settings.kubernetes.replicas})")
    troubles = [t for t in (pod_trouble(p, settings) for p in pods) if t is not None]
    if troubles:
        finding = "; ".join(t[0] for t in troubles[:3])
        if len(troubles) > 3:
            finding += f"; {len(troubles) - 3} more"
        return problem(PODS, finding, troubles[0][1])
    if not pods:
        failure = _conditions(deployment).get("ReplicaFailure")
        why = f": {_why(failure.reason, failure.message)}" if failure is not None and \
            failure.status == "True" else ""
        return problem(PODS, f"Deployment {ns}/{lb.APP} has no pods (wants {want}){why}",
                       f"{describe}; kubectl -n {ns} get events --sort-by=.lastTimestamp")
    if len(pods) < want:
        return problem(PODS, f"{len(pods)} of {want} pods running and ready",
                       f"{describe}; kubectl -n {ns} get events --sort-by=.lastTimestamp")
    try:
        done, missing = rollout_state(deployment)
    except KubernetesError as exc:  # progress deadline exceeded
        return _failed(PODS, exc)
    names = ", ".join(sorted(p.metadata.name for p in pods if p.metadata and p.metadata.name))
    note = "" if done else f" (rollout in progress: {missing})"
    return ok(PODS, f"{len(pods)} of {want} pod(s) running and ready: {names}{note}")


# --------------------------------------------------------------------------------------------
# PVCs


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
        return _failed(PVCS, exc)
    if issues:
        return problem(PVCS, "; ".join(issues), "; ".join(dict.fromkeys(fixes)))
    return ok(PVCS, "Bound: " + ", ".join(bound))


# --------------------------------------------------------------------------------------------
# migration Job


def migration_job_name(settings: Settings) -> str:
    return workload.migration_job_name(settings, workload.server_launch(settings))


def _migration_jobs(kube: Kube, settings: Settings) -> list[tuple[str, str]]:
    """(name, state) of the migration Jobs of this installation (another image's, say)."""
    ns = settings.kubernetes.namespace
    selector: dict[str, Any] = dict(lb.standard_labels(settings, "migration"))
    with call(kube, f"list Jobs in {ns}"):
        return [((j.metadata.name if j.metadata else None) or "?", job_state(j))
                for j in kube.client.list(Job, namespace=ns, labels=selector)]


def check_migration_job(settings: Settings, kube: Kube | None = None) -> Finding:
    ns = settings.kubernetes.namespace
    if settings.database.backend != "postgresql":
        return ok(MIGRATION_JOB, "SQLite metadata: no migration Job (the server creates the "
                  "schema itself)")
    name = migration_job_name(settings)
    try:
        kube = kube or connect(settings)
        job = get_or_none(kube, Job, name, ns)
    except StackError as exc:
        return _failed(MIGRATION_JOB, exc)
    if job is None:
        try:
            others = _migration_jobs(kube, settings)
        except StackError:
            others = []
        seen = "; in the cluster: " + ", ".join(f"{n} ({st})" for n, st in others) \
            if others else ""
        return problem(MIGRATION_JOB, f"Job {ns}/{name} (the schema upgrade for this config's "
                       f"image and database) does not exist{seen}",
                       "mlflow-stack plan shows what differs from the config; mlflow-stack "
                       "apply runs the Job (a no-op when the schema is already current)")
    state = job_state(job)
    if state == "failed":
        cond = _conditions(job)["Failed"]
        failed = job.status.failed if job.status else None
        pods = f" after {failed} failed pod(s)" if failed else ""
        return problem(MIGRATION_JOB, f"Job {ns}/{name} failed{pods} "
                       f"({_why(cond.reason, cond.message)})",
                       f"kubectl -n {ns} logs job/{name}; fix the cause (database reachable "
                       f"from the cluster, password Secret), then kubectl -n {ns} delete job "
                       f"{name} and mlflow-stack apply")
    if state == "running":
        active = (job.status.active if job.status else None) or 0
        return ok(MIGRATION_JOB, f"Job {ns}/{name} still running ({active} active pod(s)); "
                  "the new pods start after it")
    return ok(MIGRATION_JOB, f"Job {ns}/{name} complete")


# --------------------------------------------------------------------------------------------
# TLS certificate


def _host_matches(host: str, names: list[str]) -> bool:
    """RFC 6125 matching: exact, or a wildcard for exactly one leftmost label."""
    host = host.lower().rstrip(".")
    for pattern in (n.lower().rstrip(".") for n in names):
        if pattern == host:
            return True
        if pattern.startswith("*.") and "." in host and host.split(".", 1)[1] == pattern[2:]:
            return True
    return False


def cert_names(cert: x509.Certificate) -> list[str]:
    """The DNS names a certificate is for (SANs; the CN only when it has no SAN, as browsers)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        return list(san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def _decode(data: dict[str, str] | None, key: str) -> bytes | None:
    value = (data or {}).get(key)
    if not value:
        return None
    try:
        return base64.b64decode(value)
    except (binascii.Error, ValueError):
        return None


def _key_matches(cert: x509.Certificate, key_pem: bytes) -> bool | None:
    """True/False when the key can be read; None when it cannot (encrypted, unknown type)."""
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        return None
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return bool(key.public_key().public_bytes(*fmt) == cert.public_key().public_bytes(*fmt))


def _renew_fix(settings: Settings, what: str) -> str:
    k = settings.kubernetes
    source = sources.tls_source(settings)
    create = (f"kubectl -n {k.namespace} create secret tls {k.tls_secret} --cert=FULLCHAIN.pem "
              "--key=KEY.pem")
    if source is None:
        return f"{what}: {create}"
    return (f"{what} in Secret {source[0]}/{source[1]} (the certificate apply copies; "
            f"cert-manager or your CA renews it there) and run mlflow-stack apply; or {create}")


def check_tls(settings: Settings, kube: Kube | None = None,
              now: dt.datetime | None = None) -> Finding:
    k = settings.kubernetes
    host = settings.public_hostname
    if host is None:
        return ok(TLS, "no public host name: no Ingress, no certificate")
    if not network.uses_tls(settings):
        return ok(TLS, f"server.public_scheme is http: {host} is served without TLS")
    if k.route != "ingress":
        return ok(TLS, f"kubernetes.route is {k.route}: the certificate is the Gateway "
                  f"listener's ({k.gateway_name}), not ours")
    where = f"{k.namespace}/{k.tls_secret}"
    try:
        kube = kube or connect(settings)
        secret = get_or_none(kube, Secret, k.tls_secret, k.namespace)
    except StackError as exc:
        return _failed(TLS, exc)
    if secret is None:
        return problem(TLS, f"Secret {where} (the Ingress's certificate for {host}) does not "
                       "exist: the ingress serves its default certificate",
                       _renew_fix(settings, "put the certificate"))
    crt, key = _decode(secret.data, "tls.crt"), _decode(secret.data, "tls.key")
    if crt is None or key is None:
        missing = " and ".join(n for n, v in (("tls.crt", crt), ("tls.key", key)) if v is None)
        return problem(TLS, f"Secret {where} has no {missing}",
                       _renew_fix(settings, "put the certificate and its key"))
    try:
        cert = x509.load_pem_x509_certificates(crt)[0]  # the leaf comes first in a chain
    except ValueError:
        return problem(TLS, f"tls.crt in Secret {where} is not a PEM certificate",
                       _renew_fix(settings, "put a PEM certificate (full chain)"))
    now = now or dt.datetime.now(dt.UTC)
    expires = cert.not_valid_after_utc
    days = (expires - now).total_seconds() / 86400
    names = cert_names(cert)
    issuer = cert.issuer.rfc4514_string() or "?"
    problems = []
    if expires <= now:
        problems.append(f"the certificate expired on {expires:%Y-%m-%d %H:%M} UTC")
    elif cert.not_valid_before_utc > now:
        problems.append(f"the certificate is not valid before "
                        f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    elif days < CERT_MIN_DAYS:
        problems.append(f"the certificate expires in {days:.1f} days "
                        f"({expires:%Y-%m-%d %H:%M} UTC)")
    if not _host_matches(host, names):
        problems.append(f"the certificate is for {', '.join(names) or 'no host name'}, "
                        f"not {host}")
    if _key_matches(cert, key) is False:
        problems.append("tls.key is not the certificate's key")
    if problems:
        return problem(TLS, f"Secret {where}: " + "; ".join(problems),
                       _renew_fix(settings, f"renew the certificate for {host}"))
    return ok(TLS, f"Secret {where}: valid for {host} until {expires:%Y-%m-%d} "
              f"({days:.0f} days), issued by {issuer}")


# --------------------------------------------------------------------------------------------
# public host allowed


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
        return _failed(ALLOWED_HOST, exc)
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


# --------------------------------------------------------------------------------------------
# one run


_CHECKS: list[tuple[str, Callable[[Settings, Kube], Finding]]] = [
    (PODS, check_pods), (PVCS, check_pvcs), (MIGRATION_JOB, check_migration_job),
    (TLS, check_tls), (ALLOWED_HOST, check_allowed_host),
]


class _Session:
    """One connection for one doctor run. When the API check fails, the other cluster checks
    report that they could not run instead of each failing (or timing out) again."""

    def __init__(self) -> None:
        self.kube: Kube | None = None
        self.down: str | None = None

    def api(self, settings: Settings) -> Finding:
        try:
            self.kube = connect(settings)
        except StackError as exc:
            self.down = exc.message
            return _failed(API, exc)
        finding = check_api(settings, self.kube)
        if finding.status != "ok":
            self.down = finding.finding
        return finding

    def bind(self, name: str, check: Callable[[Settings, Kube], Finding]) -> ClusterCheck:
        def run(settings: Settings) -> Finding:
            if self.down is not None or self.kube is None:
                return skipped(name, f"needs the Kubernetes API ({self.down or 'not checked'})")
            return check(settings, self.kube)
        return run


def checks() -> dict[str, ClusterCheck]:
    """Every cluster check by name, in order, sharing one connection; the API check first."""
    session = _Session()
    return {API: session.api, **{name: session.bind(name, fn) for name, fn in _CHECKS}}
