"""`upgrade` against real servers: a platform already current is left alone; a server started by
an earlier install is backed up, migrated and restarted; a failed migration leaves the old
server serving and the rollback it prints works; on Kubernetes a new image is backed up first,
migrated by its Job before the rollout, and a failed Job leaves the Deployment unchanged."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from lightkube import Client, KubeConfig
from lightkube.codecs import from_dict
from lightkube.resources.apps_v1 import Deployment
from pydantic import SecretStr

from harness.fake_controllers import FakeControllers
from harness.kubeapi import KubeAPIServer
from harness.old_schema import OLD_REVISION, make_old_db
from harness.ports import free_port
from harness.postgres import PostgresServer
from harness.s3 import S3Server
from mlflow_stack.config.model import Settings
from mlflow_stack.config.secrets import Secrets
from mlflow_stack.errors import ConfigError, ServerError
from mlflow_stack.launch import migrations
from mlflow_stack.local import backup as backups
from mlflow_stack.local import platform, process
from mlflow_stack.local.schema import UpgradeFailed
from mlflow_stack.local.state import StateDir
from mlflow_stack.manifests import workload
from mlflow_stack.ops import upgrade
from mlflow_stack.progress import NullProgress

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "mlflow_stack.cli.main"]
# MLflow 3.17.2's last migration creates the job tables: stamping the schema one revision back
# while they exist makes `mlflow db upgrade` fail for real ("table ... already exists").
BEFORE_HEAD = "75868b020152"


@pytest.fixture
def local(tmp_path: Path) -> Iterator[tuple[Settings, StateDir]]:
    settings = Settings.model_validate({"server": {"port": free_port()}})
    state = StateDir(tmp_path / "state")
    platform.up(settings, state, NullProgress())
    try:
        yield settings, state
    finally:
        platform.down(state)


def experiment(url: str, name: str) -> str:
    created = httpx.post(f"{url}/api/2.0/mlflow/experiments/create", json={"name": name},
                         timeout=30)
    assert created.status_code == 200, created.text
    return str(created.json()["experiment_id"])


def revision(state: StateDir) -> str:
    with sqlite3.connect(state.data_dir / "mlflow.db") as conn:
        return str(conn.execute("SELECT version_num FROM alembic_version").fetchone()[0])


def pretend_started_by(state: StateDir, versions: str) -> None:
    """What the pid file holds after `pip install -U`: the server runs the previous install."""
    data = json.loads(state.pid_file.read_text())
    data["versions"] = versions
    state.pid_file.write_text(json.dumps(data))


def cli(*args: str, state: StateDir) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args, "--state-dir", str(state.root)], capture_output=True,
                          text=True, timeout=600, check=False)


def test_current_platform_is_left_alone(local: tuple[Settings, StateDir]) -> None:
    settings, state = local
    before = process.find_running(state).record
    assert before is not None and before.versions == process.installed_versions()
    result = upgrade.upgrade_local(settings, state, NullProgress())
    assert result.up_to_date and result.backup is None and not result.restarted
    after = process.find_running(state).record
    assert after is not None and after.pid == before.pid
    assert not (state.root / "backups").exists()
    text = cli("upgrade", state=state)
    assert text.returncode == 0, text.stderr
    assert "Already up to date (local); nothing changed." in text.stdout


def test_server_of_an_earlier_install_is_backed_up_and_restarted(
    local: tuple[Settings, StateDir]
) -> None:
    _, state = local
    old = process.find_running(state).record
    assert old is not None
    experiment(old.url, "before-upgrade")
    pretend_started_by(state, "mlflow 3.16.0, mlflow-oidc-auth 10.1.2, mlflow-stack 0.0.9")

    result = cli("upgrade", "-o", "json", state=state)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["reasons"] == [f"the server runs mlflow 3.16.0, mlflow-oidc-auth 10.1.2, "
                                 f"mlflow-stack 0.0.9; installed: {process.installed_versions()}"]
    assert report["restarted"] is True
    new = process.find_running(state).record
    assert new is not None and new.pid != old.pid and not psutil_alive(old.pid)
    assert new.versions == process.installed_versions()
    assert new.url == old.url, "restarted where it was (not on the default port)"
    # The backup came first, holds the databases only, and verifies.
    backup = Path(report["backup"])
    manifest = backups.verify_backup(backup)
    assert not manifest.artifacts_included and manifest.counts["experiments"] == 2
    assert manifest.schema_revision == migrations.mlflow_head_revision()
    assert not (backup / "artifacts").exists()
    # The data survived the restart.
    listed = httpx.get(f"{new.url}/api/2.0/mlflow/experiments/get-by-name",
                       params={"experiment_name": "before-upgrade"}, timeout=30)
    assert listed.status_code == 200, listed.text


def psutil_alive(pid: int) -> bool:
    import psutil

    return psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"


def test_upgrade_brings_the_server_back_as_up_started_it(tmp_path: Path) -> None:
    """`up -c CONFIG --port P` in the foreground, then `upgrade` without options from another
    directory: the server comes back on P with CONFIG, and the foreground `up` lets go of it
    without deleting the new server's record."""
    port, config_port = free_port(), free_port()
    config = tmp_path / "mlflow-stack.yaml"
    config.write_text(f"server:\n  port: {config_port}\n")
    state = StateDir(tmp_path / "state")
    foreground = subprocess.Popen(
        [*CLI, "up", "-c", str(config), "--port", str(port), "--state-dir", str(state.root)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert foreground.stdout is not None
        seen = ""
        while "Press Ctrl-C" not in seen:
            line = foreground.stdout.readline()
            assert line, seen + (foreground.stderr.read() if foreground.stderr else "")
            seen += line
        old = process.find_running(state).record
        assert old is not None and old.port == port and old.host == "127.0.0.1"
        assert old.config == str(config.resolve())
        pretend_started_by(state, "mlflow 3.16.0, mlflow-oidc-auth 10.1.2, mlflow-stack 0.0.9")
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        # A different config is refused before anything changes.
        (elsewhere / "other.yaml").write_text("server:\n  port: 5000\n")
        refused = cli("upgrade", "-c", str(elsewhere / "other.yaml"), state=state)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert f"was started with -c {config.resolve()}" in " ".join(refused.stderr.split())
        still = process.find_running(state).record
        assert still is not None and still.pid == old.pid

        upgraded = subprocess.run([*CLI, "upgrade", "--state-dir", str(state.root)],
                                  cwd=elsewhere, capture_output=True, text=True, timeout=600,
                                  check=False)
        assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
        new = process.find_running(state).record
        assert new is not None and new.pid != old.pid
        assert (new.url, new.port, new.host, new.config) == (old.url, port, old.host,
                                                             old.config)
        assert httpx.get(f"{new.url}/health", timeout=10).status_code == 200
        assert not psutil_alive(old.pid)
        # The foreground `up` saw its server replaced: it says so, exits 0, keeps the record.
        assert foreground.wait(timeout=60) == 0
        assert foreground.stderr is not None
        said = " ".join(foreground.stderr.read().split())
        assert f"the server was restarted by another command (now pid {new.pid}" in said
        kept = process.find_running(state).record
        assert kept is not None and kept.pid == new.pid
    finally:
        if foreground.poll() is None:
            foreground.kill()
            foreground.wait()
        platform.down(state)


def test_upgrade_refuses_when_the_address_is_taken_and_changes_nothing(
    local: tuple[Settings, StateDir]
) -> None:
    """The address the server must come back on is held by another process: upgrade stops
    before the backup, the migrations and the stop; the old server keeps serving."""
    _, state = local
    old = process.find_running(state).record
    assert old is not None
    pretend_started_by(state, "mlflow 3.16.0, mlflow-oidc-auth 10.1.2, mlflow-stack 0.0.9")
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        taken = other.getsockname()[1]
        # A record whose address another process holds (as after a hand edit or a crash).
        data = json.loads(state.pid_file.read_text())
        data["port"] = taken
        state.pid_file.write_text(json.dumps(data))
        failed = cli("upgrade", state=state)
    said = " ".join(failed.stderr.split())
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "Traceback" not in failed.stderr
    assert f"would restart on 127.0.0.1:{taken}, where pid {os.getpid()} listens" in said
    assert f"nothing was changed, and the server (pid {old.pid}) keeps running" in said
    same = process.find_running(state).record
    assert same is not None and same.pid == old.pid
    assert httpx.get(f"{old.url}/health", timeout=10).status_code == 200
    assert not (state.root / "backups").exists()


def test_a_restart_that_fails_after_the_stop_says_how_to_start_again(
    local: tuple[Settings, StateDir], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should the address be taken in the moment between stop and start, the error says that
    the old server was stopped, and the command it prints starts the server where it was."""
    _, state = local
    old = process.find_running(state).record
    assert old is not None
    pretend_started_by(state, "mlflow 3.16.0, mlflow-oidc-auth 10.1.2, mlflow-stack 0.0.9")

    def taken(*_: Any, **__: Any) -> None:
        raise ConfigError(f"port {old.port} on 127.0.0.1 is already in use")

    monkeypatch.setattr(platform, "up", taken)
    with pytest.raises(ServerError) as failed:
        upgrade.upgrade_local(Settings(), state, NullProgress())
    monkeypatch.undo()
    assert f"the previous server (pid {old.pid}) was stopped for the upgrade" in \
        failed.value.message
    assert failed.value.hint is not None
    command = failed.value.hint.rsplit("start the server with: ", 1)[1].split()
    assert command[:2] == ["mlflow-stack", "up"] and "--port" in command
    assert command[command.index("--port") + 1] == str(old.port)
    started = subprocess.run([*CLI, *command[1:]], capture_output=True, text=True,
                             timeout=600, check=False)
    assert started.returncode == 0, started.stdout + started.stderr
    again = process.find_running(state).record
    assert again is not None and again.url == old.url


def test_old_schema_without_a_server_is_migrated_not_started(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    state.prepare()
    make_old_db(state.data_dir / "mlflow.db")
    settings = Settings.model_validate({"server": {"port": free_port()}})
    progress = NullProgress()
    result = upgrade.upgrade_local(settings, state, progress)
    assert result.reasons[0].startswith(f"MLflow schema at revision {OLD_REVISION}")
    assert not result.restarted and process.find_running(state).record is None
    assert revision(state) == migrations.mlflow_head_revision()
    assert result.backup is not None
    assert backups.verify_backup(result.backup).schema_revision == OLD_REVISION
    assert progress.steps == ["compare versions", "backup of the databases before migrating",
                              "migrations"]


def test_failed_migration_leaves_the_old_server_serving(
    local: tuple[Settings, StateDir]
) -> None:
    _, state = local
    old = process.find_running(state).record
    assert old is not None
    experiment(old.url, "kept")
    with sqlite3.connect(state.data_dir / "mlflow.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = ?", (BEFORE_HEAD,))

    failed = cli("upgrade", state=state)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "Traceback" not in failed.stderr
    assert "schema migration from revision 75868b020152 failed" in failed.stderr
    assert f"pid {old.pid}, previous version) still serves" in failed.stderr
    backup = next((state.root / "backups").iterdir())
    assert f"mlflow-stack restore --from {backup}" in " ".join(failed.stderr.split())
    # Still the same process, still answering.
    same = process.find_running(state).record
    assert same is not None and same.pid == old.pid
    assert httpx.get(f"{old.url}/health", timeout=10).status_code == 200
    assert revision(state) == BEFORE_HEAD

    # The rollback the message gives works: down, then restore --replace.
    assert f"mlflow-stack restore --from {backup} --replace" in " ".join(failed.stderr.split())
    assert cli("down", state=state).returncode == 0
    with sqlite3.connect(state.data_dir / "mlflow.db") as conn:  # what the failed run left
        conn.execute("INSERT INTO experiments (name, lifecycle_stage) VALUES "
                     "('after-backup', 'active')")
    refused = cli("restore", "--from", str(backup), state=state)
    assert refused.returncode == 2 and "--replace moves the current databases aside" in \
        " ".join(refused.stderr.split())
    restored = cli("restore", "--from", str(backup), "--replace", state=state)
    assert restored.returncode == 0, restored.stderr
    assert revision(state) == BEFORE_HEAD
    with sqlite3.connect(state.data_dir / "mlflow.db") as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM experiments")}
    assert "kept" in names and "after-backup" not in names
    (aside,) = state.data_dir.glob("mlflow.db.replaced_*")  # kept, not deleted
    with sqlite3.connect(aside) as conn:
        assert conn.execute("SELECT count(*) FROM experiments WHERE name = 'after-backup'"
                            ).fetchone() == (1,)


# --------------------------------------------------------------------------------------------
# Kubernetes


def kube_config(kube_api: KubeAPIServer, postgres: PostgresServer, s3: S3Server,
                tag: str, ns: str) -> dict[str, Any]:
    suffix = ns.removeprefix("up-")
    return {
        "domain": "example.test",
        "database": {"backend": "postgresql", "host": "127.0.0.1", "port": postgres.port,
                     "name": f"mlflow_{suffix}", "user": postgres.superuser},
        "artifacts": {"backend": "s3", "bucket": f"up-{suffix}", "endpoint_url": s3.endpoint_url},
        "registry": {"host": "registry.example.test", "tag": tag},
        "kubernetes": {"namespace": ns, "kubeconfig": str(kube_api.admin_kubeconfig)},
        "discovery": {"code_server": False},
    }


def kube_settings(kube_api: KubeAPIServer, postgres: PostgresServer, s3: S3Server,
                  tag: str, ns: str) -> Settings:
    settings = Settings.model_validate(kube_config(kube_api, postgres, s3, tag, ns))
    return settings.model_copy(update={"secrets": Secrets.model_construct(
        admin_password=SecretStr(postgres.password),
        s3_access_key_id=SecretStr(s3.access_key),
        s3_secret_access_key=SecretStr(s3.secret_key),
        harbor_robot_token=SecretStr("robot-token"))})


def deployed_image(kube_api: KubeAPIServer, ns: str) -> str:
    client = Client(config=KubeConfig.from_file(kube_api.admin_kubeconfig), trust_env=False)
    try:
        live: Any = client.get(Deployment, "mlflow", namespace=ns)
        return str(live.spec.template.spec.containers[0].image)
    finally:
        client.close()


@pytest.fixture
def deployed(kube_api: KubeAPIServer, postgres_server: PostgresServer, s3_server: S3Server,
             tmp_path: Path) -> tuple[Settings, StateDir]:
    ns = f"up-{uuid.uuid4().hex[:8]}"
    client = Client(config=KubeConfig.from_file(kube_api.admin_kubeconfig),
                    field_manager="test-admin", trust_env=False)
    with client:
        # The wildcard certificate apply copies (the reference keeps it in `default`).
        client.apply(from_dict({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": "example-test-tls", "namespace": "default"},
            "stringData": {"tls.crt": "test-cert", "tls.key": "test-key"}}))
    settings = kube_settings(kube_api, postgres_server, s3_server, "1.0", ns)
    state = StateDir(tmp_path / "state")
    with FakeControllers(kube_api, ns):
        _, backup = upgrade.apply_guarded(settings, state, NullProgress())
    assert backup is None, "a first install has nothing to back up"
    assert deployed_image(kube_api, ns) == "registry.example.test/library/mlflow-custom:1.0"
    return settings, state


def test_kubernetes_upgrade_backs_up_then_migrates_then_rolls(
    kube_api: KubeAPIServer, postgres_server: PostgresServer, s3_server: S3Server,
    deployed: tuple[Settings, StateDir],
) -> None:
    settings, state = deployed
    ns = settings.kubernetes.namespace
    same = upgrade.upgrade_kubernetes(settings, state, NullProgress())
    assert same.up_to_date and same.backup is None

    newer = kube_settings(kube_api, postgres_server, s3_server, "2.0", ns)
    progress = NullProgress()
    with FakeControllers(kube_api, ns):
        result = upgrade.upgrade_kubernetes(newer, state, progress)
    assert result.reasons == ["server image registry.example.test/library/mlflow-custom:1.0 → "
                              "registry.example.test/library/mlflow-custom:2.0"]
    assert result.backup is not None
    manifest = backups.verify_backup(result.backup)
    assert "metadata.dump" in manifest.files and not manifest.artifacts_included
    # Order: the backup before any write, the new image's Job before the rollout.
    steps = progress.steps
    backup_at = steps.index("backup of the databases before the upgrade")
    job = workload.migration_job_name(newer, workload.server_launch(newer))
    job_at = steps.index(f"kubernetes: migration Job {job} (schema upgrade)")
    deploy_at = steps.index(f"kubernetes: update Deployment {ns}/mlflow")
    assert backup_at < job_at < deploy_at, steps
    assert deployed_image(kube_api, ns).endswith(":2.0")


def test_failed_migration_job_leaves_the_deployment_alone(
    kube_api: KubeAPIServer, postgres_server: PostgresServer, s3_server: S3Server,
    deployed: tuple[Settings, StateDir],
) -> None:
    settings, state = deployed
    ns = settings.kubernetes.namespace
    newer = kube_settings(kube_api, postgres_server, s3_server, "2.0", ns)
    with FakeControllers(kube_api, ns, fail_jobs=True), \
            pytest.raises(UpgradeFailed) as failed:
        upgrade.upgrade_kubernetes(newer, state, NullProgress())
    text = f"{failed.value.message} {failed.value.hint}"
    assert "failed: BackoffLimitExceeded" in text
    assert "The Deployment was not changed: the previous pods keep serving" in text
    backup = next((state.root / "backups").iterdir())
    assert f"mlflow-stack restore --from {backup}" in text
    assert deployed_image(kube_api, ns).endswith(":1.0")



def test_cli_apply_of_a_new_image_backs_up_first_then_upgrade_has_nothing_left(
    kube_api: KubeAPIServer, postgres_server: PostgresServer, s3_server: S3Server,
    deployed: tuple[Settings, StateDir], tmp_path: Path,
) -> None:
    settings, state = deployed
    ns = settings.kubernetes.namespace
    config = tmp_path / "mlflow-stack.yaml"
    config.write_text(yaml.safe_dump(kube_config(kube_api, postgres_server, s3_server, "2.0",
                                                 ns)))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFLOW_", "AWS_", "ADMIN_PASSWORD", "KEYCLOAK_"))}
    env.update({"ADMIN_PASSWORD": postgres_server.password,
                "AWS_ACCESS_KEY_ID": s3_server.access_key,
                "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
                "HARBOR_ROBOT_TOKEN": "robot-token", "MLFLOW_STACK_ENV_FILE": "/dev/null"})
    backup = tmp_path / "before-2.0"
    with FakeControllers(kube_api, ns):
        applied = subprocess.run(
            [*CLI, "apply", "-c", str(config), "--state-dir", str(state.root),
             "--backup-dir", str(backup)], env=env, capture_output=True, text=True,
            timeout=600, check=False)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "server image changes: registry.example.test/library/mlflow-custom:1.0 → " \
        "registry.example.test/library/mlflow-custom:2.0" in applied.stderr
    assert f"Databases backed up before the upgrade to {backup}" in \
        " ".join(applied.stdout.split())
    assert "metadata.dump" in backups.verify_backup(backup).files
    assert deployed_image(kube_api, ns).endswith(":2.0")
    for secret in (postgres_server.password, s3_server.secret_key):
        assert secret not in applied.stdout + applied.stderr

    # A local server in the same state dir, started on other settings, does not stand in the
    # way of upgrading the cluster (this process stands in for it).
    import psutil

    state.root.mkdir(parents=True, exist_ok=True)
    state.pid_file.write_text(json.dumps({
        "pid": os.getpid(), "create_time": psutil.Process().create_time(),
        "url": "http://127.0.0.1:1", "port": 1, "started_at": 1.0, "metadata": "sqlite",
        "artifacts": "local", "auth": "none", "versions": "", "host": "127.0.0.1",
        "config": None}))
    again = subprocess.run([*CLI, "upgrade", "-c", str(config), "--state-dir",
                            str(state.root)], env=env, capture_output=True, text=True,
                           timeout=600, check=False)
    state.pid_file.unlink()
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Already up to date (kubernetes); nothing changed." in again.stdout
