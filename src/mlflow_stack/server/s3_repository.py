"""MLflow's S3 artifact repository, plus the Content-MD5 header on DeleteObjects.

botocore 1.36+ stopped sending Content-MD5 with DeleteObjects (it sends a CRC32 checksum
instead), and S3 servers that still require the MD5 — the JuiceFS gateway the reference
platform runs, older MinIO — answer `MissingContentMD5`: every artifact delete through the
server (and `mlflow gc`) fails with HTTP 500. Registered as the `s3` artifact repository (the
`mlflow.artifact_repository` entry point replaces MLflow's built-in one), so the server's
artifact proxy and any client using s3:// directly both send it. Content-MD5 is part of the S3
API for this call: AWS S3 accepts it alongside the newer checksum.

``open_object`` gives the server's download handlers a file as a stream from S3
(server/patches/stream_downloads.py), and the repository streams uploads (MLflow's
``StreamUploadMixin``, which both of MLflow's upload handlers use when the repository has it):
no temporary copy of the file on the server's disk either way. An upload is sent as an S3
multipart upload of ``UPLOAD_PART`` parts, ``UPLOAD_THREADS`` at a time and one queued:
what the server holds of an upload is a few parts, whatever the file's size.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import mimetypes
import posixpath
import queue
import threading
from collections.abc import AsyncIterable, Iterator
from datetime import datetime
from typing import Any, BinaryIO, cast

from mlflow.store.artifact.artifact_repo import StreamUploadMixin
from mlflow.store.artifact.s3_artifact_repo import S3ArtifactRepository as _MlflowS3Repository

from mlflow_stack.server.streams import PulledReader

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


UPLOAD_PART = 5 * 1024 * 1024  # S3's smallest part: what the server holds is a few of them
UPLOAD_THREADS = 2
PIPE_PIECE = 1024 * 1024
_END = object()


class S3ArtifactRepository(_MlflowS3Repository, StreamUploadMixin):
    def _get_s3_client(self) -> Any:
        client = super()._get_s3_client()  # type: ignore[no-untyped-call]
        # MLflow caches clients; unique_id makes registering again a no-op.
        client.meta.events.register("before-call.s3.DeleteObjects", add_content_md5,
                                    unique_id=_HANDLER_ID)
        return client

    def _upload_target(self, artifact_file_name: str, artifact_path: str | None
                       ) -> tuple[str, str, dict[str, str]]:
        """Bucket, key and ExtraArgs as MLflow's log_artifact/_upload_file make them."""
        untyped: Any = self  # MLflow's repository is untyped
        bucket, dest = untyped.parse_s3_compliant_uri(self.artifact_uri)
        if artifact_path:
            dest = posixpath.join(dest, artifact_path)
        key = posixpath.join(dest, posixpath.basename(artifact_file_name))
        extra: dict[str, str] = {}
        guessed_type, guessed_encoding = mimetypes.guess_type(artifact_file_name)
        if guessed_type is not None:
            extra["ContentType"] = guessed_type
        if guessed_encoding is not None:
            extra["ContentEncoding"] = guessed_encoding
        extra.update(untyped._bucket_owner_params or {})
        extra.update(untyped.get_s3_file_upload_extra_args() or {})
        return bucket, key, extra

    def log_artifact_from_stream(self, stream: BinaryIO, artifact_file_name: str,
                                 artifact_path: str | None = None) -> None:
        """The request body straight to S3 (MLflow's Flask upload handler calls this)."""
        from boto3.s3.transfer import TransferConfig

        bucket, key, extra = self._upload_target(artifact_file_name, artifact_path)
        # max_request_queue_size bounds how far s3transfer reads ahead of the parts it has sent
        # (its default, 1000 parts, would let a fast client fill the server's memory).
        config = TransferConfig(multipart_threshold=UPLOAD_PART, multipart_chunksize=UPLOAD_PART,
                                max_concurrency=UPLOAD_THREADS, use_threads=True)
        config.max_request_queue_size = 1  # s3transfer's, not a boto3 argument
        # s3transfer buffers up to this many parts read from a non-seekable stream (default
        # 10: 50 MiB here, measured +70 MiB peak for a 256 MiB upload; with 2, +28-35 MiB).
        config.max_in_memory_upload_chunks = UPLOAD_THREADS
        self._get_s3_client().upload_fileobj(_FullReads(stream), bucket, key, ExtraArgs=extra,
                                             Config=config)

    async def log_artifact_from_async_stream(self, chunks: AsyncIterable[bytes],
                                             artifact_file_name: str,
                                             artifact_path: str | None = None) -> None:
        """The request body straight to S3 (MLflow's FastAPI upload route calls this): the
        chunks are handed to the sync upload through a small bounded queue."""
        pipe = _Pipe()

        def send() -> None:
            try:
                self.log_artifact_from_stream(cast(BinaryIO, pipe), artifact_file_name,
                                              artifact_path)
            finally:
                pipe.abandon()  # a failed upload reads no more: the producer must not wait

        upload = asyncio.ensure_future(asyncio.to_thread(send))
        batch = bytearray()
        try:
            async for chunk in chunks:
                if upload.done():
                    break  # the upload failed: its error is raised below
                batch += chunk
                # ~64 KiB chunks are handed over 1 MiB at a time, without a thread hop while
                # the pipe has room.
                if len(batch) >= PIPE_PIECE:
                    piece, batch = bytes(batch), bytearray()
                    if not pipe.offer(piece):
                        await asyncio.to_thread(pipe.put, piece)
            if batch and not upload.done():
                await asyncio.to_thread(pipe.put, bytes(batch))
        finally:
            await asyncio.to_thread(pipe.put, _END)
        await upload

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


class _FullReads(io.RawIOBase):
    """``read(n)`` gives n bytes unless the stream ends first. s3transfer reads a part from a
    non-seekable stream with one ``read(part_size)`` call and takes a short read as the whole
    part; request streams (Flask's LimitedStream, an ASGI body) return what has arrived."""

    def __init__(self, stream: Any) -> None:
        super().__init__()
        self._stream = stream

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return bytes(self._stream.read())
        parts, have = [], 0
        while have < size:
            chunk = self._stream.read(size - have)
            if not chunk:
                break
            parts.append(bytes(chunk))
            have += len(chunk)
        return b"".join(parts)


class _Pipe(PulledReader):
    """A readable file fed chunk by chunk from another thread; ``put`` blocks while 4 chunks
    wait (back-pressure on the request body instead of buffering it)."""

    def __init__(self) -> None:
        super().__init__()
        self._queue: queue.Queue[object] = queue.Queue(maxsize=4)
        self._abandoned = threading.Event()

    def put(self, chunk: object) -> None:
        """Hand ``chunk`` (or ``_END``) to the reader; dropped once the reader has gone."""
        if chunk is not _END and not chunk:
            return
        while not self._abandoned.is_set():
            try:
                self._queue.put(chunk, timeout=0.25)
                return
            except queue.Full:
                continue

    def offer(self, chunk: bytes) -> bool:
        """``put`` if there is room now (no waiting); False when there is none."""
        if self._abandoned.is_set():
            return True  # dropped, as put drops it
        try:
            self._queue.put_nowait(chunk)
        except queue.Full:
            return False
        return True

    def abandon(self) -> None:
        self._abandoned.set()

    def _pull(self) -> bytes | None:
        chunk = self._queue.get()
        return None if chunk is _END else bytes(cast(bytes, chunk))


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
