"""The Deployment, migration Job and PDB: the same command line as the local target, and every
value that comes from the settings."""

from __future__ import annotations

from typing import Any

import pytest

from harness.kube import find, settings_with
from mlflow_stack.config.model import Settings
from mlflow_stack.errors import ConfigError
from mlflow_stack.launch.command import build_server_launch
from mlflow_stack.manifests import workload
from mlflow_stack.manifests.render import render

POSTGRES_S3: dict[str, Any] = {
    "database": {"backend": "postgresql", "host": "db.example.com", "port": 6543,
                 "namespace": "databases"},
    "artifacts": {"backend": "s3", "bucket": "models-bucket",
                  "endpoint_url": "https://objects.example.com:9443"},
    "server": {"hostname": "experiments.example.com"},
}


def container(deploy: dict[str, Any]) -> dict[str, Any]:
    containers = deploy["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def test_deployment_runs_the_shared_command_line(reference: Settings) -> None:
    objects = render(reference).objects
    c = container(find(objects, "Deployment", "mlflow"))
    expected = build_server_launch(
        reference, workload.POD_PATHS, bind_host="0.0.0.0",
        internal_hosts=workload.internal_hosts(reference))
    assert c["command"] + c["args"] == expected.argv
    # `mlflow server` whose gunicorn master replaces it (server/serve.py): PID 1 is the server.
    assert c["command"] == ["mlflow-stack-server"]
    assert c["args"][:5] == ["server", "--host", "0.0.0.0", "--port", "5000"]
    # Same env, secrets by reference only.
    assert [e["name"] for e in c["env"]] == [v.name for v in expected.env]
    env = {e["name"]: e for e in c["env"]}
    assert env["PGPASSWORD"] == {"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {
        "name": "mlflow-db-secret", "key": "DB_PASSWORD"}}}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "mlflow-s3-secret", "key": "AWS_SECRET_ACCESS_KEY"}
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"]["value"] == "false"
    assert env["MLFLOW_SERVER_CORS_ALLOWED_ORIGINS"]["value"] == "https://mlflow.example.com"
    hosts = env["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"].split(",")
    assert "mlflow.example.com" in hosts
    for host in ("mlflow", "mlflow.mlflow", "mlflow.mlflow.svc", "mlflow.mlflow.svc.cluster.local",
                 "mlflow:5000", "mlflow.mlflow.svc.cluster.local:5000", "127.0.0.1:5000"):
        assert host in hosts
    assert not any("*" in host for host in hosts)  # exact names: MLflow matches with fnmatch
    assert env["MLFLOW_S3_ENDPOINT_URL"]["value"] == "https://s3.example.com"
    assert "--expose-prometheus" in c["args"]
    assert c["args"][c["args"].index("--expose-prometheus") + 1] == "/mlflow/prometheus"
    assert "--artifacts-destination" in c["args"]
    assert c["args"][c["args"].index("--artifacts-destination") + 1] == "s3://mlflow/artifacts"


def test_deployment_reference_values(reference: Settings) -> None:
    d = find(render(reference).objects, "Deployment", "mlflow")
    assert d["metadata"]["namespace"] == "mlflow"
    assert d["metadata"]["labels"]["app"] == "mlflow"
    assert d["spec"]["selector"] == {"matchLabels": {"app": "mlflow"}}
    pod = d["spec"]["template"]
    assert pod["metadata"]["labels"]["app"] == "mlflow"
    for key in ("name", "instance", "component", "part-of", "managed-by"):
        assert f"app.kubernetes.io/{key}" in pod["metadata"]["labels"]
    assert d["spec"]["replicas"] == 1
    spec = pod["spec"]
    assert spec["imagePullSecrets"] == [{"name": "harbor-registry-secret"}]
    c = container(d)
    assert c["image"] == "harbor.example.com/library/mlflow-custom:0.1.0-mlflow3.17.2"
    assert c["ports"] == [{"name": "http", "containerPort": 5000, "protocol": "TCP"}]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": "http"}
    assert c["resources"] == {"requests": {"cpu": "100m", "memory": "256Mi"},
                              "limits": {"cpu": "500m", "memory": "1Gi"}}
    # Non-root, read-only root filesystem, every writable place a volume.
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == workload.RUN_AS_UID
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    for path in ("/tmp", "/mlflow/prometheus", workload.HOME_DIR):
        assert "emptyDir" in volumes[mounts[path]], path
    assert volumes[mounts["/models"]]["persistentVolumeClaim"] == {"claimName": "thinkube-models"}
    # PostgreSQL + S3: the RWO volume is not needed, so rolling updates are possible.
    assert "/mlflow/local-artifacts" not in mounts
    assert d["spec"]["strategy"]["type"] == "RollingUpdate"
    assert d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert spec["enableServiceLinks"] is False
    assert spec["automountServiceAccountToken"] is False


