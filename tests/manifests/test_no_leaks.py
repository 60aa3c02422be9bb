"""No secret value in any ConfigMap, container argument, plain env value or printed line; none
anywhere at all unless --include-secrets, and then only inside Secret objects."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import typer
from pydantic import SecretStr
from typer.testing import CliRunner

from harness.kube import (
    REFERENCE_INVENTORY,
    SECRET_KEY_VALUE,
    SECRET_VALUES,
    secret_texts,
)
from mlflow_stack.cli import kube_cmd
from mlflow_stack.config.model import Settings
from mlflow_stack.manifests.render import render, to_yaml, write_manifests

ENV = {
    "ADMIN_PASSWORD": SECRET_VALUES["admin_password"],
    "MLFLOW_STACK_DB_PASSWORD": SECRET_VALUES["db_password"],
    "MLFLOW_STACK_S3_ACCESS_KEY_ID": SECRET_VALUES["s3_access_key_id"],
    "MLFLOW_STACK_S3_SECRET_ACCESS_KEY": SECRET_VALUES["s3_secret_access_key"],
    "MLFLOW_STACK_OIDC_CLIENT_SECRET": SECRET_VALUES["oidc_client_secret"],
    "HARBOR_ROBOT_TOKEN": SECRET_VALUES["harbor_robot_token"],
}


def leaks(text: str) -> list[str]:
    return [s for s in secret_texts() if s in text]


def _all_text(directory: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(directory.rglob("*")) if p.is_file())


def test_nothing_secret_without_include_secrets(tmp_path: Path,
                                                reference_with_secrets: Settings) -> None:
    rendered = render(reference_with_secrets, secret_key=SecretStr(SECRET_KEY_VALUE))
    write_manifests(rendered, tmp_path)
    assert leaks(_all_text(tmp_path)) == []
    assert leaks(repr(rendered)) == []
    assert leaks(to_yaml([p.body for p in rendered.patches])) == []


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = obj.get("spec", {})
    pod = spec.get("template", {}).get("spec", {}) if isinstance(spec, dict) else {}
    return list(pod.get("containers", [])) + list(pod.get("initContainers", []))


def test_with_secrets_values_live_only_in_secrets(tmp_path: Path,
                                                  reference_with_secrets: Settings) -> None:
    rendered = render(reference_with_secrets, include_secrets=True,
                      secret_key=SecretStr(SECRET_KEY_VALUE))
    write_manifests(rendered, tmp_path)
    # Plain text nowhere (Secret data is base64).
    text = _all_text(tmp_path)
    assert [v for v in [*SECRET_VALUES.values(), SECRET_KEY_VALUE] if v in text] == []
    found_in_secrets: set[str] = set()
    for obj in rendered.objects:
        if obj["kind"] == "Secret":
            found_in_secrets.update(leaks(to_yaml(obj)))
            continue
        assert leaks(to_yaml(obj)) == [], f"{obj['kind']} {obj['metadata']['name']}"
        for c in _containers(obj):
            assert leaks(" ".join(c.get("command", []) + c.get("args", []))) == []
            assert leaks(" ".join(e.get("value", "") for e in c.get("env", []))) == []
    # Every secret did go into some Secret (base64), so the check above was meaningful.
    encoded = {base64.b64encode(v.encode()).decode() for v in
               [SECRET_VALUES["db_password"], SECRET_VALUES["s3_secret_access_key"],
                SECRET_VALUES["oidc_client_secret"], SECRET_VALUES["admin_password"],
                SECRET_KEY_VALUE]}
    assert encoded <= found_in_secrets
    configmaps = [o for o in rendered.objects if o["kind"] == "ConfigMap"]
    assert len(configmaps) == 3
    assert all(leaks(to_yaml(cm)) == [] for cm in configmaps)


def _cli() -> typer.Typer:
    # cli/main.py registers it the same way; a local app keeps this test independent of it.
    app = typer.Typer()
    app.command()(kube_cmd.render)
    app.command(name="unused")(lambda: None)  # two commands: `render` is then a subcommand
    return app


@pytest.mark.parametrize("include", [False, True])
def test_cli_output_never_shows_secrets(tmp_path: Path, include: bool) -> None:
    env = {**ENV, "MLFLOW_STACK_ENV_FILE": str(tmp_path / "no.env")}
    args = ["render", "-c", str(REFERENCE_INVENTORY), "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(_cli(), args + (["--include-secrets"] if include else []),
                                env=env)
    assert result.exit_code == 0, result.output
    assert leaks(result.output) == []
    files = _all_text(tmp_path / "out")
    if include:
        assert SECRET_VALUES["db_password"] not in files
        assert base64.b64encode(SECRET_VALUES["db_password"].encode()).decode() in files
    else:
        assert leaks(files) == []
