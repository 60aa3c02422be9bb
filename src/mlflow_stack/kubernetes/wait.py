"""Waiting for the migration Job to finish and the Deployment to roll out, with progress."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.batch_v1 import Job

from mlflow_stack.kubernetes.client import Kube, KubernetesError, call
from mlflow_stack.progress import Progress

POLL_SECONDS = 1.0
REPORT_EVERY = 10.0  # seconds between progress lines while waiting
T = TypeVar("T")


def _conditions(status: Any) -> dict[str, Any]:
    return {c.type: c for c in (getattr(status, "conditions", None) or [])}


def job_state(job: Any) -> str:
    """'complete', 'failed' or 'running'."""
    conds = _conditions(job.status)
    if "Complete" in conds and conds["Complete"].status == "True":
        return "complete"
    if "Failed" in conds and conds["Failed"].status == "True":
        return "failed"
    return "running"


class MigrationFailed(KubernetesError):
    """The migration Job failed or timed out; the Deployment was not changed."""


def _poll(what: str, read: Callable[[], T], check: Callable[[T], tuple[bool, str]],
          progress: Progress, timeout: float,
          timed_out: Callable[[str], KubernetesError]) -> None:
    """Read until check says done; report what is missing every REPORT_EVERY seconds. check
    may raise (a failed Job); timed_out(missing) is raised at the deadline."""
    deadline = time.monotonic() + timeout
    last_report = 0.0
    while True:
        done, missing = check(read())
        if done:
            return
        now = time.monotonic()
        if now >= deadline:
            raise timed_out(missing)
        if now - last_report >= REPORT_EVERY:
            progress.activity(f"waiting for {what}: {missing}")
            last_report = now
        time.sleep(POLL_SECONDS)


def wait_job(kube: Kube, namespace: str, name: str, progress: Progress,
             timeout: float) -> None:
    def read() -> Any:
        with call(kube, f"read Job {namespace}/{name}"):
            return kube.client.get(Job, name, namespace=namespace)

    def check(job: Any) -> tuple[bool, str]:
        state = job_state(job)
        if state == "failed":
            cond = _conditions(job.status)["Failed"]
            raise MigrationFailed(
                f"migration Job {namespace}/{name} failed: {cond.reason}: {cond.message}",
                hint=f"kubectl logs -n {namespace} job/{name}; fix the cause, delete the Job "
                     "and run apply again.")
        status = job.status
        return state == "complete", (f"active {getattr(status, 'active', 0) or 0}, failed "
                                     f"{getattr(status, 'failed', 0) or 0}")

    _poll(f"Job {name}", read, check, progress, timeout, lambda _: MigrationFailed(
        f"migration Job {namespace}/{name} did not finish in {timeout:.0f} s",
        hint=f"kubectl describe -n {namespace} job/{name}; apply can be run again."))


def rollout_state(deployment: Any) -> tuple[bool, str]:
    """(done, what is missing), by the rule `kubectl rollout status` uses."""
    spec, status, meta = deployment.spec, deployment.status, deployment.metadata
    want = spec.replicas if spec and spec.replicas is not None else 1
    if status is None or (status.observedGeneration or 0) < (meta.generation or 0):
        return False, "waiting for the controller to observe the new spec"
    conds = _conditions(status)
    progressing = conds.get("Progressing")
    if progressing is not None and progressing.reason == "ProgressDeadlineExceeded":
        raise KubernetesError(f"Deployment {meta.namespace}/{meta.name} exceeded its progress "
                              f"deadline: {progressing.message}",
                              hint=f"kubectl describe -n {meta.namespace} deployment/{meta.name}")
    updated = status.updatedReplicas or 0
    if updated < want:
        return False, f"{updated} of {want} replicas updated"
    if (status.replicas or 0) > updated:
        return False, f"{(status.replicas or 0) - updated} old replica(s) pending termination"
    available = status.availableReplicas or 0
    if available < updated:
        return False, f"{available} of {updated} updated replicas available"
    return True, "rolled out"


def wait_rollout(kube: Kube, namespace: str, name: str, progress: Progress,
                 timeout: float) -> None:
    def read() -> Any:
        with call(kube, f"read Deployment {namespace}/{name}"):
            return kube.client.get(Deployment, name, namespace=namespace)

    def timed_out(missing: str) -> KubernetesError:
        return KubernetesError(
            f"Deployment {namespace}/{name} did not roll out in {timeout:.0f} s: {missing}",
            hint=f"kubectl describe -n {namespace} deployment/{name}; kubectl logs -n "
                 f"{namespace} deployment/{name}; apply can be run again.")

    _poll(f"Deployment {name}", read, rollout_state, progress, timeout, timed_out)
