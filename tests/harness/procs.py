"""Start and stop harness processes: own process group, log to a file, stop by pid."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Placement:
    """A harness service run somewhere other than the host's loopback (the real node's network
    namespace): `spawn(argv, env, log_path)` starts it there, as root (it drops privileges itself
    where it must), listening on host:port there; the harness reaches it at reach_host:reach_port
    (a bridge)."""

    spawn: Callable[[list[str], dict[str, str], Path], subprocess.Popen[bytes]]
    host: str
    port: int
    reach_host: str
    reach_port: int


def spawn(argv: list[str], log_path: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None, preexec_user: int | None = None,
          preexec_group: int | None = None) -> subprocess.Popen[bytes]:
    """Start argv in a new session (so the whole tree can be stopped), output to log_path."""
    kwargs: dict[str, object] = {}
    if preexec_user is not None:
        kwargs["user"] = preexec_user
    if preexec_group is not None:
        # Also drop root's supplementary groups, or the child keeps them after switching user.
        kwargs["group"] = preexec_group
        kwargs["extra_groups"] = []
    # The child gets its own copy of the log fd; close ours so it does not leak.
    with log_path.open("ab") as log:
        return subprocess.Popen(  # type: ignore[call-overload,no-any-return]
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=cwd, start_new_session=True, **kwargs,
        )


def stop_group(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM the process group led by pid, then SIGKILL after timeout. Only our own pids."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def wait_started(proc: subprocess.Popen[bytes], probe: Callable[[], object],
                 transient: tuple[type[Exception], ...], what: str, where: str, log_path: Path,
                 timeout: float) -> None:
    """Call probe until it returns: the service `what` answers `where`. A `transient` error
    means not yet; RuntimeError with the log's tail when proc exits first or after timeout."""
    deadline = time.monotonic() + timeout
    last_error = "no attempt"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} during start-up; "
                               f"log {log_path}:\n{log_tail(log_path)}")
        try:
            probe()
            return
        except transient as exc:
            last_error = str(exc).strip()
            time.sleep(0.1)
    raise RuntimeError(f"{what} not ready {where} after {timeout:.0f}s ({last_error}); "
                       f"log {log_path}:\n{log_tail(log_path)}")


def log_tail(log_path: Path, lines: int = 40) -> str:
    """Last lines of a log, for failure messages that say why a service did not start."""
    try:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
