"""plan / apply / uninstall of the Kubernetes objects against a real kube-apiserver + etcd.

No kubelet and no controllers run in the harness, so two things are faked, in the open:
  - the migration Job's completion and the Deployment's rollout are written through their
    status subresources by `FakeControllers` (a thread standing in for the job controller, the
    deployment controller and the kubelets), which is what exercises apply's wait logic;
  - a deleted Namespace stays Terminating forever (no namespace controller), so `--purge` is
    checked by the namespace's deletionTimestamp, not by its absence.
Keycloak is not contacted: the OIDC client secret comes from MLFLOW_STACK_OIDC_CLIENT_SECRET.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from lightkube import ApiError, Client, KubeConfig
from lightkube.codecs import from_dict
from lightkube.core.resource import GlobalResource
from lightkube.core.resource_registry import resource_registry
from lightkube.models.core_v1 import Container, PodSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Namespace, PersistentVolumeClaim, Secret, Service
from lightkube.types import PatchType
from pydantic import SecretStr

from harness.fake_controllers import FakeControllers, finish_job
from harness.kube import SECRET_VALUES, settings_with
from harness.kubeapi import KubeAPIServer, write_unreachable_kubeconfig
from harness.waits import retry_while
from mlflow_stack.components import kubernetes as k8s
from mlflow_stack.components.base import Change
from mlflow_stack.config.model import Settings
from mlflow_stack.config.secrets import Secrets
from mlflow_stack.deploy import plan_system, teardown_system
from mlflow_stack.errors import ConfigError
from mlflow_stack.kubernetes.client import KubernetesError
from mlflow_stack.kubernetes.wait import MigrationFailed
from mlflow_stack.manifests.render import render
from mlflow_stack.progress import NullProgress

pytestmark = pytest.mark.integration

DOMAIN = "example.test"
TLS_SOURCE = "example-test-tls"
REPO = Path(__file__).resolve().parents[2]
RBAC_DOC = REPO / "docs" / "rbac" / "installer-role.yaml"
T = TypeVar("T")


def secrets(**extra: str) -> Secrets:
    values: dict[str, Any] = {k: SecretStr(v) for k, v in SECRET_VALUES.items()}
    values.update({k: SecretStr(v) for k, v in extra.items()})
    return Secrets.model_construct(**values)


def make_settings(kubeconfig: Path, namespace: str, secret_values: Secrets | None = None,
                  **sections: Any) -> Settings:
    """PostgreSQL + S3 + Keycloak settings (none of them contacted by the Kubernetes part)."""
    data: dict[str, Any] = {
        "domain": DOMAIN,
        "database": {"backend": "postgresql", "host": "postgresql.db.svc.cluster.local"},
        "artifacts": {"backend": "s3", "endpoint_url": "https://s3.example.test"},
        "auth": {"provider": "keycloak", "keycloak_url": "https://auth.example.test",
                 "realm_admin_users": ["alice"]},
        "registry": {"host": "registry.example.test", "robot_name": "deployer"},
        "kubernetes": {"namespace": namespace, "kubeconfig": str(kubeconfig)},
        "discovery": {"code_server": False},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return settings_with(data, secret_values or secrets())


@pytest.fixture(scope="module")
def admin(kube_api: KubeAPIServer) -> Iterator[Client]:
    client = Client(config=KubeConfig.from_file(kube_api.admin_kubeconfig),
                    field_manager="test-admin", trust_env=False)
    # The wildcard certificate apply copies (the reference keeps it in `default`).
    client.apply(from_dict({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": TLS_SOURCE, "namespace": "default"},
        "stringData": {"tls.crt": "test-cert", "tls.key": "test-key"}}))
    yield client
    client.close()


@pytest.fixture
def ns() -> str:
    return f"mlf-{uuid.uuid4().hex[:8]}"


def apply(settings: Settings, server: KubeAPIServer) -> k8s.Report:
    with FakeControllers(server, settings.kubernetes.namespace):
        return k8s.apply_objects(settings, NullProgress(), job_timeout=30,
                                 rollout_timeout_s=30)


def expected_keys(settings: Settings) -> set[tuple[str, str, str | None]]:
    """Every object render gives for these settings, plus the TLS copy (apply adds it)."""
    objs = render(settings, include_secrets=True, secret_key=SecretStr("x")).objects
    keys = {(o["kind"], o["metadata"]["name"], o["metadata"].get("namespace")) for o in objs}
    keys.add(("Secret", settings.kubernetes.tls_secret, settings.kubernetes.namespace))
    return keys


def live_versions(admin: Client, settings: Settings) -> dict[str, str]:
    """resourceVersion of every object apply owns: any write changes one."""
    ns = settings.kubernetes.namespace
    result = {}
    for kind, name, namespace in expected_keys(settings):
        got = get_live(admin, kind, name, namespace)
        result[f"{kind}/{namespace or ''}/{name}"] = str(meta(got).resourceVersion)
    assert result, ns
    return result


def _api_version(kind: str) -> str:
    return {"Deployment": "apps/v1", "Job": "batch/v1", "Ingress": "networking.k8s.io/v1",
            "NetworkPolicy": "networking.k8s.io/v1",
            "PodDisruptionBudget": "policy/v1",
            "HorizontalPodAutoscaler": "autoscaling/v2"}.get(kind, "v1")


def get_live(admin: Client, kind: str, name: str, namespace: str | None) -> object:
    """The live object of any kind render gives, namespaced or cluster-wide."""
    res = resource_registry.load(_api_version(kind), kind)
    if issubclass(res, GlobalResource):
        return admin.get(res, name)
    return admin.get(res, name, namespace=namespace)


def meta(obj: object) -> ObjectMeta:
    """A live object's metadata: always there, though lightkube types it optional (and not at
    all on the generic resource types the registry loads)."""
    got = getattr(obj, "metadata", None)
    assert isinstance(got, ObjectMeta), obj
    return got


def pod_spec(deployment: Deployment) -> PodSpec:
    assert deployment.spec is not None and deployment.spec.template.spec is not None, deployment
    return deployment.spec.template.spec


def env_names(container: Container) -> list[str]:
    return [e.name for e in container.env or []]


def changed(changes: list[Change]) -> list[Change]:
    return [c for c in changes if c.is_change]


def secret_data(admin: Client, namespace: str, name: str) -> dict[str, str]:
    got = admin.get(Secret, name, namespace=namespace)
    return {k: base64.b64decode(v).decode() for k, v in (got.data or {}).items()}


def eventually(call: Callable[[], T], timeout: float = 10.0) -> T:
    """RBAC changes reach the authorizer through an informer: allow a moment for them."""
    return retry_while(call, lambda e: isinstance(e, KubernetesError) and "refused" in e.message,
                       timeout, interval=0.3)


# --------------------------------------------------------------------------------------------


def test_apply_creates_every_object_and_a_second_apply_writes_nothing(
        kube_api: KubeAPIServer, admin: Client, ns: str) -> None:
    settings = make_settings(kube_api.admin_kubeconfig, ns, kubernetes={"replicas": 2})
    first = apply(settings, kube_api)
    want = expected_keys(settings)
    created = {c.target for c in first.changes if c.action == "create"}
    assert created == {f"{k} {n}/{name}" if n else f"{k} {name}" for k, name, n in want}
    assert first.writes == len(want)
    assert first.url == f"https://mlflow.{DOMAIN}"
    kinds = {k for k, _, _ in want}
    assert {"Namespace", "Secret", "PersistentVolumeClaim", "Job", "Deployment", "Service",
            "Ingress", "NetworkPolicy", "PodDisruptionBudget", "ConfigMap"} <= kinds
    # Every object is owned by our field manager through server-side apply.
    deployment = admin.get(Deployment, "mlflow", namespace=ns)
    assert deployment.metadata is not None
    assert ("mlflow-stack", "Apply") in {(m.manager, m.operation)
                                         for m in deployment.metadata.managedFields or []}

    before = live_versions(admin, settings)
    second = apply(settings, kube_api)
    assert changed(second.changes) == []
    assert second.writes == 0
    # Not one write reached the server (a write, even a no-op SSA, can bump resourceVersion).
    assert live_versions(admin, settings) == before
    assert changed(plan_system(k8s.SYSTEM, settings)) == []


def test_waits_time_out_naming_what_is_missing(kube_api: KubeAPIServer, admin: Client,
                                              ns: str) -> None:
    """No job controller: the Job never finishes; no deployment controller: the new Deployment
    is never observed. Each wait stops at its deadline and says what is missing."""
    settings = make_settings(kube_api.admin_kubeconfig, ns)
    progress = NullProgress()
    with pytest.raises(MigrationFailed, match=r"did not finish in 1 s"):
        k8s.apply_objects(settings, progress, job_timeout=1, rollout_timeout_s=1)
    assert any(d.startswith("waiting for Job mlflow-db-migrate-") and "active 0, failed 0" in d
               for d in progress.activities), progress.activities
    assert "Deployment" not in " ".join(progress.steps), "the Deployment waits for the Job"

    # The job controller's part, done by hand; the deployment controller stays absent.
    with kube_api.admin_http() as http:
        for job in http.get(f"/apis/batch/v1/namespaces/{ns}/jobs").json()["items"]:
            finish_job(http, ns, job["metadata"]["name"])
    with pytest.raises(KubernetesError, match=r"did not roll out in 1 s: waiting for the "
                                              r"controller to observe the new spec"):
        k8s.apply_objects(settings, progress, job_timeout=1, rollout_timeout_s=1)
    assert any(d.startswith("waiting for Deployment mlflow: ") for d in progress.activities)


def test_plan_shows_manual_drift_exactly_and_apply_repairs_it(
        kube_api: KubeAPIServer, admin: Client, ns: str) -> None:
    settings = make_settings(kube_api.admin_kubeconfig, ns)
    apply(settings, kube_api)
    container = pod_spec(admin.get(Deployment, "mlflow", namespace=ns)).containers[0]
    dropped = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"
    index = env_names(container).index(dropped)
    # Hand edits, as `kubectl scale` / `kubectl edit` make them (Update, not Apply).
    admin.patch(Deployment, "mlflow", {"spec": {"replicas": 3}}, namespace=ns,
                patch_type=PatchType.MERGE, field_manager="kubectl-edit")
    admin.patch(Deployment, "mlflow", [
        {"op": "remove", "path": f"/spec/template/spec/containers/0/env/{index}"}],
        namespace=ns, patch_type=PatchType.JSON, field_manager="kubectl-edit")
    admin.patch(Service, "mlflow", [
        {"op": "remove", "path": "/metadata/labels/app.kubernetes.io~1part-of"}],
        namespace=ns, patch_type=PatchType.JSON, field_manager="kubectl-edit")

    drift = {c.target: c.detail.split("; ") for c in changed(plan_system(k8s.SYSTEM, settings))}
    assert set(drift) == {f"Deployment {ns}/mlflow", f"Service {ns}/mlflow"}
    assert drift[f"Deployment {ns}/mlflow"] == [
        "spec.replicas: 3 -> 1",
        f"+ spec.template.spec.containers[mlflow].env[{dropped}].name = {dropped}",
        f"+ spec.template.spec.containers[mlflow].env[{dropped}].value = false",
    ]
    assert drift[f"Service {ns}/mlflow"] == [
        "+ metadata.labels.app.kubernetes.io/part-of = mlflow-stack"]

    repaired = apply(settings, kube_api)
    assert {c.target for c in changed(repaired.changes)} == set(drift)
    assert repaired.writes == 2
    live = admin.get(Deployment, "mlflow", namespace=ns)
    assert live.spec is not None and live.spec.replicas == 1
    assert dropped in env_names(pod_spec(live).containers[0])
    labels = meta(admin.get(Service, "mlflow", namespace=ns)).labels
    assert labels is not None and labels["app.kubernetes.io/part-of"] == "mlflow-stack"
    assert changed(plan_system(k8s.SYSTEM, settings)) == []


def test_fields_of_another_field_manager_are_not_clobbered(
        kube_api: KubeAPIServer, admin: Client, ns: str) -> None:
    settings = make_settings(kube_api.admin_kubeconfig, ns)
    apply(settings, kube_api)
    # Someone else's intent on our objects, by server-side apply under their own manager.
    admin.apply(from_dict({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "mlflow", "namespace": ns,
                     "annotations": {"ops.example.test/owner": "team-ml"}},
        "spec": {"selector": {"matchLabels": {"app": "mlflow"}}, "template": {
            "metadata": {"labels": {"app": "mlflow"}},
            "spec": {"containers": [{"name": "mlflow",
                                     "env": [{"name": "EXTRA_BY_OPS", "value": "1"}]}]}}},
    }), field_manager="kubectl")
    admin.apply(from_dict({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "mlflow", "namespace": ns, "labels": {"team": "ml"}}}),
        field_manager="kubectl")

    assert changed(plan_system(k8s.SYSTEM, settings)) == []
    again = apply(settings, kube_api)
    assert again.writes == 0
    live = admin.get(Deployment, "mlflow", namespace=ns)
    assert (meta(live).annotations or {})["ops.example.test/owner"] == "team-ml"
    assert "EXTRA_BY_OPS" in env_names(pod_spec(live).containers[0])
    assert (meta(admin.get(Service, "mlflow", namespace=ns)).labels or {})["team"] == "ml"


def test_secret_key_and_pull_secret_survive_reapply(
        kube_api: KubeAPIServer, admin: Client, ns: str) -> None:
    settings = make_settings(kube_api.admin_kubeconfig, ns)
    first = apply(settings, kube_api)
    assert any("created the SSO session key" in n for n in first.notes)
    key = secret_data(admin, ns, "mlflow-secret-key")["SECRET_KEY"]
    assert len(key) >= 40
    pull = secret_data(admin, ns, "harbor-registry-secret")[".dockerconfigjson"]
    auth = json.loads(pull)["auths"]["registry.example.test"]
    assert auth["username"] == "robot$deployer"
    assert auth["password"] == SECRET_VALUES["harbor_robot_token"]
    versions = {name: meta(admin.get(Secret, name, namespace=ns)).resourceVersion
                for name in ("mlflow-secret-key", "harbor-registry-secret")}

    # A new run (new process, nothing cached) keeps both, byte for byte, without writing.
    again = apply(make_settings(kube_api.admin_kubeconfig, ns), kube_api)
    assert not any("session key" in n for n in again.notes)
    assert secret_data(admin, ns, "mlflow-secret-key")["SECRET_KEY"] == key
    assert {name: meta(admin.get(Secret, name, namespace=ns)).resourceVersion
            for name in versions} == versions
    # Without HARBOR_ROBOT_TOKEN the pull secret is kept as it is, not emptied.
    values = secrets()
    values.harbor_robot_token = None
    no_token = apply(make_settings(kube_api.admin_kubeconfig, ns, values), kube_api)
    kept = [c for c in no_token.changes if c.target == f"Secret {ns}/harbor-registry-secret"]
    assert kept[0].action == "unchanged" and "kept" in kept[0].detail
    assert secret_data(admin, ns, "harbor-registry-secret")[".dockerconfigjson"] == pull


def test_missing_values_refuse_before_any_write(kube_api: KubeAPIServer, admin: Client,
                                                ns: str) -> None:
    values = secrets()
    values.harbor_robot_token = None
    settings = make_settings(kube_api.admin_kubeconfig, ns, values)
    with pytest.raises(ConfigError, match=r"harbor-registry-secret.*HARBOR_ROBOT_TOKEN"):
        apply(settings, kube_api)
    with pytest.raises(ApiError):
        admin.get(Namespace, ns)


def test_uninstall_keeps_pvcs_without_purge_and_removes_them_with_it(
        kube_api: KubeAPIServer, admin: Client, ns: str) -> None:
    settings = make_settings(kube_api.admin_kubeconfig, ns)
    apply(settings, kube_api)
    # A Secret of someone else's in the namespace: never ours to delete.
    admin.apply(from_dict({"apiVersion": "v1", "kind": "Secret",
                           "metadata": {"name": "unrelated", "namespace": ns},
                           "stringData": {"k": "v"}}))

    changes = teardown_system(k8s.SYSTEM, settings)
    deleted = [c.target for c in changes if c.action == "delete"]
    assert deleted[0] == f"ConfigMap {ns}/thinkube-service-config"  # reverse apply order
    assert deleted[-1] == f"Secret {ns}/mlflow-db-secret"
    for kind, name, namespace in expected_keys(settings):
        if kind in ("PersistentVolumeClaim", "Namespace"):
            get_live(admin, kind, name, namespace)  # kept
            continue
        with pytest.raises(ApiError) as gone:
            get_live(admin, kind, name, namespace)
        assert gone.value.status.code == 404, (kind, name)
    admin.get(Secret, "unrelated", namespace=ns)
    again = teardown_system(k8s.SYSTEM, settings)
    assert changed(again) == []  # nothing left to remove

    purged = teardown_system(k8s.SYSTEM, settings, purge=True)
    assert {c.target for c in changed(purged)} == {
        f"PersistentVolumeClaim {ns}/mlflow-storage", f"Namespace {ns}"}
    # The shared models volume (other platform parts mount it) survives even --purge.
    assert [meta(p).name for p in admin.list(PersistentVolumeClaim, namespace=ns)] == [
        "thinkube-models"]
    # The harness has no namespace controller: the namespace stays Terminating.
    assert meta(admin.get(Namespace, ns)).deletionTimestamp is not None


def test_pruning_removes_what_the_config_no_longer_renders(
        kube_api: KubeAPIServer, admin: Client, ns: str) -> None:
    settings = make_settings(kube_api.admin_kubeconfig, ns, kubernetes={"replicas": 2})
    apply(settings, kube_api)
    fewer = make_settings(kube_api.admin_kubeconfig, ns, registry={"tag": "9.9.9"})
    planned = {c.target: c.action for c in changed(plan_system(k8s.SYSTEM, fewer))}
    old_job = [t for t in planned if t.startswith(f"Job {ns}/") and planned[t] == "delete"]
    assert planned[f"PodDisruptionBudget {ns}/mlflow"] == "delete"
    assert len(old_job) == 1  # the new image needs a new migration Job; the old one goes
    apply(fewer, kube_api)
    assert changed(plan_system(k8s.SYSTEM, fewer)) == []


def test_code_server_integration_is_patched_in_and_out(
        kube_api: KubeAPIServer, admin: Client, ns: str) -> None:
    cs = f"{ns}-cs"
    admin.apply(from_dict({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": cs}}))
    admin.apply(from_dict({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "code-server", "namespace": cs},
        "spec": {"selector": {"matchLabels": {"app": "cs"}}, "template": {
            "metadata": {"labels": {"app": "cs"}},
            "spec": {"containers": [{"name": "code-server", "image": "cs:1",
                                     "env": [{"name": "OWN", "value": "1"}]}]}}}}))
    settings = make_settings(kube_api.admin_kubeconfig, ns,
                             discovery={"code_server": True, "code_server_namespace": cs})
    apply(settings, kube_api)
    env = env_names(pod_spec(admin.get(Deployment, "code-server", namespace=cs)).containers[0])
    assert "OWN" in env and "MLFLOW_TRACKING_URI" in env and "MLFLOW_CLIENT_SECRET" in env
    assert secret_data(admin, cs, "mlflow-client-env")["MLFLOW_CLIENT_SECRET"] == \
        SECRET_VALUES["oidc_client_secret"]
    assert changed(plan_system(k8s.SYSTEM, settings)) == []

    teardown_system(k8s.SYSTEM, settings)
    spec = pod_spec(admin.get(Deployment, "code-server", namespace=cs))
    assert env_names(spec.containers[0]) == ["OWN"]
    assert not spec.volumes
    with pytest.raises(ApiError):
        admin.get(Secret, "mlflow-client-env", namespace=cs)


def test_least_privilege_installer(kube_api: KubeAPIServer, admin: Client, ns: str) -> None:
    """docs/rbac/installer-role.yaml, bound to a ServiceAccount, is enough for apply, plan and
    uninstall; without the bindings the same token is refused with a clear message."""
    system_ns = f"{ns}-sys"
    for name in (system_ns, ns):
        admin.apply(from_dict({"apiVersion": "v1", "kind": "Namespace",
                               "metadata": {"name": name}}))
    token = kube_api.service_account_token(system_ns, "mlflow-stack-installer")
    kubeconfig = kube_api.token_kubeconfig(token, name=f"installer-{ns}")
    settings = make_settings(kubeconfig, ns)

    with pytest.raises(KubernetesError, match="refused") as denied:
        plan_system(k8s.SYSTEM, settings)
    assert "installer-role.yaml" in (denied.value.hint or "")

    for doc in yaml.safe_load_all(RBAC_DOC.read_text()):
        doc = _localize(doc, ns, system_ns)
        if doc["metadata"].get("namespace") in ("code-server", "seaweedfs"):
            continue  # not used by these settings
        admin.apply(from_dict(doc), force=True)

    with FakeControllers(kube_api, ns):
        report = eventually(lambda: k8s.apply_objects(settings, NullProgress(),
                                                      job_timeout=30, rollout_timeout_s=30))
    # The administrator created the namespace (for the RoleBinding); apply adds its labels.
    assert {c.target: c.action for c in report.changes if c.action != "create"} == {
        f"Namespace {ns}": "update"}
    assert changed(plan_system(k8s.SYSTEM, settings)) == []
    assert any(c.action == "delete" for c in teardown_system(k8s.SYSTEM, settings))
    purged = teardown_system(k8s.SYSTEM, settings, purge=True)
    assert f"Namespace {ns}" in {c.target for c in changed(purged)}


def _localize(doc: dict[str, Any], ns: str, system_ns: str) -> dict[str, Any]:
    """The documented manifests with this test's names (namespaces, cluster-scoped names)."""
    meta = doc["metadata"]
    if doc["kind"].startswith("Cluster"):
        meta["name"] = f"{meta['name']}-{ns}"
    if meta.get("namespace") == "mlflow":
        meta["namespace"] = ns
    if "roleRef" in doc and doc["roleRef"]["kind"] == "ClusterRole":
        doc["roleRef"]["name"] = f"{doc['roleRef']['name']}-{ns}"
    for subject in doc.get("subjects", []):
        subject["namespace"] = system_ns
    for rule in doc.get("rules", []):
        if "resourceNames" in rule:
            rule["resourceNames"] = [{"mlflow": ns, "example-com-tls": TLS_SOURCE}.get(n, n)
                                     for n in rule["resourceNames"]]
    return doc


