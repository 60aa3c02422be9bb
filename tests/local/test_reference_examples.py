"""`up` on embedded defaults and on PostgreSQL + S3: the reference's client and registry examples
work, and the data survives a stop and a start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr

from harness.ports import free_port
from harness.postgres import PostgresServer
from harness.reference_client import run_reference_client
from harness.s3 import S3Server
from mlflow_stack.config.model import Settings
from mlflow_stack.config.secrets import Secrets
from mlflow_stack.local import platform
from mlflow_stack.local.state import StateDir
from mlflow_stack.progress import NullProgress

pytestmark = pytest.mark.integration


def round_trip(settings: Settings, state: StateDir) -> tuple[dict[str, Any], dict[str, Any]]:
    first = platform.up(settings, state, NullProgress())
    try:
        written = run_reference_client("write", first.record.url)
    finally:
        assert platform.down(state) is not None
    assert platform.status(state).running is False
    second = platform.up(settings, state, NullProgress())
    try:
        assert second.record.pid != first.record.pid
        checked = run_reference_client("check", second.record.url)
    finally:
        platform.down(state)
    assert checked["run_id"] == written["run_id"]
    assert checked["version"] == written["version"]
    return written, checked


def test_embedded_defaults_keep_data_across_restart(tmp_path: Path) -> None:
    settings = Settings.model_validate({"server": {"port": free_port()}})
    state = StateDir(tmp_path / "state")
    written, _ = round_trip(settings, state)
    assert (state.data_dir / "mlflow.db").is_file()
    run_dir = state.artifacts_dir / str(written["experiment_id"]) / str(written["run_id"])
    assert (run_dir / "artifacts" / "notes.txt").read_text() == "artifact round trip\n"


def test_postgres_and_s3_keep_data_across_restart(
    tmp_path: Path, postgres_server: PostgresServer, s3_server: S3Server
) -> None:
    settings = Settings.model_validate({
        "server": {"port": free_port()},
        "database": {"backend": "postgresql", "host": "127.0.0.1", "port": postgres_server.port,
                     "name": "mlflow_examples", "user": postgres_server.superuser},
        "artifacts": {"backend": "s3", "bucket": "mlflow-examples",
                      "endpoint_url": s3_server.endpoint_url},
    }).model_copy(update={"secrets": Secrets.model_construct(
        admin_password=SecretStr(postgres_server.password),
        s3_access_key_id=SecretStr(s3_server.access_key),
        s3_secret_access_key=SecretStr(s3_server.secret_key))})
    state = StateDir(tmp_path / "state")
    written, _ = round_trip(settings, state)

    # Metadata really is in PostgreSQL: MLflow's standard schema in the configured database.
    with psycopg.connect(postgres_server.dsn("mlflow_examples")) as conn:
        row = conn.execute("SELECT key, value FROM params WHERE run_uuid = %s AND key = %s",
                           (written["run_id"], "batch_size")).fetchone()
        assert row == ("batch_size", "32")
        assert conn.execute("SELECT name FROM registered_models").fetchall() == [("my-model",)]
    # Artifacts really are in the bucket, in the reference's layout, and not on local disk.
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(
        Bucket="mlflow-examples").get("Contents", [])]
    assert f"artifacts/{written['experiment_id']}/{written['run_id']}/artifacts/notes.txt" in keys
    assert any(k.endswith("MLmodel") for k in keys), keys
    assert not any(state.artifacts_dir.rglob("*.txt"))
