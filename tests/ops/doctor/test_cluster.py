"""`doctor` for a platform deployed on Kubernetes, against a real kube-apiserver + etcd and a real
Keycloak, PostgreSQL and S3: a healthy deployment passes every check, and each injected fault is
found by the right check, with the right fix, and by that check only.

The harness has no kubelet and no controllers (harness.kubeapi), so what they would write is
written here in the open, through the status subresources: `FakeControllers` completes the
migration Job and rolls the Deployment out during apply; the server's Pod is created from the
Deployment's template with the status a kubelet would report (running and ready, or
crash-looping, ...); the PVCs are marked Bound as a provisioner would. The migration Job's
work (the schema upgrade) is done by running its entry point here against the same database.
Each test deploys into its own namespace.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from harness.fake_controllers import FakeControllers
from harness.findings import assert_problem
from harness.keycloak import KeycloakServer, create_realm, create_user
from harness.kubeapi import KubeAPIServer, fake_deployment_rollout, write_unreachable_kubeconfig
from harness.platforms import schema_stamped
from harness.postgres import PostgresServer
from harness.s3 import S3Server
from harness.waits import wait_until
from mlflow_stack import deploy
from mlflow_stack.components import kubernetes as k8s
from mlflow_stack.components import postgres_indexes
from mlflow_stack.config.model import Settings
from mlflow_stack.config.secrets import Secrets
from mlflow_stack.local.state import StateDir
from mlflow_stack.manifests import workload
from mlflow_stack.ops.doctor import checklist
from mlflow_stack.ops.doctor.cluster import connection
from mlflow_stack.ops.doctor.cluster.allowed_host import ALLOWED_HOST
from mlflow_stack.ops.doctor.cluster.api import API
from mlflow_stack.ops.doctor.cluster.migration_job import MIGRATION_JOB, migration_job_name
from mlflow_stack.ops.doctor.cluster.pods import PODS
from mlflow_stack.ops.doctor.cluster.pvcs import PVCS, used_pvcs
from mlflow_stack.ops.doctor.cluster.tls import TLS
from mlflow_stack.ops.doctor.findings import Finding
from mlflow_stack.progress import NullProgress
from mlflow_stack.server import migrate_job

pytestmark = pytest.mark.integration

DOMAIN = "example.test"
HOST = f"mlflow.{DOMAIN}"
ADMIN_USER = "tkadmin"
CLUSTER_CHECKS = {API, PODS, PVCS, MIGRATION_JOB, TLS,
                  ALLOWED_HOST}
MERGE = {"Content-Type": "application/merge-patch+json"}
CLI = [sys.executable, "-m", "mlflow_stack.cli.main"]


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def stamp(when: dt.datetime | None = None) -> str:
    return (when or now()).strftime("%Y-%m-%dT%H:%M:%SZ")


def certificate(host: str, *, not_before: dt.datetime, not_after: dt.datetime) -> dict[str, str]:
    """tls.crt / tls.key (PEM) of a self-signed certificate for `host`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .sign(key, hashes.SHA256()))
    return {"tls.crt": cert.public_bytes(serialization.Encoding.PEM).decode(),
            "tls.key": key.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()).decode()}


def valid_certificate(host: str = f"*.{DOMAIN}", days: float = 90) -> dict[str, str]:
    return certificate(host, not_before=now() - dt.timedelta(days=1),
                       not_after=now() + dt.timedelta(days=days))


# --------------------------------------------------------------------------------------------
# the services (Keycloak, PostgreSQL, S3), provisioned once; Kubernetes per test


@dataclass
class Services:
    settings: Settings  # without the Kubernetes part
    postgres: PostgresServer
    s3: S3Server
    keycloak: KeycloakServer


