"""Backup and restore of a platform: both databases and the artifact store, with a manifest.

A backup directory holds `manifest.json` (versions, schema revision, row counts, a SHA-256 and
size per file), the databases (`metadata.sqlite` / `metadata.dump` from pg_dump, and the same
for the SSO database when SSO is on) and `artifacts/` (the local artifact folder or every object
under the S3 prefix, by key). Restore checks every checksum before it changes anything, refuses a
target that already holds data, and compares the restored row counts with the manifest.

A databases-only backup (what `upgrade`, and `up` on an old schema, take before migrating:
migrations never touch artifacts) has no `artifacts/`; restoring it leaves the artifact store as
it is. It lives in `local` because `up` needs it (see local.schema); `ops` builds on it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlflow_stack import MLFLOW_VERSION, __version__
from mlflow_stack.config.model import Settings
from mlflow_stack.errors import ConfigError, StackError
from mlflow_stack.local import process
from mlflow_stack.local import revision as schema
from mlflow_stack.local.state import StateDir
from mlflow_stack.progress import Progress

MANIFEST = "manifest.json"
# Tables whose row counts prove a restore complete (MLflow's standard schema).
COUNTED_TABLES = ("experiments", "runs", "metrics", "params", "tags", "registered_models",
                  "model_versions")


@dataclass
class Manifest:
    created_at: float
    mlflow_stack_version: str
    mlflow_version: str
    metadata_backend: str
    artifacts_backend: str
    counts: dict[str, int]
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # path -> sha256, size
    sso: bool = False
    artifacts_included: bool = True
    schema_revision: str | None = None

    def save(self, directory: Path) -> None:
        (directory / MANIFEST).write_text(json.dumps(asdict(self), indent=2, sort_keys=True))

    @classmethod
    def load(cls, directory: Path) -> Manifest:
        try:
            return cls(**json.loads((directory / MANIFEST).read_text()))
        except FileNotFoundError:
            raise ConfigError(f"{directory} is not a backup: no {MANIFEST}") from None
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{directory / MANIFEST} is damaged: {exc}") from None


class BackupError(StackError):
    """A backup or restore step failed; the message says which and how to recover."""


# ------------------------------------------------------------------ databases


def _pg_bin(name: str) -> str:
    """pg_dump/pg_restore: the newest Debian PostgreSQL version dir, else PATH."""
    root = Path("/usr/lib/postgresql")
    if root.is_dir():
        for version in sorted(root.iterdir(), key=lambda p: p.name, reverse=True):
            candidate = version / "bin" / name
            if candidate.is_file():
                return str(candidate)
    found = shutil.which(name)
    if not found:
        raise BackupError(f"{name} is not installed", hint="Install the postgresql-client package.")
    return found


def _pg_env(settings: Settings) -> dict[str, str]:
    password = settings.secrets.effective_db_password
    db = settings.database
    env = {**os.environ, "PGHOST": str(db.host), "PGPORT": str(db.port), "PGUSER": db.user,
           "PGSSLMODE": db.sslmode}
    if password is not None:
        env["PGPASSWORD"] = password.get_secret_value()  # env, never argv
    return env


def _run(argv: list[str], env: dict[str, str], what: str) -> None:
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-10:])
        raise BackupError(f"{what} failed: {tail}")


def _sqlite_paths(state: StateDir) -> dict[str, Path]:
    return {"metadata": state.data_dir / "mlflow.db", "sso": state.data_dir / "auth.db"}


def _dump_databases(settings: Settings, state: StateDir, out: Path, sso: bool) -> list[Path]:
    written: list[Path] = []
    names = {"metadata": settings.database.name, "sso": settings.database.auth_name}
    kinds = ["metadata", "sso"] if sso else ["metadata"]
    for kind in kinds:
        if settings.database.backend == "sqlite":
            source = _sqlite_paths(state)[kind]
            if not source.exists() and kind == "sso":
                continue  # SSO on, but the server never ran with it: no SSO data yet
            if not source.exists():
                raise BackupError(f"no {kind} database at {source}: nothing to back up")
            target = out / f"{kind}.sqlite"
            # The online backup API gives a consistent copy while the server writes.
            with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
                src.backup(dst)
        else:
            target = out / f"{kind}.dump"
            _run([_pg_bin("pg_dump"), "--format=custom", "--no-owner", "--file", str(target),
                  names[kind]], _pg_env(settings), f"pg_dump of database {names[kind]}")
        written.append(target)
    return written


def _restore_databases(settings: Settings, state: StateDir, src: Path, sso: bool) -> None:
    names = {"metadata": settings.database.name, "sso": settings.database.auth_name}
    kinds = ["metadata", "sso"] if sso else ["metadata"]
    for kind in kinds:
        if settings.database.backend == "sqlite":
            target = _sqlite_paths(state)[kind]
            target.parent.mkdir(parents=True, exist_ok=True)
            with sqlite3.connect(src / f"{kind}.sqlite") as s, sqlite3.connect(target) as d:
                s.backup(d)
        else:
            from mlflow_stack.components import postgres

            postgres.ensure_database(settings, names[kind])
            _run([_pg_bin("pg_restore"), "--no-owner",
                  "--exit-on-error", "--dbname", names[kind], str(src / f"{kind}.dump")],
                 _pg_env(settings), f"pg_restore into database {names[kind]}")


def count_rows(settings: Settings, state: StateDir) -> dict[str, int]:
    """Row counts of MLflow's standard tables (missing database or table: 0)."""
    counts: dict[str, int] = {}
    if settings.database.backend == "sqlite":
        path = _sqlite_paths(state)["metadata"]
        if not path.exists():
            return dict.fromkeys(COUNTED_TABLES, 0)
        with sqlite3.connect(path) as conn:
            for table in COUNTED_TABLES:
                try:
                    counts[table] = int(conn.execute(
                        f"SELECT count(*) FROM {table}").fetchone()[0])
                except sqlite3.OperationalError:
                    counts[table] = 0
        return counts
    from psycopg import sql

    from mlflow_stack.components import postgres

    with postgres.connect(postgres.admin_target(settings)) as admin:
        if not postgres.database_exists(admin, settings.database.name):
            return dict.fromkeys(COUNTED_TABLES, 0)
    target = postgres.owner_target(settings)
    with postgres.connect(target, settings.database.name) as conn:
        for table in COUNTED_TABLES:
            row = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()
            if not row or row[0] is None:
                counts[table] = 0
                continue
            got = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
                sql.Identifier(table))).fetchone()
            counts[table] = int(str(got[0])) if got else 0
    return counts