def test_startup_probe_covers_health_timeout() -> None:
    s = settings_with({**POSTGRES_S3, "server": {"health_timeout": 300}})
    c = container(find(render(s).objects, "Deployment"))
    probe = c["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 300


def test_configured_values_reach_the_deployment() -> None:
    s = settings_with({
        **POSTGRES_S3,
        "kubernetes": {"namespace": "ml-platform", "replicas": 3,
                       "requests": {"cpu": "250m", "memory": "512Mi"},
                       "limits": {"cpu": "2", "memory": "3Gi"}},
        "registry": {"host": "registry.example.org", "project": "team", "image": "srv",
                     "tag": "1.2.3", "pull_secret": "pull-me"},
        "server": {"port": 5050, "hostname": "experiments.example.com", "workers": 2,
                   "prometheus": False},
        "storage": {"models": {"enabled": False}},
    })
    objects = render(s).objects
    d = find(objects, "Deployment", "mlflow")
    c = container(d)
    assert d["metadata"]["namespace"] == "ml-platform"
    assert d["spec"]["replicas"] == 3
    assert c["image"] == "registry.example.org/team/srv:1.2.3"
    assert d["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "pull-me"}]
    assert c["resources"] == {"requests": {"cpu": "250m", "memory": "512Mi"},
                              "limits": {"cpu": "2", "memory": "3Gi"}}
    assert c["ports"][0]["containerPort"] == 5050
    assert c["args"][c["args"].index("--port") + 1] == "5050"
    assert c["args"][c["args"].index("--workers") + 1] == "2"
    assert "--expose-prometheus" not in c["args"]
    assert "/models" not in {m["mountPath"] for m in c["volumeMounts"]}
    assert "/mlflow/prometheus" not in {m["mountPath"] for m in c["volumeMounts"]}
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert "mlflow.ml-platform.svc.cluster.local:5050" in env["MLFLOW_SERVER_ALLOWED_HOSTS"]
    assert env["MLFLOW_SERVER_CORS_ALLOWED_ORIGINS"] == "https://experiments.example.com"
    uri = c["args"][c["args"].index("--backend-store-uri") + 1]
    assert uri == "postgresql://admin@db.example.com:6543/mlflow?sslmode=prefer"
    spread = d["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread[0]["labelSelector"] == {"matchLabels": {"app": "mlflow"}}
    pdb = find(objects, "PodDisruptionBudget", "mlflow")
    assert pdb["spec"] == {"minAvailable": 1, "selector": {"matchLabels": {"app": "mlflow"}}}


def test_no_pdb_for_one_replica(reference: Settings) -> None:
    assert "PodDisruptionBudget" not in [o["kind"] for o in render(reference).objects]


def test_no_registry_host_means_no_pull_secret() -> None:
    s = settings_with(POSTGRES_S3)
    d = find(render(s).objects, "Deployment")
    assert "imagePullSecrets" not in d["spec"]["template"]["spec"]
    assert container(d)["image"] == "library/mlflow-custom:0.1.0-mlflow3.17.2"


def test_defaults_use_the_local_volume_with_recreate() -> None:
    """SQLite + local artifacts (the embedded defaults) live on the RWO volume: one pod."""
    d = find(render(Settings()).objects, "Deployment")
    c = container(d)
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    claim = {v["name"]: v for v in d["spec"]["template"]["spec"]["volumes"]}[
        mounts["/mlflow/local-artifacts"]]
    assert claim["persistentVolumeClaim"] == {"claimName": "mlflow-storage"}
    assert d["spec"]["strategy"] == {"type": "Recreate"}
    assert c["args"][c["args"].index("--backend-store-uri") + 1] == \
        "sqlite:////mlflow/local-artifacts/mlflow.db"
    assert c["args"][c["args"].index("--artifacts-destination") + 1] == \
        "/mlflow/local-artifacts/artifacts"


@pytest.mark.parametrize(("data", "message"), [
    ({"kubernetes": {"replicas": 2}}, "ReadWriteOnce"),
    ({"storage": {"local_pvc": False}}, "storage.local_pvc"),
    ({**POSTGRES_S3, "artifacts": {"backend": "local"}, "kubernetes": {"replicas": 2}},
     "local artifacts"),
])
def test_refuses_settings_that_cannot_run(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        render(settings_with(data))


def test_migration_job(reference: Settings) -> None:
    objects = render(reference).objects
    job = find(objects, "Job")
    deploy = container(find(objects, "Deployment"))
    name = job["metadata"]["name"]
    assert name.startswith("mlflow-db-migrate-")
    assert job["metadata"]["annotations"]["argocd.argoproj.io/hook"] == "PreSync"
    pod = job["spec"]["template"]
    assert "app" not in pod["metadata"]["labels"]  # the Service must not select it
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "migration"
    assert pod["spec"]["restartPolicy"] == "Never"
    c = pod["spec"]["containers"][0]
    assert c["command"] == ["python", "-m", "mlflow_stack.server.migrate_job"]
    uri = deploy["args"][deploy["args"].index("--backend-store-uri") + 1]
    assert c["args"] == ["--backend-store-uri", uri]
    assert c["env"] == deploy["env"]
    assert c["image"] == deploy["image"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["spec"]["imagePullSecrets"] == [{"name": "harbor-registry-secret"}]
    # The object must come before the Deployment in apply order.
    order = [o["kind"] for o in objects]
    assert order.index("Job") < order.index("Deployment")


def test_migration_job_name_is_stable_and_changes_with_the_image(reference: Settings) -> None:
    first = find(render(reference).objects, "Job")["metadata"]["name"]
    assert find(render(reference).objects, "Job")["metadata"]["name"] == first
    newer = reference.model_copy(deep=True)
    newer.registry.tag = "0.2.0-mlflow3.17.2"
    assert find(render(newer).objects, "Job")["metadata"]["name"] != first


def test_no_migration_job_for_sqlite() -> None:
    rendered = render(Settings())
    assert "Job" not in [o["kind"] for o in rendered.objects]
    assert any("SQLite" in n for n in rendered.notes)


def test_a_stopping_pod_keeps_serving_while_it_leaves_the_service(reference: Settings) -> None:
    pod = find(render(reference).objects, "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["lifecycle"] == {"preStop": {"exec": {"command": ["sleep", "10"]}}}
    assert pod["terminationGracePeriodSeconds"] == 40

    off = settings_with({"kubernetes": {"drain_seconds": 0}})
    pod = find(render(off).objects, "Deployment")["spec"]["template"]["spec"]
    assert "lifecycle" not in pod["containers"][0]
    assert pod["terminationGracePeriodSeconds"] == 30


def test_workspaces_reach_the_pod(reference: Settings) -> None:
    """server.workspaces: the pod runs the same flag and env as a local server."""
    on = reference.model_copy(update={"server": reference.server.model_copy(
        update={"workspaces": True})})
    c = container(find(render(on).objects, "Deployment", "mlflow"))
    assert "--enable-workspaces" in c["args"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["MLFLOW_ENABLE_WORKSPACES"] == "true"
    assert env["WORKSPACE_CACHE_TTL_SECONDS"] == str(on.auth.permission_cache_seconds)
    off = container(find(render(reference).objects, "Deployment", "mlflow"))
    assert "--enable-workspaces" not in off["args"]


def test_the_audit_trail_goes_to_the_pods_stdout(reference: Settings) -> None:
    """In a pod the audit trail is stdout, for the cluster's log collector (each line carries
    "log": "audit")."""
    c = container(find(render(reference).objects, "Deployment", "mlflow"))
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert (env["AUDIT_LOG_ENABLED"], env["MLFLOW_STACK_AUDIT_LOG"]) == ("true", "-")
    off = reference.model_copy(update={"auth": reference.auth.model_copy(
        update={"audit_log": False})})
    c = container(find(render(off).objects, "Deployment", "mlflow"))
    assert {e["name"]: e.get("value") for e in c["env"]}["AUDIT_LOG_ENABLED"] == "false"


# --------------------------------------------------------------------------------------------
# Fitting the cluster: placement, autoscaling, CA bundle, metadata (issue 17 §1, §5)

PLACEMENT: dict[str, Any] = {
    "node_selector": {"node-role.example.test/ml": "true"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml",
                     "effect": "NoSchedule"}],
    "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 1, "preference": {"matchExpressions": [
            {"key": "zone", "operator": "In", "values": ["a"]}]}}]}},
    "priority_class": "platform-high",
    "labels": {"team": "ml"},
    "annotations": {"example.test/owner": "ml-platform"},
    "extra_env": [{"name": "HTTPS_PROXY", "value": "http://proxy.example.test:3128"}],
    "extra_volumes": [{"name": "cache", "emptyDir": {"sizeLimit": "1Gi"}}],
    "extra_volume_mounts": [{"name": "cache", "mountPath": "/cache"}],
}


