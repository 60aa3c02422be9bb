"""Artifact deletes on an S3 server that requires Content-MD5 on DeleteObjects (the JuiceFS
gateway, as in the reference platform): refused for plain boto3, working through mlflow-stack's
`s3` artifact repository and through the server's artifact proxy."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from botocore.exceptions import ClientError
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from pydantic import SecretStr

from harness.ports import free_port
from harness.s3 import S3Server
from mlflow_stack.config.model import Settings
from mlflow_stack.config.secrets import Secrets
from mlflow_stack.local import platform
from mlflow_stack.local.state import StateDir
from mlflow_stack.progress import NullProgress
from mlflow_stack.server import s3_repository
from mlflow_stack.server.s3_repository import S3ArtifactRepository

pytestmark = pytest.mark.integration


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    name = f"md5-{uuid.uuid4().hex[:8]}"
    s3_server.client().create_bucket(Bucket=name)
    return name


def keys(s3_server: S3Server, bucket: str) -> list[str]:
    """Object keys; the gateway lists a file system, so an emptied folder stays as `dir/`."""
    listing = s3_server.client().list_objects_v2(Bucket=bucket)
    return [o["Key"] for o in listing.get("Contents", []) if not o["Key"].endswith("/")]


def test_the_gateway_refuses_delete_objects_without_content_md5(s3_server: S3Server,
                                                                bucket: str) -> None:
    """The fault this module works around (if the gateway ever accepts it, drop the repository)."""
    client = s3_server.client()
    client.put_object(Bucket=bucket, Key="a.txt", Body=b"a")
    with pytest.raises(ClientError, match="MissingContentMD5"):
        client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "a.txt"}]})
    assert keys(s3_server, bucket) == ["a.txt"]


def test_repository_deletes_on_the_gateway(s3_server: S3Server, bucket: str,
                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3_server.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    repo = get_artifact_repository(f"s3://{bucket}/run1/artifacts")
    assert isinstance(repo, S3ArtifactRepository), "the entry point must replace MLflow's s3"
    # MLflow's artifact repository API is untyped.
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text(name)
        repo.log_artifact(str(tmp_path / name), "sub")  # type: ignore[no-untyped-call]
    assert sorted(keys(s3_server, bucket)) == ["run1/artifacts/sub/a.txt",
                                               "run1/artifacts/sub/b.txt"]
    repo.delete_artifacts("sub")  # type: ignore[no-untyped-call]
    assert keys(s3_server, bucket) == []


@pytest.fixture
def server(s3_server: S3Server, bucket: str, tmp_path: Path) -> Iterator[str]:
    settings = Settings.model_validate({
        "server": {"port": free_port()},
        "artifacts": {"backend": "s3", "bucket": bucket, "endpoint_url": s3_server.endpoint_url},
    }).model_copy(update={"secrets": Secrets.model_construct(
        s3_access_key_id=SecretStr(s3_server.access_key),
        s3_secret_access_key=SecretStr(s3_server.secret_key))})
    state = StateDir(tmp_path / "state")
    result = platform.up(settings, state, NullProgress())
    try:
        yield result.record.url
    finally:
        platform.down(state)


def test_server_artifact_proxy_deletes_on_the_gateway(server: str, s3_server: S3Server,
                                                      bucket: str) -> None:
    path = "1/abc/artifacts/model/weights.bin"
    url = f"{server}/api/2.0/mlflow-artifacts/artifacts/{path}"
    assert httpx.put(url, content=b"x" * 1024, timeout=60).status_code == 200
    assert keys(s3_server, bucket) == [f"artifacts/{path}"]
    deleted = httpx.delete(url, timeout=60)
    assert deleted.status_code == 200, deleted.text
    assert keys(s3_server, bucket) == []


# --------------------------------------------------------------------------------------------
# Streamed uploads (MLflow's StreamUploadMixin): the request body straight to S3


class _OneWay:
    """A request body as the handlers see it: read() only, no seek, no length."""

    def __init__(self, data: bytes, piece: int) -> None:
        self.data, self.piece, self.at = data, piece, 0

    def read(self, size: int = -1) -> bytes:
        size = self.piece if size < 0 else min(size, self.piece)
        chunk = self.data[self.at:self.at + size]
        self.at += len(chunk)
        return chunk


def _run(coroutine: Coroutine[Any, Any, None]) -> None:
    """On a loop of its own thread (another test may have left one running in this one)."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coroutine).result()


@pytest.fixture
def stream_repo(s3_server: S3Server, bucket: str,
                monkeypatch: pytest.MonkeyPatch) -> S3ArtifactRepository:
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3_server.endpoint_url)
    make: Any = S3ArtifactRepository  # MLflow's constructor is untyped
    repo: S3ArtifactRepository = make(f"s3://{bucket}/exp/run/artifacts",
                                      access_key_id=s3_server.access_key,
                                      secret_access_key=s3_server.secret_key)
    return repo


def test_a_stream_is_uploaded_as_mlflow_would_upload_the_file(
        stream_repo: S3ArtifactRepository, s3_server: S3Server, bucket: str) -> None:
    data = os.urandom(s3_repository.UPLOAD_PART * 2 + 12345)  # three parts
    stream_repo.log_artifact_from_stream(cast(Any, _OneWay(data, 65536)), "dir/model.json",
                                         artifact_path="models/m1")
    got = s3_server.client().get_object(Bucket=bucket, Key="exp/run/artifacts/models/m1/model.json")
    assert got["Body"].read() == data
    assert got["ContentType"] == "application/json"  # guessed from the name, as MLflow does
    small = b"tiny"
    stream_repo.log_artifact_from_stream(cast(Any, _OneWay(small, 2)), "notes.txt")
    assert s3_server.client().get_object(
        Bucket=bucket, Key="exp/run/artifacts/notes.txt")["Body"].read() == small


def test_an_async_stream_is_uploaded_with_bounded_buffering(
        stream_repo: S3ArtifactRepository, s3_server: S3Server, bucket: str) -> None:
    data = os.urandom(s3_repository.UPLOAD_PART + 999)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 70000):
            yield data[start:start + 70000]

    _run(stream_repo.log_artifact_from_async_stream(chunks(), "weights.bin"))
    got = s3_server.client().get_object(Bucket=bucket, Key="exp/run/artifacts/weights.bin")
    assert got["Body"].read() == data


def test_a_failed_async_upload_raises_instead_of_waiting(s3_server: S3Server,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3_server.endpoint_url)
    make: Any = S3ArtifactRepository
    repo = make(f"s3://no-such-bucket-{uuid.uuid4().hex[:6]}/x",
                access_key_id=s3_server.access_key, secret_access_key=s3_server.secret_key)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(3 * s3_repository.UPLOAD_PART // 65536):  # more than the pipe holds
            yield b"x" * 65536

    async def upload() -> None:
        await asyncio.wait_for(repo.log_artifact_from_async_stream(body(), "f.bin"), 120)

    with pytest.raises(ClientError, match="NoSuchBucket"):
        _run(upload())
