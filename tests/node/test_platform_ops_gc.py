"""kubernetes.gc on the real node (after test_platform_ha.py, on the session's
`reference_platform`): a user logs runs with artifacts and deletes some of them and an
experiment; gc is switched on and applied, its CronJob is started now (a Job from its template,
as `kubectl create job --from=cronjob/mlflow-gc` makes it), and afterwards SeaweedFS's bucket no
longer holds the deleted runs' artifacts while the kept runs' are untouched, and the tracking
store no longer has the deleted runs. Switched off again, apply removes the CronJob."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest
import yaml

from harness.node_platform import NAMESPACE, Deployed, wait_for
from mlflow_stack.config.loader import load_config

pytestmark = pytest.mark.integration

CRONJOB = "mlflow-gc"
BUCKET = "mlflow"
CRON_PATH = f"/apis/batch/v1/namespaces/{NAMESPACE}/cronjobs/{CRONJOB}"

# As a data scientist: runs with artifacts in two experiments; two runs deleted, the second
# experiment deleted whole.
LOG = """
import json, os, sys, tempfile
import mlflow
from mlflow.tracking import MlflowClient
tag = sys.argv[1]
runs = {}
def log(experiment, names):
    mlflow.set_experiment(experiment)
    for name in names:
        with mlflow.start_run(run_name=name) as run, tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "weights.bin")
            with open(path, "wb") as handle:
                handle.write(os.urandom(64 << 10))
            mlflow.log_artifact(path, "model")
            mlflow.log_text(name, "notes/name.txt")
        runs[name] = run.info.run_id
    return mlflow.get_experiment_by_name(experiment).experiment_id
kept_exp = log(f"gc-kept-{tag}", ["kept-1", "kept-2", "deleted-1", "deleted-2"])
gone_exp = log(f"gc-gone-{tag}", ["in-deleted-experiment"])
client = MlflowClient()
client.delete_run(runs["deleted-1"])
client.delete_run(runs["deleted-2"])
client.delete_experiment(gone_exp)
print("RESULT " + json.dumps({"runs": runs, "kept_exp": kept_exp, "gone_exp": gone_exp}))
"""
GONE = ("deleted-1", "deleted-2", "in-deleted-experiment")
KEPT = ("kept-1", "kept-2")


def _config_with_gc(platform: Deployed, **gc: Any) -> Any:
    """The config applied last, as a native config with kubernetes.gc changed."""
    settings = load_config(platform.config, require_secrets=False).settings
    data = settings.model_dump(mode="json", exclude={"secrets"}, exclude_defaults=True)
    data.setdefault("kubernetes", {})["gc"] = gc
    path = platform.home / "gc.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _objects(platform: Deployed, run_id: str) -> dict[str, str]:
    """The run's artifact objects in the bucket and their ETags."""
    def listing(client: Any) -> dict[str, str]:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        return {o["Key"]: o["ETag"] for page in pages for o in page.get("Contents", [])
                if f"/{run_id}/artifacts/" in o["Key"] and not o["Key"].endswith("/")}
    result: dict[str, str] = platform.s3.s3(listing)
    return result


def _cron_status(platform: Deployed) -> int:
    with platform.node.api.admin_http() as http:
        return http.get(CRON_PATH).status_code


