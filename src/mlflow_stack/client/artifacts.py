"""MLflow client settings for artifact transfers against this platform (placeholder)."""

from __future__ import annotations

import os
from collections.abc import MutableMapping

MIB = 2**20

ARTIFACT_TRANSFER_ENV: dict[str, str] = {}


def apply_artifact_transfer_defaults(
    environ: MutableMapping[str, str] | None = None,
) -> dict[str, str]:
    env = os.environ if environ is None else environ
    applied = {}
    for key, value in ARTIFACT_TRANSFER_ENV.items():
        if key not in env:
            env[key] = value
            applied[key] = value
    return applied
