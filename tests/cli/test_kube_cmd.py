"""`mlflow-stack render`: what it prints, the stable SECRET_KEY, and bad input."""

from __future__ import annotations

from pathlib import Path

import typer
import yaml
from typer.testing import CliRunner

from harness.kube import REFERENCE_INVENTORY
from mlflow_stack.cli import kube_cmd
from mlflow_stack.errors import ConfigError
from mlflow_stack.manifests.render import read_secret_key

# Secrets the machine's environment might hold: unset, so only what a test sets is known.
UNSET = ["ADMIN_PASSWORD", "MLFLOW_STACK_DB_PASSWORD", "MLFLOW_STACK_S3_ACCESS_KEY_ID",
         "AWS_ACCESS_KEY_ID", "MLFLOW_STACK_S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY",
         "HARBOR_ROBOT_TOKEN", "MLFLOW_STACK_SECRET_KEY"]


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command()(kube_cmd.render)
    app.command(name="other")(lambda: None)  # keeps `render` a named subcommand
    return app


def _invoke(tmp_path: Path, *args: str) -> tuple[int, str, BaseException | None]:
    env: dict[str, str | None] = {name: None for name in UNSET}
    env.update({"MLFLOW_STACK_ENV_FILE": str(tmp_path / "none.env"),
                "MLFLOW_STACK_OIDC_CLIENT_SECRET": "client-secret-value"})
    result = CliRunner().invoke(_app(), ["render", *args], env=env)
    return result.exit_code, result.output, result.exception


def test_render_writes_and_lists_what_to_provide(tmp_path: Path) -> None:
    out = tmp_path / "manifests"
    code, output, _ = _invoke(tmp_path, "-c", str(REFERENCE_INVENTORY), "--out", str(out))
    assert code == 0, output
    assert "wrote 11 objects" in output
    assert "mlflow/mlflow-db-secret" in output
    assert "patch for Deployment code-server/code-server" in output
    resources = yaml.safe_load((out / "kustomization.yaml").read_text())["resources"]
    assert "deployment-mlflow.yaml" in resources
    assert not any(name.startswith("secret-") for name in resources)


def test_session_key_is_created_once_and_reused(tmp_path: Path) -> None:
    out = tmp_path / "manifests"
    args = ["-c", str(REFERENCE_INVENTORY), "--out", str(out), "--include-secrets"]
    code, output, _ = _invoke(tmp_path, *args)
    assert code == 0, output
    assert "created a new SSO session key" in output
    first = read_secret_key(out)
    assert first is not None
    code, output, _ = _invoke(tmp_path, *args)
    assert code == 0, output
    assert "created a new SSO session key" not in output
    second = read_secret_key(out)
    assert second is not None and second.get_secret_value() == first.get_secret_value()
    # The client secret came from the environment and was written; unknown ones were not.
    assert (out / "secret-oauth2-proxy-secret.yaml").is_file()
    assert not (out / "secret-mlflow-db-secret.yaml").exists()
    assert "(unknown: DB_PASSWORD)" in output


def test_bad_config_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kubernetes:\n  replicas: 3\n")  # SQLite on a RWO volume: one pod only
    code, _, exc = _invoke(tmp_path, "-c", str(bad), "--out", str(tmp_path / "o"))
    assert code != 0
    assert isinstance(exc, ConfigError) and exc.exit_code == 2
    assert "ReadWriteOnce" in exc.message
    assert not (tmp_path / "o").exists()
