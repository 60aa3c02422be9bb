"""How the CLI reads: help grouped and flowing, flags shown as flags, `verify` printing each step
once within 80 columns, `config show` limited to what applies, `status`'s exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.ports import free_port

CLI = [sys.executable, "-m", "mlflow_stack.cli.main"]
INVENTORY = Path(__file__).parent.parent / "data" / "reference-inventory.yaml"


def run(*args: str, cwd: Path, columns: int = 80) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "ADMIN_PASSWORD", "MLFLOW_STACK_"))}
    env.update({"HOME": str(cwd), "COLUMNS": str(columns), "TERM": "dumb"})
    return subprocess.run([*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def test_commands_are_grouped_by_what_they_act_on(tmp_path: Path) -> None:
    text = run("--help", cwd=tmp_path, columns=120).stdout
    panels = ["Local platform", "Provisioning and Kubernetes", "Single sign-on and clients",
              "Operations", "Configuration"]
    at = [text.index(f"─ {panel} ") for panel in panels]
    assert at == sorted(at), "panels in order"
    members = {"Local platform": ["up", "down", "status", "logs"],
               "Provisioning and Kubernetes": ["plan", "apply", "uninstall", "render"],
               "Single sign-on and clients": ["login", "logout", "token", "helpers"],
               "Operations": ["verify", "doctor", "backup", "restore", "upgrade"],
               "Configuration": ["config"]}
    for i, panel in enumerate(panels):
        section = text[at[i]:at[i + 1] if i + 1 < len(at) else None]
        for command in members[panel]:
            assert f"│ {command} " in section, (panel, command)


@pytest.mark.parametrize("args", [["--help"], ["up", "--help"], ["upgrade", "--help"],
                                  ["config", "show", "--help"]])
def test_flags_read_as_flags(tmp_path: Path, args: list[str]) -> None:
    text = run(*args, cwd=tmp_path, columns=120).stdout
    assert "--help" in text and "<bool>" not in text, text


def test_help_paragraphs_flow(tmp_path: Path) -> None:
    # At 200 columns a paragraph is one line: a docstring's own line breaks are not kept.
    text = run("upgrade", "--help", cwd=tmp_path, columns=200).stdout
    assert ("Backs up the databases, runs MLflow's and the SSO layer's migrations once, then "
            "restarts the local server / rolls the Deployment.") in text
    listing = run("--help", cwd=tmp_path, columns=200).stdout
    verify = next(line for line in listing.splitlines() if "│ verify " in line)
    assert "Exit 1 on any failed step." in verify


def test_verify_prints_each_step_once_within_80_columns(tmp_path: Path) -> None:
    from mlflow_stack.ops.verify.steps import STEPS

    result = run("verify", "--url", f"http://127.0.0.1:{free_port()}", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    both = result.stdout + result.stderr
    rows = [line for line in both.splitlines() if line[:2] in ("✓ ", "✗ ", "- ")]
    assert [row[2:].split("  ")[0].strip() for row in rows] == list(STEPS), both
    assert f"1 failed, {len(STEPS) - 2} skipped, 1 ok" in result.stdout  # health, clean-up
    assert max(len(line) for line in both.splitlines()) <= 80, both


def test_config_show_prints_what_applies_and_all_with_all(tmp_path: Path) -> None:
    local = run("config", "show", cwd=tmp_path)
    assert local.returncode == 0, local.stderr
    shown = yaml.safe_load(local.stdout)
    for section in ("kubernetes", "registry", "storage", "discovery"):
        assert section not in shown
    assert "public_scheme" not in shown["server"] and "public_url" not in shown["derived"]
    assert shown["database"] == {"backend": "sqlite"} and shown["auth"] == {"provider": "none"}
    assert len(local.stdout.splitlines()) < 40
    assert "--all shows every setting" in local.stderr

    every = yaml.safe_load(run("config", "show", "--all", cwd=tmp_path).stdout)
    assert every["kubernetes"]["namespace"] == "mlflow"
    assert every["server"]["public_scheme"] == "https"

    # A config that names a cluster: the Kubernetes sections apply.
    deployed = yaml.safe_load(run("config", "show", "-c", str(INVENTORY), cwd=tmp_path).stdout)
    assert deployed["kubernetes"]["namespace"] and deployed["registry"]["host"]
    assert deployed["auth"]["provider"] == "keycloak"


def test_status_exit_code_when_not_running(tmp_path: Path) -> None:
    for args in ([], ["-o", "json"]):
        result = run("status", "--state-dir", str(tmp_path / "none"), *args, cwd=tmp_path)
        assert result.returncode == 3, result.stdout + result.stderr
        assert "not running" in result.stdout or '"running": false' in result.stdout
    assert not (tmp_path / "none").exists()
