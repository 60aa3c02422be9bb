"""Run one MLflow artifact transfer in a separate client process that holds no S3 credentials.

The client gets `MLFLOW_TRACKING_URI` and the transfer settings it is given, none of the
caller's `AWS_*` or `MLFLOW_*` variables, and an empty HOME (so no `~/.aws`). Whatever it
transfers can only go through what the tracking server hands out. MLflow's telemetry (on by
default) is turned off: nothing phones home.

The worker half (`python artifact_client.py upload|download ...`) runs by path, without the
harness package on sys.path. `ARTIFACT_CLIENT_REPO` in its env picks the repository for
`mlflow-artifacts` URIs: `stack` (mlflow_stack.client.artifacts, whether or not its entry point
is installed), `mlflow` (MLflow's own, even if the entry point is installed); unset: whatever the
installed entry points give. `ARTIFACT_CLIENT_RANGE_TIMES=1` adds the streaming client's per-range
timings (its DEBUG log records) to a download's result.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Variables a client must not inherit: AWS_* could hold storage credentials; MLFLOW_* (incl.
# MLFLOW_S3_*, MLFLOW_STACK_*) could point it at storage or change how it transfers.
_DROP_PREFIXES = ("AWS_", "MLFLOW_")


@dataclass(frozen=True)
class Transfer:
    op: str
    seconds: float  # the transfer call only, not interpreter start-up or imports
    cpu_seconds: float  # CPU time of the client process (all threads) during that call
    run_id: str
    path: str
    nbytes: int
    # With ARTIFACT_CLIENT_RANGE_TIMES=1, one dict per range: bytes, started (s after the
    # download began), headers_s (request to response headers), body_s (streaming the body).
    ranges: list[dict[str, float]] = field(default_factory=list)


def client_env(tracking_uri: str, home: Path,
               extra: dict[str, str] | None = None) -> dict[str, str]:
    """The client's whole environment: the caller's, minus anything storage- or MLflow-related."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROP_PREFIXES)}
    home.mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(home), MLFLOW_TRACKING_URI=tracking_uri, MLFLOW_DISABLE_TELEMETRY="true")
    env.update(extra or {})
    leaked = sorted(k for k in env if k.startswith("AWS_"))
    if leaked:
        raise ValueError(f"client env must not carry AWS_* variables: {leaked}")
    return env


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read 16 MiB at a time."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while piece := f.read(16 * 2**20):
            digest.update(piece)
    return digest.hexdigest()


def run_transfer(op: str, env: dict[str, str], *args: str, timeout: float = 600.0) -> Transfer:
    """`upload <experiment> <file>` or `download <run_id> <artifact> <dst_dir>` in a child."""
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), op, *args], env=env,
        capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"client {op} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    return Transfer(op=op, seconds=data["seconds"], cpu_seconds=data["cpu_seconds"],
                    run_id=data["run_id"], path=data["path"], nbytes=data["nbytes"],
                    ranges=data.get("ranges", []))


def _select_repository(choice: str | None) -> None:
    if not choice:
        return
    from mlflow.store.artifact.artifact_repo import ArtifactRepository
    from mlflow.store.artifact.artifact_repository_registry import (
        _artifact_repository_registry,
    )

    repo: type[ArtifactRepository]
    if choice == "stack":
        from mlflow_stack.client.artifacts import StreamingArtifactsRepository

        repo = StreamingArtifactsRepository
    elif choice == "mlflow":
        from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository

        repo = MlflowArtifactsRepository
    else:
        raise ValueError(f"ARTIFACT_CLIENT_REPO must be stack or mlflow, not {choice!r}")
    # MLflow's registry is untyped.
    _artifact_repository_registry.register("mlflow-artifacts", repo)  # type: ignore[no-untyped-call]


def _upload(experiment: str, local_file: str) -> dict[str, object]:
    import mlflow

    mlflow.set_experiment(experiment)
    with mlflow.start_run() as run:
        started, cpu = time.perf_counter(), time.process_time()
        mlflow.log_artifact(local_file)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"seconds": seconds, "cpu_seconds": cpu, "run_id": run.info.run_id,
            "path": os.path.basename(local_file), "nbytes": os.path.getsize(local_file)}


class _RangeTimes(logging.Handler):
    """Collects the per-range timings mlflow_stack.client.artifacts logs at DEBUG."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.ranges: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if hasattr(record, "range_bytes"):
            self.ranges.append({key: getattr(record, f"range_{key}")
                                for key in ("bytes", "started", "headers_s", "body_s")})


def _download(run_id: str, artifact_path: str, dst_dir: str) -> dict[str, object]:
    import mlflow

    times = None
    if os.environ.get("ARTIFACT_CLIENT_RANGE_TIMES") == "1":
        times = _RangeTimes()
        logger = logging.getLogger("mlflow_stack.client.artifacts")
        logger.setLevel(logging.DEBUG)
        logger.addHandler(times)
    started, cpu = time.perf_counter(), time.process_time()
    local = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=artifact_path, dst_path=dst_dir)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    ranges = [{**r, "started": r["started"] - started} for r in times.ranges] if times else []
    return {"seconds": seconds, "cpu_seconds": cpu, "run_id": run_id, "path": local,
            "nbytes": os.path.getsize(local), "ranges": ranges}


def _main(argv: list[str]) -> int:
    leaked = sorted(k for k in os.environ if k.startswith("AWS_"))
    if leaked:  # belt and braces: the parent already refused these
        print(f"refusing to run with AWS_* variables set: {leaked}", file=sys.stderr)
        return 2
    _select_repository(os.environ.get("ARTIFACT_CLIENT_REPO"))
    op, *args = argv
    result = _upload(*args) if op == "upload" else _download(*args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