@pytest.fixture(scope="module")
def services(keycloak: KeycloakServer, postgres_server: PostgresServer,
             s3_server: S3Server) -> Services:
    suffix = uuid.uuid4().hex[:6]
    realm = f"doctor-k8s-{suffix}"
    create_realm(keycloak, realm)
    create_user(keycloak, realm, ADMIN_USER, "tkadmin-pw", "tkadmin@example.com")
    settings = Settings.model_validate({
        "domain": DOMAIN,
        "database": {"backend": "postgresql", "host": "127.0.0.1", "port": postgres_server.port,
                     "name": f"mlflow_k8s_{suffix}", "auth_name": f"mlflow_k8s_auth_{suffix}",
                     "user": postgres_server.superuser},
        "artifacts": {"backend": "s3", "bucket": f"doctor-k8s-{suffix}",
                      "endpoint_url": s3_server.endpoint_url},
        "auth": {"provider": "keycloak", "keycloak_url": keycloak.url, "realm": realm,
                 "admin_username": keycloak.admin_user, "realm_admin_users": [ADMIN_USER]},
        "registry": {"host": "registry.example.test"},
        "discovery": {"code_server": False},
    }).model_copy(update={"secrets": Secrets.model_construct(
        admin_password=SecretStr(postgres_server.password),
        keycloak_admin_password=SecretStr(keycloak.admin_password),
        s3_access_key_id=SecretStr(s3_server.access_key),
        s3_secret_access_key=SecretStr(s3_server.secret_key),
        harbor_robot_token=SecretStr("robot-token"))})
    # The real provisioning path for Keycloak, the databases and the bucket.
    deploy.apply(settings, target="services")
    # What the migration Job does in the cluster: MLflow's schema to head.
    migrate_job.migrate_mlflow(postgres_server.dsn(settings.database.name))
    return Services(settings, postgres_server, s3_server, keycloak)


@dataclass
class Deployed:
    settings: Settings
    server: KubeAPIServer
    state: StateDir
    pod: str

    @property
    def ns(self) -> str:
        return self.settings.kubernetes.namespace

    def findings(self, settings: Settings | None = None) -> dict[str, Finding]:
        return {f.check: f for f in checklist.run(settings or self.settings, self.state)}

    def api(self, method: str, path: str, body: dict[str, Any] | None = None,
            headers: dict[str, str] | None = None) -> dict[str, Any]:
        with self.server.admin_http() as http:
            response = http.request(method, path, json=body, headers=headers)
        assert response.status_code < 300, f"{method} {path}: {response.text[:600]}"
        result: dict[str, Any] = response.json()
        return result

    def pod_status(self, status: dict[str, Any], name: str | None = None) -> None:
        self.api("PATCH", f"/api/v1/namespaces/{self.ns}/pods/{name or self.pod}/status",
                 {"status": status}, MERGE)

    def pvc_phase(self, name: str, phase: str) -> None:
        self.api("PATCH", f"/api/v1/namespaces/{self.ns}/persistentvolumeclaims/{name}/status",
                 {"status": {"phase": phase}}, MERGE)

    def put_tls(self, values: dict[str, str]) -> None:
        data = {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}
        self.api("PATCH", f"/api/v1/namespaces/{self.ns}/secrets/"
                 f"{self.settings.kubernetes.tls_secret}", {"data": data}, MERGE)


