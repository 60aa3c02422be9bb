# MLflow's client API is unannotated.
# mypy: disable-error-code="no-untyped-call"
"""The artifact round trip: a random file up and down through MLflow's client, sizes and
SHA-256 compared."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from mlflow_stack.local.backup import sha256_file
from mlflow_stack.ops.verify.context import StepFailed, Verification, phase

ARTIFACT_BYTES = 20 * 1000 * 1000


def random_file(path: Path, size: int) -> str:
    """Write size random bytes; return their sha256."""
    digest = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 1 << 20))
            digest.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def mb(size: int) -> str:
    return f"{size / 1e6:g} MB"


def artifact(v: Verification) -> str:
    v.artifact_attempted = True
    client = v.client()
    upload = v.work / "up" / "verify-blob.bin"
    upload.parent.mkdir()
    want = random_file(upload, v.artifact_bytes)
    start = time.monotonic()
    with phase("upload"):
        client.log_artifact(v.run_id, str(upload), artifact_path="verify")
    up = time.monotonic() - start
    listed = {f.path: f.file_size for f in client.list_artifacts(v.run_id, "verify")}
    if listed.get("verify/verify-blob.bin") != v.artifact_bytes:
        raise StepFailed(f"after upload the server lists {listed or 'nothing'}")
    down_dir = v.work / "down"
    down_dir.mkdir()
    start = time.monotonic()
    with phase("download"):
        local = Path(client.download_artifacts(v.run_id, "verify/verify-blob.bin",
                                               str(down_dir)))
    down = time.monotonic() - start
    got = sha256_file(local)
    if got != want or local.stat().st_size != v.artifact_bytes:
        raise StepFailed(f"downloaded {local.stat().st_size} bytes with sha256 {got[:12]}…,"
                         f" uploaded {v.artifact_bytes} with {want[:12]}…")
    return (f"{mb(v.artifact_bytes)} up {up:.1f}s, down {down:.1f}s, "
            f"sha256 {want[:12]}… matches ({v.run_artifact_uri})")
