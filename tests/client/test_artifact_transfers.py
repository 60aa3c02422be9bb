"""mlflow_stack.client.artifacts: range sizing, env defaults, and the streamed ranged download
against the real S3 server (expired URLs renewed, failures reported, partial files removed).

The whole path through the platform (server-info discovery, presigned multipart upload, 1 GiB
both ways) is tested in tests/local/test_large_artifacts.py.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from mlflow.entities.presigned_download import PresignedDownloadUrlResponse
from mlflow.exceptions import MlflowException

from harness.s3 import S3Server
from harness.waits import wait_until
from mlflow_stack.client import artifacts
from mlflow_stack.client.artifacts import (
    ARTIFACT_TRANSFER_ENV,
    StreamingArtifactsRepository,
    apply_transfer_defaults,
    range_size,
)

MIB = 2**20
BUCKET = "client-transfers"


def test_range_size_keeps_every_thread_busy_within_bounds() -> None:
    assert range_size(1) == artifacts.MIN_RANGE_SIZE
    assert range_size(1024 * MIB) == 32 * MIB  # 32 ranges for 8 threads
    assert range_size(100 * 1024 * MIB) == artifacts.MAX_RANGE_SIZE
    assert all(range_size(n * MIB) % MIB == 0 for n in (3, 333, 777, 5000))


def test_apply_transfer_defaults_keeps_what_the_user_set() -> None:
    env = {"MLFLOW_MULTIPART_DOWNLOAD_CHUNK_SIZE": "1234"}
    applied = apply_transfer_defaults(env)
    assert env["MLFLOW_MULTIPART_DOWNLOAD_CHUNK_SIZE"] == "1234"
    assert "MLFLOW_MULTIPART_DOWNLOAD_CHUNK_SIZE" not in applied
    assert env["MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE"] == ARTIFACT_TRANSFER_ENV[
        "MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE"]


@pytest.fixture
def s3_object(s3_server: S3Server) -> Iterator[tuple[S3Server, str, bytes]]:
    s3 = s3_server.client()
    if BUCKET not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket=BUCKET)
    data = os.urandom(20 * MIB + 12345)  # not a multiple of the range size
    key = f"obj-{time.monotonic_ns()}.bin"
    s3.put_object(Bucket=BUCKET, Key=key, Body=data)
    yield s3_server, key, data
    s3.delete_object(Bucket=BUCKET, Key=key)


def _presigned(server: S3Server, key: str, expires: int) -> PresignedDownloadUrlResponse:
    url = server.client().generate_presigned_url(
        "get_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=expires)
    return PresignedDownloadUrlResponse(url=url, headers={}, file_size=None)


def _repo() -> StreamingArtifactsRepository:
    # No request is made to this server: the test hands out the presigned URLs itself.
    return StreamingArtifactsRepository("mlflow-artifacts:/1/run/artifacts",
                                        tracking_uri="http://127.0.0.1:9")


@pytest.mark.integration
def test_streamed_download_renews_an_expired_url(
    s3_object: tuple[S3Server, str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, key, data = s3_object
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    monkeypatch.setenv("MLFLOW_MULTIPART_DOWNLOAD_CHUNK_SIZE", str(4 * MIB))  # 6 ranges
    repo = _repo()
    renewed: list[str] = []

    def fresh(path: str) -> PresignedDownloadUrlResponse:
        renewed.append(path)
        return _presigned(server, key, 60)

    monkeypatch.setattr(repo, "_get_presigned_download_url", fresh)
    expired = _presigned(server, key, 1)
    # Until the S3 server refuses it (one byte per try; the Range header is not signed).
    assert wait_until(lambda: httpx.get(expired.url, headers={"Range": "bytes=0-0"},
                                        timeout=10).status_code == 403, timeout=15), \
        "the S3 server still serves a presigned URL 15 s after its 1 s expiry"
    dst = tmp_path / "model.bin"
    repo._multipart_download(expired, "model.bin", str(dst), len(data), 4 * MIB)
    assert renewed == ["model.bin"]
    assert dst.read_bytes() == data
    dst.unlink()


@pytest.mark.integration
def test_streamed_download_gives_up_and_removes_the_partial_file(
    s3_object: tuple[S3Server, str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, _, data = s3_object
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    repo = _repo()
    missing = _presigned(server, "no-such-object.bin", 60)
    monkeypatch.setattr(repo, "_get_presigned_download_url", lambda path: missing)
    dst = tmp_path / "model.bin"
    with pytest.raises(MlflowException, match=r"after 1 retries: HTTP 404 from the object store"):
        repo._multipart_download(missing, "model.bin", str(dst), len(data), 0)
    assert not dst.exists()


@pytest.mark.integration
def test_streamed_download_logs_each_ranges_timings_at_debug(
    s3_object: tuple[S3Server, str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # bench/artifact_io.py reads these records to show where a slow download's time went.
    server, key, data = s3_object
    monkeypatch.setenv("MLFLOW_MULTIPART_DOWNLOAD_CHUNK_SIZE", str(4 * MIB))  # 6 ranges
    dst = tmp_path / "model.bin"
    url = _presigned(server, key, 60)
    with caplog.at_level(logging.DEBUG, logger="mlflow_stack.client.artifacts"):
        _repo()._multipart_download(url, "model.bin", str(dst), len(data), 4 * MIB)
    assert dst.read_bytes() == data
    ranges = [r for r in caplog.records if hasattr(r, "range_bytes")]
    assert sorted(r.range_bytes for r in ranges) == sorted(
        [4 * MIB] * 5 + [len(data) - 5 * 4 * MIB])
    assert all(r.__dict__["range_headers_s"] >= 0 and r.__dict__["range_body_s"] >= 0
               for r in ranges)
    assert all("X-Amz-Signature" not in r.getMessage() for r in caplog.records)


@pytest.mark.integration
def test_streamed_download_logs_nothing_per_range_above_debug(
    s3_object: tuple[S3Server, str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, key, data = s3_object
    monkeypatch.setenv("MLFLOW_MULTIPART_DOWNLOAD_CHUNK_SIZE", str(4 * MIB))
    dst = tmp_path / "model.bin"
    with caplog.at_level(logging.INFO, logger="mlflow_stack.client.artifacts"):
        _repo()._multipart_download(_presigned(server, key, 60), "model.bin", str(dst),
                                    len(data), 4 * MIB)
    assert dst.read_bytes() == data
    assert not [r for r in caplog.records if hasattr(r, "range_bytes")]
