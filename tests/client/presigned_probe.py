"""Log and read back a large artifact with MLflow's presigned multipart transfers, recording every
HTTP request this process sends: where it went and whether it carried an Authorization header.

Run with MLFLOW_TRACKING_AUTH=keycloak; prints RESULT {"requests": [...]} (no header values).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests.adapters

seen: list[dict[str, Any]] = []
_send = requests.adapters.HTTPAdapter.send


def recording_send(self: requests.adapters.HTTPAdapter, request: requests.PreparedRequest,
                   *args: Any, **kwargs: Any) -> requests.Response:
    parts = urlsplit(request.url or "")
    auth = request.headers.get("Authorization")
    seen.append({"method": request.method, "netloc": parts.netloc, "path": parts.path,
                 "auth": auth.split()[0] if auth else None})
    return _send(self, request, *args, **kwargs)


requests.adapters.HTTPAdapter.send = recording_send  # type: ignore[method-assign]

import mlflow  # noqa: E402

size = int(os.environ.get("PROBE_SIZE", str(12 * 2**20)))
with tempfile.TemporaryDirectory() as tmp:
    big = Path(tmp) / "big.bin"
    big.write_bytes(os.urandom(size))
    mlflow.set_experiment("presigned-probe")
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(big))
    back = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="big.bin",
                                               dst_path=str(Path(tmp) / "back"))
    assert Path(back).read_bytes() == big.read_bytes()
print("RESULT " + json.dumps({"requests": seen}))
