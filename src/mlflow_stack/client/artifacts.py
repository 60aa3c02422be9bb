# MLflow's environment-variable objects and repository methods are unannotated.
# mypy: disable-error-code="no-untyped-call"
"""Large-artifact transfers from the client side: presigned, parallel, streamed.

With artifacts on S3 the server advertises multipart support (`/api/3.0/mlflow/server-info`), and
MLflow clients move large files straight to and from S3 on presigned URLs the server signs; the
bytes never pass through the server. Two things here make that fast and cover more files:

- `StreamingArtifactsRepository`, registered for the `mlflow-artifacts` scheme through MLflow's
  `mlflow.artifact_repository` plugin entry point. MLflow 3.17.2 fetches each download range whole
  into memory (`requests` `.content`, read 10 KiB at a time, then one large write): ~2-3x the CPU
  of boto3 per GiB and threads x range size of client memory (4 x 100 MiB by default). Here each
  range is streamed to its place in the file in 1 MiB pieces, on more threads. Everything else
  (server-info discovery, presigned multipart upload, fallbacks) is MLflow's own.
- `ARTIFACT_TRANSFER_ENV`: MLflow's own variables for clients that run without this package;
  `apply_transfer_defaults()` sets the ones the user has not set.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import MutableMapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import requests
from mlflow.entities.presigned_download import PresignedDownloadUrlResponse
from mlflow.environment_variables import (
    MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
    MLFLOW_HTTP_REQUEST_MAX_RETRIES,
    MLFLOW_MULTIPART_DOWNLOAD_CHUNK_SIZE,
    MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE,
    MLFLOW_S3_IGNORE_TLS,
)
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository
from mlflow.utils.file_utils import ArtifactProgressBar, remove_on_error

_logger = logging.getLogger(__name__)

MIB = 2**20

# Download: 8 threads (each costs little CPU once streamed; S3 rewards concurrency, boto3 uses
# 10), about 4 ranges per thread so all stay busy to the end, 8-64 MiB each (fewer, larger
# requests cost the client and the S3 server less CPU). Memory is 1 MiB per thread whatever the
# range size. Measured (bench/artifact_io.py, 1 GiB): 1.5-2.6 client CPU s/GiB like boto3's
# 1.6-2.1, where MLflow's own needs 4.0-4.8.
DOWNLOAD_THREADS = 8
MIN_RANGE_SIZE = 8 * MIB
MAX_RANGE_SIZE = 64 * MIB
_READ_SIZE = MIB
_QUERY_RE = re.compile(r"\?[^\s'\"]*")
_TIMEOUT = (10, 120)  # connect, per-read seconds

# Files from this size go straight to S3 (presigned multipart) instead of through the server,
# which writes a proxied upload whole to its TMPDIR and then uploads it with boto3 (+15-27 MiB
# measured for 48-256 MiB files, at half the speed). MLflow's default is 500 MiB.
UPLOAD_MINIMUM_FILE_SIZE = 16 * MIB

# For plain MLflow clients (without this package). Values are bytes.
ARTIFACT_TRANSFER_ENV: dict[str, str] = {
    # MLflow holds each range in memory: 8 MiB instead of 100 MiB ranges is 4 x 8 MiB instead of
    # 4 x 100 MiB at once and ~1/3 less client CPU (its least costly size, measured).
    "MLFLOW_MULTIPART_DOWNLOAD_CHUNK_SIZE": str(8 * MIB),
    "MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE": str(UPLOAD_MINIMUM_FILE_SIZE),
}


def range_size(file_size: int) -> int:
    """Download range size for a file: ~4 per thread, 8-64 MiB, whole MiB."""
    per_range = -(-file_size // (4 * DOWNLOAD_THREADS))
    per_range = -(-per_range // MIB) * MIB
    return max(MIN_RANGE_SIZE, min(MAX_RANGE_SIZE, per_range))


def apply_transfer_defaults(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set each of `ARTIFACT_TRANSFER_ENV` the user has not set; return what was set."""
    env = os.environ if environ is None else environ
    applied = {k: v for k, v in ARTIFACT_TRANSFER_ENV.items() if k not in env}
    env.update(applied)
    return applied


