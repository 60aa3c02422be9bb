"""The gc CronJob through plan / apply against a real kube-apiserver + etcd: created when
kubernetes.gc is on, converged on a second apply, its Jobs (owned by it, carrying its labels)
never pruned, and the CronJob pruned when gc is switched off. (No controllers run here: the
node test, tests/node/test_platform_ops_gc.py, runs the Job for real.)"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from lightkube import ApiError, Client, KubeConfig
from lightkube.codecs import from_dict
from lightkube.resources.batch_v1 import CronJob, Job

from harness.fake_controllers import FakeControllers
from harness.kube import all_secrets, settings_with
from harness.kubeapi import KubeAPIServer
from mlflow_stack.components import kubernetes as k8s
from mlflow_stack.config.model import Settings
from mlflow_stack.deploy import plan_system
from mlflow_stack.progress import NullProgress

pytestmark = pytest.mark.integration


def _settings(kube_api: KubeAPIServer, ns: str, gc: bool) -> Settings:
    return settings_with({
        "database": {"backend": "postgresql", "host": "postgresql.db.svc.cluster.local"},
        "artifacts": {"backend": "s3", "endpoint_url": "https://s3.example.test"},
        "kubernetes": {"namespace": ns, "kubeconfig": str(kube_api.admin_kubeconfig),
                       "network_policy": False, "gc": {"enabled": gc, "time_zone": "UTC"}},
        "storage": {"models": {"enabled": False}},
        "discovery": {"enabled": False},
    }, all_secrets())


def _apply(settings: Settings, kube_api: KubeAPIServer) -> k8s.Report:
    with FakeControllers(kube_api, settings.kubernetes.namespace):
        return k8s.apply_objects(settings, NullProgress(), job_timeout=30, rollout_timeout_s=30)


def _changed(settings: Settings) -> dict[str, str]:
    return {c.target: c.action for c in plan_system(k8s.SYSTEM, settings)
            if c.action != "unchanged"}


@pytest.fixture
def admin(kube_api: KubeAPIServer) -> Iterator[Client]:
    client = Client(config=KubeConfig.from_file(kube_api.admin_kubeconfig),
                    field_manager="test-admin", trust_env=False)
    yield client
    client.close()


def _run_now(admin: Client, ns: str) -> str:
    """A Job from the CronJob's template, owned by it (`kubectl create job --from=cronjob/`)."""
    cron = admin.get(CronJob, "mlflow-gc", namespace=ns)
    assert cron.metadata is not None and cron.spec is not None
    template: dict[str, Any] = cron.spec.jobTemplate.to_dict()
    name = f"mlflow-gc-manual-{uuid.uuid4().hex[:6]}"
    admin.create(from_dict({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": ns,
                     "labels": template["metadata"]["labels"],
                     "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob",
                                          "name": "mlflow-gc", "uid": cron.metadata.uid,
                                          "controller": True}]},
        "spec": template["spec"]}))
    return name


def test_apply_creates_keeps_and_prunes_the_gc_cronjob(kube_api: KubeAPIServer,
                                                       admin: Client) -> None:
    ns = f"gc-{uuid.uuid4().hex[:8]}"
    on = _settings(kube_api, ns, gc=True)
    first = _apply(on, kube_api)
    assert f"CronJob {ns}/mlflow-gc" in {c.target for c in first.changes if c.action == "create"}
    cron = admin.get(CronJob, "mlflow-gc", namespace=ns)
    assert cron.spec is not None and cron.spec.timeZone == "UTC"
    assert cron.spec.concurrencyPolicy == "Forbid"
    assert _apply(on, kube_api).writes == 0

    job = _run_now(admin, ns)
    # The Job carries our labels but belongs to the CronJob: neither plan nor apply touch it.
    assert _changed(on) == {}
    assert _apply(on, kube_api).writes == 0
    admin.get(Job, job, namespace=ns)

    off = _settings(kube_api, ns, gc=False)
    assert _changed(off) == {f"CronJob {ns}/mlflow-gc": "delete"}
    _apply(off, kube_api)
    with pytest.raises(ApiError) as gone:
        admin.get(CronJob, "mlflow-gc", namespace=ns)
    assert gone.value.status.code == 404
    assert _changed(off) == {}
