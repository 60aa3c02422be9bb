"""The Deployment's pods: running and ready, or why not (CrashLoopBackOff, ImagePullBackOff,
Pending/unschedulable, a container that cannot start, not ready)."""

from __future__ import annotations

from typing import Any

from lightkube import ApiError
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Pod

from mlflow_stack.config.model import Settings
from mlflow_stack.errors import StackError
from mlflow_stack.kubernetes.client import Kube, KubernetesError, call, connect, get_or_none
from mlflow_stack.kubernetes.wait import rollout_state
from mlflow_stack.manifests import labels as lb
from mlflow_stack.ops.doctor.cluster.common import conditions_of, kube_problem, reason_text
from mlflow_stack.ops.doctor.findings import Finding, ok, problem

PODS = "pods"
_PULL_ERRORS = ("ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull")
_START_ERRORS = ("CreateContainerConfigError", "CreateContainerError", "RunContainerError")


def pod_trouble(pod: Pod, settings: Settings) -> tuple[str, str] | None:
    """(what is wrong, the fix) for a pod that is not running and ready, else None."""
    ns = settings.kubernetes.namespace
    name = pod.metadata.name if pod.metadata else "?"
    status = pod.status
    phase = (status.phase if status else None) or "Unknown"
    describe = f"kubectl -n {ns} describe pod {name}"
    conds = conditions_of(pod)
    scheduled = conds.get("PodScheduled")
    if phase == "Pending" and scheduled is not None and scheduled.status == "False":
        why = reason_text(scheduled.reason, scheduled.message)
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
                    f"({reason_text(reason, waiting.message if waiting else None)})",
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
                    f"({reason_text(reason, waiting.message if waiting else None)})",
                    f"{describe}; a Secret or ConfigMap key it needs may be missing: "
                    "mlflow-stack apply")
    if phase == "Pending":
        waiting_on = next((cs.state.waiting.reason for cs in containers
                           if cs.state and cs.state.waiting and cs.state.waiting.reason), None)
        return (f"pod {name} is Pending ({waiting_on or 'not started'})",
                f"{describe} (its Events say what it waits for: a volume to attach, the image)")
    if phase in ("Failed", "Unknown", "Succeeded"):
        why = reason_text(status.reason, status.message) if status else "no status"
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
        return kube_problem(PODS, exc)
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
        failure = conditions_of(deployment).get("ReplicaFailure")
        why = f": {reason_text(failure.reason, failure.message)}" if failure is not None and \
            failure.status == "True" else ""
        return problem(PODS, f"Deployment {ns}/{lb.APP} has no pods (wants {want}){why}",
                       f"{describe}; kubectl -n {ns} get events --sort-by=.lastTimestamp")
    if len(pods) < want:
        return problem(PODS, f"{len(pods)} of {want} pods running and ready",
                       f"{describe}; kubectl -n {ns} get events --sort-by=.lastTimestamp")
    try:
        done, missing = rollout_state(deployment)
    except KubernetesError as exc:  # progress deadline exceeded
        return kube_problem(PODS, exc)
    names = ", ".join(sorted(p.metadata.name for p in pods if p.metadata and p.metadata.name))
    note = "" if done else f" (rollout in progress: {missing})"
    return ok(PODS, f"{len(pods)} of {want} pod(s) running and ready: {names}{note}")