def test_unreachable_server_and_missing_kubeconfig(tmp_path: Path, ns: str) -> None:
    with pytest.raises(ConfigError, match="does not exist") as missing:
        plan_system(k8s.SYSTEM, make_settings(tmp_path / "nope.yaml", ns))
    assert missing.value.exit_code == 2
    dead = write_unreachable_kubeconfig(tmp_path / "dead.yaml")
    with pytest.raises(KubernetesError, match="unreachable") as unreachable:
        plan_system(k8s.SYSTEM, make_settings(dead, ns))
    assert unreachable.value.exit_code == 1
    with pytest.raises(ConfigError, match="Context 'other' not found"):
        plan_system(k8s.SYSTEM, make_settings(dead, ns, kubernetes={"context": "other"}))


def test_autoscaling_takes_replicas_over_and_apply_never_fights_it(
        kube_api: KubeAPIServer, admin: Client, ns: str) -> None:
    """Turning autoscaling on hands `replicas` over without resetting it; the HPA's scaling
    (an Update of the scale subresource by kube-controller-manager, as the real controller
    makes it) is then neither drift for plan nor undone by apply; turning it off takes the
    field back and prunes the HPA."""
    fixed = make_settings(kube_api.admin_kubeconfig, ns, kubernetes={"replicas": 3})
    apply(fixed, kube_api)
    scaled = make_settings(kube_api.admin_kubeconfig, ns, kubernetes={
        "replicas": 3, "autoscaling": {"enabled": True, "min_replicas": 2, "max_replicas": 5}})

    planned = {c.target: c for c in changed(plan_system(k8s.SYSTEM, scaled))}
    deployment = planned[f"Deployment {ns}/mlflow"]
    assert deployment.detail == "spec.replicas (3) handed over to the HorizontalPodAutoscaler"
    assert planned[f"HorizontalPodAutoscaler {ns}/mlflow"].action == "create"
    assert "spec.maxUnavailable" in planned[f"PodDisruptionBudget {ns}/mlflow"].detail
    apply(scaled, kube_api)
    live = admin.get(Deployment, "mlflow", namespace=ns)
    assert live.spec is not None and live.spec.replicas == 3  # not reset to 1 on the way
    managers = {m.manager for m in meta(live).managedFields or []
                if "f:replicas" in json.dumps(m.fieldsV1)}
    assert "mlflow-stack" not in managers
    hpa = get_live(admin, "HorizontalPodAutoscaler", "mlflow", ns)
    assert hpa.spec.minReplicas == 2 and hpa.spec.maxReplicas == 5  # type: ignore[attr-defined]

    # The HPA controller's scaling, through the scale subresource.
    admin.patch(Deployment.Scale, "mlflow", {"spec": {"replicas": 4}}, namespace=ns,
                patch_type=PatchType.MERGE, field_manager="kube-controller-manager")
    assert changed(plan_system(k8s.SYSTEM, scaled)) == []
    assert apply(scaled, kube_api).writes == 0
    live = admin.get(Deployment, "mlflow", namespace=ns)
    assert live.spec is not None and live.spec.replicas == 4

    apply(fixed, kube_api)
    live = admin.get(Deployment, "mlflow", namespace=ns)
    assert live.spec is not None and live.spec.replicas == 3
    with pytest.raises(ApiError):
        get_live(admin, "HorizontalPodAutoscaler", "mlflow", ns)
    assert changed(plan_system(k8s.SYSTEM, fixed)) == []
