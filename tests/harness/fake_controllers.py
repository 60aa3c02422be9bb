"""Stand-ins for the controllers the Kubernetes harness does not run (see harness.kubeapi)."""

from __future__ import annotations

import datetime as dt
import threading

import httpx

from .kubeapi import KubeAPIServer, fake_deployment_rollout


class FakeControllers:
    """Stands in for the job controller, the deployment controller and the kubelets: marks
    every Job in the namespace Complete (or Failed with fail_jobs) and every Deployment rolled
    out, through the status subresource. Only writes when something is not done yet, so a
    converged namespace sees no writes from it."""

    def __init__(self, server: KubeAPIServer, namespace: str, *, fail_jobs: bool = False) -> None:
        self.server, self.namespace = server, namespace
        self.fail_jobs = fail_jobs  # the Job's pod exited non-zero until the backoff limit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.errors: list[str] = []

    def __enter__(self) -> FakeControllers:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        assert not self.errors, self.errors

    def _run(self) -> None:
        with self.server.admin_http() as http:
            while not self._stop.is_set():
                try:
                    self._tick(http)
                except httpx.HTTPError as exc:
                    self.errors.append(str(exc))
                self._stop.wait(0.2)

    def _tick(self, http: httpx.Client) -> None:
        ns = self.namespace
        for job in http.get(f"/apis/batch/v1/namespaces/{ns}/jobs").json().get("items", []):
            if not (job.get("status") or {}).get("conditions"):
                finish_job(http, ns, job["metadata"]["name"], failed=self.fail_jobs)
        for d in http.get(f"/apis/apps/v1/namespaces/{ns}/deployments").json().get("items", []):
            if (d.get("status") or {}).get("observedGeneration") != d["metadata"]["generation"]:
                fake_deployment_rollout(self.server, ns, d["metadata"]["name"])


def finish_job(http: httpx.Client, namespace: str, name: str, *, failed: bool = False) -> None:
    """What the job controller writes when a Job succeeded, or failed past its backoff limit
    (the API server validates these status transitions)."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if failed:
        status = {"startTime": now, "failed": 4, "conditions": [
            {"type": "FailureTarget", "status": "True", "lastTransitionTime": now,
             "reason": "BackoffLimitExceeded", "message": "retries exhausted"},
            {"type": "Failed", "status": "True", "lastTransitionTime": now,
             "reason": "BackoffLimitExceeded",
             "message": "Job has reached the specified backoff limit"}]}
    else:
        status = {"startTime": now, "completionTime": now, "succeeded": 1, "conditions": [
            {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": now},
            {"type": "Complete", "status": "True", "lastTransitionTime": now}]}
    http.patch(f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}/status",
               json={"status": status},
               headers={"Content-Type": "application/merge-patch+json"}).raise_for_status()
