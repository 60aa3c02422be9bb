"""`up`, `down` and `status` of the local platform, step by step with progress."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr

from mlflow_stack.components.base import Change
from mlflow_stack.config.model import Settings
from mlflow_stack.deploy import apply_system, local_entries
from mlflow_stack.errors import StackError
from mlflow_stack.launch.command import build_server_launch
from mlflow_stack.launch.spec import ServerLaunch, ServerPaths
from mlflow_stack.local import process, schema
from mlflow_stack.local.process import ServerRecord
from mlflow_stack.local.startup import StartupLog
from mlflow_stack.local.state import StateDir
from mlflow_stack.progress import Progress
from mlflow_stack.resolve import resolve


@dataclass
class UpResult:
    record: ServerRecord
    already_running: bool = False
    stale_removed: bool = False
    changes: list[Change] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None


@dataclass
class Status:
    running: bool
    state_dir: str
    record: ServerRecord | None = None
    memory_uss_bytes: int = 0
    processes: int = 0
    healthy: bool = False
    stale_removed: bool = False


def describe(settings: Settings, paths: ServerPaths) -> tuple[str, str, str]:
    """Human labels for the metadata store, artifact store and auth of these settings."""
    db = settings.database
    metadata = (f"sqlite {paths.data_dir / 'mlflow.db'}" if db.backend == "sqlite"
                else f"postgresql {db.host}:{db.port}/{db.name}")
    a = settings.artifacts
    artifacts = (f"{a.destination} at {a.endpoint_url or 'AWS'}" if a.backend == "s3"
                 else str(paths.artifacts_dir))
    auth = "none" if not settings.sso else (
        f"keycloak {settings.auth.keycloak_url}/realms/{settings.auth.realm}")
    return metadata, artifacts, auth


def server_launch(settings: Settings, state: StateDir) -> ServerLaunch:
    # Run mlflow from the interpreter we are installed in, not whatever `mlflow` is on PATH.
    return build_server_launch(settings, state.server_paths(),
                               executable=[sys.executable, "-m", "mlflow_stack.server.serve"])


def with_sso_secrets(settings: Settings, state: StateDir) -> Settings:
    """Resolved settings (the OIDC client secret from the environment, else from Keycloak)
    whose SSO session key is kept in the state dir unless given."""
    settings = resolve(settings, cluster=False, client_secret="read")
    if settings.secrets.secret_key is not None:
        return settings
    secrets = settings.secrets.model_copy(update={"secret_key": SecretStr(state.secret_key())})
    return settings.model_copy(update={"secrets": secrets})


def up(settings: Settings, state: StateDir, progress: Progress, *,
       config: Path | None = None) -> UpResult:
    """Bring the platform up and return once /health answers. Re-running finds the live server.

    `config` is the file the settings came from (None: embedded defaults); it is recorded with
    the address so that a restart brings the server back as it was started. Nothing is created
    before the port is known to be free."""
    lookup = process.find_running(state)
    if lookup.record is not None:
        return UpResult(lookup.record, already_running=True)
    process.check_port_free(settings.server.bind_host, settings.server.port)
    with progress.step("state directory"):
        state.prepare()
        progress.detail(str(state.root))

    changes: list[Change] = []
    if settings.sso:
        with progress.step("single sign-on"):
            settings = with_sso_secrets(settings, state)
            progress.detail(f"{settings.auth.keycloak_url}/realms/{settings.auth.realm}, "
                            f"client {settings.auth.client_id}")
    for entry in local_entries(settings):
        with progress.step(entry.name):
            done = apply_system(entry.system, settings)
            changes += done
            for c in done:
                progress.detail(f"{c.target}: {c.action}")
    launch = server_launch(settings, state)
    # An old schema is backed up before it is migrated.
    _, behind = schema.schema_behind(settings, state)
    schema.migrate(settings, state, launch, progress,
                   backup_to=schema.default_backup_dir(state) if behind else None,
                   serving="No server was started.")
    if settings.sso and (settings.permissions.managed or settings.server.workspaces):
        with progress.step("permissions"):
            changes += _grants(settings, state, progress)
    if settings.artifacts.models_dir is not None:
        # The reference's shared models volume: made available, never used as artifact store.
        settings.artifacts.models_dir.mkdir(parents=True, exist_ok=True)

    with progress.step("start server"):
        log = StartupLog(state.log_file, process.log_size(state), settings.effective_workers)
        proc = process.spawn(launch, state, dict(os.environ))
        metadata, artifacts, auth = describe(settings, state.server_paths())
        record = ServerRecord(
            pid=proc.pid, create_time=_create_time(proc.pid), url=settings.local_url,
            port=settings.server.port, started_at=time.time(), metadata=metadata,
            artifacts=artifacts, auth=auth, versions=process.installed_versions(),
            host=settings.server.bind_host,
            config=str(config.expanduser().resolve()) if config is not None else None,
            start_ticks=process.start_ticks(proc.pid),
        )
        record.save(state)
        progress.detail(f"pid {proc.pid}, log {state.log_file}")

    def show_activity(_elapsed: float) -> None:
        for text in log.poll():
            progress.activity(text)

    with progress.step("health"):
        try:
            process.wait_healthy(settings.local_url, proc, state, settings.server.health_timeout,
                                 on_wait=show_activity)
        except Exception:
            state.pid_file.unlink(missing_ok=True)
            raise
        progress.detail(f"{settings.local_url}/health answered")
    if settings.database.backend == "postgresql":
        changes += _indexes(settings, progress)
    return UpResult(record, stale_removed=lookup.stale_removed, changes=changes, process=proc)


def _indexes(settings: Settings, progress: Progress) -> list[Change]:
    """The search indexes (components/postgres_indexes.py), now that the server has made
    MLflow's schema. The server already serves: a failure is reported, not raised (`doctor`
    and the next `up` or apply show them missing)."""
    import psycopg

    from mlflow_stack.components import postgres_indexes

    with progress.step("indexes"):
        try:
            done = postgres_indexes.ensure_indexes(settings, progress)
        except (StackError, psycopg.Error) as exc:
            text = exc.message if isinstance(exc, StackError) else str(exc).strip()
            progress.detail(f"not created: {text}")
            return []
        for c in done:
            progress.detail(f"{c.target}: {c.action}")
        return done


def _grants(settings: Settings, state: StateDir, progress: Progress) -> list[Change]:
    """The config's grants, before the server starts (the migrations made the SSO schema)."""
    from mlflow_stack.components import permissions

    client = permissions.open_local(settings, str(state.data_dir))
    try:
        done = permissions.reconcile(client, settings, progress)
    finally:
        client.close()
    for c in done:
        if not c.is_change:  # the changes were steps of their own
            progress.detail(f"{c.target}: {c.detail}")
    return done