def secret_manifest(namespace: str, name: str, values: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": namespace}, "stringData": values}


def running(image: str) -> dict[str, Any]:
    """The status a kubelet reports for the server's pod, running and ready."""
    t = stamp()
    return {
        "phase": "Running", "startTime": t, "podIP": "10.1.0.7",
        "conditions": [{"type": c, "status": "True", "lastTransitionTime": t}
                       for c in ("PodScheduled", "Initialized", "ContainersReady", "Ready")],
        "containerStatuses": [{
            "name": "mlflow", "image": image, "imageID": f"{image}@sha256:{'a' * 64}",
            "ready": True, "started": True, "restartCount": 0,
            "state": {"running": {"startedAt": t}}}],
    }


def create_server_pod(d: Deployed, name: str) -> None:
    """A Pod of the Deployment (its template, as the ReplicaSet controller would create it)."""
    dep = d.api("GET", f"/apis/apps/v1/namespaces/{d.ns}/deployments/mlflow")
    template = dep["spec"]["template"]
    d.api("POST", f"/api/v1/namespaces/{d.ns}/pods", {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": d.ns, "labels": template["metadata"]["labels"]},
        "spec": {**template["spec"], "nodeName": "node-1"}})
    d.pod_status(running(workload.image(d.settings)), name)


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> StateDir:
    return StateDir(tmp_path_factory.mktemp("doctor-k8s") / "state")


def deploy_to(services: Services, kube_api: KubeAPIServer, state: StateDir,
              **sections: dict[str, Any]) -> Deployed:
    """Apply the platform into a new namespace and make it healthy as a cluster would."""
    ns = f"doc-{uuid.uuid4().hex[:8]}"
    source = f"tls-{ns}"  # the wildcard certificate apply copies, one per test
    data = services.settings.model_dump()
    for section, values in sections.items():
        data[section] = _merged(data[section], values)
    data["kubernetes"].update({"namespace": ns, "kubeconfig": str(kube_api.admin_kubeconfig),
                               "tls_source_secret": source})
    # Resolved as `apply` resolves them: the OIDC client secret read from Keycloak.
    settings = deploy.resolve_for(Settings.model_validate(data).model_copy(
        update={"secrets": services.settings.secrets}), "kubernetes")
    d = Deployed(settings, kube_api, state, pod=f"mlflow-7d9c5b-{uuid.uuid4().hex[:5]}")
    d.api("POST", "/api/v1/namespaces/default/secrets",
          secret_manifest("default", source, valid_certificate()))
    with FakeControllers(kube_api, ns):
        k8s.apply_objects(settings, NullProgress(), job_timeout=30, rollout_timeout_s=30)
    # What apply does next (registry order): the search indexes, MLflow's schema being there.
    deploy.apply_system(postgres_indexes.SYSTEM, settings)
    # Not auto-created here (no controller manager); ServiceAccount admission wants it for Pods.
    d.api("POST", f"/api/v1/namespaces/{ns}/serviceaccounts",
          {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}})
    create_server_pod(d, d.pod)
    for name, _mode, _class in used_pvcs(settings):
        d.pvc_phase(name, "Bound")
    return d


def _merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    result = dict(base)
    for key, value in extra.items():
        result[key] = _merged(base[key], value) if isinstance(value, dict) else value
    return result


def cluster_findings(settings: Settings) -> dict[str, Finding]:
    """The cluster checks alone, in order (the API check first opens the connection)."""
    return {f.check: f for f in (check(settings) for check in connection.checks().values())}


@pytest.fixture
def deployed(services: Services, kube_api: KubeAPIServer, state: StateDir) -> Deployed:
    return deploy_to(services, kube_api, state)


# --------------------------------------------------------------------------------------------
# healthy


def test_healthy_deployment_passes_every_check(deployed: Deployed) -> None:
    findings = deployed.findings()
    assert list(findings) == [
        API, PODS, PVCS, MIGRATION_JOB, TLS, "database",
        # every system's own checks, in registry order
        "OIDC discovery", "Keycloak client and roles", "OIDC client secret",
        "clock skew to Keycloak", "PostgreSQL", "artifact store", "Kubernetes objects",
        "Indexes", "group plugin", ALLOWED_HOST]
    assert "server process" not in findings  # the pods check replaces it
    assert [f for f in findings.values() if f.status == "problem"] == []
    assert [findings[c] for c in CLUSTER_CHECKS if findings[c].status != "ok"] == []
    assert f"1 of 1 pod(s) running and ready: {deployed.pod}" in findings[PODS].finding
    assert "mlflow-storage" not in findings[PVCS].finding  # PostgreSQL + S3: unused
    assert "thinkube-models (ReadWriteMany" in findings[PVCS].finding
    assert "complete" in findings[MIGRATION_JOB].finding
    assert f"valid for {HOST} until" in findings[TLS].finding


def test_target_services_checks_the_local_platform(deployed: Deployed) -> None:
    findings = {f.check: f for f in checklist.run(deployed.settings, deployed.state,
                                               target="services")}
    assert "server process" in findings
    assert not (CLUSTER_CHECKS - {ALLOWED_HOST}) & set(findings)


# --------------------------------------------------------------------------------------------
# pods


