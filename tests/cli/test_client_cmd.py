"""`token`, `login`, `logout`, `helpers` as a user runs them (no Keycloak needed here)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from harness.client_site import run_cli
from harness.fake_keycloak import FakeKeycloak, serve
from mlflow_stack.cli.client_cmd import Shell, export_line
from mlflow_stack.client.helpers import HELPER_NAMES, helper_text

COMMANDS = ["token", "login", "logout", "helpers"]


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path),
            "MLFLOW_KEYCLOAK_TOKEN_CACHE": str(tmp_path / "cache" / "tokens.json"), **extra}


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_an_example(command: str, tmp_path: Path) -> None:
    result = run_cli([command, "--help"], clean_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "Example:" in result.stdout and f"mlflow-stack {command}" in result.stdout


@pytest.mark.parametrize("token", ["abc.def-_.ghi", "it's $(rm -rf /) `x` \\ \"q\""])
@pytest.mark.parametrize("shell", list(Shell))
def test_export_line_round_trips_in_the_shell(shell: Shell, token: str) -> None:
    if shutil.which(shell.value) is None:
        pytest.fail(f"{shell.value} is not installed (scripts/test.sh installs it)")
    line = export_line(token, shell)
    script = f'{line}; printf %s "$MLFLOW_TRACKING_TOKEN"'
    result = subprocess.run([shell.value, "-c", script], capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == token


def test_token_prints_an_evalable_line(tmp_path: Path) -> None:
    fake = FakeKeycloak(lifespan=300)
    with serve(fake) as url:
        env = clean_env(tmp_path, MLFLOW_KEYCLOAK_TOKEN_URL=url,
                        MLFLOW_CLIENT_SECRET="client-secret-1", MLFLOW_AUTH_USERNAME="alice",
                        MLFLOW_AUTH_PASSWORD="alice-pw-1")
        plain = run_cli(["token"], env)
        exported = run_cli(["token", "--export", "--quiet"], env)
        fish = run_cli(["token", "--shell", "fish", "-q"], env)
    assert plain.returncode == 0, plain.stderr
    token = plain.stdout.strip()
    assert token.count(".") == 2
    assert "token for alice expires in" in plain.stderr
    assert exported.stdout == f"export MLFLOW_TRACKING_TOKEN={token}\n"
    assert exported.stderr == ""
    assert fish.stdout == f"set -gx MLFLOW_TRACKING_TOKEN '{token}'\n"
    assert fake.grants == {"password": 1}  # the other two came from the cache


@pytest.mark.parametrize(("extra", "code", "needle"), [
    ({}, 2, "no Keycloak credentials"),
    ({"MLFLOW_KEYCLOAK_TOKEN_URL": "http://127.0.0.1:9/realms/r/protocol/openid-connect/token",
      "MLFLOW_CLIENT_SECRET": "s"}, 1, "cannot reach Keycloak"),
    ({"MLFLOW_KEYCLOAK_TOKEN_URL": "ftp://x", "MLFLOW_CLIENT_SECRET": "s"}, 2,
     "is not an http(s) URL"),
])
def test_token_errors(tmp_path: Path, extra: dict[str, str], code: int, needle: str) -> None:
    result = run_cli(["token"], clean_env(tmp_path, **extra))
    assert result.returncode == code, result.stderr
    assert needle in result.stderr and "hint:" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_wrong_password_exit_code_and_message(tmp_path: Path) -> None:
    with serve(FakeKeycloak()) as url:
        result = run_cli(["token"], clean_env(
            tmp_path, MLFLOW_KEYCLOAK_TOKEN_URL=url, MLFLOW_CLIENT_SECRET="client-secret-1",
            MLFLOW_AUTH_USERNAME="alice", MLFLOW_AUTH_PASSWORD="Not-it-42"))
    assert result.returncode == 1
    assert "Keycloak refused the username or password of user 'alice'" in result.stderr
    assert "Not-it-42" not in result.stderr + result.stdout


def test_helpers_writes_both_scripts(tmp_path: Path) -> None:
    out = tmp_path / "new" / "dir"
    result = run_cli(["helpers", "--out", str(out)], clean_env(tmp_path))
    assert result.returncode == 0, result.stderr
    for name in HELPER_NAMES:
        assert (out / name).read_text() == helper_text(name)
        assert f"wrote {out / name}" in result.stdout
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_cli(["helpers", "--out", str(blocker)], clean_env(tmp_path))
    assert result.returncode == 2 and "cannot create" in result.stderr


def test_logout_without_login(tmp_path: Path) -> None:
    result = run_cli(["logout"], clean_env(tmp_path))
    assert result.returncode == 0 and "Not logged in" in result.stdout
