"""The metadata database (reachable, schema current) and the artifact store (writable), for a
local platform and for one deployed on Kubernetes."""

from __future__ import annotations

from mlflow_stack.config.model import Settings
from mlflow_stack.errors import StackError
from mlflow_stack.local.state import StateDir
from mlflow_stack.ops.doctor.findings import Finding, ok, problem, skipped


def check_database(settings: Settings, state: StateDir, *, deployed: bool = False) -> Finding:
    from mlflow_stack.server import migrations

    name = "database"
    upgrade = ("mlflow-stack upgrade (backs up the databases; the migration Job upgrades the "
               "schema before the new pods start)" if deployed else
               "mlflow-stack upgrade (backs up the databases, migrates, restarts the server)")
    try:
        revision = migrations.current_revision(settings, state.data_dir)
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


def check_bucket(settings: Settings, state: StateDir) -> Finding:
    name = "artifact store"
    if settings.artifacts.backend == "local":
        path = state.artifacts_dir
        if not path.is_dir():
            return problem(name, f"{path} is missing", "mlflow-stack up recreates it")
        return ok(name, f"local folder {path}")
    from botocore.exceptions import BotoCoreError, ClientError

    from mlflow_stack.components import bucket

    key = ".mlflow-stack-doctor"
    try:
        client = bucket.s3_client(settings)
        client.put_object(Bucket=settings.artifacts.bucket, Key=key, Body=b"doctor")
        client.delete_object(Bucket=settings.artifacts.bucket, Key=key)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "NoSuchBucket":
            return problem(name, f"bucket {settings.artifacts.bucket!r} does not exist",
                           "mlflow-stack apply (or up) creates it; restore artifacts from a "
                           "backup if it was deleted")
        return problem(name, f"bucket {settings.artifacts.bucket!r} not writable ({code})",
                       "check the S3 keys and the bucket policy")
    except (BotoCoreError, StackError) as exc:
        return problem(name, f"S3 at {settings.artifacts.endpoint_url}: {exc}",
                       "check artifacts.endpoint_url and that the S3 server runs")
    return ok(name, f"bucket {settings.artifacts.bucket} reachable and writable")


def check_database_deployed(settings: Settings, state: StateDir) -> Finding:
    return check_database(settings, state, deployed=True)


def check_database_in_pod(settings: Settings, state: StateDir) -> Finding:
    return skipped("database", "SQLite on the server's volume inside the pod: not reachable "
                   "from here (pods and PVCs show whether the server starts)")


def check_artifacts_on_volume(settings: Settings, state: StateDir) -> Finding:
    return ok("artifact store", f"local artifacts on PVC {settings.storage.local_pvc_name} "
              "(see PVCs)")