class StreamingArtifactsRepository(MlflowArtifactsRepository):
    """MLflow's `mlflow-artifacts` repository with streamed, parallel ranged downloads.

    An explicitly set `MLFLOW_MULTIPART_DOWNLOAD_CHUNK_SIZE` /
    `MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE` still wins over the defaults here.
    """

    def __init__(self, artifact_uri: str, tracking_uri: str | None = None,
                 registry_uri: str | None = None) -> None:
        super().__init__(artifact_uri, tracking_uri=tracking_uri, registry_uri=registry_uri)
        self._range_pool: ThreadPoolExecutor | None = None
        self._range_pool_lock = threading.Lock()
        self._session_local = threading.local()

    def _should_multipart_upload(self, local_file: str) -> bool:
        minimum = (MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE.get()
                   if MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE.is_set()
                   else UPLOAD_MINIMUM_FILE_SIZE)
        return os.path.getsize(local_file) >= minimum and bool(
            self._is_multipart_upload_enabled())

    def _multipart_download(self, presigned_response: PresignedDownloadUrlResponse,
                            remote_file_path: str, local_path: str, file_size: int,
                            chunk_size: int) -> None:
        if not MLFLOW_MULTIPART_DOWNLOAD_CHUNK_SIZE.is_set() or chunk_size <= 0:
            chunk_size = range_size(file_size)
        ranges = [(start, min(start + chunk_size, file_size) - 1)
                  for start in range(0, file_size, chunk_size)]
        url, headers = presigned_response.url, dict(presigned_response.headers or {})
        retries = MLFLOW_HTTP_REQUEST_MAX_RETRIES.get()
        backoff = MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get()
        with remove_on_error(Path(local_path)):
            with open(local_path, "wb") as f:
                f.truncate(file_size)
            errors: list[str] = []
            with ArtifactProgressBar.chunks(file_size, f"Downloading {remote_file_path}",
                                            chunk_size) as pbar:
                for attempt in range(retries + 1):
                    if attempt:  # a fresh URL: the old one may have expired
                        time.sleep(backoff * 2 ** (attempt - 1))
                        url = self._get_presigned_download_url(remote_file_path).url
                    ranges, errors = self._fetch_ranges(url, headers, ranges, local_path, pbar)
                    if not ranges:
                        return
            raise MlflowException(
                f"Failed to download {len(ranges)} range(s) of {remote_file_path} after "
                f"{retries} retries: {errors[-1]}")

    def _fetch_ranges(self, url: str, headers: dict[str, str], ranges: list[tuple[int, int]],
                      local_path: str, pbar: Any) -> tuple[list[tuple[int, int]], list[str]]:
        """Fetch ranges in parallel; return the ones that failed and why."""
        futures = {self._pool().submit(self._fetch_range, url, headers, start, end, local_path):
                   (start, end) for start, end in ranges}
        failed, errors = [], []
        for future in as_completed(futures):
            try:
                future.result()
                pbar.update()
            except Exception as exc:  # retried by the caller with a fresh URL
                failed.append(futures[future])
                errors.append(_describe(exc))
        return sorted(failed), errors

    def _fetch_range(self, url: str, headers: dict[str, str], start: int, end: int,
                     local_path: str) -> None:
        expected = end - start + 1
        started = time.perf_counter()
        with self._session().get(url, headers={**headers, "Range": f"bytes={start}-{end}"},
                                 stream=True, timeout=_TIMEOUT,
                                 verify=not MLFLOW_S3_IGNORE_TLS.get()) as resp:
            resp.raise_for_status()
            if resp.status_code != 206:  # S3 answers a satisfiable range with 206 only
                raise OSError(f"expected HTTP 206 for a range, got {resp.status_code}")
            headers_at = time.perf_counter()
            offset = start
            fd = os.open(local_path, os.O_WRONLY)
            try:
                for piece in resp.iter_content(_READ_SIZE):
                    os.pwrite(fd, piece, offset)
                    offset += len(piece)
            finally:
                os.close(fd)
        if offset - start != expected:
            raise OSError(f"incomplete range {start}-{end}: got {offset - start} of "
                          f"{expected} bytes")
        if _logger.isEnabledFor(logging.DEBUG):
            # Per-range timings, for finding where a slow download's time went
            # (bench/artifact_io.py collects them from these attributes).
            done = time.perf_counter()
            _logger.debug("range %d-%d: headers after %.3f s, body %.3f s", start, end,
                          headers_at - started, done - headers_at,
                          extra={"range_bytes": expected, "range_started": started,
                                 "range_headers_s": headers_at - started,
                                 "range_body_s": done - headers_at})

    def _session(self) -> requests.Session:
        # One session (keep-alive connection) per download thread.
        session: requests.Session | None = getattr(self._session_local, "session", None)
        if session is None:
            session = self._session_local.session = requests.Session()
        return session

    def _pool(self) -> ThreadPoolExecutor:
        # Separate from MLflow's file-level pool, which may be waiting on this one.
        with self._range_pool_lock:
            if self._range_pool is None:
                self._range_pool = ThreadPoolExecutor(
                    DOWNLOAD_THREADS, thread_name_prefix="MlflowStackRange")
            return self._range_pool


def _describe(exc: Exception) -> str:
    """The error without the presigned URL's query: its signature is a credential."""
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code} from the object store"
    return _QUERY_RE.sub("?<presigned query hidden>", f"{type(exc).__name__}: {exc}")


def register() -> None:
    """Use `StreamingArtifactsRepository` for `mlflow-artifacts` URIs in this process.

    The package's entry point does this on import of MLflow; this is for environments where
    the entry point is not installed (e.g. a source checkout).
    """
    from mlflow.store.artifact.artifact_repository_registry import (
        _artifact_repository_registry,
    )

    _artifact_repository_registry.register("mlflow-artifacts", StreamingArtifactsRepository)
