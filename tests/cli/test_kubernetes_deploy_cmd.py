"""`mlflow-stack apply` / `plan` with the Kubernetes target, as a user runs them, against a real
kube-apiserver, PostgreSQL and S3: an apply killed after each step converges on the next run,
exit codes for a missing kubeconfig / an unreachable API server, and no secret in any output.

No kubelet or controllers run in the harness: `FakeControllers` (harness.fake_controllers)
completes the migration Job and rolls the Deployment out through their status subresources.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.fake_controllers import FakeControllers
from harness.kube import SECRET_VALUES
from harness.kubeapi import KubeAPIServer, write_unreachable_kubeconfig
from harness.postgres import PostgresServer
from harness.s3 import S3Server

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "mlflow_stack.cli.main"]
WRITE_STEP = ("✓ kubernetes: create ", "✓ kubernetes: update ", "✓ kubernetes: delete ")


def env_for(tmp: Path, extra: dict[str, str]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("AWS_", "ADMIN_PASSWORD", "KEYCLOAK_", "MLFLOW_STACK_",
                                 "KUBECONFIG", "HARBOR_"))}
    return {**base, "HOME": str(tmp), "COLUMNS": "200", **extra}


def run(args: list[str], tmp: Path, extra: dict[str, str],
        timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=tmp, env=env_for(tmp, extra), capture_output=True,
                          text=True, timeout=timeout, check=False)


def apply_killed_after_one_write(config: Path, tmp: Path,
                                 extra: dict[str, str]) -> tuple[bool, str]:
    """Run apply; SIGKILL it as soon as it reports its first Kubernetes write as done.
    Returns (killed, everything it printed)."""
    proc = subprocess.Popen([*CLI, "apply", "-c", str(config)], cwd=tmp,
                            env=env_for(tmp, extra), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None and proc.stdout is not None
    seen = []
    killed = False
    for line in proc.stderr:
        seen.append(line)
        if line.startswith(WRITE_STEP):
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
    rest_out, rest_err = proc.communicate(timeout=120)
    output = "".join(seen) + rest_err + rest_out
    if not killed:
        assert proc.returncode == 0, output
    return killed, output


@pytest.fixture
def deploy_config(tmp_path: Path, kube_api: KubeAPIServer, postgres_server: PostgresServer,
                  s3_server: S3Server) -> tuple[Path, dict[str, str], str]:
    ns = f"cli-{uuid.uuid4().hex[:8]}"
    suffix = ns.replace("-", "_")
    data: dict[str, Any] = {
        "server": {"public_scheme": "http"},
        "domain": "example.test",
        "database": {"backend": "postgresql", "host": "127.0.0.1",
                     "port": postgres_server.port, "name": f"mlflow_{suffix}",
                     "user": postgres_server.superuser},
        "artifacts": {"backend": "s3", "bucket": f"b-{ns}",
                      "endpoint_url": s3_server.endpoint_url},
        "registry": {"host": "registry.example.test"},
        "kubernetes": {"namespace": ns, "kubeconfig": str(kube_api.admin_kubeconfig)},
        "discovery": {"code_server": False},
    }
    config = tmp_path / "mlflow-stack.yaml"
    config.write_text(yaml.safe_dump(data))
    env = {"ADMIN_PASSWORD": postgres_server.password,
           "AWS_ACCESS_KEY_ID": s3_server.access_key,
           "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
           "HARBOR_ROBOT_TOKEN": SECRET_VALUES["harbor_robot_token"]}
    return config, env, ns


def test_apply_killed_after_each_step_converges(
        tmp_path: Path, kube_api: KubeAPIServer,
        deploy_config: tuple[Path, dict[str, str], str]) -> None:
    config, env, ns = deploy_config
    outputs = []
    kills = 0
    with FakeControllers(kube_api, ns):
        # Each run gets one Kubernetes write done, then dies: every step is interrupted once.
        for _ in range(40):
            killed, output = apply_killed_after_one_write(config, tmp_path, env)
            outputs.append(output)
            if not killed:
                break
            kills += 1
        else:
            pytest.fail("apply never completed:\n" + outputs[-1])
        final = run(["apply", "-c", str(config)], tmp_path, env)
    # 13 objects (namespace, 4 Secrets, 2 PVCs, Job, Deployment, Service, Ingress,
    # NetworkPolicy, ConfigMap). A SIGKILL lands a few ms after the line, so a run may finish
    # one more write first: count loosely, but the long steps must each have been cut.
    interrupted = [line for o in outputs[:-1] for line in o.splitlines()
                   if line.startswith(WRITE_STEP)]
    assert kills >= 7, outputs
    assert any(f"create Job {ns}/" in line for line in interrupted), interrupted
    assert any(f"create Deployment {ns}/mlflow" in line for line in interrupted), interrupted
    assert any(f"create Namespace {ns}" in line for line in interrupted), interrupted
    assert final.returncode == 0, final.stderr
    assert "No changes" in final.stdout, final.stdout
    assert "MLflow: http://mlflow.example.test" in final.stdout
    plan = run(["plan", "-c", str(config)], tmp_path, env)
    assert plan.returncode == 0 and "No changes" in plan.stdout, plan.stdout + plan.stderr
    everything = "\n".join([*outputs, final.stdout, final.stderr, plan.stdout, plan.stderr])
    for value in (env["ADMIN_PASSWORD"], env["AWS_SECRET_ACCESS_KEY"],
                  env["HARBOR_ROBOT_TOKEN"]):
        assert value not in everything


def test_plan_shows_kubernetes_objects_and_targets(
        tmp_path: Path, deploy_config: tuple[Path, dict[str, str], str]) -> None:
    config, env, ns = deploy_config
    plan = run(["plan", "-c", str(config)], tmp_path, env)
    assert plan.returncode == 0, plan.stderr
    assert f"Deployment {ns}/mlflow" in plan.stdout and "+ create" in plan.stdout
    services = run(["plan", "-c", str(config), "--target", "services"], tmp_path, env)
    assert services.returncode == 0, services.stderr
    assert "Deployment" not in services.stdout


def test_missing_kubeconfig_exits_2_and_unreachable_exits_1(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"kubernetes": {"namespace": "x"}}))
    missing = run(["plan", "-c", "c.yaml", "--target", "kubernetes"], tmp_path,
                  {"KUBECONFIG": str(tmp_path / "absent")})
    assert missing.returncode == 2, missing.stderr
    assert "kubeconfig" in missing.stderr and "does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr

    dead = write_unreachable_kubeconfig(tmp_path / "dead.yaml")
    unreachable = run(["apply", "-c", "c.yaml", "--target", "kubernetes"], tmp_path,
                      {"KUBECONFIG": str(dead)})
    assert unreachable.returncode == 1, unreachable.stderr
    assert "unreachable" in unreachable.stderr and "Traceback" not in unreachable.stderr


def test_uninstall_command_keeps_data_then_purges_it(
        tmp_path: Path, kube_api: KubeAPIServer, postgres_server: PostgresServer,
        s3_server: S3Server, deploy_config: tuple[Path, dict[str, str], str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`uninstall` is not registered in cli/main.py yet: drive the command function through a
    one-command Typer app (same parsing, same library calls)."""
    import psycopg
    import typer
    from typer.testing import CliRunner

    from mlflow_stack.cli import deploy_cmd

    config, env, ns = deploy_config
    with FakeControllers(kube_api, ns):
        assert run(["apply", "-c", str(config)], tmp_path, env).returncode == 0
    app = typer.Typer()
    app.command()(deploy_cmd.uninstall)
    app.command("noop")(lambda: None)  # two commands: typer keeps the sub-command name
    for key, value in env_for(tmp_path, env).items():
        monkeypatch.setenv(key, value)
    runner = CliRunner()
    dbname = yaml.safe_load(config.read_text())["database"]["name"]
    bucket = f"b-{ns}"

    kept = runner.invoke(app, ["uninstall", "-c", str(config)])
    assert kept.exit_code == 0, kept.output
    assert "kept (--purge drops it)" in kept.output and f"database {dbname}" in kept.output
    assert f"PersistentVolumeClaim {ns}/mlflow-storage" in kept.output

    purged = runner.invoke(app, ["uninstall", "-c", str(config), "--purge"])
    assert purged.exit_code == 0, purged.output
    with psycopg.connect(postgres_server.dsn()) as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                            (dbname,)).fetchone() is None
    names = [b["Name"] for b in s3_server.client().list_buckets()["Buckets"]]
    assert bucket not in names
    for value in (env["ADMIN_PASSWORD"], env["AWS_SECRET_ACCESS_KEY"]):
        assert value not in kept.output + purged.output