def test_placement_and_extras_reach_every_pod() -> None:
    s = settings_with({**POSTGRES_S3, "kubernetes": {"pod": PLACEMENT}})
    objects = render(s).objects
    job = find(objects, "Job")
    for template in (find(objects, "Deployment", "mlflow")["spec"]["template"],
                     job["spec"]["template"]):
        spec = template["spec"]
        assert spec["nodeSelector"] == PLACEMENT["node_selector"]
        assert spec["tolerations"] == PLACEMENT["tolerations"]
        assert spec["affinity"] == PLACEMENT["affinity"]
        assert spec["priorityClassName"] == "platform-high"
        assert {"name": "cache", "emptyDir": {"sizeLimit": "1Gi"}} in spec["volumes"]
        c = spec["containers"][0]
        assert {"name": "cache", "mountPath": "/cache"} in c["volumeMounts"]
        assert c["env"][-1] == {"name": "HTTPS_PROXY", "value": "http://proxy.example.test:3128"}
        assert template["metadata"]["annotations"] == {"example.test/owner": "ml-platform"}
        assert template["metadata"]["labels"]["team"] == "ml"


@pytest.mark.parametrize("key", ["app", "app.kubernetes.io/component"])
def test_pod_labels_may_not_take_the_platforms_own(key: str) -> None:
    # `app: mlflow` on the migration Job's pod would make the Service send it traffic.
    s = settings_with({**POSTGRES_S3, "kubernetes": {"pod": {"labels": {key: "mlflow"}}}})
    with pytest.raises(ConfigError, match=f"kubernetes.pod.labels: '{key}' is one of the "
                                          "platform's own labels"):
        render(s)