def test_pod_crashlooping(deployed: Deployed) -> None:
    image = workload.image(deployed.settings)
    status = running(image)
    status["conditions"][-1].update({"status": "False", "reason": "ContainersNotReady"})
    status["containerStatuses"][0].update({
        "ready": False, "started": False, "restartCount": 7,
        "state": {"waiting": {"reason": "CrashLoopBackOff",
                              "message": "back-off 5m0s restarting failed container"}},
        "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                                     "startedAt": stamp(), "finishedAt": stamp()}}})
    deployed.pod_status(status)
    fake_deployment_rollout(deployed.server, deployed.ns, "mlflow", ready=False)
    f = assert_problem(deployed.findings(), PODS, "CrashLoopBackOff, 7 restarts, last "
                       "exit code 1", f"kubectl -n {deployed.ns} logs {deployed.pod} --previous")
    assert f"pod {deployed.pod}: container mlflow is crash-looping" in f.finding
    assert f"kubectl -n {deployed.ns} logs deploy/mlflow" in f.fix


def test_pod_oom_killed(deployed: Deployed) -> None:
    status = running(workload.image(deployed.settings))
    status["containerStatuses"][0].update({
        "ready": False, "restartCount": 3,
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled",
                                     "startedAt": stamp(), "finishedAt": stamp()}}})
    deployed.pod_status(status)
    assert_problem(deployed.findings(), PODS, "last exit code 137 (OOMKilled)",
                   "raise kubernetes.limits.memory")


def test_pod_image_pull_failure(deployed: Deployed) -> None:
    image = workload.image(deployed.settings)
    deployed.pod_status({
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "True"},
                       {"type": "Ready", "status": "False", "reason": "ContainersNotReady"}],
        "containerStatuses": [{
            "name": "mlflow", "image": image, "imageID": "", "ready": False, "started": False,
            "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff",
                                  "message": f'Back-off pulling image "{image}"'}}}]})
    f = assert_problem(deployed.findings(), PODS,
                       f"image {image} cannot be pulled (ImagePullBackOff",
                       f"kubectl -n {deployed.ns} describe pod {deployed.pod}")
    assert "registry.host/project/image/tag" in f.fix
    assert "pull secret harbor-registry-secret" in f.fix


def test_pod_unschedulable(deployed: Deployed) -> None:
    deployed.pod_status({
        "phase": "Pending", "containerStatuses": None,
        "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                        "message": "0/3 nodes are available: 3 Insufficient memory."}]})
    assert_problem(deployed.findings(), PODS,
                   "Pending, not scheduled (Unschedulable: 0/3 nodes are available: 3 "
                   "Insufficient memory.)", "lower kubernetes.requests")


def test_pod_not_ready(deployed: Deployed) -> None:
    status = running(workload.image(deployed.settings))
    status["conditions"][-1].update({"status": "False", "reason": "ContainersNotReady"})
    status["containerStatuses"][0]["ready"] = False
    deployed.pod_status(status)
    assert_problem(deployed.findings(), PODS, "container mlflow is not ready",
                   f"kubectl -n {deployed.ns} logs {deployed.pod}")


def test_no_pods(deployed: Deployed) -> None:
    deployed.api("DELETE", f"/api/v1/namespaces/{deployed.ns}/pods/{deployed.pod}",
                 {"gracePeriodSeconds": 0})
    assert_problem(deployed.findings(), PODS, "has no pods (wants 1)",
                   f"kubectl -n {deployed.ns} describe deployment/mlflow")


# --------------------------------------------------------------------------------------------
# PVCs


def test_models_pvc_pending(deployed: Deployed) -> None:
    deployed.pvc_phase("thinkube-models", "Pending")
    f = assert_problem(deployed.findings(), PVCS,
                       f"PVC {deployed.ns}/thinkube-models (ReadWriteMany) is Pending: storage "
                       "class juicefs-rwx does not exist", "kubectl get storageclass")
    assert f"kubectl -n {deployed.ns} describe pvc thinkube-models" in f.fix


def test_pvc_pending_waiting_for_first_consumer(services: Services, kube_api: KubeAPIServer,
                                                state: StateDir) -> None:
    storage_class = f"rwx-{uuid.uuid4().hex[:6]}"
    d = deploy_to(services, kube_api, state, storage={"models": {"storage_class": storage_class}})
    d.api("POST", "/apis/storage.k8s.io/v1/storageclasses", {
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": storage_class}, "provisioner": "csi.juicefs.com",
        "volumeBindingMode": "WaitForFirstConsumer"})
    try:
        d.pvc_phase("thinkube-models", "Pending")
        d.pod_status({"phase": "Pending", "containerStatuses": None, "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": "0/1 nodes are available: pod has unbound immediate "
                        "PersistentVolumeClaims."}]})
        findings = cluster_findings(d.settings)
        pvcs = findings[PVCS]
        assert pvcs.status == "problem", pvcs
        assert f"storage class {storage_class} binds when the first pod is scheduled" \
            in pvcs.finding
        assert findings[PODS].status == "problem"
        assert "check that its PVCs are bound" in findings[PODS].fix
    finally:
        d.api("DELETE", f"/apis/storage.k8s.io/v1/storageclasses/{storage_class}")


