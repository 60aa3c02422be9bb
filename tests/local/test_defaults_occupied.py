"""The suite next to a platform on the defaults (what `./scripts/up.sh` leaves running): port
5000 is taken and the default state directory holds a running server. The CLI, given its own
--state-dir and --port, neither collides with nor touches that platform; without --port it
refuses before creating anything."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from harness.ports import free_port
from mlflow_stack.local.state import default_state_dir

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "mlflow_stack.cli.main"]
DEFAULT_PORT = 5000


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          check=False)


@pytest.fixture
def defaults_occupied() -> Iterator[tuple[Path, str]]:
    """127.0.0.1:5000 taken (by this test, or already by something else: either way taken) and
    a live server recorded in the default state directory (this process stands in for it)."""
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        with contextlib.suppress(OSError):
            listener.bind(("127.0.0.1", DEFAULT_PORT))
            listener.listen()
        default = default_state_dir()
        assert str(default).startswith(os.environ["MLFLOW_STACK_HOME"]), \
            "tests/conftest.py keeps the user's default state dir out of reach"
        default.mkdir(parents=True, exist_ok=True)
        record = json.dumps({
            "pid": os.getpid(), "create_time": psutil.Process().create_time(),
            "url": f"http://127.0.0.1:{DEFAULT_PORT}", "port": DEFAULT_PORT,
            "started_at": 1.0, "metadata": "sqlite", "artifacts": "local", "auth": "none",
            "versions": "", "host": "127.0.0.1", "config": None})
        (default / "server.json").write_text(record)
        try:
            yield default, record
        finally:
            (default / "server.json").unlink(missing_ok=True)


def test_cli_beside_a_platform_on_the_defaults(defaults_occupied: tuple[Path, str],
                                               tmp_path: Path) -> None:
    default, record = defaults_occupied
    state = tmp_path / "state"
    # Without --port: refused before anything is created, the default platform untouched.
    refused = cli("up", "--state-dir", str(state), cwd=tmp_path)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"port {DEFAULT_PORT} on 127.0.0.1 is already in use" in refused.stderr
    assert "Traceback" not in refused.stderr and not state.exists()

    port = free_port()
    up = cli("up", "--detach", "--port", str(port), "--state-dir", str(state), cwd=tmp_path)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"MLflow is up: UI http://127.0.0.1:{port}" in up.stdout
        status = cli("status", "--state-dir", str(state), "-o", "json", cwd=tmp_path)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["server"]["port"] == port
        # An upgrade (of a server an earlier install started) stays on this port.
        data = json.loads((state / "server.json").read_text())
        data["versions"] = "mlflow 3.16.0, mlflow-oidc-auth 10.1.2, mlflow-stack 0.0.9"
        (state / "server.json").write_text(json.dumps(data))
        upgraded = cli("upgrade", "--state-dir", str(state), cwd=tmp_path)
        assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
        after = json.loads((state / "server.json").read_text())
        assert after["port"] == port and after["pid"] != data["pid"]
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code == 200
    finally:
        down = cli("down", "--state-dir", str(state), cwd=tmp_path)
    assert down.returncode == 0 and "stopped pid" in down.stdout
    # The platform on the defaults was never touched.
    assert (default / "server.json").read_text() == record
    assert sorted(p.name for p in default.iterdir()) == ["server.json"]