def test_extra_env_may_not_replace_what_the_platform_sets() -> None:
    s = settings_with({**POSTGRES_S3, "kubernetes": {"pod": {"extra_env": [
        {"name": "MLFLOW_S3_ENDPOINT_URL", "value": "http://elsewhere"}]}}})
    with pytest.raises(ConfigError, match=r"kubernetes.pod.extra_env: MLFLOW_S3_ENDPOINT_URL is "
                                          "set by the platform"):
        render(s)


def test_service_gets_its_labels_and_annotations() -> None:
    s = settings_with({"kubernetes": {"service": {
        "labels": {"monitoring": "on", "app": "other"},
        "annotations": {"service.example.test/lb": "internal"}}}})
    service = find(render(s).objects, "Service", "mlflow")
    assert service["metadata"]["labels"]["monitoring"] == "on"
    assert service["metadata"]["labels"]["app"] == "mlflow"
    assert service["metadata"]["annotations"] == {"service.example.test/lb": "internal"}


def test_autoscaling_renders_an_hpa_and_leaves_replicas_to_it() -> None:
    s = settings_with({**POSTGRES_S3, "kubernetes": {"replicas": 3, "autoscaling": {
        "enabled": True, "min_replicas": 2, "max_replicas": 6, "memory_utilization": 90}}})
    rendered = render(s)
    deploy = find(rendered.objects, "Deployment", "mlflow")
    assert "replicas" not in deploy["spec"]
    assert deploy["spec"]["template"]["spec"]["topologySpreadConstraints"][0]["topologyKey"] \
        == "kubernetes.io/hostname"
    hpa = find(rendered.objects, "HorizontalPodAutoscaler", "mlflow")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": "mlflow"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert [(m["resource"]["name"], m["resource"]["target"]["averageUtilization"])
            for m in hpa["spec"]["metrics"]] == [("cpu", 80), ("memory", 90)]
    pdb = find(rendered.objects, "PodDisruptionBudget", "mlflow")
    assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]
    assert any("kubernetes.replicas (3) is not used" in n for n in rendered.notes)


