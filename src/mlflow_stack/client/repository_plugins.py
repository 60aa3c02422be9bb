"""The targets of this package's `mlflow.artifact_repository` entry points.

MLflow loads every such entry point while its artifact repository registry module is being
imported. Pointing the entry points at the repository classes themselves would make that depend
on import order: a process that imports `mlflow_stack.client.artifacts` (or
`mlflow_stack.server.s3_repository`) first starts importing MLflow from inside that module, MLflow
then loads the entry point from the half-imported module, fails ("partially initialized module
... most likely due to a circular import"), warns, and keeps its own repository for the scheme.
These factories import nothing at load time and the repository module only when MLflow asks
for a repository, so registration succeeds whatever was imported first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow_stack.client.artifacts import StreamingArtifactsRepository
    from mlflow_stack.server.s3_repository import S3ArtifactRepository


def streaming_artifacts_repository(
    artifact_uri: str, tracking_uri: str | None = None, registry_uri: str | None = None
) -> StreamingArtifactsRepository:
    """`mlflow-artifacts` URIs: streamed, parallel downloads (client.artifacts)."""
    from mlflow_stack.client.artifacts import StreamingArtifactsRepository

    return StreamingArtifactsRepository(artifact_uri, tracking_uri=tracking_uri,
                                        registry_uri=registry_uri)


def s3_artifact_repository(
    artifact_uri: str, tracking_uri: str | None = None, registry_uri: str | None = None
) -> S3ArtifactRepository:
    """`s3` URIs: MLflow's repository plus Content-MD5 on DeleteObjects (server.s3_repository)."""
    from mlflow_stack.server.s3_repository import S3ArtifactRepository

    return S3ArtifactRepository(artifact_uri, tracking_uri=tracking_uri,
                                registry_uri=registry_uri)
