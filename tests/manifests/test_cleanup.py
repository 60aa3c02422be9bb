"""The gc CronJob as rendered: off by default; when on, `mlflow gc` (server.gc_job) in the
migration Job's pod (image, security, pull secret, Secret references) with only the env gc
needs, valid against Kubernetes' schemas, and written by `render`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from harness.kube import (
    SECRET_KEY_VALUE,
    SECRET_VALUES,
    find,
    kinds,
    validate_strict,
)
from mlflow_stack.config.model import Settings
from mlflow_stack.manifests.render import render, write_manifests


def _on(settings: Settings, **gc: Any) -> Settings:
    data = settings.model_dump(mode="json", exclude={"secrets"})
    data["kubernetes"]["gc"] = {"enabled": True, **gc}
    return Settings.model_validate(data).model_copy(update={"secrets": settings.secrets})


def _objects(settings: Settings) -> list[dict[str, Any]]:
    return render(settings, include_secrets=True,
                  secret_key=SecretStr(SECRET_KEY_VALUE)).objects


def _pod(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj["spec"]["jobTemplate"]["spec"] if obj["kind"] == "CronJob" else obj["spec"]
    pod: dict[str, Any] = spec["template"]["spec"]
    return pod


def test_no_cronjob_unless_enabled(reference: Settings) -> None:
    assert "CronJob" not in kinds(render(reference).objects)


def test_the_cronjob_runs_gc_in_the_migration_jobs_pod(reference_with_secrets: Settings) -> None:
    settings = _on(reference_with_secrets, schedule="0 4 * * 0", time_zone="Europe/Berlin",
                   retention="7d", successful_jobs_history=2, failed_jobs_history=4)
    objects = _objects(settings)
    cron = find(objects, "CronJob", "mlflow-gc")
    migrate = find(objects, "Job")
    spec = cron["spec"]
    assert (spec["schedule"], spec["timeZone"], spec["concurrencyPolicy"]) == (
        "0 4 * * 0", "Europe/Berlin", "Forbid")
    assert (spec["successfulJobsHistoryLimit"], spec["failedJobsHistoryLimit"]) == (2, 4)
    pod, job_pod = _pod(cron), _pod(migrate)
    gc, job = pod["containers"][0], job_pod["containers"][0]
    assert gc["command"] == ["python", "-m", "mlflow_stack.server.gc_job"]
    assert gc["args"] == ["--backend-store-uri", job["args"][1],
                          "--artifacts-destination", "s3://mlflow/artifacts",
                          "--older-than", "7d"]
    for key in ("image", "imagePullPolicy", "securityContext", "workingDir"):
        assert gc[key] == job[key], key
    for key in ("securityContext", "imagePullSecrets", "automountServiceAccountToken",
                "enableServiceLinks", "restartPolicy"):
        assert pod[key] == job_pod[key], key
    # The server's env, reduced to what gc reads: the same Secret references, no SSO secrets.
    env = {e["name"]: e for e in gc["env"]}
    assert all(e in job["env"] for e in gc["env"])
    assert {"PGPASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
            "MLFLOW_S3_ENDPOINT_URL", "TMPDIR"} <= set(env)
    assert not [n for n in env if n.startswith("OIDC") or n == "SECRET_KEY"]
    assert env["PGPASSWORD"]["valueFrom"] == {"secretKeyRef": {
        "name": "mlflow-db-secret", "key": "DB_PASSWORD"}}
    # Never behind the Service; the shared models volume mounted (reference-era artifacts).
    for labels in (cron["spec"]["jobTemplate"]["metadata"]["labels"],
                   cron["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]):
        assert "app" not in labels and labels["app.kubernetes.io/component"] == "gc"
    assert {"tmp", "home", "models"} == {v["name"] for v in pod["volumes"]}
    assert gc["resources"] == {"requests": {"cpu": "50m", "memory": "256Mi"},
                               "limits": {"cpu": "500m", "memory": "512Mi"}}
    text = yaml.safe_dump(cron)
    for value in (*SECRET_VALUES.values(), SECRET_KEY_VALUE):
        assert value not in text


def test_time_zone_is_left_out_unless_set(reference: Settings) -> None:
    spec = find(render(_on(reference)).objects, "CronJob")["spec"]
    assert "timeZone" not in spec and spec["schedule"] == "30 3 * * *"
    assert _pod({"kind": "CronJob", "spec": spec})["containers"][0]["args"][-1] == "30d"


def test_workspaces_are_all_collected(reference: Settings) -> None:
    data = reference.model_dump(mode="json", exclude={"secrets"})
    data["server"]["workspaces"] = True
    settings = _on(Settings.model_validate(data))
    args = _pod(find(render(settings).objects, "CronJob"))["containers"][0]["args"]
    assert args[-1] == "--all-workspaces"


@pytest.mark.parametrize("version", ["1.31", "1.34"])
def test_the_cronjob_passes_strict_validation(reference_with_secrets: Settings,
                                              version: str) -> None:
    validate_strict(find(_objects(_on(reference_with_secrets, time_zone="UTC")), "CronJob"),
                    version)


def test_render_writes_it(reference: Settings, tmp_path: Path) -> None:
    written = write_manifests(render(_on(reference)), tmp_path)
    assert tmp_path / "cronjob-mlflow-gc.yaml" in written.files
    again = write_manifests(render(reference), tmp_path)
    assert again.stale == [tmp_path / "cronjob-mlflow-gc.yaml"]


def test_placement_ca_bundle_and_extras_as_the_migration_job(reference: Settings) -> None:
    data = reference.model_dump(mode="json", exclude={"secrets"})
    data["kubernetes"]["pod"] = {
        "node_selector": {"pool": "batch"}, "priority_class": "low",
        "labels": {"team": "ml"}, "extra_env": [{"name": "HTTPS_PROXY", "value": "http://p:3128"}]}
    data["kubernetes"]["ca_bundle"] = {"configmap": "corp-ca"}
    objects = render(_on(Settings.model_validate(data))).objects
    cron, migrate = find(objects, "CronJob"), find(objects, "Job")
    pod, job_pod = _pod(cron), _pod(migrate)
    assert (pod["nodeSelector"], pod["priorityClassName"]) == ({"pool": "batch"}, "low")
    template = cron["spec"]["jobTemplate"]["spec"]["template"]["metadata"]
    assert template["labels"]["team"] == "ml"
    assert "ca-bundle" in {v["name"] for v in pod["volumes"]}
    assert [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "ca-bundle"] == [
        m for m in job_pod["containers"][0]["volumeMounts"] if m["name"] == "ca-bundle"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["HTTPS_PROXY"] == "http://p:3128" and "SSL_CERT_FILE" in env
