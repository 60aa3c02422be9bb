"""A throwaway PostgreSQL for tests: Debian's initdb + postgres, loopback only, password auth."""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psycopg

from .ports import free_port
from .procs import Placement, log_tail, spawn, stop_group, wait_started

PG_ROOT = Path("/usr/lib/postgresql")
OS_USER = "postgres"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0

# Test-only speed: durability does not matter for a database that is deleted at session end.
FAST_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "32MB",
}


@dataclass
class PostgresServer:
    """A running server; `dsn()` gives a URL that authenticates with the superuser password."""

    port: int
    superuser: str
    password: str = field(repr=False)  # kept out of reprs and failure output
    datadir: Path
    log_path: Path
    startup_seconds: float
    host: str = "127.0.0.1"
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _root: Path | None = field(default=None, repr=False)

    def dsn(self, dbname: str = "postgres") -> str:
        user = quote(self.superuser, safe="")
        password = quote(self.password, safe="")
        return f"postgresql://{user}:{password}@{self.host}:{self.port}/{dbname}"

    def new_database(self, prefix: str) -> str:
        """A fresh database named ``prefix_<random>``; its SQLAlchemy URL (psycopg 3)."""
        name = f"{prefix}_{secrets.token_hex(4)}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name).replace("postgresql://", "postgresql+psycopg://", 1)

    def stop(self) -> None:
        """Fast shutdown of the postmaster we started, then remove its data. Safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is not None:
            _stop_postmaster(proc)
        root, self._root = self._root, None
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)


def find_bin_dir() -> Path:
    """Newest /usr/lib/postgresql/<ver>/bin (Debian keeps server binaries off PATH), else PATH."""
    candidates: list[tuple[tuple[int, ...], Path]] = []
    if PG_ROOT.is_dir():
        for ver_dir in PG_ROOT.iterdir():
            try:
                version = tuple(int(part) for part in ver_dir.name.split("."))
            except ValueError:
                continue
            if (ver_dir / "bin" / "initdb").is_file() and (ver_dir / "bin" / "postgres").is_file():
                candidates.append((version, ver_dir / "bin"))
    if candidates:
        return max(candidates)[1]
    initdb = shutil.which("initdb")
    if initdb and shutil.which("postgres"):
        return Path(initdb).resolve().parent
    raise RuntimeError(
        f"PostgreSQL server binaries not found in {PG_ROOT}/<ver>/bin or on PATH; "
        "install the Debian package 'postgresql'"
    )


def _run_as() -> tuple[int, int] | None:
    """(uid, gid) to drop to: postgres refuses to run as root. None when we are not root."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(OS_USER)
    except KeyError:
        # Debian's postgresql package creates this user; a bare image may lack it.
        subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home",
             "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", OS_USER],
            check=True, capture_output=True,
        )
        entry = pwd.getpwnam(OS_USER)
    return entry.pw_uid, entry.pw_gid


def _enterable_by(path: Path, uid: int, gid: int) -> bool:
    """Can uid:gid reach path (search permission on it and every parent)? Mode bits only."""
    for directory in (path, *path.parents):
        st = directory.stat()
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid == gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def _temp_parent(owner: tuple[int, int] | None) -> Path:
    """Where the data dir goes: $TMPDIR, unless the server user cannot enter it (then /tmp)."""
    candidates = [Path(tempfile.gettempdir()).resolve(), Path("/tmp"), Path("/var/tmp")]
    if owner is None:
        return candidates[0]
    for candidate in candidates:
        if candidate.is_dir() and _enterable_by(candidate, *owner):
            return candidate
    raise RuntimeError(
        f"no temp dir the {OS_USER!r} user can enter among {[str(c) for c in candidates]}"
    )


def _child_env() -> dict[str, str]:
    # A fixed minimal environment: the server must not depend on the caller's locale or PG* vars.
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}


def _stop_postmaster(proc: subprocess.Popen[bytes]) -> None:
    # SIGINT is PostgreSQL's "fast" shutdown (SIGTERM would wait for every client to disconnect).
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
            os.kill(proc.pid, signal.SIGINT)
            proc.wait(timeout=STOP_TIMEOUT)
    # If it did not go, SIGTERM then SIGKILL. Its children call setsid() (own groups) but exit on
    # postmaster death, so the postmaster pid is the one to stop.
    stop_group(proc.pid, timeout=5.0)
    if proc.poll() is None:
        proc.wait(timeout=5.0)