def _run_now(platform: Deployed) -> str:
    """A Job from the CronJob's template, owned by it (what `kubectl create job --from=` does)."""
    cron = platform.get(CRON_PATH)
    template = cron["spec"]["jobTemplate"]
    name = f"{CRONJOB}-manual-{int(time.time())}"
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": name, "namespace": NAMESPACE,
                        "labels": template["metadata"].get("labels", {}),
                        "annotations": {"cronjob.kubernetes.io/instantiate": "manual"},
                        "ownerReferences": [{
                            "apiVersion": "batch/v1", "kind": "CronJob", "name": CRONJOB,
                            "uid": cron["metadata"]["uid"], "controller": True}]},
           "spec": template["spec"]}
    with platform.node.api.admin_http() as http:
        response = http.post(f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs", json=job)
        assert response.status_code == 201, response.text
    return name


def _job_log(platform: Deployed, job: str) -> str:
    pods = platform.get(f"/api/v1/namespaces/{NAMESPACE}/pods?labelSelector=job-name%3D{job}")
    logs = []
    with platform.node.api.admin_http() as http:
        for pod in pods["items"]:
            name = pod["metadata"]["name"]
            logs.append(http.get(f"/api/v1/namespaces/{NAMESPACE}/pods/{name}/log").text)
    return "\n".join(logs)


def _finished(platform: Deployed, job: str) -> str | None:
    status = platform.get(f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{job}").get("status", {})
    if status.get("succeeded"):
        return "succeeded"
    conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
    return "failed" if conditions.get("Failed") == "True" else None


def _tracking_rows(platform: Deployed, runs: dict[str, str],
                   experiments: list[str]) -> tuple[dict[str, str], set[str]]:
    """(run id -> lifecycle stage, experiment ids) still in MLflow's database."""
    with psycopg.connect(platform.postgres.server.dsn("mlflow")) as conn:
        stages: dict[Any, Any] = dict(conn.execute("SELECT run_uuid, lifecycle_stage FROM runs "
                                   "WHERE run_uuid = ANY(%s)", (list(runs.values()),)))
        found = {str(r[0]) for r in conn.execute(
            "SELECT experiment_id FROM experiments WHERE experiment_id = ANY(%s)",
            ([int(e) for e in experiments],))} if experiments else set()
    return {str(k): str(v) for k, v in stages.items()}, found


def _grants(platform: Deployed, experiment: str) -> int:
    with psycopg.connect(platform.postgres.server.dsn("mlflow_auth")) as conn:
        row = conn.execute("SELECT count(*) FROM experiment_permissions "
                           "WHERE experiment_id = %s", (experiment,)).fetchone()
    return int(row[0]) if row else 0


def test_gc_removes_deleted_runs_artifacts_and_apply_removes_the_cronjob(
        reference_platform: Deployed) -> None:
    platform = reference_platform
    original = platform.config
    user = platform.new_user("gc-user")  # an ordinary user: MANAGE on what they create
    logged = platform.run_python(LOG, str(int(time.time())), env=platform.user_env(user))
    runs: dict[str, str] = logged["runs"]
    before = {name: _objects(platform, run_id) for name, run_id in runs.items()}
    assert all(len(objects) == 2 for objects in before.values()), before
    stages, _ = _tracking_rows(platform, runs, [])
    assert {stages[runs[n]] for n in GONE} == {"deleted"}, stages
    assert _grants(platform, logged["gone_exp"]) >= 1  # the creator's MANAGE
    assert _cron_status(platform) == 404, "gc is off by default"

    # A schedule that does not come round during the test: the run is started by hand.
    config = _config_with_gc(platform, enabled=True, schedule="0 3 1 1 *", time_zone="UTC",
                             retention="1s")
    try:
        applied = platform.cli("apply", "-c", str(config))
        out = applied.stdout + applied.stderr
        assert applied.returncode == 0, out
        assert f"create CronJob {NAMESPACE}/{CRONJOB}" in out, out
        cron = platform.get(CRON_PATH)
        assert cron["spec"]["concurrencyPolicy"] == "Forbid"
        again = platform.cli("apply", "-c", str(config))
        assert again.returncode == 0 and "No changes" in again.stdout, again.stdout

        job = _run_now(platform)
        outcome = wait_for(lambda: _finished(platform, job), f"gc Job {job} finished",
                           timeout=600, interval=3)
        log = _job_log(platform, job)
        assert outcome == "succeeded", log
        # mlflow-stack's S3 repository (Content-MD5 on DeleteObjects) did the deleting.
        assert "deleted with mlflow_stack.server.s3_repository.S3ArtifactRepository" in log, log
        for name in GONE:
            assert f"Run with ID {runs[name]} has been permanently deleted" in log, log
        assert f"Experiment with ID {logged['gone_exp']} has been permanently deleted" in log

        after = {name: _objects(platform, run_id) for name, run_id in runs.items()}
        for name in GONE:
            assert after[name] == {}, (name, after[name])
        for name in KEPT:
            assert after[name] == before[name], name  # same keys, same contents (ETags)
        stages, experiments = _tracking_rows(platform, runs,
                                             [logged["kept_exp"], logged["gone_exp"]])
        assert stages == {runs[n]: "active" for n in KEPT}, stages
        assert experiments == {logged["kept_exp"]}, experiments
        # mlflow-oidc-auth's grants on the removed experiment stay behind (nothing removes
        # them); PostgreSQL never hands out that experiment id again, so they grant nothing.
        assert _grants(platform, logged["gone_exp"]) >= 1
        # The CronJob's Jobs are its own: apply leaves them alone.
        replan = platform.cli("plan", "-c", str(config))
        assert replan.returncode == 0 and job not in replan.stdout, replan.stdout
    finally:
        back = platform.cli("apply", "-c", str(original))
        assert back.returncode == 0, back.stdout + back.stderr
    out = back.stdout + back.stderr
    assert f"delete CronJob {NAMESPACE}/{CRONJOB}" in out, out
    assert _cron_status(platform) == 404
    # Its Jobs go with it (garbage collector: they are owned by the CronJob).
    wait_for(lambda: not platform.get(
        f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs?labelSelector="
        "app.kubernetes.io%2Fcomponent%3Dgc")["items"], "the gc Jobs deleted with the CronJob",
        timeout=120)
