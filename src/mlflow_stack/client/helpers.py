"""The shell helpers `mlflow-auth.sh` / `mlflow-auth.fish` (the reference's code-server scripts).

The templates are complete scripts (Kubernetes rendering mounts them unchanged); this writes
them to a directory for users outside code-server.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from mlflow_stack.errors import ConfigError

HELPER_NAMES = ("mlflow-auth.sh", "mlflow-auth.fish")


def helper_text(name: str) -> str:
    if name not in HELPER_NAMES:
        raise ValueError(f"unknown helper {name!r}")
    return (resources.files("mlflow_stack.client") / "templates" / name).read_text()


def write_helpers(out_dir: Path) -> list[Path]:
    """Write both helpers into out_dir (created if missing); returns the paths written.

    Mode 0644: they are sourced, not run, and hold no secrets.
    """
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {out_dir}: {exc.strerror}",
                          hint="choose a writable directory with --out") from exc
    if not out_dir.is_dir():
        raise ConfigError(f"{out_dir} is not a directory", hint="choose a directory with --out")
    written = []
    for name in HELPER_NAMES:
        path = out_dir / name
        tmp = out_dir / f".{name}.tmp"
        try:
            tmp.write_text(helper_text(name))
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except OSError as exc:
            raise ConfigError(f"cannot write {path}: {exc.strerror}",
                              hint="choose a writable directory with --out") from exc
        written.append(path)
    return written
