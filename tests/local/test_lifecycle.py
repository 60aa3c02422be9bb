"""The local server's life cycle through the real CLI: foreground + Ctrl-C, detach, second `up`,
stale pid files, status and logs."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from harness.ports import free_port
from mlflow_stack.server.log import KNOWN_WARNINGS

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "mlflow_stack.cli.main"]


def cli(*args: str, timeout: float = 240,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          check=False, env=env)


def outside_the_venv(state_home: Path) -> dict[str, str]:
    """A shell where the venv is not active, whose default state dir is `state_home`."""
    venv_bin = str(Path(sys.executable).parent)
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != venv_bin]
    return {**os.environ, "PATH": os.pathsep.join(path or ["/usr/bin", "/bin"]),
            "MLFLOW_STACK_HOME": str(state_home)}


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP],
                         ids=["ctrl-c", "sigterm", "sighup"])
def test_foreground_up_stops_cleanly_on_ctrl_c(tmp_path: Path, stop_signal: int) -> None:
    port = free_port()
    # stderr (progress, more of it on a slow machine) goes to a file: an unread pipe that
    # fills up would block `up` on a write, and it could not stop on Ctrl-C.
    progress = (tmp_path.parent / f"{tmp_path.name}-stderr.log").open("w")
    # Ctrl-C as from a terminal, even when this run inherited SIGINT ignored (a suite started
    # in the background by a non-interactive shell): Python then never raises
    # KeyboardInterrupt and `up` would wait for its server for ever.
    proc = subprocess.Popen([*CLI, "up", "--port", str(port), "--state-dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=progress, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    progress.close()
    assert proc.stdout is not None
    try:
        deadline = time.monotonic() + 240
        seen = ""
        while time.monotonic() < deadline and "Press Ctrl-C" not in seen:
            line = proc.stdout.readline()
            if not line:
                break
            seen += line
        assert f"MLflow is up: UI http://127.0.0.1:{port}" in seen, seen
        assert f"export MLFLOW_TRACKING_URI=http://127.0.0.1:{port}" in seen
        record = json.loads((tmp_path / "server.json").read_text())
        server = psutil.Process(record["pid"])
        tree = [server, *server.children(recursive=True)]
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200

        proc.send_signal(stop_signal)
        assert proc.wait(timeout=60) == 0
        _gone, alive = psutil.wait_procs(tree, timeout=10)
        assert not alive, f"left running: {alive}"
        assert not (tmp_path / "server.json").exists()
    finally:  # a failed check leaves nothing running
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        cli("down", "--state-dir", str(tmp_path))


def test_detach_second_up_status_logs_down(tmp_path: Path) -> None:
    port = free_port()
    first = cli("up", "--detach", "--port", str(port), "--state-dir", str(tmp_path))
    assert first.returncode == 0, first.stderr
    shell = outside_the_venv(tmp_path)
    stop_hint = shlex.join([*CLI, "down", "--state-dir", str(tmp_path)])  # until one is printed
    try:
        for step in ("state directory", "migrations", "start server", "health"):
            assert step in first.stderr  # progress for every step
        # What the server does while `health` waits, from its log (a new database here).
        assert "creating the database schema (first start only)" in first.stderr
        assert "gc thresholds" not in first.stderr, "a worker's internals are not progress"
        # A step's details come under its line (above it they read as the previous step's).
        shown = first.stderr.splitlines()
        started = next(i for i, line in enumerate(shown) if line.startswith("✓ start server"))
        assert shown[started + 1].strip().startswith("pid "), first.stderr
        assert "stop with: " in first.stdout and " down --state-dir " in first.stdout
        # From a shell without the venv, on the default state dir: the hint names the venv's
        # command and leaves --state-dir out.
        second = cli("up", "--detach", "--port", str(port), env=shell)
        assert second.returncode == 0
        assert "Already running" in second.stdout
        stop_hint = second.stdout.split("stop with: ", 1)[1].strip()
        assert stop_hint == f"{Path(sys.executable).parent / 'mlflow-stack'} down"
        running = cli("status", "--state-dir", str(tmp_path), "-o", "json")
        assert running.returncode == 0, running.stderr
        status = json.loads(running.stdout)
        assert status["running"] and status["healthy"]
        assert status["server"]["url"] == f"http://127.0.0.1:{port}"
        assert status["processes"] >= 2
        assert 50 < status["memory_uss_mib"] < 4096
        logs = cli("logs", "--state-dir", str(tmp_path), "-n", "500")
        assert logs.returncode == 0
        assert "Listening at: http://127.0.0.1:" in logs.stdout + logs.stderr
        for message, _category in KNOWN_WARNINGS:  # MLflow's, on every start, not actionable
            assert not re.search(message, logs.stdout + logs.stderr), message
    finally:
        # The hint works as printed.
        down = subprocess.run(shlex.split(stop_hint), env=shell, capture_output=True,
                              text=True, timeout=240, check=False)
    assert down.returncode == 0 and "stopped pid" in down.stdout, down.stderr
    stopped = cli("status", "--state-dir", str(tmp_path), "-o", "json")
    assert stopped.returncode == 3, "not running has its own exit status"
    assert json.loads(stopped.stdout)["running"] is False
    assert cli("status", "--state-dir", str(tmp_path)).returncode == 3
    assert "not running" in cli("down", "--state-dir", str(tmp_path)).stdout


def test_stale_pid_file_is_detected_and_cleaned(tmp_path: Path) -> None:
    # A pid that is certainly dead: a child we started and reaped.
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / "server.json").write_text(json.dumps({
        "pid": dead.pid, "create_time": time.time() - 100, "url": "http://127.0.0.1:1",
        "port": 1, "started_at": time.time() - 100, "metadata": "x", "artifacts": "x",
        "auth": "none"}))
    status = json.loads(cli("status", "--state-dir", str(tmp_path), "-o", "json").stdout)
    assert status["running"] is False
    assert not (tmp_path / "server.json").exists()


def test_pid_reused_by_another_process_is_not_ours(tmp_path: Path) -> None:
    # Our own pid is alive but was not started at the recorded time: not the server.
    (tmp_path / "server.json").write_text(json.dumps({
        "pid": os.getpid(), "create_time": 1.0, "url": "http://127.0.0.1:1", "port": 1,
        "started_at": 1.0, "metadata": "x", "artifacts": "x", "auth": "none"}))
    result = cli("down", "--state-dir", str(tmp_path))
    assert "not running" in result.stdout
    assert psutil.pid_exists(os.getpid())
