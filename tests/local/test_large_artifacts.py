"""A 1 GiB artifact goes both ways through the platform without passing through the server.

The platform runs on the harness's real PostgreSQL and S3 (JuiceFS gateway). The MLflow client
runs in its own process with MLFLOW_TRACKING_URI only: no AWS_* variables and an empty HOME, so
it can reach S3 only through the presigned URLs the server hands out. While the file goes up and
down, the server's process tree is watched: its memory (sum of USS over all processes) must grow
by less than 64 MiB, and no process of it may hold or write a copy of the file (open files via
/proc/<pid>/fd, which also sees unlinked temp files; every file under the state dir, which
holds its TMPDIR).

Run once with MLflow's own client at its defaults (the server-side guarantee does not depend on
our client package) and once with mlflow_stack.client.artifacts.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from harness.artifact_client import client_env, file_sha256, run_transfer
from harness.platforms import s3_platform_settings
from harness.postgres import PostgresServer
from harness.s3 import S3Server
from harness.server_watch import ServerWatch, WatchReport, prime_workers, sample_memory
from mlflow_stack.config.model import Settings
from mlflow_stack.local import platform
from mlflow_stack.local.state import StateDir
from mlflow_stack.progress import NullProgress

pytestmark = pytest.mark.integration

MIB = 2**20
SIZE = 1024 * MIB
MEMORY_LIMIT = 64 * MIB
# Anything the server writes or holds open of this size would be (part of) a copy of the file;
# its own files (metrics, logs, sockets) stay far below it.
FILE_LIMIT = 16 * MIB
BUCKET = "large-artifacts"


@dataclass
class Platform:
    settings: Settings
    state: StateDir
    pid: int


@pytest.fixture
def platform_on_s3(tmp_path: Path, postgres_server: PostgresServer,
                   s3_server: S3Server) -> Iterator[Platform]:
    settings = s3_platform_settings(postgres_server, s3_server, BUCKET,
                                    f"large_{uuid.uuid4().hex[:8]}")
    state = StateDir(tmp_path / "state")
    result = platform.up(settings, state, NullProgress())
    try:
        yield Platform(settings, state, result.record.pid)
    finally:
        platform.down(state)


def _write_random(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as f:
        for _ in range(size // (16 * MIB)):
            piece = os.urandom(16 * MIB)
            digest.update(piece)
            f.write(piece)
    return digest.hexdigest()


def _explain(report: WatchReport) -> str:
    return (f"USS +{report.uss_growth / MIB:.1f} MiB (RSS +{report.rss_growth / MIB:.1f} MiB) "
            f"over {report.baseline.uss / MIB:.0f} MiB in {report.baseline.processes} processes; "
            f"largest open file {report.largest_open_file.size / MIB:.1f} MiB "
            f"{report.largest_open_file.path!r}; largest file in the state dir "
            f"{report.largest_dir_file.size / MIB:.1f} MiB {report.largest_dir_file.path!r}")


@pytest.mark.parametrize("client_repo", ["mlflow", "stack"])
def test_1gib_artifact_round_trip_bypasses_server_memory_and_disk(
    platform_on_s3: Platform, s3_server: S3Server, tmp_path: Path, client_repo: str,
) -> None:
    p = platform_on_s3
    src = tmp_path / "model.bin"
    dst_dir = tmp_path / "download"
    dst_dir.mkdir()
    env = client_env(p.settings.local_url, tmp_path / "client-home",
                     {"ARTIFACT_CLIENT_REPO": client_repo})
    assert not [k for k in env if k.startswith("AWS_")]
    run_id = None
    try:
        digest = _write_random(src, SIZE)
        # The server offers the presigned paths (clients decide from this answer).
        info = httpx.get(f"{p.settings.local_url}/api/3.0/mlflow/server-info").json()
        assert info["multipart_uploads_enabled"] and info["multipart_downloads_enabled"], info
        # Each worker's one-time first-use cost (boto3, an S3 client, ORM: 30-90 MiB measured)
        # is paid before the baseline; what is measured is what the 1 GiB itself costs.
        cold = sample_memory(p.pid)
        primed = prime_workers(p.settings.local_url, p.pid)
        print(f"first use: tree USS +{(sample_memory(p.pid).uss - cold.uss) / MIB:.1f} MiB "
              f"({', '.join(f'{g / MIB:.0f}' for g in primed.values())} MiB per worker)")
        with ServerWatch(p.pid, [p.state.root], ignore_files={p.state.log_file}) as watch:
            up = run_transfer("upload", env, "large-artifacts", str(src))
            run_id = up.run_id
            down = run_transfer("download", env, up.run_id, up.path, str(dst_dir))
        report = watch.report
        print(f"1 GiB up and down ({client_repo} client): {_explain(report)}")
        got = Path(down.path)
        assert got.stat().st_size == SIZE
        assert file_sha256(got) == digest
        got.unlink()

        # The object really is in the bucket, under the platform's artifact layout.
        objects = [o for o in s3_server.client().list_objects_v2(
            Bucket=BUCKET, Prefix="artifacts/").get("Contents", [])
            if f"/{up.run_id}/artifacts/model.bin" in o["Key"]]
        assert len(objects) == 1 and objects[0]["Size"] == SIZE

        assert report.samples >= 3, "the transfer was too quick to watch"
        assert report.uss_growth < MEMORY_LIMIT, _explain(report)
        assert report.rss_growth < MEMORY_LIMIT, _explain(report)
        assert report.largest_open_file.size < FILE_LIMIT, _explain(report)
        assert report.largest_dir_file.size < FILE_LIMIT, _explain(report)
        assert report.dir_growth < FILE_LIMIT, _explain(report)
    finally:
        src.unlink(missing_ok=True)
        for leftover in dst_dir.glob("*"):
            leftover.unlink()
        if run_id:  # one by one: the gateway refuses boto3's DeleteObjects (no Content-MD5)
            s3 = s3_server.client()
            for obj in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []):
                if f"/{run_id}/" in obj["Key"]:
                    s3.delete_object(Bucket=BUCKET, Key=obj["Key"])