def _initdb(bin_dir: Path, datadir: Path, superuser: str, password: str, log_path: Path,
            owner: tuple[int, int] | None) -> None:
    # The password goes through a file readable only by the server's user, never through argv.
    pwfile = datadir.parent / "pwfile"
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)
    if owner is not None:
        os.chown(pwfile, *owner)
    argv = [
        str(bin_dir / "initdb"), "-D", str(datadir), "-U", superuser, f"--pwfile={pwfile}",
        # scram for TCP and socket alike, so tests really exercise password auth.
        "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions",
    ]
    user_kwargs: dict[str, object] = {}
    if owner is not None:
        user_kwargs = {"user": owner[0], "group": owner[1], "extra_groups": []}
    try:
        with log_path.open("ab") as log:
            result = subprocess.run(  # type: ignore[call-overload]
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=_child_env(), cwd=datadir.parent, timeout=120, check=False, **user_kwargs,
            )
    finally:
        pwfile.unlink(missing_ok=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"initdb failed (exit {result.returncode}); log {log_path}:\n{log_tail(log_path)}"
        )


def _wait_ready(server: PostgresServer, proc: subprocess.Popen[bytes]) -> None:
    """Ready means a real password login over TCP succeeds, not just an open port."""

    def probe() -> None:
        with psycopg.connect(server.dsn(), connect_timeout=2) as conn:
            conn.execute("SELECT 1")

    wait_started(proc, probe, (psycopg.OperationalError,), "postgres", f"on port {server.port}",
                 server.log_path, START_TIMEOUT)


def start_postgres(base_dir: Path, placement: Placement | None = None) -> PostgresServer:
    """initdb a fresh cluster, run it on a free 127.0.0.1 port (or where placement says: then
    `host`/`port` are the bridge the harness reaches it by); RuntimeError if it cannot start."""
    started = time.monotonic()
    base_dir.mkdir(parents=True, exist_ok=True)
    bin_dir = find_bin_dir()
    owner = _run_as()
    # The data lives in its own temp dir owned by the server user: pytest's base dirs are 0700 root,
    # which the postgres user cannot enter. The log stays in base_dir (we open it, not the server).
    root = Path(tempfile.mkdtemp(prefix="mlflow-stack-pg-", dir=_temp_parent(owner)))
    datadir = root / "data"
    sockdir = root / "sock"
    datadir.mkdir(mode=0o700)
    sockdir.mkdir(mode=0o700)
    if owner is not None:
        for path in (root, datadir, sockdir):
            os.chown(path, *owner)
    log_path = base_dir / "postgres.log"
    superuser = "postgres"
    password = secrets.token_urlsafe(18)
    try:
        _initdb(bin_dir, datadir, superuser, password, log_path, owner)
        if placement is not None:
            # Clients come from the node's pods and its own address, not loopback.
            with (datadir / "pg_hba.conf").open("a") as hba:
                hba.write("host all all 0.0.0.0/0 scram-sha-256\n")
        # A port can be taken between free_port() and bind; retry a couple of times on that only.
        for attempt in range(3):
            port, listen = free_port(), "127.0.0.1"
            if placement is not None:
                port, listen = placement.port, placement.host
            argv = [
                str(bin_dir / "postgres"), "-D", str(datadir), "-p", str(port),
                "-c", f"listen_addresses={listen}", "-c", f"unix_socket_directories={sockdir}",
            ]
            for key, value in FAST_SETTINGS.items():
                argv += ["-c", f"{key}={value}"]
            if placement is None:
                proc = spawn(
                    argv, log_path, env=_child_env(), cwd=root,
                    preexec_user=owner[0] if owner else None,
                    preexec_group=owner[1] if owner else None,
                )
                server = PostgresServer(
                    port=port, superuser=superuser, password=password, datadir=datadir,
                    log_path=log_path, startup_seconds=0.0, _proc=proc, _root=root,
                )
            else:
                # Started as root where placement puts it; nsenter-style placements drop to
                # the server's user with the argv prefix this adds.
                drop = ["setpriv", f"--reuid={owner[0]}", f"--regid={owner[1]}",
                        "--clear-groups"] if owner else []
                proc = placement.spawn([*drop, *argv], _child_env(), log_path)
                server = PostgresServer(
                    port=placement.reach_port, superuser=superuser, password=password,
                    datadir=datadir, log_path=log_path, startup_seconds=0.0, _proc=proc,
                    _root=root, host=placement.reach_host,
                )
            try:
                _wait_ready(server, proc)
            except RuntimeError:
                _stop_postmaster(proc)
                server._proc = None
                if attempt < 2 and "Address already in use" in log_tail(log_path, 10):
                    continue
                raise
            server.startup_seconds = time.monotonic() - started
            return server
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    raise RuntimeError("postgres: could not find a free port in 3 attempts")
