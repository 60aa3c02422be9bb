"""The real `mlflow-stack` command on bad input: exit 2, one message, no traceback, no changes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from harness.ports import free_port

CLI = [sys.executable, "-m", "mlflow_stack.cli.main"]


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("AWS_", "ADMIN_PASSWORD", "MLFLOW_STACK_"))}
    base["HOME"] = str(cwd)  # no ~/.env from the machine
    return subprocess.run([*CLI, *args], cwd=cwd, env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=timeout, check=False)


def assert_refused(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle in result.stderr, result.stderr


@pytest.mark.parametrize(("text", "needle"), [
    ("server: [", "YAML syntax error"),
    ("", "the file is empty"),
    ("- 1\n", "expected a mapping"),
    ("server:\n  prot: 1\n", "did you mean 'port'"),
    ("server:\n  port: nope\n", "server.port"),
    ("server:\n  hostname: 'http://x'\n", "not a valid hostname"),
    ("auth:\n  keycloak_url: nohost\n", "not a valid URL"),
    ("storage:\n  capacity: 1Gb\n", "not a Kubernetes quantity"),
    ("artifacts:\n  bucket: B\n", "not a valid S3 bucket name"),
    ("kubernetes:\n  namespace: my_ns\n", "kubernetes.namespace: 'my_ns' is not a valid "
     "Kubernetes namespace name: expected an RFC 1123 label"),
    ("kubernetes:\n  tls_secret: TLS\n", "kubernetes.tls_secret: 'TLS' is not a valid "
     "Kubernetes Secret name: expected an RFC 1123 subdomain"),
    ("server:\n  port: 0\n", "server.port"),
    ("database: {backend: postgresql, host: db.example.com}\n", "ADMIN_PASSWORD"),
])
def test_up_refuses_bad_config_and_changes_nothing(tmp_path: Path, text: str, needle: str) -> None:
    (tmp_path / "bad.yaml").write_text(text)
    state = tmp_path / "state"
    result = run_cli("up", "-c", "bad.yaml", "--state-dir", str(state), cwd=tmp_path)
    assert_refused(result, 2, needle, "bad.yaml")
    assert not state.exists(), "a refused config must not create the state dir"


@pytest.mark.parametrize(("data", "needle"), [
    ("server:\n  # café\n  port: 5000\n".encode("latin-1"), "(byte 0xe9 at offset 15, line 2)"),
    ("server:\n  port: 5000\n".encode("utf-16"), "(it is UTF-16)"),
    (b"\x7fELF\x02\x01\x01\x00" + bytes(range(128, 256)), "(byte 0x80 at offset 8, line 1)"),
])
@pytest.mark.parametrize("command", [["up"], ["config", "check"]])
def test_file_that_is_not_utf8_is_refused(tmp_path: Path, data: bytes, needle: str,
                                          command: list[str]) -> None:
    (tmp_path / "bad.yaml").write_bytes(data)
    state = tmp_path / "state"
    extra = ["--state-dir", str(state)] if command == ["up"] else []
    result = run_cli(*command, "-c", "bad.yaml", *extra, cwd=tmp_path)
    assert_refused(result, 2, f"bad.yaml is not UTF-8 text {needle}: save it as UTF-8")
    assert result.stderr.count("error:") == 1 and len(result.stderr.strip().splitlines()) == 1
    assert not state.exists(), "a refused config must not create the state dir"


def test_bad_inventory_name_names_the_variable(tmp_path: Path) -> None:
    (tmp_path / "inventory.yaml").write_text(
        "mlflow_namespace: mlflow\nseaweedfs_s3_secret: SeaweedFS_S3\n")
    result = run_cli("config", "check", "-c", "inventory.yaml", cwd=tmp_path)
    assert_refused(result, 2, "inventory.yaml: seaweedfs_s3_secret: 'SeaweedFS_S3' is not a "
                   "valid Kubernetes Secret name: expected an RFC 1123 subdomain")
    assert len(result.stderr.strip().splitlines()) == 1


def test_config_check_exit_codes(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text("server:\n  port: 5050\n")
    ok = run_cli("config", "check", "-c", "good.yaml", cwd=tmp_path)
    assert ok.returncode == 0 and "config OK" in ok.stdout
    (tmp_path / "bad.yaml").write_text("server:\n  port: 99999\n")
    assert_refused(run_cli("config", "check", "-c", "bad.yaml", cwd=tmp_path), 2, "server.port")


def test_debug_shows_traceback(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("server: [")
    result = run_cli("--debug", "config", "check", "-c", "bad.yaml", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" in result.stderr


def test_port_out_of_range_option(tmp_path: Path) -> None:
    result = run_cli("up", "--port", "70000", "--state-dir", str(tmp_path / "s"), cwd=tmp_path)
    assert_refused(result, 2, "70000")
    assert not (tmp_path / "s").exists()


def test_port_taken(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = run_cli("up", "--port", str(port), "--state-dir", str(tmp_path / "s"),
                         cwd=tmp_path)
    assert_refused(result, 2, f"port {port}", "already in use")
    assert not (tmp_path / "s").exists(), "checked before the state dir is created"


def test_state_dir_not_writable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = run_cli("up", "--state-dir", str(blocker / "state"), "--port", str(free_port()),
                     cwd=tmp_path)
    assert_refused(result, 2, "state directory", "not writable")


def test_unreachable_postgres_names_host_and_port(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "c.yaml").write_text(
        f"database: {{backend: postgresql, host: 127.0.0.1, port: {port}}}\n")
    result = run_cli("up", "-c", "c.yaml", "--state-dir", str(tmp_path / "s"),
                     "--port", str(free_port()), cwd=tmp_path,
                     env={"ADMIN_PASSWORD": "secret-pw-xyz"})
    assert_refused(result, 1, f"PostgreSQL at 127.0.0.1:{port} is unreachable")
    assert "secret-pw-xyz" not in result.stderr + result.stdout


def test_unreachable_s3_names_endpoint(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "c.yaml").write_text(
        f"artifacts: {{backend: s3, endpoint_url: 'http://127.0.0.1:{port}'}}\n")
    result = run_cli("up", "-c", "c.yaml", "--state-dir", str(tmp_path / "s"),
                     "--port", str(free_port()), cwd=tmp_path,
                     env={"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s3-secret-xyz"})
    assert_refused(result, 1, f"S3 at http://127.0.0.1:{port} is unreachable")
    assert "s3-secret-xyz" not in result.stderr + result.stdout


def all_commands() -> list[list[str]]:
    """Every command the app registers, sub-apps included (so a new one can't lack --help)."""
    from mlflow_stack.cli.main import app

    commands = [[c.name or c.callback.__name__.replace("_", "-")]  # type: ignore[union-attr]
                for c in app.registered_commands]
    for group in app.registered_groups:
        assert group.typer_instance is not None
        commands.append([str(group.name)])  # `mlflow-stack config --help` too
        commands += [[str(group.name), c.name or c.callback.__name__]  # type: ignore[union-attr]
                     for c in group.typer_instance.registered_commands]
    return commands


def test_every_command_has_help_with_example(tmp_path: Path) -> None:
    commands = all_commands()
    assert ["up"] in commands and ["config", "check"] in commands and ["config"] in commands
    for cmd in commands:
        result = run_cli(*cmd, "--help", cwd=tmp_path)
        assert result.returncode == 0, (cmd, result.stderr)
        assert "Example" in result.stdout, cmd


def test_config_show_masks_secrets_and_lists_ignored(tmp_path: Path) -> None:
    inventory = Path(__file__).parent.parent / "data" / "reference-inventory.yaml"
    result = run_cli("config", "show", "-c", str(inventory), "--output", "json", "--verbose",
                     cwd=tmp_path, env={"ADMIN_PASSWORD": "admin-pw-987",
                                        "AWS_ACCESS_KEY_ID": "AKIA-XYZ-1"})
    assert result.returncode == 0, result.stderr
    assert "admin-pw-987" not in result.stdout + result.stderr
    assert "AKIA-XYZ-1" not in result.stdout + result.stderr
    assert '"admin_password": "****** (from ADMIN_PASSWORD)"' in result.stdout
    assert "gitea_hostname" in result.stderr


def test_config_schema_is_json(tmp_path: Path) -> None:
    import json

    result = run_cli("config", "schema", cwd=tmp_path)
    schema = json.loads(result.stdout)
    assert "secrets" not in schema["properties"]
    assert "server" in schema["properties"]
