"""The migration Job for this image and database: exists and has not failed."""

from __future__ import annotations

from typing import Any

from lightkube.resources.batch_v1 import Job

from mlflow_stack.config.model import Settings
from mlflow_stack.errors import StackError
from mlflow_stack.kubernetes.client import Kube, call, connect, get_or_none
from mlflow_stack.kubernetes.wait import job_state
from mlflow_stack.manifests import labels as lb
from mlflow_stack.manifests import workload
from mlflow_stack.ops.doctor.cluster.common import conditions_of, kube_problem, reason_text
from mlflow_stack.ops.doctor.findings import Finding, ok, problem

MIGRATION_JOB = "migration Job"


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
        return kube_problem(MIGRATION_JOB, exc)
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
        cond = conditions_of(job)["Failed"]
        failed = job.status.failed if job.status else None
        pods = f" after {failed} failed pod(s)" if failed else ""
        return problem(MIGRATION_JOB, f"Job {ns}/{name} failed{pods} "
                       f"({reason_text(cond.reason, cond.message)})",
                       f"kubectl -n {ns} logs job/{name}; fix the cause (database reachable "
                       f"from the cluster, password Secret), then kubectl -n {ns} delete job "
                       f"{name} and mlflow-stack apply")
    if state == "running":
        active = (job.status.active if job.status else None) or 0
        return ok(MIGRATION_JOB, f"Job {ns}/{name} still running ({active} active pod(s)); "
                  "the new pods start after it")
    return ok(MIGRATION_JOB, f"Job {ns}/{name} complete")
