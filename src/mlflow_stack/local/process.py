"""Run, find and stop the `mlflow server` process tree recorded in the state directory."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import httpx
import psutil

from mlflow_stack import __version__
from mlflow_stack.errors import ConfigError, ServerError
from mlflow_stack.launch.command import SERVER_TUNABLES
from mlflow_stack.launch.spec import ServerLaunch
from mlflow_stack.local.state import StateDir


def installed_versions() -> str:
    """What a server started now would run (recorded by `up`, compared by `upgrade`)."""
    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    return (f"mlflow {version('mlflow')}, mlflow-oidc-auth {version('mlflow-oidc-auth')}, "
            f"mlflow-stack {__version__}")


@dataclass
class ServerRecord:
    """What `up` wrote about the running server (pid + start time guard against pid reuse), and
    how it was started, so that a restart (`upgrade`) brings it back exactly so."""

    pid: int
    create_time: float
    url: str
    port: int
    started_at: float
    metadata: str
    artifacts: str
    auth: str
    versions: str = ""  # what it runs (installed_versions()); "" before upgrade existed
    host: str = ""  # the address it is bound to; "" in records written before it was kept
    config: str | None = None  # absolute path of the config file `up` loaded; None: defaults
    # Start time in clock ticks since boot (/proc/<pid>/stat): unlike create_time it does not
    # move when the wall clock is stepped (NTP, a VM's clock correction). None: not known.
    start_ticks: int | None = None

    @property
    def knows_start(self) -> bool:
        """Whether the record says how the server was started (host and config)."""
        return bool(self.host)

    def save(self, state: StateDir) -> None:
        tmp = state.pid_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(state.pid_file)


@dataclass
class RecordLookup:
    record: ServerRecord | None
    stale_removed: bool = False


def find_running(state: StateDir) -> RecordLookup:
    """The live server of this state dir; a record whose process is gone is removed as stale."""
    try:
        data = json.loads(state.pid_file.read_text())
        record = ServerRecord(**data)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return RecordLookup(None)
    except (ValueError, TypeError):
        state.pid_file.unlink(missing_ok=True)
        return RecordLookup(None, stale_removed=True)
    if is_alive(record):
        return RecordLookup(record)
    state.pid_file.unlink(missing_ok=True)
    return RecordLookup(None, stale_removed=True)


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), None where unreadable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        # Fields after the command name (which may hold spaces and parentheses): state is the
        # 3rd field of the line, starttime the 22nd.
        return int(stat.rpartition(")")[2].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def is_alive(record: ServerRecord) -> bool:
    """The recorded server is still running (not another process that got its pid). Matched
    by start ticks when both are known: create_time is boot time (from the wall clock) plus
    ticks, so a stepped clock moves it, and a record a second off looked stale — `down` then
    left the server running and removed its record."""
    try:
        proc = psutil.Process(record.pid)
        if proc.status() == "zombie":
            return False
        ticks = start_ticks(record.pid) if record.start_ticks is not None else None
        if ticks is not None:
            return ticks == record.start_ticks
        return abs(proc.create_time() - record.create_time) < 1.0
    except psutil.Error:
        return False


def check_port_free(host: str, port: int) -> None:
    """Refuse a port something already listens on (bad input: exit 2)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Like the server itself: connections in TIME_WAIT from a previous run don't count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise ConfigError(
                f"port {port} on {host} is already in use",
                hint="Choose another with --port, or stop what is listening there.",
            ) from None


def port_holders(host: str, port: int) -> set[int | None]:
    """Pids of the processes listening on host:port (a wildcard bind counts for every address);
    None stands for a socket whose owner this user may not see."""
    wildcard = ("0.0.0.0", "::", "")
    holders: set[int | None] = set()
    for conn in psutil.net_connections(kind="inet"):
        if conn.status != psutil.CONN_LISTEN or not conn.laddr or conn.laddr.port != port:
            continue
        if host in wildcard or conn.laddr.ip in wildcard or conn.laddr.ip == host:
            holders.add(conn.pid)
    return holders


def port_holders_besides(pid: int, host: str, port: int) -> set[int | None]:
    """Listeners on host:port that are neither ``pid`` nor one of its descendants. The
    listeners are read before the tree, so a worker the server forks meanwhile is in the tree,
    and one that has exited since (replaced) no longer counts."""
    holders = port_holders(host, port)
    others = holders - tree_pids(pid)
    return {p for p in others if p is None or psutil.pid_exists(p)}


