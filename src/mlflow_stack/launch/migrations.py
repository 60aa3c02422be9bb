"""Schema migrations of the metadata database, run before the server starts when needed.

A new, empty database is initialised by `mlflow server` itself (its parent process runs the same
alembic migrations once before any worker starts). An existing database at an older revision
would make the server refuse to start, so `mlflow db upgrade` runs first.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
from functools import cache
from pathlib import Path

from mlflow_stack.errors import ServerError
from mlflow_stack.launch.spec import ServerLaunch

_REVISION_RE = re.compile(r"^revision\s*=\s*['\"]([0-9a-f]+)['\"]", re.M)
_DOWN_RE = re.compile(r"^down_revision\s*=\s*['\"]([0-9a-f]+)['\"]", re.M)


@cache
def mlflow_head_revision() -> str:
    """Head of MLflow's migration chain, read from the revision files' text.

    alembic's ScriptDirectory would import every revision module (~3 s, they import mlflow);
    the two assignments are all we need.
    """
    spec = importlib.util.find_spec("mlflow")
    if spec is None or spec.origin is None:
        raise ServerError("mlflow is not installed in this environment")
    versions = Path(spec.origin).parent / "store" / "db_migrations" / "versions"
    revisions: set[str] = set()
    downs: set[str] = set()
    for path in versions.glob("*.py"):
        text = path.read_text()
        if m := _REVISION_RE.search(text):
            revisions.add(m.group(1))
        downs.update(_DOWN_RE.findall(text))
    heads = revisions - downs
    if len(heads) != 1:
        raise ServerError(f"cannot determine MLflow's schema head revision (found {sorted(heads)})")
    return heads.pop()


def upgrade_if_needed(launch: ServerLaunch, cwd: Path, revision: str | None) -> str:
    """Run `mlflow db upgrade` if the schema (now at ``revision``, None for a new database; see
    ops/schema.py) is behind; return what was found/done."""
    if revision is None:
        return "new database: the server creates the schema before its workers start"
    head = mlflow_head_revision()
    if revision == head:
        return f"schema current (revision {head})"
    argv = [*launch.argv[: launch.argv.index("server")], "db", "upgrade",
            _arg(launch, "--backend-store-uri")]
    result = subprocess.run(argv, env={**os.environ, **launch.env_dict()}, cwd=cwd,
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).splitlines()[-15:])
        raise ServerError(f"schema migration from revision {revision} failed:\n{tail}")
    return f"schema upgraded from revision {revision} to {head}"


def upgrade_auth_db(launch: ServerLaunch, cwd: Path) -> str:
    """Bring the SSO layer's database to head with mlflow-oidc-auth's own alembic chain."""
    python = launch.argv[: launch.argv.index("server")][0]
    argv = [python, "-m", "mlflow_stack.server.migrate_job", "--only", "sso",
            "--backend-store-uri", _arg(launch, "--backend-store-uri")]
    result = subprocess.run(argv, env={**os.environ, **launch.env_dict()}, cwd=cwd,
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).splitlines()[-15:])
        raise ServerError(f"migration of the SSO database failed:\n{tail}")
    return result.stdout.strip().splitlines()[-1] if result.stdout.strip() else "SSO schema at head"


def _arg(launch: ServerLaunch, flag: str) -> str:
    return launch.argv[launch.argv.index(flag) + 1]