# ------------------------------------------------------------------ artifacts


def _artifact_keys(settings: Settings) -> tuple[Any, str]:
    from mlflow_stack.components import bucket

    prefix = settings.artifacts.prefix.strip("/")
    return bucket.s3_client(settings), (prefix + "/" if prefix else "")


def _dump_artifacts(settings: Settings, state: StateDir, out: Path) -> None:
    target = out / "artifacts"
    target.mkdir()
    if settings.artifacts.backend == "local":
        if state.artifacts_dir.exists():
            shutil.copytree(state.artifacts_dir, target, dirs_exist_ok=True)
        return
    client, prefix = _artifact_keys(settings)
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=settings.artifacts.bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            relative = obj["Key"][len(prefix):]
            dest = target / relative
            dest.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(settings.artifacts.bucket, obj["Key"], str(dest))


def _artifacts_present(settings: Settings, state: StateDir) -> bool:
    if settings.artifacts.backend == "local":
        return state.artifacts_dir.exists() and any(state.artifacts_dir.iterdir())
    from botocore.exceptions import ClientError

    client, prefix = _artifact_keys(settings)
    try:
        page = client.list_objects_v2(Bucket=settings.artifacts.bucket, Prefix=prefix, MaxKeys=1)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NoSuchBucket":
            return False  # restore creates it
        raise
    return bool(page.get("KeyCount", 0))


def _restore_artifacts(settings: Settings, state: StateDir, src: Path) -> None:
    source = src / "artifacts"
    if settings.artifacts.backend == "local":
        shutil.copytree(source, state.artifacts_dir, dirs_exist_ok=True)
        return
    from mlflow_stack.components import bucket

    bucket.ensure_bucket(settings)
    client, prefix = _artifact_keys(settings)
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        key = prefix + path.relative_to(source).as_posix()
        client.upload_file(str(path), settings.artifacts.bucket, key)


# ------------------------------------------------------------------ checksums


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _file_index(directory: Path) -> dict[str, dict[str, Any]]:
    return {p.relative_to(directory).as_posix(): {"sha256": sha256_file(p),
                                                   "size": p.stat().st_size}
            for p in sorted(directory.rglob("*")) if p.is_file() and p.name != MANIFEST}


def verify_backup(directory: Path) -> Manifest:
    """The manifest, after checking every file it lists (and that there are no others)."""
    manifest = Manifest.load(directory)
    actual = _file_index(directory)
    missing = sorted(set(manifest.files) - set(actual))
    changed = sorted(p for p in manifest.files if p in actual and actual[p] != manifest.files[p])
    extra = sorted(set(actual) - set(manifest.files))
    if missing or changed or extra:
        parts = [f"{label}: {', '.join(items[:5])}" for label, items in
                 (("missing", missing), ("checksum differs", changed), ("unexpected", extra))
                 if items]
        raise BackupError(f"backup {directory} does not match its manifest ({'; '.join(parts)})")
    return manifest


# ------------------------------------------------------------------ entry points


def _sso_on(settings: Settings) -> bool:
    return settings.sso