def _create_time(pid: int) -> float:
    import psutil

    return float(psutil.Process(pid).create_time())


def down(state: StateDir) -> ServerRecord | None:
    """Stop the server of this state dir; None if none was running."""
    lookup = process.find_running(state)
    if lookup.record is None:
        return None
    with _marker(state, "stopping"):  # for a foreground `up`: stopped, not crashed
        process.stop_tree(lookup.record.pid)
        state.pid_file.unlink(missing_ok=True)
    return lookup.record


def status(state: StateDir) -> Status:
    lookup = process.find_running(state)
    result = Status(running=lookup.record is not None, state_dir=str(state.root),
                    record=lookup.record, stale_removed=lookup.stale_removed)
    if lookup.record is not None:
        result.memory_uss_bytes = process.tree_memory_uss(lookup.record.pid)
        result.processes = process.tree_size(lookup.record.pid)
        result.healthy = _healthy(lookup.record.url)
    return result


def _healthy(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/health", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def wait_foreground(up_result: UpResult) -> int:
    """Block until the server exits; the caller stops it on Ctrl-C."""
    if up_result.process is None:
        return 0
    return up_result.process.wait()


@dataclass
class Ended:
    """How a foreground server ended: `crashed` (its record was left behind: it exited on its
    own), else stopped by another command (`down`), or restarted by one (`upgrade`): then
    `successor` is the new server."""

    crashed: bool
    successor: ServerRecord | None = None


@contextmanager
def restarting(state: StateDir) -> Iterator[None]:
    """Marks a restart under way (down, then up) for a foreground `up` that sees its server
    stop, so it waits for the new one instead of reporting a crash."""
    with _marker(state, "restarting"):
        yield


@contextmanager
def _marker(state: StateDir, name: str) -> Iterator[None]:
    marker = state.root / "run" / name
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(str(os.getpid()))
    try:
        yield
    finally:
        marker.unlink(missing_ok=True)


def why_ended(state: StateDir, record: ServerRecord, timeout: float = 300.0) -> Ended:
    """After the foreground server `record` exited: was it restarted (then wait up to
    `timeout` for the new server's record), stopped by another command, or did it crash?"""
    run = state.root / "run"
    deadline = time.monotonic() + timeout
    while (run / "restarting").exists() and time.monotonic() < deadline:
        now = process.find_running(state).record
        if now is not None and now.pid != record.pid:
            return Ended(crashed=False, successor=now)
        time.sleep(0.2)
    if (run / "stopping").exists():
        return Ended(crashed=False)
    lookup = process.find_running(state)
    if lookup.record is not None and lookup.record.pid != record.pid:
        return Ended(crashed=False, successor=lookup.record)
    # Its record left behind (now removed as stale): it exited on its own.
    return Ended(crashed=lookup.stale_removed)


def log_path(state: StateDir) -> Path:
    return state.log_file
