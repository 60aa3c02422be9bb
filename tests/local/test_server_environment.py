"""The server gets exactly the environment it needs (issue 11 §3, item 7): started by a real
`mlflow-stack up` whose own environment holds every secret a user may have exported, with SSO
on and off, each process of the server tree is read from /proc/<pid>/environ.

Also here, because the server without SSO is plain MLflow (no app of ours in front): its Host
check accepts the loopback with the server's own port only (item 3).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from harness.keycloak import KeycloakServer
from harness.ports import free_port
from harness.sso import ADMIN_ROLE, provision_realm
from mlflow_stack.launch.spec import EnvVar, SecretRef, ServerLaunch
from mlflow_stack.local.process import server_environment

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "mlflow_stack.cli.main"]
# What a user's shell may hold while running `up`: none of it is for a SQLite + local-artifact
# server (the launch passes what a server needs under its own names).
SECRETS = {
    "ADMIN_PASSWORD": "leak-admin-password", "KEYCLOAK_ADMIN_PASSWORD": "leak-kc-password",
    "AWS_ACCESS_KEY_ID": "leak-aws-key-id", "AWS_SECRET_ACCESS_KEY": "leak-aws-secret",
    "AWS_SESSION_TOKEN": "leak-aws-session", "MLFLOW_STACK_DB_PASSWORD": "leak-db-password",
    "MLFLOW_STACK_DB_ADMIN_PASSWORD": "leak-db-admin", "PGPASSWORD": "leak-pg-password",
    "MLFLOW_STACK_S3_SECRET_ACCESS_KEY": "leak-s3-secret", "HARBOR_ROBOT_TOKEN": "leak-harbor",
    "SOME_OTHER_TOKEN": "leak-other",
}


@dataclass
class Up:
    port: int
    state: Path
    env: dict[str, str]

    def environments(self) -> list[dict[str, str]]:
        """The environment of every process of the server tree (root first)."""
        pid = json.loads((self.state / "server.json").read_text())["pid"]
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
        assert len(tree) > 1, "expected the server's worker processes too"
        result = []
        for proc in tree:
            raw = Path(f"/proc/{proc.pid}/environ").read_bytes()
            result.append(dict(item.split("=", 1) for item in raw.decode().split("\0")
                               if "=" in item))
        return result


def _cli(args: list[str], env: dict[str, str]) -> None:
    done = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300,
                          env=env, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


@pytest.fixture
def user_env(tmp_path: Path) -> dict[str, str]:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    return {**os.environ, **SECRETS, "MLFLOW_STACK_ENV_FILE": str(empty),
            "MLFLOW_STACK_FLASK_THREADS": "7", "LC_ALL": "C.UTF-8"}


def _up(tmp_path: Path, env: dict[str, str], port: int, config: str | None) -> Iterator[Up]:
    state = tmp_path / "state"
    args = ["up", "--detach", "--state-dir", str(state), "--port", str(port)]
    if config is not None:
        path = tmp_path / "mlflow-stack.yaml"
        path.write_text(config)
        args += ["-c", str(path)]
    _cli(args, env)
    try:
        yield Up(port, state, env)
    finally:
        _cli(["down", "--state-dir", str(state)], env)


@pytest.fixture
def plain(tmp_path: Path, user_env: dict[str, str]) -> Iterator[Up]:
    yield from _up(tmp_path, user_env, free_port(), None)


@pytest.fixture
def sso(tmp_path: Path, user_env: dict[str, str], keycloak: KeycloakServer) -> Iterator[Up]:
    port = free_port()
    realm = provision_realm(keycloak, f"env-{uuid.uuid4().hex[:8]}", f"http://127.0.0.1:{port}",
                            users={"alice": [ADMIN_ROLE]})
    config = (f"auth:\n  provider: keycloak\n  keycloak_url: {keycloak.url}\n"
              f"  realm: {realm.realm}\n  client_id: {realm.client_id}\n")
    env = {**user_env, "MLFLOW_STACK_OIDC_CLIENT_SECRET": realm.client_secret}
    yield from _up(tmp_path, env, port, config)


def _assert_only_what_it_needs(up: Up, needed: set[str]) -> None:
    for env in up.environments():
        leaked = {k for k in SECRETS if k in env} | {
            k for k, v in env.items() if v in SECRETS.values()}
        assert not leaked, leaked
        assert "MLFLOW_STACK_ENV_FILE" not in env and "MLFLOW_STACK_OIDC_CLIENT_SECRET" not in env
        assert needed <= set(env), needed - set(env)
        assert env["PATH"] == up.env["PATH"] and env["LC_ALL"] == "C.UTF-8"


def test_server_without_sso_gets_no_secret_of_up(plain: Up) -> None:
    _assert_only_what_it_needs(plain, {"PATH", "HOME", "MLFLOW_SERVER_ALLOWED_HOSTS", "TMPDIR"})


def test_server_with_sso_gets_only_its_launch_and_tunables(sso: Up) -> None:
    _assert_only_what_it_needs(sso, {"OIDC_CLIENT_SECRET", "SECRET_KEY", "OIDC_ISSUER",
                                     "MLFLOW_STACK_FLASK_THREADS"})
    assert httpx.get(f"http://127.0.0.1:{sso.port}/health", timeout=30).status_code == 200


def test_plain_mlflow_allows_its_own_loopback_port_only(plain: Up) -> None:
    url = f"http://127.0.0.1:{plain.port}/api/2.0/mlflow/experiments/search?max_results=1"
    assert httpx.get(url, timeout=30).status_code == 200
    # Malformed hosts are refused by the platform's strict parse (400), other ports by MLflow's
    # allow-list (403).
    for host, status in ((f"127.0.0.1:{plain.port}@evil.example", 400), ("127.0.0.1:evil", 400),
                         ("127.0.0.1:1", 403), (f"localhost:{plain.port + 1}", 403)):
        refused = httpx.get(url, headers={"Host": host}, timeout=30)
        assert refused.status_code == status, (host, refused.status_code)


def test_server_environment_keeps_the_launch_and_the_allow_list() -> None:
    launch = ServerLaunch(argv=[], env=[
        EnvVar("TMPDIR", "/state/tmp"), EnvVar("PGPASSWORD", secret=SecretRef("s", "k", None)),
        EnvVar("AWS_ACCESS_KEY_ID", "AKIA-LAUNCH")])
    base = {**SECRETS, "PATH": "/bin", "HOME": "/home/u", "LC_TIME": "C", "PYTHONPATH": "/x",
            "TMPDIR": "/tmp", "HTTPS_PROXY": "http://proxy:3128", "SSL_CERT_FILE": "/ca.pem",
            "MLFLOW_STACK_USER_CACHE_SECONDS": "3", "MLFLOW_STACK_SECRET_KEY": "s",
            "AWS_SESSION_TOKEN": "session-of-the-keys"}
    env = server_environment(base, launch)
    assert env == {"PATH": "/bin", "HOME": "/home/u", "LC_TIME": "C", "PYTHONPATH": "/x",
                   "TMPDIR": "/state/tmp", "HTTPS_PROXY": "http://proxy:3128",
                   "SSL_CERT_FILE": "/ca.pem", "MLFLOW_STACK_USER_CACHE_SECONDS": "3",
                   "AWS_ACCESS_KEY_ID": "AKIA-LAUNCH"}
    # Temporary keys the launch passes on (read from AWS_*) keep their session token.
    same = server_environment({**base, "AWS_ACCESS_KEY_ID": "AKIA-LAUNCH"}, launch)
    assert same["AWS_SESSION_TOKEN"] == "session-of-the-keys"