# --------------------------------------------------------------------------------------------
# migration Job


def _job_path(d: Deployed) -> str:
    return f"/apis/batch/v1/namespaces/{d.ns}/jobs/{migration_job_name(d.settings)}"


def test_migration_job_failed(deployed: Deployed) -> None:
    # A Job that finished cannot fail later: recreate it, then fail it as the job controller
    # does after backoffLimit failed pods.
    path = _job_path(deployed)
    deployed.api("DELETE", path, {"propagationPolicy": "Background"})
    launch = workload.server_launch(deployed.settings)
    job = workload.migration_job(deployed.settings, launch)
    deployed.api("POST", f"/apis/batch/v1/namespaces/{deployed.ns}/jobs", job)
    t = stamp()
    reason = {"reason": "BackoffLimitExceeded",
              "message": "Job has reached the specified backoff limit"}
    deployed.api("PATCH", f"{path}/status", {"status": {
        "startTime": t, "failed": 4,
        "conditions": [
            {"type": "FailureTarget", "status": "True", "lastTransitionTime": t, **reason},
            {"type": "Failed", "status": "True", "lastTransitionTime": t, **reason}]}}, MERGE)
    name = job["metadata"]["name"]
    f = assert_problem(deployed.findings(), MIGRATION_JOB,
                       f"Job {deployed.ns}/{name} failed after 4 failed pod(s) "
                       "(BackoffLimitExceeded", f"kubectl -n {deployed.ns} logs job/{name}")
    assert f"kubectl -n {deployed.ns} delete job {name} and mlflow-stack apply" in f.fix


def test_migration_job_missing(deployed: Deployed) -> None:
    deployed.api("DELETE", _job_path(deployed), {"propagationPolicy": "Background"})
    assert_problem(deployed.findings(), MIGRATION_JOB, "does not exist",
                   "mlflow-stack apply runs the Job")


def test_migration_job_of_another_image(deployed: Deployed) -> None:
    """Deployed with another image than the config names: the Job found is named."""
    deployed.api("DELETE", _job_path(deployed), {"propagationPolicy": "Background"})
    older = deployed.settings.model_copy(deep=True)
    older.registry.tag = "0.9.0-mlflow3.16.0"
    job = workload.migration_job(older, workload.server_launch(older))
    deployed.api("POST", f"/apis/batch/v1/namespaces/{deployed.ns}/jobs", job)
    f = assert_problem(deployed.findings(), MIGRATION_JOB, "does not exist; in the "
                       f"cluster: {job['metadata']['name']} (running)", "mlflow-stack plan")
    assert migration_job_name(deployed.settings) in f.finding


# --------------------------------------------------------------------------------------------
# TLS certificate


def test_tls_secret_missing(deployed: Deployed) -> None:
    tls = deployed.settings.kubernetes.tls_secret
    deployed.api("DELETE", f"/api/v1/namespaces/{deployed.ns}/secrets/{tls}")
    f = assert_problem(deployed.findings(), TLS,
                       f"Secret {deployed.ns}/{tls} (the Ingress's certificate for {HOST}) does "
                       "not exist", f"kubectl -n {deployed.ns} create secret tls {tls}")
    assert f"Secret default/tls-{deployed.ns}" in f.fix and "mlflow-stack apply" in f.fix


def test_certificate_expiring_in_5_days(deployed: Deployed) -> None:
    deployed.put_tls(valid_certificate(days=5))
    f = assert_problem(deployed.findings(), TLS, "the certificate expires in 5.0 days",
                       f"renew the certificate for {HOST}")
    assert "cert-manager" in f.fix


