"""mlflow-stack's artifact repositories register through MLflow's entry points whatever a
process imports first (a fresh interpreter each: registration happens once, at import)."""

from __future__ import annotations

import subprocess
import sys

import pytest

RESOLVE = """
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
for uri in ("mlflow-artifacts://127.0.0.1:5000/0/run/artifacts", "s3://bucket/artifacts"):
    repo = get_artifact_repository(uri, tracking_uri="http://127.0.0.1:5000")
    print(type(repo).__module__ + "." + type(repo).__name__)
"""
EXPECTED = ["mlflow_stack.client.artifacts.StreamingArtifactsRepository",
            "mlflow_stack.server.s3_repository.S3ArtifactRepository"]


@pytest.mark.parametrize("first", [
    "mlflow_stack.client.artifacts",  # what bench/artifact_io.py does
    "mlflow_stack.server.s3_repository",
    "mlflow",
    "mlflow.store.artifact.artifact_repository_registry",
])
def test_registered_whatever_is_imported_first(first: str) -> None:
    result = subprocess.run([sys.executable, "-W", "always", "-c", f"import {first}\n{RESOLVE}"],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == EXPECTED
    assert "Failure attempting to register" not in result.stderr, result.stderr
    assert "circular import" not in result.stderr, result.stderr
