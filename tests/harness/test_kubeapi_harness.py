"""The Kubernetes harness itself: real etcd + kube-apiserver, server-side apply, RBAC, fake status.

No kubelet or controller manager runs: a Deployment's rollout is faked by patching its status
subresource (`fake_deployment_rollout`), which is what the apply tests will do to exercise the
wait logic.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil
import pytest
from lightkube import ApiError, Client, KubeConfig
from lightkube.codecs import from_dict
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Namespace, PersistentVolumeClaim, Secret
from lightkube.resources.networking_v1 import Ingress, NetworkPolicy

from harness.kubeapi import KubeAPIServer, fake_deployment_rollout, start_kube_apiserver
from harness.waits import retry_while

pytestmark = pytest.mark.integration

FIELD_MANAGER = "mlflow-stack"
NS = "harness-apply"
LABELS = {"app.kubernetes.io/name": "mlflow", "app.kubernetes.io/managed-by": "mlflow-stack"}
T = TypeVar("T")


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeAPIServer]:
    server = start_kube_apiserver(tmp_path_factory.mktemp("kubeapi"))
    pids = list(server.pids.values())
    try:
        yield server
    finally:
        server.stop()
    assert not [pid for pid in pids if psutil.pid_exists(pid)
                and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE], "still running"


@pytest.fixture(scope="module")
def admin(kube: KubeAPIServer) -> Iterator[Client]:
    client = Client(config=KubeConfig.from_file(kube.admin_kubeconfig), field_manager=FIELD_MANAGER,
                    trust_env=False)
    yield client
    client.close()


def rendered_objects() -> list[dict[str, Any]]:
    """One object of each kind the installer renders, as plain dicts (as the renderer gives)."""
    meta = {"namespace": NS, "labels": LABELS}
    pod_template: dict[str, Any] = {
        "metadata": {"labels": LABELS},
        "spec": {"containers": [{"name": "main", "image": "registry.invalid/mlflow:1",
                                 "env": [{"name": "A", "value": "1"}]}]},
    }
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "labels": LABELS}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "keys", **meta},
         "type": "Opaque", "stringData": {"secret-key": "not-a-real-secret"}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "mlflow", **meta},
         "spec": {"replicas": 2, "selector": {"matchLabels": LABELS}, "template": pod_template}},
        {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "migrate", **meta},
         "spec": {"backoffLimit": 0, "template": {
             "metadata": {"labels": LABELS},
             "spec": {**pod_template["spec"], "restartPolicy": "Never"}}}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", **meta},
         "spec": {"accessModes": ["ReadWriteOnce"],
                  "resources": {"requests": {"storage": "1Gi"}}}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
         "metadata": {"name": "mlflow", **meta},
         "spec": {"rules": [{"host": "mlflow.example.test", "http": {"paths": [{
             "path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": "mlflow", "port": {"number": 5000}}}}]}}]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
         "metadata": {"name": "mlflow", **meta},
         "spec": {"podSelector": {"matchLabels": LABELS}, "policyTypes": ["Ingress"],
                  "ingress": [{"ports": [{"port": 5000, "protocol": "TCP"}]}]}},
    ]


def eventually(call: Callable[[], T], timeout: float = 10.0) -> T:
    """RBAC changes reach the authorizer through an informer: allow a moment for them to land."""
    return retry_while(call, lambda e: isinstance(e, ApiError) and e.status.code == 403,
                       timeout, interval=0.2)


def _get(client: Client, kind: Any, name: str) -> Any:
    """Get from NS, or cluster-wide for a Namespace."""
    if kind is Namespace:
        return client.get(kind, name)
    return client.get(kind, name, namespace=NS)


def test_server_is_real_and_loopback_only(kube: KubeAPIServer) -> None:
    with kube.admin_http() as http:
        version = http.get("/version").json()
        assert version["gitVersion"].startswith("v1.36."), version
        assert http.get("/readyz").text == "ok"
        # The admin identity is system:masters, through the client certificate.
        review = http.post("/apis/authentication.k8s.io/v1/selfsubjectreviews", json={
            "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}).json()
        assert "system:masters" in review["status"]["userInfo"]["groups"]
    # TLS only (plain HTTP is refused), and without a client certificate a caller is anonymous.
    plain = httpx.get(kube.url.replace("https", "http") + "/version", timeout=5.0, trust_env=False)
    assert plain.status_code == 400, plain.text
    anonymous = httpx.get(f"{kube.url}/api/v1/secrets", timeout=5.0, trust_env=False,
                          verify=ssl.create_default_context(cafile=str(kube.ca_path)))
    assert anonymous.status_code == 403, anonymous.text
    assert "system:anonymous" in anonymous.text
    for name, pid in kube.pids.items():
        listening = [c.laddr for c in psutil.Process(pid).net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN]
        assert listening, f"{name} listens nowhere"
        assert {addr.ip for addr in listening} == {"127.0.0.1"}, (name, listening)


def test_server_side_apply_creates_each_kind(kube: KubeAPIServer, admin: Client) -> None:
    for obj in rendered_objects():
        admin.apply(from_dict(obj), field_manager=FIELD_MANAGER)

    deployment = admin.get(Deployment, "mlflow", namespace=NS)
    assert deployment.spec is not None and deployment.spec.replicas == 2
    kinds: list[tuple[Any, str]] = [
        (Namespace, NS), (Secret, "keys"), (Deployment, "mlflow"), (Job, "migrate"),
        (PersistentVolumeClaim, "data"), (Ingress, "mlflow"), (NetworkPolicy, "mlflow")]
    for kind, name in kinds:
        got = _get(admin, kind, name)
        assert got.metadata is not None
        managers = {(m.manager, m.operation) for m in got.metadata.managedFields or []}
        assert (FIELD_MANAGER, "Apply") in managers, (kind.__name__, managers)
    secret = admin.get(Secret, "keys", namespace=NS)
    assert secret.data is not None and "secret-key" in secret.data

    # Re-applying the same intent is a no-op on the server: no new resourceVersion anywhere.
    def versions() -> dict[str, str | None]:
        out = {}
        for obj in rendered_objects():
            name = obj["metadata"]["name"]
            got = _get(admin, type(from_dict(obj)), name)
            assert got.metadata is not None
            out[f"{obj['kind']}/{name}"] = got.metadata.resourceVersion
        return out

    def reapply_changes() -> set[str]:
        before = versions()
        for obj in rendered_objects():
            admin.apply(from_dict(obj), field_manager=FIELD_MANAGER)
        after = versions()
        return {key for key in before if after[key] != before[key]}

    # An upstream quirk: a PVC is stored without status.phase, which the read path defaults to
    # "Pending"; the first update of a freshly created PVC persists that, so its first re-apply
    # is one real write (bytes in etcd change, nothing visible does). Every later one is a no-op.
    assert reapply_changes() <= {"PersistentVolumeClaim/data"}
    assert reapply_changes() == set()


def test_deployment_rollout_is_faked_through_the_status_subresource(
    kube: KubeAPIServer, admin: Client
) -> None:
    # No kubelet or deployment controller here: the status stays empty until the test writes it.
    admin.apply(from_dict(rendered_objects()[0]), field_manager=FIELD_MANAGER)
    admin.apply(from_dict(rendered_objects()[2]), field_manager=FIELD_MANAGER)
    before = admin.get(Deployment, "mlflow", namespace=NS)
    assert before.status is None or not before.status.readyReplicas

    fake_deployment_rollout(kube, NS, "mlflow", ready=False)
    pending = admin.get(Deployment, "mlflow", namespace=NS)
    assert pending.status is not None and not pending.status.availableReplicas

    fake_deployment_rollout(kube, NS, "mlflow")
    after = admin.get(Deployment, "mlflow", namespace=NS)
    assert after.status is not None and before.metadata is not None and after.metadata is not None
    assert after.status.readyReplicas == after.status.availableReplicas == 2
    assert after.status.observedGeneration == after.metadata.generation
    # A status write changes neither spec nor generation.
    assert after.metadata.generation == before.metadata.generation
    assert after.spec == before.spec


def test_pvc_delete_completes(admin: Client) -> None:
    # StorageObjectInUseProtection is off (its finalizer needs a controller): deletes finish.
    admin.apply(from_dict(rendered_objects()[0]), field_manager=FIELD_MANAGER)
    pvc = {**rendered_objects()[4]}
    pvc["metadata"] = {**pvc["metadata"], "name": "scratch"}
    admin.apply(from_dict(pvc), field_manager=FIELD_MANAGER)
    admin.delete(PersistentVolumeClaim, "scratch", namespace=NS)
    with pytest.raises(ApiError) as missing:
        admin.get(PersistentVolumeClaim, "scratch", namespace=NS)
    assert missing.value.status.code == 404


def _grant_secrets(admin: Client, namespace: str, subject: dict[str, str], name: str) -> None:
    admin.apply(from_dict({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": name, "namespace": namespace},
        "rules": [{"apiGroups": [""], "resources": ["secrets"],
                   "verbs": ["get", "list", "create", "patch"]}],
    }), field_manager=FIELD_MANAGER)
    admin.apply(from_dict({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [subject],
    }), field_manager=FIELD_MANAGER)


def _namespace(admin: Client, name: str) -> None:
    admin.apply(from_dict({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
                field_manager=FIELD_MANAGER)


def _secret(name: str, namespace: str) -> Any:
    return from_dict({"apiVersion": "v1", "kind": "Secret",
                      "metadata": {"name": name, "namespace": namespace},
                      "stringData": {"k": "v"}})


def _assert_forbidden(call: Callable[[], object]) -> None:
    with pytest.raises(ApiError) as denied:
        call()
    assert denied.value.status.code == 403, denied.value.status


def test_user_certificate_needs_a_role_binding(kube: KubeAPIServer, admin: Client,
                                               tmp_path: Path) -> None:
    _namespace(admin, "harness-rbac")
    _namespace(admin, "harness-other")
    config = kube.user_kubeconfig("alice", ("mlflow-deployers",), path=tmp_path / "alice.yaml")
    with Client(config=KubeConfig.from_file(config), trust_env=False) as alice:
        _assert_forbidden(lambda: list(alice.list(Secret, namespace="harness-rbac")))
        _assert_forbidden(lambda: alice.apply(_secret("s", "harness-rbac"),
                                              field_manager=FIELD_MANAGER))

        _grant_secrets(admin, "harness-rbac", {"apiGroup": "rbac.authorization.k8s.io",
                                               "kind": "User", "name": "alice"}, "alice-secrets")
        eventually(lambda: alice.apply(_secret("s", "harness-rbac"), field_manager=FIELD_MANAGER))
        assert [s.metadata.name for s in alice.list(Secret, namespace="harness-rbac")
                if s.metadata] == ["s"]
        # The Role is namespaced: nothing beyond it.
        _assert_forbidden(lambda: list(alice.list(Secret, namespace="harness-other")))
        _assert_forbidden(lambda: alice.get(Namespace, "harness-rbac"))

        # A binding to the certificate's group (O=) works the same way.
        _grant_secrets(admin, "harness-other", {"apiGroup": "rbac.authorization.k8s.io",
                                                "kind": "Group", "name": "mlflow-deployers"},
                       "deployers-secrets")
        eventually(lambda: list(alice.list(Secret, namespace="harness-other")))


def test_service_account_token_needs_a_role_binding(kube: KubeAPIServer, admin: Client) -> None:
    _namespace(admin, "harness-sa")
    token = kube.service_account_token("harness-sa", "installer")
    with Client(config=KubeConfig.from_file(kube.token_kubeconfig(token, name="installer")),
                trust_env=False) as installer:
        _assert_forbidden(lambda: list(installer.list(Secret, namespace="harness-sa")))
        _grant_secrets(admin, "harness-sa", {"kind": "ServiceAccount", "name": "installer",
                                             "namespace": "harness-sa"}, "installer-secrets")
        eventually(lambda: installer.apply(_secret("s", "harness-sa"),
                                           field_manager=FIELD_MANAGER))
    # A token that the server did not sign is not an identity at all.
    with (Client(config=KubeConfig.from_file(kube.token_kubeconfig("not-a-token", name="bogus")),
                 trust_env=False) as bogus, pytest.raises(ApiError) as unauthenticated):
        list(bogus.list(Secret, namespace="harness-sa"))
    assert unauthenticated.value.status.code == 401


def test_start_failure_raises_with_the_log_and_stops_etcd(kube: KubeAPIServer,
                                                          tmp_path: Path) -> None:
    # A kube-apiserver that dies at once: the error carries its output, and etcd is not left.
    real_bins = Path(psutil.Process(kube.pids["etcd"]).exe()).parent
    bins = tmp_path / "bin"
    bins.mkdir()
    (bins / "etcd").symlink_to(real_bins / "etcd")
    broken = bins / "kube-apiserver"
    broken.write_text("#!/bin/sh\necho 'flag provided but not defined: boom' >&2\nexit 3\n")
    broken.chmod(0o755)
    base = tmp_path / "base"
    with pytest.raises(RuntimeError, match="boom") as failed:
        start_kube_apiserver(base, bin_dir=bins)
    assert "exited with 3" in str(failed.value)
    leftovers = [p.pid for p in psutil.process_iter(["cmdline"])
                 if str(base) in " ".join(p.info["cmdline"] or [])]
    assert leftovers == []
