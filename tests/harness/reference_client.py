"""Run the reference's client examples (tests/local/reference_client.py) as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).parent.parent / "local" / "reference_client.py"


def run_reference_client(mode: str, url: str) -> dict[str, Any]:
    """`write` or `check` against url, in a data scientist's environment: the tracking URI and
    nothing else (no S3 keys, no database password)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "MLFLOW_", "ADMIN_PASSWORD", "PG"))}
    env["MLFLOW_TRACKING_URI"] = url
    result = subprocess.run([sys.executable, str(SCRIPT), mode], env=env, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("RESULT "))
    return dict(json.loads(line.removeprefix("RESULT ")))
