"""The shell helpers `mlflow-auth.sh` / `mlflow-auth.fish` (the reference's code-server scripts).

The templates are the scripts with the Python they share (the token request form and the
answer parser) kept once, in templates/*.py.in; `helper_text` assembles them. Kubernetes
rendering mounts the same text; this writes them to a directory for users outside code-server.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from mlflow_stack.errors import ConfigError

HELPER_NAMES = ("mlflow-auth.sh", "mlflow-auth.fish")


# The Python both helpers run, kept once; each goes in single quotes in both shells.
_SNIPPETS = {"@FORM_PY@": "mlflow-auth-form.py.in", "@PARSE_PY@": "mlflow-auth-parse.py.in"}


def _template(name: str) -> str:
    return (resources.files("mlflow_stack.client") / "templates" / name).read_text()


def _snippet(name: str) -> str:
    code = "\n".join(line for line in _template(name).splitlines()
                     if not line.startswith("#")).strip("\n")
    # fish interprets backslashes inside single quotes, and a quote would end the string.
    if "'" in code or "\\" in code:
        raise ValueError(f"{name} must not contain single quotes or backslashes")
    return code


def helper_text(name: str) -> str:
    """The complete script (what users source and what Kubernetes mounts)."""
    if name not in HELPER_NAMES:
        raise ValueError(f"unknown helper {name!r}")
    text = _template(name)
    for marker, snippet in _SNIPPETS.items():
        text = text.replace(marker, _snippet(snippet))
    return text


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