def backup(settings: Settings, state: StateDir, out: Path, progress: Progress, *,
           artifacts: bool = True) -> Manifest:
    """Write a backup of the platform into `out` (must not exist or be empty); with
    artifacts=False only the databases."""
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"backup directory {out} is not empty: choose a new one")
    out.mkdir(parents=True, exist_ok=True)
    with progress.step("databases"):
        written = _dump_databases(settings, state, out, _sso_on(settings))
        for path in written:
            progress.detail(f"{path.name}: {path.stat().st_size} bytes")
    sso = any(path.stem == "sso" for path in written)
    if artifacts:
        with progress.step("artifacts"):
            _dump_artifacts(settings, state, out)
    with progress.step("manifest"):
        manifest = Manifest(
            created_at=time.time(), mlflow_stack_version=__version__,
            mlflow_version=MLFLOW_VERSION, metadata_backend=settings.database.backend,
            artifacts_backend=settings.artifacts.backend, counts=count_rows(settings, state),
            files=_file_index(out), sso=sso, artifacts_included=artifacts,
            schema_revision=schema.current_revision(settings, state.data_dir),
        )
        manifest.save(out)
        progress.detail(", ".join(f"{k} {v}" for k, v in manifest.counts.items()))
        progress.detail(f"{len(manifest.files)} files")
    return manifest


@dataclass
class RestoreResult:
    manifest: Manifest
    counts: dict[str, int]

    @property
    def matches(self) -> bool:
        return self.counts == self.manifest.counts


def _move_databases_aside(settings: Settings, state: StateDir, sso: bool) -> list[str]:
    """Keep the current databases under a new name (nothing is deleted); what was moved. If
    one cannot be moved (in use), those already moved are put back: all or nothing."""
    from mlflow_stack.components import postgres

    suffix = time.strftime("replaced_%Y%m%d_%H%M%S")
    undo: list[Callable[[], object]] = []
    moved: list[str] = []
    try:
        for kind in (["metadata", "sso"] if sso else ["metadata"]):
            if settings.database.backend == "sqlite":
                path = _sqlite_paths(state)[kind]
                if path.exists():
                    aside = path.rename(path.with_name(f"{path.name}.{suffix}"))
                    undo.append(functools.partial(aside.rename, path))
                    moved.append(f"{path} → {aside.name}")
                continue
            name = settings.database.name if kind == "metadata" else settings.database.auth_name
            if postgres.rename_database(settings, name, f"{name}_{suffix}"):
                undo.append(functools.partial(postgres.rename_database, settings,
                                              f"{name}_{suffix}", name))
                moved.append(f"database {name} → {name}_{suffix}")
    except BaseException:
        for step in reversed(undo):
            step()
        raise
    return moved


def restore(settings: Settings, state: StateDir, src: Path, progress: Progress, *,
            replace: bool = False) -> RestoreResult:
    """Restore `src` into an empty platform (server stopped), then compare the row counts.

    replace: the current databases are moved aside (renamed, never deleted) instead of the
    restore being refused: the way back after a failed upgrade. Artifacts are never replaced.
    """
    with progress.step("check backup"):
        manifest = verify_backup(src)
        if manifest.metadata_backend != settings.database.backend:
            raise ConfigError(
                f"backup holds a {manifest.metadata_backend} database; this config uses "
                f"{settings.database.backend}")
        if manifest.sso and not _sso_on(settings):
            raise ConfigError("backup includes the SSO database; this config has auth.provider "
                              "none")
        progress.detail(f"{len(manifest.files)} files match their checksums")
    with progress.step("check target is empty"):
        state.prepare()
        if process.find_running(state).record is not None:
            raise ConfigError("the platform is running: stop it first (mlflow-stack down)")
        if any(count_rows(settings, state).values()) and not replace:
            raise ConfigError("the target database already holds data: restore needs an empty "
                              "platform (a new state dir / database)",
                              hint="--replace moves the current databases aside (renamed, not "
                                   "deleted) and restores the backup's")
        if manifest.artifacts_included and _artifacts_present(settings, state):
            raise ConfigError("the target artifact store is not empty: restore needs an empty "
                              "platform (a new artifact folder / bucket or prefix)")
    with progress.step("databases"):
        if replace:
            for line in _move_databases_aside(settings, state, manifest.sso):
                progress.detail(f"kept aside: {line}")
        _restore_databases(settings, state, src, manifest.sso)
    if manifest.artifacts_included:
        with progress.step("artifacts"):
            _restore_artifacts(settings, state, src)
    with progress.step("compare"):
        counts = count_rows(settings, state)
        result = RestoreResult(manifest, counts)
        if not result.matches:
            raise BackupError(f"restored row counts {counts} differ from the backup's "
                              f"{manifest.counts}")
        progress.detail("row counts match the manifest")
    return result
