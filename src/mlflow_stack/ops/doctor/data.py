"""The metadata database's schema (current or not) and the local artifact folder, for a local
platform and for one deployed on Kubernetes; a PostgreSQL server and an S3 bucket are checked by
their systems (components)."""

from __future__ import annotations

from mlflow_stack.config.model import Settings
from mlflow_stack.errors import StackError
from mlflow_stack.local.state import StateDir
from mlflow_stack.ops.doctor.findings import Finding, ok, problem, skipped


def check_database(settings: Settings, state: StateDir, *, deployed: bool = False) -> Finding:
    from mlflow_stack.launch import migrations
    from mlflow_stack.local.revision import current_revision

    name = "database"
    upgrade = ("mlflow-stack upgrade (backs up the databases; the migration Job upgrades the "
               "schema before the new pods start)" if deployed else
               "mlflow-stack upgrade (backs up the databases, migrates, restarts the server)")
    try:
        revision = current_revision(settings, state.data_dir)
    except StackError as exc:
        return problem(name, exc.message, exc.hint or "check database.host/port and password")
    head = migrations.mlflow_head_revision()
    if revision is None:
        return problem(name, "the database has no MLflow schema",
                       f"mlflow-stack {'apply' if deployed else 'up'} creates it (or restore "
                       "a backup)")
    if revision != head:
        return problem(name, f"schema at revision {revision}, MLflow {head} expected", upgrade)
    where = (f"{settings.database.host}:{settings.database.port}/{settings.database.name}"
             if settings.database.backend == "postgresql" else "sqlite")
    return ok(name, f"{where} reachable, schema current ({head})")


def check_artifact_folder(settings: Settings, state: StateDir) -> Finding:
    """The local artifact folder (an S3 bucket is the bucket system's check)."""
    path = state.artifacts_dir
    if not path.is_dir():
        return problem("artifact store", f"{path} is missing", "mlflow-stack up recreates it")
    return ok("artifact store", f"local folder {path}")


def check_database_deployed(settings: Settings, state: StateDir) -> Finding:
    return check_database(settings, state, deployed=True)


def check_database_in_pod(settings: Settings, state: StateDir) -> Finding:
    return skipped("database", "SQLite on the server's volume inside the pod: not reachable "
                   "from here (pods and PVCs show whether the server starts)")


def check_artifacts_on_volume(settings: Settings, state: StateDir) -> Finding:
    return ok("artifact store", f"local artifacts on PVC {settings.storage.local_pvc_name} "
              "(see PVCs)")
