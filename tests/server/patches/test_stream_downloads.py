"""Downloads through the server stream from S3 (server/patches/stream_downloads.py).

Live: the platform on real PostgreSQL and S3 (JuiceFS gateway), MLflow's own app (its FastAPI
download route); a plain MLflow client in its own process, at MLflow's defaults, downloads a
256 MiB artifact, which is under MLflow's multipart threshold and so comes through the server.
The server's tree must not grow by 64 MiB nor hold or write a copy of the file; MLflow's own
handler writes a whole temporary copy first.

In process: the Flask view the SSO app serves, against the same S3, answers what MLflow's view
answers (bytes, type, attachment headers) without a temporary directory, and leaves ranges,
directories and missing files to MLflow's view.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow.server import app as flask_app
from mlflow.server import handlers
from mlflow.tracking import MlflowClient

from harness.artifact_client import client_env, file_sha256, run_transfer
from harness.platforms import s3_platform_settings
from harness.postgres import PostgresServer
from harness.s3 import S3Server
from harness.server_watch import ServerWatch, prime_workers
from mlflow_stack.config.model import Settings
from mlflow_stack.local import platform
from mlflow_stack.local.state import StateDir
from mlflow_stack.progress import NullProgress
from mlflow_stack.server.patches import stream_downloads
from mlflow_stack.server.s3_repository import S3ArtifactRepository

pytestmark = pytest.mark.integration
MIB = 2**20
SIZE = 256 * MIB  # under MLflow's 500 MiB multipart-download threshold: through the server
MEMORY_LIMIT = 64 * MIB
FILE_LIMIT = 16 * MIB
BUCKET = f"streamed-{uuid.uuid4().hex[:8]}"


def _put_random(s3_server: S3Server, key: str, size: int) -> str:
    """An object of ``size`` random bytes at ``key``; its SHA-256."""
    digest = hashlib.sha256()
    s3 = s3_server.client()
    with tempfile.TemporaryFile() as f:
        for _ in range(size // (16 * MIB)):
            piece = os.urandom(16 * MIB)
            digest.update(piece)
            f.write(piece)
        f.seek(0)
        s3.upload_fileobj(f, BUCKET, key)
    return digest.hexdigest()


@pytest.fixture
def platform_on_s3(tmp_path: Path, postgres_server: PostgresServer,
                   s3_server: S3Server) -> Iterator[tuple[Settings, StateDir, int]]:
    settings = s3_platform_settings(postgres_server, s3_server, BUCKET,
                                    f"streamed_{uuid.uuid4().hex[:8]}")
    state = StateDir(tmp_path / "state")
    result = platform.up(settings, state, NullProgress())
    try:
        yield settings, state, result.record.pid
    finally:
        platform.down(state)


def test_a_plain_client_s_download_streams_through_the_server(
        platform_on_s3: tuple[Settings, StateDir, int], s3_server: S3Server,
        tmp_path: Path) -> None:
    settings, state, pid = platform_on_s3
    client = MlflowClient(settings.local_url)
    experiment = client.create_experiment(f"streamed-{uuid.uuid4().hex[:6]}")
    run = client.create_run(experiment)
    # mlflow-artifacts:/<experiment>/<run>/artifacts -> <destination>/<experiment>/<run>/...
    relative = run.info.artifact_uri.removeprefix("mlflow-artifacts:/").strip("/")
    prefix = settings.artifacts.destination.removeprefix(f"s3://{BUCKET}").strip("/")
    key = "/".join(part for part in (prefix, relative, "model.bin") if part)
    digest = _put_random(s3_server, key, SIZE)
    url = f"{settings.local_url}/api/2.0/mlflow-artifacts/artifacts/{relative}/model.bin"

    with httpx.stream("GET", url, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-length"] == str(SIZE)
        assert response.headers["content-type"] == "application/octet-stream"
        assert response.headers["content-disposition"] == \
            handlers._content_disposition_attachment("model.bin")
        assert response.headers["x-content-type-options"] == "nosniff"
    # What MLflow's route answers for what is no file is unchanged.
    missing = httpx.get(url.replace("model.bin", "nope.bin"), timeout=60)
    assert missing.status_code >= 400

    dst = tmp_path / "download"
    dst.mkdir()
    env = client_env(settings.local_url, tmp_path / "client-home",
                     {"ARTIFACT_CLIENT_REPO": "mlflow"})
    prime_workers(settings.local_url, pid)
    with ServerWatch(pid, [state.root], ignore_files={state.log_file}) as watch:
        down = run_transfer("download", env, run.info.run_id, "model.bin", str(dst))
    report = watch.report
    explain = (f"USS +{report.uss_growth / MIB:.1f} MiB, largest open file "
               f"{report.largest_open_file.size / MIB:.1f} MiB "
               f"{report.largest_open_file.path!r}, largest file in the state dir "
               f"{report.largest_dir_file.size / MIB:.1f} MiB {report.largest_dir_file.path!r}")
    print(f"256 MiB through the server in {down.seconds:.1f} s: {explain}")
    assert file_sha256(Path(down.path)) == digest
    assert report.samples >= 2, "the transfer was too quick to watch"
    assert report.largest_open_file.size < FILE_LIMIT, explain
    assert report.largest_dir_file.size < FILE_LIMIT, explain
    assert report.uss_growth < MEMORY_LIMIT, explain


# --------------------------------------------------------------------------------------------
# The Flask view (the SSO app's), in process


@pytest.fixture
def flask_repo(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    s3 = s3_server.client()
    if BUCKET not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket=BUCKET)
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3_server.endpoint_url)
    monkeypatch.setenv("_MLFLOW_SERVER_SERVE_ARTIFACTS", "true")
    make: Any = S3ArtifactRepository  # MLflow's constructor is untyped
    repo = make(f"s3://{BUCKET}/inproc", access_key_id=s3_server.access_key,
                secret_access_key=s3_server.secret_key)
    monkeypatch.setattr(handlers, "_artifact_repo", repo)
    yield repo


def _count_temp_dirs(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """From now on, every temporary directory made (MLflow's handlers copy files into one)."""
    made: list[object] = []
    real = tempfile.TemporaryDirectory

    def counted(*args: Any, **kwargs: Any) -> Any:
        made.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryDirectory", counted)
    return made


def _get(view: Any, path: str, headers: dict[str, str] | None = None) -> Any:
    url = f"/api/2.0/mlflow-artifacts/artifacts/{path}"
    with flask_app.test_request_context(url, headers=headers or {}):
        response = flask_app.make_response(view(path))
        body = b"".join(c if isinstance(c, bytes) else c.encode() for c in response.response) \
            if response.status_code < 300 else response.get_data()
        response.close()
    return response, body


def test_the_flask_view_streams_what_mlflow_s_view_sends(
        flask_repo: Any, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = os.urandom(3 * MIB + 17)
    s3 = s3_server.client()
    s3.put_object(Bucket=BUCKET, Key="inproc/run/artifacts/plot ü.png", Body=payload)
    original = handlers._download_artifact
    streamed = stream_downloads.flask_view(original)
    path = "run/artifacts/plot ü.png"

    mlflow_response, mlflow_body = _get(original, path)
    temp_dirs = _count_temp_dirs(monkeypatch)
    response, body = _get(streamed, path)
    assert temp_dirs == []  # no copy
    assert body == mlflow_body == payload
    for header in ("Content-Type", "Content-Disposition", "X-Content-Type-Options",
                   "Content-Length", "Cache-Control", "Accept-Ranges"):
        assert response.headers.get(header) == mlflow_response.headers.get(header), header

    # A range is MLflow's view's (from its copy), as are a directory and a missing file.
    partial, part = _get(streamed, path, {"Range": "bytes=10-19"})
    assert partial.status_code == 206 and part == payload[10:20]
    assert len(temp_dirs) == 1
    for other in ("run/artifacts", "run/artifacts/missing.bin", "../escape"):
        got, got_body = _get(streamed, other)
        expected, expected_body = _get(original, other)
        assert (got.status_code, got_body) == (expected.status_code, expected_body), other
        assert got.status_code >= 400, other


def test_the_ui_s_get_artifact_streams_what_mlflow_sends(
        flask_repo: Any, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = os.urandom(2 * MIB + 5)
    s3_server.client().put_object(Bucket=BUCKET, Key="inproc/run/artifacts/model.pkl",
                                  Body=payload)
    original = getattr(handlers._send_artifact, "__wrapped__", handlers._send_artifact)
    streamed = stream_downloads.send_artifact(original)
    url = "/get-artifact?path=model.pkl&run_uuid=run"

    def answer(send: Any, path: str) -> tuple[Any, bytes]:
        with flask_app.test_request_context(url):
            response = flask_app.make_response(send(flask_repo, path))
            body = b"".join(c if isinstance(c, bytes) else c.encode()
                            for c in response.response)
            response.close()
        return response, body

    expected, expected_body = answer(original, "run/artifacts/model.pkl")
    temp_dirs = _count_temp_dirs(monkeypatch)
    got, body = answer(streamed, "run/artifacts/model.pkl")
    assert temp_dirs == [] and body == expected_body == payload
    for header in ("Content-Type", "Content-Disposition", "X-Content-Type-Options",
                   "Content-Length"):
        assert got.headers.get(header) == expected.headers.get(header), header


def test_both_apps_download_through_it() -> None:
    from mlflow.server import artifact_router

    from mlflow_stack.server import plain_app, sso_app

    assert sso_app.app is not None
    assert getattr(flask_app.view_functions["_download_artifact"], stream_downloads.MARKER)
    assert getattr(handlers._send_artifact, stream_downloads.MARKER)  # the UI's get-artifact
    routes = [r for r in plain_app.app.router.routes
              if getattr(r, "path", "").endswith("/mlflow-artifacts/artifacts/{artifact_path:path}")
              and "GET" in getattr(r, "methods", ())]
    assert len(routes) == 2
    assert all(r.endpoint.__wrapped__ is artifact_router.download_artifact for r in routes)
    # Matched before MLflow's own (flask_first's route claims only what no route matches).
    assert [r for r in plain_app.app.router.routes if not getattr(r, "flask_first", False)
            ][:2] == routes
    # The SSO app has no such route: its downloads go through the Flask view (and its checks).
    assert not [r for r in sso_app.app.router.routes
                if getattr(r, "path", "").startswith("/api/2.0/mlflow-artifacts")]
