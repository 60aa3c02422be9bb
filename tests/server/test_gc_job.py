"""The gc CronJob's program against a real S3 server that requires Content-MD5 on DeleteObjects
(the JuiceFS gateway): deleted runs' proxied artifacts are removed from the bucket, kept runs'
stay, the deleted runs leave the tracking store. Plain `mlflow gc` with the same options cannot
delete them (why server.gc_job exists)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from mlflow.exceptions import MlflowException
from mlflow.store.tracking import sqlalchemy_store

from harness.s3 import S3Server
from mlflow_stack.server.gc_job import stored_uri

pytestmark = pytest.mark.integration

PREFIX = "artifacts"
SqlAlchemyStore: Any = sqlalchemy_store.SqlAlchemyStore  # MLflow's store API is untyped


def _env(s3_server: S3Server) -> dict[str, str]:
    import os

    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "VIRTUAL_ENV")}
    return {**keep, "MLFLOW_S3_ENDPOINT_URL": s3_server.endpoint_url,
            "AWS_ACCESS_KEY_ID": s3_server.access_key,
            "AWS_SECRET_ACCESS_KEY": s3_server.secret_key, "AWS_DEFAULT_REGION": "us-east-1",
            "MLFLOW_DISABLE_TELEMETRY": "true"}


def _keys(s3_server: S3Server, bucket: str) -> list[str]:
    listing = s3_server.client().list_objects_v2(Bucket=bucket)
    return sorted(o["Key"] for o in listing.get("Contents", []) if not o["Key"].endswith("/"))


def _platform_data(s3_server: S3Server, tmp_path: Path) -> dict[str, Any]:
    """A store as the server leaves it (experiment under mlflow-artifacts:/, artifacts under
    the destination), two runs with an artifact each, one of them deleted."""
    bucket = f"gc-{uuid.uuid4().hex[:8]}"
    client = s3_server.client()
    client.create_bucket(Bucket=bucket)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    store = SqlAlchemyStore(uri, "mlflow-artifacts:/")
    exp = store.create_experiment("gc")
    runs = {}
    for name in ("kept", "deleted"):
        run = store.create_run(exp, "user", 0, [], name)
        assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
        # Where the server's artifact proxy puts what a client logs.
        key = stored_uri(run.info.artifact_uri, f"s3://{bucket}/{PREFIX}").removeprefix(
            f"s3://{bucket}/") + "/model/weights.bin"
        client.put_object(Bucket=bucket, Key=key, Body=name.encode())
        runs[name] = (run.info.run_id, key)
    store.delete_run(runs["deleted"][0])
    store.engine.dispose()
    return {"bucket": bucket, "uri": uri, "runs": runs}


def test_gc_removes_deleted_runs_and_their_artifacts_only(s3_server: S3Server,
                                                          tmp_path: Path) -> None:
    data = _platform_data(s3_server, tmp_path)
    bucket, runs = data["bucket"], data["runs"]
    assert _keys(s3_server, bucket) == sorted(k for _, k in runs.values())
    result = subprocess.run(
        [sys.executable, "-m", "mlflow_stack.server.gc_job", "--backend-store-uri", data["uri"],
         "--artifacts-destination", f"s3://{bucket}/{PREFIX}", "--older-than", "0s"],
        env=_env(s3_server), capture_output=True, text=True, timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert f"Run with ID {runs['deleted'][0]} has been permanently deleted" in out, out
    assert "deleted with mlflow_stack.server.s3_repository.S3ArtifactRepository" in out, out
    assert _keys(s3_server, bucket) == [runs["kept"][1]]
    store = SqlAlchemyStore(data["uri"], "mlflow-artifacts:/")
    assert store.get_run(runs["kept"][0]).info.lifecycle_stage == "active"
    with pytest.raises(MlflowException, match="not found"):
        store.get_run(runs["deleted"][0])
    store.engine.dispose()


def test_plain_mlflow_gc_cannot_delete_proxied_artifacts(s3_server: S3Server,
                                                         tmp_path: Path) -> None:
    """Upstream behaviour the program works around: `--artifacts-destination` does not say
    where existing runs' mlflow-artifacts URIs live (if this ever passes, gc_job can go)."""
    data = _platform_data(s3_server, tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "mlflow", "gc", "--backend-store-uri", data["uri"],
         "--artifacts-destination", f"s3://{data['bucket']}/{PREFIX}", "--older-than", "0s"],
        env={**_env(s3_server), "MLFLOW_TRACKING_URI": data["uri"]},
        capture_output=True, text=True, timeout=300)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "tracking URI must be a valid http or https URI" in result.stderr, result.stderr
    assert data["runs"]["deleted"][1] in _keys(s3_server, data["bucket"])


def test_gc_job_refuses_without_the_stores(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "mlflow_stack.server.gc_job",
                             "--older-than", "1d"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "--backend-store-uri and --artifacts-destination are required" in result.stderr


@pytest.mark.parametrize(("workspace", "expected"), [
    (None, "s3://b/artifacts/1/r1/artifacts"),
    ("default", "s3://b/artifacts/1/r1/artifacts"),  # legacy layout: no prefix
    ("team-a", "s3://b/artifacts/workspaces/team-a/1/r1/artifacts"),
])
def test_stored_uri_is_where_the_server_puts_a_workspaces_artifacts(
        monkeypatch: pytest.MonkeyPatch, workspace: str | None, expected: str) -> None:
    from mlflow.utils.workspace_context import WorkspaceContext

    if workspace is None:
        monkeypatch.setenv("MLFLOW_ENABLE_WORKSPACES", "false")
        assert stored_uri("mlflow-artifacts:/1/r1/artifacts", "s3://b/artifacts/") == expected
        return
    monkeypatch.setenv("MLFLOW_ENABLE_WORKSPACES", "true")
    with WorkspaceContext(workspace):
        assert stored_uri("mlflow-artifacts:/1/r1/artifacts", "s3://b/artifacts") == expected
