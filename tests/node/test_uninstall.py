"""`uninstall` on the real node, last of the node tests (it takes the session's
`reference_platform` down): the data stays, a re-`apply` shows the same runs and artifacts, and
`--purge` removes what it says it removes."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from harness.keycloak import admin_client
from harness.node_platform import NAMESPACE, REALM, Deployed, wait_for

pytestmark = pytest.mark.integration

REFERENCE_CLIENT = Path(__file__).resolve().parents[1] / "local" / "reference_client.py"


def test_uninstall_keeps_the_data_and_purge_removes_it(reference_platform: Deployed) -> None:
    platform = reference_platform
    config = str(platform.config)  # the last applied: replicas and tag of the tests before
    kept = platform.cli("uninstall", "-c", config)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    wait_for(lambda: not platform.server_pods(), "server pods gone after uninstall")
    again = platform.cli("apply", "-c", config)
    assert again.returncode == 0, again.stdout + again.stderr
    # What the reference client wrote earlier is all there (the example's own check).
    platform.run_python(str(REFERENCE_CLIENT), "check", env=platform.user_env())

    purged = platform.cli("uninstall", "-c", config, "--purge")
    assert purged.returncode == 0, purged.stdout + purged.stderr
    with psycopg.connect(platform.postgres.server.dsn()) as conn:
        databases = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
    assert not {"mlflow", "mlflow_auth"} & databases, databases
    assert "mlflow" not in platform.bucket_names()
    assert admin_client(platform.keycloak.server, REALM).get_client_id("mlflow") is None
    with platform.node.api.admin_http() as http:
        pvc = http.get(f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims/mlflow-storage")
    assert pvc.status_code == 404 or pvc.json()["metadata"].get("deletionTimestamp"), pvc.text
