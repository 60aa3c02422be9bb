"""SIGTERM to a test run: the fixtures' services are stopped (harness/interrupts.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from harness import interrupts
from harness.waits import wait_until

REPO = Path(__file__).resolve().parents[2]

CONFTEST = '''
import sys
from pathlib import Path

import pytest

from harness.procs import spawn, stop_group


@pytest.fixture(scope="session")
def service(tmp_path_factory):
    proc = spawn([sys.executable, "-c", "import time; time.sleep(600)"],
                 tmp_path_factory.mktemp("svc") / "log")
    Path(__file__).with_name("pid").write_text(str(proc.pid))
    try:
        yield proc
    finally:
        stop_group(proc.pid)
'''

TEST = '''
import time


def test_runs_long(service):
    time.sleep(120)
'''


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:  # a zombie is gone for our purpose
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:  # reaped since the kill above
        return False


def _run_and_terminate(tmp_path: Path, plugin: bool) -> tuple[int, bool]:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_long.py").write_text(TEST)
    # Its own basetemp: the run must not prune the numbered temp dirs other runs left.
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir",
            str(tmp_path), "--basetemp", str(tmp_path / "basetemp"), "-o", "addopts=",
            "-o", "timeout=0", str(tmp_path / "test_long.py")]
    if plugin:
        argv[3:3] = ["-p", "harness.interrupts"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests")}
    run = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
    pid_file = tmp_path / "pid"
    try:
        assert wait_until(pid_file.exists, 60), f"the fixture's service did not start: {argv}"
        pid = int(pid_file.read_text())
        time.sleep(0.5)  # inside the test's sleep
        run.send_signal(signal.SIGTERM)
        code = run.wait(timeout=60)
        gone = not _alive(pid)
        if not gone:
            os.killpg(pid, signal.SIGKILL)  # ours: the run above started it
        return code, gone
    finally:
        if run.poll() is None:
            run.kill()
        if run.stdout is not None:
            run.stdout.close()


def test_the_test_session_turns_sigterm_into_an_interrupt() -> None:
    assert signal.getsignal(signal.SIGTERM) is interrupts._interrupt


def test_sigterm_stops_the_run_and_its_fixtures_services(tmp_path: Path) -> None:
    code, gone = _run_and_terminate(tmp_path, plugin=True)
    assert code == 2  # pytest's "interrupted"
    assert gone, "the fixture's service outlived the run"


def test_without_it_the_service_outlives_the_run(tmp_path: Path) -> None:
    """The control: what happened before (Python's default for SIGTERM)."""
    code, gone = _run_and_terminate(tmp_path, plugin=False)
    assert code == -signal.SIGTERM
    assert not gone