def test_autoscaling_is_refused_on_the_local_volume() -> None:
    s = settings_with({"kubernetes": {"autoscaling": {"enabled": True}}})
    with pytest.raises(ConfigError, match=r"kubernetes.autoscaling.max_replicas is 4, but SQLite"):
        render(s)


def _ca_env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"]
            if e["name"] in ("AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")}


def test_a_named_ca_bundle_configmap_is_mounted_where_the_env_points() -> None:
    sso = {"auth": {"provider": "keycloak", "keycloak_url": "https://kc.example.com"}}
    s = settings_with({**POSTGRES_S3, **sso, "kubernetes": {"ca_bundle": {
        "configmap": "corp-ca", "key": "bundle.pem"}}})
    objects = render(s).objects
    assert not [o for o in objects if o["metadata"]["name"] == workload.GENERATED_CA_CONFIGMAP]
    for template in (find(objects, "Deployment")["spec"]["template"],
                     find(objects, "Job")["spec"]["template"]):
        spec = template["spec"]
        assert {"name": "ca-bundle", "configMap": {"name": "corp-ca", "items": [
            {"key": "bundle.pem", "path": "ca.crt"}]}} in spec["volumes"]
        c = spec["containers"][0]
        assert {"name": "ca-bundle", "mountPath": "/etc/mlflow-stack/ca",
                "readOnly": True} in c["volumeMounts"]
        assert _ca_env(c) == dict.fromkeys(
            ("AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"), "/etc/mlflow-stack/ca/ca.crt")


def test_ca_files_of_the_config_become_a_configmap(tmp_path: Any) -> None:
    ca = tmp_path / "corp-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    s = settings_with({**POSTGRES_S3, "artifacts": {**POSTGRES_S3["artifacts"],
                                                    "ca_bundle": str(ca)}})
    objects = render(s).objects
    configmap = find(objects, "ConfigMap", workload.GENERATED_CA_CONFIGMAP)
    assert configmap["data"] == {"ca.crt": ca.read_text()}
    c = container(find(objects, "Deployment"))
    # Not the deployer's path, which does not exist in the pod.
    assert _ca_env(c)["AWS_CA_BUNDLE"] == "/etc/mlflow-stack/ca/ca.crt"
    missing = settings_with({**POSTGRES_S3, "artifacts": {**POSTGRES_S3["artifacts"],
                                                          "ca_bundle": str(tmp_path / "no")}})
    with pytest.raises(ConfigError, match=r"artifacts.ca_bundle: .*/no is not a file"):
        render(missing)


def test_no_ca_bundle_means_no_mount_and_no_variable(reference: Settings) -> None:
    c = container(find(render(reference).objects, "Deployment"))
    assert _ca_env(c) == {}
    assert all(m["name"] != "ca-bundle" for m in c["volumeMounts"])


def test_the_namespace_enforces_pod_security() -> None:
    ns = render(settings_with({})).objects[0]
    assert ns["kind"] == "Namespace"
    for mode in ("enforce", "audit", "warn"):
        assert ns["metadata"]["labels"][f"pod-security.kubernetes.io/{mode}"] == "restricted"
    off = render(settings_with({"kubernetes": {"pod_security": "none"}})).objects[0]
    assert not any(k.startswith("pod-security") for k in off["metadata"]["labels"])
