"""MLflow's S3 artifact repository, plus the Content-MD5 header on DeleteObjects.

botocore 1.36+ stopped sending Content-MD5 with DeleteObjects (it sends a CRC32 checksum
instead), and S3 servers that still require the MD5 — the JuiceFS gateway the reference
platform runs, older MinIO — answer `MissingContentMD5`: every artifact delete through the
server (and `mlflow gc`) fails with HTTP 500. Registered as the `s3` artifact repository (the
`mlflow.artifact_repository` entry point replaces MLflow's built-in one), so the server's
artifact proxy and any client using s3:// directly both send it. Content-MD5 is part of the S3
API for this call: AWS S3 accepts it alongside the newer checksum.

``open_object`` gives the server's download handlers a file as a stream from S3
(server/patches/stream_downloads.py): no temporary copy on the server's disk.
"""

from __future__ import annotations

import base64
import hashlib
import posixpath
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from mlflow.store.artifact.s3_artifact_repo import S3ArtifactRepository as _MlflowS3Repository

_HANDLER_ID = "mlflow-stack-delete-objects-content-md5"


def add_content_md5(params: dict[str, Any], **_: Any) -> None:
    """botocore `before-call.s3.DeleteObjects` handler: MD5 of the serialized body."""
    headers = params.setdefault("headers", {})
    if "Content-MD5" in headers:
        return
    body = params.get("body") or b""
    if isinstance(body, str):
        body = body.encode("utf-8")
    if isinstance(body, bytes | bytearray):
        # Not for security: the header is an integrity check the S3 API defines as MD5.
        digest = hashlib.md5(body, usedforsecurity=False).digest()
        headers["Content-MD5"] = base64.b64encode(digest).decode("ascii")


class S3ArtifactRepository(_MlflowS3Repository):
    def _get_s3_client(self) -> Any:
        client = super()._get_s3_client()  # type: ignore[no-untyped-call]
        # MLflow caches clients; unique_id makes registering again a no-op.
        client.meta.events.register("before-call.s3.DeleteObjects", add_content_md5,
                                    unique_id=_HANDLER_ID)
        return client

    def open_object(self, artifact_path: str) -> StreamedObject | None:
        """The file at ``artifact_path`` (relative to this repository) as a stream from S3, or
        None when there is no object at that key (a directory, or nothing): the caller then
        leaves the request to MLflow, which answers those cases."""
        from botocore.exceptions import ClientError

        untyped: Any = self  # MLflow's repository is untyped
        bucket, root = untyped.parse_s3_compliant_uri(self.artifact_uri)
        key = posixpath.join(root, artifact_path) if artifact_path else root
        try:
            found = self._get_s3_client().get_object(Bucket=bucket, Key=key,
                                                     **(untyped._bucket_owner_params or {}))
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404") \
                    or status == 404:
                return None
            raise
        return StreamedObject(found["Body"], int(found["ContentLength"]),
                              found.get("LastModified"))


class StreamedObject:
    """An S3 object's body, read in ``CHUNK`` pieces (what the server holds of it at a time)."""

    CHUNK = 1024 * 1024  # MLflow's ARTIFACT_STREAM_CHUNK_SIZE

    def __init__(self, body: Any, size: int, last_modified: datetime | None) -> None:
        self.body, self.size, self.last_modified = body, size, last_modified

    def chunks(self) -> Iterator[bytes]:
        try:
            yield from self.body.iter_chunks(self.CHUNK)
        finally:
            self.body.close()

    def close(self) -> None:
        self.body.close()