def test_certificate_expired(deployed: Deployed) -> None:
    deployed.put_tls(certificate(f"*.{DOMAIN}", not_before=now() - dt.timedelta(days=90),
                                 not_after=now() - dt.timedelta(days=2)))
    assert_problem(deployed.findings(), TLS, "the certificate expired on",
                   f"renew the certificate for {HOST}")


def test_certificate_for_another_host(deployed: Deployed) -> None:
    deployed.put_tls(valid_certificate("*.other.example"))
    assert_problem(deployed.findings(), TLS,
                   f"the certificate is for *.other.example, not {HOST}", "renew")


def test_certificate_key_mismatch(deployed: Deployed) -> None:
    cert, other = valid_certificate(), valid_certificate()
    deployed.put_tls({"tls.crt": cert["tls.crt"], "tls.key": other["tls.key"]})
    assert_problem(deployed.findings(), TLS, "tls.key is not the certificate's key",
                   "renew")


def test_certificate_not_pem(deployed: Deployed) -> None:
    deployed.put_tls({"tls.crt": "not a certificate"})
    assert_problem(deployed.findings(), TLS, "is not a PEM certificate", "PEM")


# --------------------------------------------------------------------------------------------
# public host, API


def test_public_host_not_allowed_by_deployment(deployed: Deployed) -> None:
    moved = deployed.settings.model_copy(deep=True)
    moved.server.hostname = "mlflow.example.com"
    findings = cluster_findings(moved)
    f = findings[ALLOWED_HOST]
    assert f.status == "problem" and "refuses Host mlflow.example.com" in f.finding
    assert "mlflow-stack apply" in f.fix


def test_api_unreachable_skips_cluster_checks(services: Services, state: StateDir,
                                               tmp_path: Path) -> None:
    data = services.settings.model_dump()
    data["kubernetes"]["kubeconfig"] = str(write_unreachable_kubeconfig(tmp_path / "kc.yaml"))
    settings = Settings.model_validate(data).model_copy(
        update={"secrets": services.settings.secrets})
    findings = {f.check: f for f in checklist.run(settings, state)}
    api = findings[API]
    assert api.status == "problem" and "unreachable" in api.finding, api
    assert "kubeconfig" in api.fix
    for name in CLUSTER_CHECKS - {API}:
        assert findings[name].status == "skipped", findings[name]
        assert "needs the Kubernetes API" in findings[name].finding
    assert findings["database"].status == "ok"  # the other systems are still checked


def test_namespace_missing(services: Services, kube_api: KubeAPIServer,
                           state: StateDir) -> None:
    data = services.settings.model_dump()
    data["kubernetes"].update({"namespace": f"none-{uuid.uuid4().hex[:6]}",
                               "kubeconfig": str(kube_api.admin_kubeconfig)})
    settings = Settings.model_validate(data).model_copy(
        update={"secrets": services.settings.secrets})
    findings = {f.check: f for f in checklist.run(settings, state)}
    assert findings[API].status == "problem"
    assert "does not exist" in findings[API].finding
    assert "mlflow-stack apply" in findings[API].fix
    assert {findings[n].status for n in CLUSTER_CHECKS - {API}} == {"skipped"}


def test_missing_kubeconfig_is_a_finding(services: Services, state: StateDir,
                                         tmp_path: Path) -> None:
    data = services.settings.model_dump()
    data["kubernetes"]["kubeconfig"] = str(tmp_path / "nope.yaml")
    settings = Settings.model_validate(data).model_copy(
        update={"secrets": services.settings.secrets})
    f = {f.check: f for f in checklist.run(settings, state)}[API]
    assert f.status == "problem" and "does not exist" in f.finding and "KUBECONFIG" in f.fix