def tree_pids(pid: int) -> set[int]:
    """The pid and all its descendants (empty when it is gone)."""
    try:
        root = psutil.Process(pid)
        return {pid, *(p.pid for p in root.children(recursive=True))}
    except psutil.Error:
        return set()


# What the server inherits from `up`'s environment besides its launch env (launch/command.py):
# the basics of a process, the interpreter's own settings, CA bundles and proxies. Nothing
# else: `up`'s environment holds ADMIN_PASSWORD, KEYCLOAK_ADMIN_PASSWORD, S3 keys and database
# passwords the server must not see unless its launch passes them on.
INHERITED = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR",
    "LD_LIBRARY_PATH", "VIRTUAL_ENV", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE", "AWS_CA_BUNDLE", "PGSSLROOTCERT", "PGSSLCRL",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
    "http_proxy", "https_proxy", "no_proxy", "all_proxy",
    *SERVER_TUNABLES,
})
INHERITED_PREFIXES = ("LC_", "PYTHON")


def server_environment(base_env: Mapping[str, str], launch: ServerLaunch) -> dict[str, str]:
    """The server's whole environment: the allow-listed part of `base_env`, then its launch env
    (which wins). A session token comes along with the temporary S3 keys it belongs to."""
    env = {k: v for k, v in base_env.items()
           if k in INHERITED or k.startswith(INHERITED_PREFIXES)}
    launched = launch.env_dict()
    key = launched.get("AWS_ACCESS_KEY_ID")
    if key and key == base_env.get("AWS_ACCESS_KEY_ID") and "AWS_SESSION_TOKEN" in base_env:
        env["AWS_SESSION_TOKEN"] = base_env["AWS_SESSION_TOKEN"]
    return {**env, **launched}


def spawn(
    launch: ServerLaunch, state: StateDir, base_env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """Start the server in its own session (so its ~9 processes stop together), with exactly
    the environment it needs (`server_environment`)."""
    env = server_environment(base_env, launch)
    state.log_file.parent.mkdir(parents=True, exist_ok=True)
    with state.log_file.open("ab") as log:
        return subprocess.Popen(
            launch.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=state.root, start_new_session=True,
        )


def log_size(state: StateDir) -> int:
    """Bytes in the server log so far (it is appended to across starts)."""
    try:
        return state.log_file.stat().st_size
    except OSError:
        return 0


def log_tail(state: StateDir, lines: int = 25) -> str:
    try:
        return "\n".join(state.log_file.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def wait_healthy(url: str, proc: subprocess.Popen[bytes], state: StateDir, timeout: float,
                 on_wait: Callable[[float], None] | None = None) -> None:
    """Poll /health until it answers 200; fail with the log tail if the process dies."""
    deadline = time.monotonic() + timeout
    start = time.monotonic()
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            code = proc.poll()
            if code is not None:
                raise ServerError(
                    f"the MLflow server exited with code {code} before it was healthy; "
                    f"last lines of {state.log_file}:\n{log_tail(state)}")
            try:
                if client.get(f"{url}/health").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if on_wait:
                on_wait(time.monotonic() - start)
            time.sleep(0.1)
    stop_tree(proc.pid)
    raise ServerError(f"the MLflow server did not answer {url}/health within {timeout:.0f} s; "
                      f"last lines of {state.log_file}:\n{log_tail(state)}")


def stop_tree(pid: int, timeout: float = 20.0) -> bool:
    """SIGTERM the server's process group, SIGKILL what is left after timeout. True if it ran."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return False
    if pgid != pid:  # not a group leader we started: stop just the tree under it
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        for p in procs:
            p.terminate()
        psutil.wait_procs(procs, timeout=timeout)
        return True
    os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not _group_alive(pgid):
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    _reap(pid)
    return True


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    # A group of zombies only is as good as gone.
    return any(p.status() != "zombie" for p in psutil.process_iter(["status"])
               if _safe_pgid(p.pid) == pgid)


def _safe_pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def tree_memory_uss(pid: int) -> int:
    """Sum of unique set size (bytes) over the server's process tree: its resting memory."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_full_info().uss
        except psutil.Error:
            continue
    return total


def tree_size(pid: int) -> int:
    try:
        return 1 + len(psutil.Process(pid).children(recursive=True))
    except psutil.Error:
        return 0


def read_log(state: StateDir) -> Path:
    return state.log_file