def test_pods_not_readable(deployed: Deployed, tmp_path: Path) -> None:
    """apply's roles do not cover pods: doctor says what to grant instead of a bare 403."""
    user = f"viewer-{uuid.uuid4().hex[:6]}"
    kubeconfig = deployed.server.user_kubeconfig(user, path=tmp_path / "user.yaml")
    rules = [{"apiGroups": [""], "resources": ["namespaces", "secrets", "persistentvolumeclaims"],
              "verbs": ["get"]},
             {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]},
             {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get"]}]
    base = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{deployed.ns}"
    deployed.api("POST", f"{base}/roles", {"metadata": {"name": user}, "rules": rules})
    deployed.api("POST", f"{base}/rolebindings", {
        "metadata": {"name": user},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": user},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]})
    settings = deployed.settings.model_copy(deep=True)
    settings.kubernetes.kubeconfig = kubeconfig

    def once_the_api_check_passes() -> dict[str, Finding] | None:
        found = cluster_findings(settings)
        return found if found[API].status == "ok" else None

    # RBAC reaches the authorizer through an informer: a moment after the binding is made.
    findings = wait_until(once_the_api_check_passes, timeout=10, interval=0.2)
    assert findings, cluster_findings(settings)
    pods = findings[PODS]
    assert pods.status == "problem" and f"not allowed to list Pods in {deployed.ns}" \
        in pods.finding, pods
    assert f"kubectl auth can-i list pods -n {deployed.ns}" in pods.fix
    assert [f.check for f in findings.values() if f.status != "ok"] == [PODS]


def test_schema_behind_on_deployed_platform(deployed: Deployed, services: Services) -> None:
    with schema_stamped(services.postgres.dsn(deployed.settings.database.name),
                        "0584bdc529eb"):
        assert_problem(deployed.findings(), "database", "schema at revision 0584bdc529eb",
                       "mlflow-stack upgrade (backs up the databases; the migration Job")


# --------------------------------------------------------------------------------------------
# CLI


@pytest.fixture
def cli_env(deployed: Deployed, services: Services, tmp_path: Path) -> Iterator[dict[str, str]]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("AWS_", "ADMIN_PASSWORD", "KEYCLOAK_", "MLFLOW_STACK_",
                                 "KUBECONFIG", "HARBOR_"))}
    yield {**base, "HOME": str(tmp_path), "COLUMNS": "200",
           "ADMIN_PASSWORD": services.postgres.password,
           "KEYCLOAK_ADMIN_PASSWORD": services.keycloak.admin_password,
           "AWS_ACCESS_KEY_ID": services.s3.access_key,
           "AWS_SECRET_ACCESS_KEY": services.s3.secret_key}


def test_cli_doctor_deployed(deployed: Deployed, cli_env: dict[str, str],
                             tmp_path: Path) -> None:
    config = tmp_path / "mlflow-stack.yaml"
    config.write_text(yaml.safe_dump(deployed.settings.model_dump(mode="json")))

    def doctor_cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, "doctor", "-c", str(config), *args], cwd=tmp_path,
                              env=cli_env, capture_output=True, text=True, timeout=180,
                              check=False)

    healthy = doctor_cli()
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert f"✓ pods: 1 of 1 pod(s) running and ready: {deployed.pod}" in healthy.stdout
    assert "0 problem(s) in 16 checks" in healthy.stdout

    deployed.pod_status({"phase": "Running", "containerStatuses": [{
        "name": "mlflow", "image": "x", "imageID": "", "ready": False, "restartCount": 4,
        "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]})
    broken = doctor_cli()
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert f"✗ pods: pod {deployed.pod}: container mlflow is crash-looping" in broken.stdout
    assert f"fix: kubectl -n {deployed.ns} logs {deployed.pod} --previous" in broken.stdout
    assert "1 problem(s) in 16 checks" in broken.stdout

    as_json = doctor_cli("--output", "json")
    assert as_json.returncode == 1, as_json.stderr
    findings = {f["check"]: f for f in json.loads(as_json.stdout)}
    assert findings["pods"]["status"] == "problem"
    assert "CrashLoopBackOff" in findings["pods"]["finding"]
    assert findings["pods"]["fix"].startswith(f"kubectl -n {deployed.ns} logs")
    assert [c for c, f in findings.items() if f["status"] == "problem"] == ["pods"]

    local = doctor_cli("--target", "services", "--output", "json")
    checks = {f["check"] for f in json.loads(local.stdout)}
    assert "server process" in checks and "pods" not in checks
