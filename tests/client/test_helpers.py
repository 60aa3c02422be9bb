"""The shell helpers in real bash and fish against the real Keycloak.

`source` them → MLFLOW_TRACKING_TOKEN set and the expiry printed; wrong password and unreachable
Keycloak → a clear message and a non-zero status. While they run, `ps` is polled and must never
show the password. The token request goes through a loopback proxy that holds it for a moment,
so curl and python3 are alive long enough for `ps` to see them (and the test checks it did).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from harness.client_site import ClientSite, run_cli
from harness.http_server import QuietHandler, serving
from harness.ports import free_port
from harness.tls import self_signed, server_context
from mlflow_stack.client.helpers import HELPER_NAMES, helper_text
from mlflow_stack.client.oidc import KeycloakUnreachable, TokenConfigError
from mlflow_stack.client.tokens import manager_from_env

pytestmark = pytest.mark.integration
HOLD = 1.0  # seconds the proxy holds each token request

SHELLS = {
    "bash": ("mlflow-auth.sh",
             ["bash", "-c", 'source "$HELPER"; s=$?; echo "STATUS=$s"; '
                            'echo "TOKEN=${MLFLOW_TRACKING_TOKEN:-}"']),
    "fish": ("mlflow-auth.fish",
             ["fish", "-c", 'source $HELPER; set s $status; echo "STATUS=$s"; '
                            'echo "TOKEN=$MLFLOW_TRACKING_TOKEN"']),
}


@pytest.fixture(scope="module")
def helpers_dir(client_site: ClientSite, tmp_path_factory: pytest.TempPathFactory) -> Path:
    for shell in ("bash", "fish", "curl", "python3"):
        if shutil.which(shell) is None:
            pytest.fail(f"{shell} is not installed (Debian: apt-get install -y {shell})")
    out = tmp_path_factory.mktemp("helpers")
    result = run_cli(["helpers", "--out", str(out)], client_site.env(out / "t.json"))
    assert result.returncode == 0, result.stderr
    for name in HELPER_NAMES:
        assert (out / name).read_text() == helper_text(name)
        assert (out / name).stat().st_mode & 0o777 == 0o644
    return out


@dataclass
class Proxy:
    url: str
    forwarded: list[int] = field(default_factory=list)


@pytest.fixture(scope="module")
def slow_proxy(client_site: ClientSite) -> Iterator[Proxy]:
    """Forwards token requests to Keycloak after HOLD seconds."""
    proxy = Proxy("")
    target = client_site.token_url

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            time.sleep(HOLD)
            answer = httpx.post(target, content=body, timeout=30, headers={
                "Content-Type": self.headers.get("Content-Type", "")})
            proxy.forwarded.append(answer.status_code)
            self.send_body(answer.status_code, answer.content)

    with serving(Handler) as url:
        proxy.url = f"{url}/realms/r/protocol/openid-connect/token"
        yield proxy


class PsWatch:
    """Polls `ps` (all processes, full command lines) in a thread while a helper runs."""

    def __init__(self) -> None:
        self.lines: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            out = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True,
                                 check=False).stdout
            self.lines.update(out.splitlines())
            time.sleep(0.02)

    def __enter__(self) -> PsWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@dataclass
class Run:
    returncode: int
    status: int | None
    token: str
    stdout: str
    stderr: str
    ps: set[str]


def source_helper(shell: str, helpers_dir: Path, env: dict[str, str]) -> Run:
    name, argv = SHELLS[shell]
    env = {**env, "HELPER": str(helpers_dir / name)}
    with PsWatch() as watch:
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120,
                                check=False)
    values = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    status = values.get("STATUS")
    return Run(result.returncode, int(status) if status is not None else None,
               values.get("TOKEN", ""), result.stdout, result.stderr, watch.lines)


def helper_env(site: ClientSite, token_url: str, who: str = "bob",
               password: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update({
        "MLFLOW_KEYCLOAK_TOKEN_URL": token_url,
        "MLFLOW_KEYCLOAK_CLIENT_ID": site.realm.client_id,
        "MLFLOW_CLIENT_SECRET": site.realm.client_secret,
        "MLFLOW_AUTH_USERNAME": who,
        "MLFLOW_AUTH_PASSWORD": password or site.realm.users[who].password,
    })
    return env


def assert_secrets_hidden(run: Run, *secrets: str) -> None:
    for secret in secrets:
        assert not [line for line in run.ps if secret in line], "a secret showed in ps"
        assert secret not in run.stdout + run.stderr


@pytest.mark.parametrize("shell", SHELLS)
def test_helper_sets_a_working_token(shell: str, helpers_dir: Path, client_site: ClientSite,
                                     slow_proxy: Proxy) -> None:
    env = helper_env(client_site, slow_proxy.url)
    run = source_helper(shell, helpers_dir, env)
    assert run.status == 0 and run.returncode == 0, run.stderr
    assert "MLflow authentication successful. Token expires in 30 seconds (at " in run.stdout
    assert run.stderr == ""  # no DEBUG lines, no noise
    assert run.token.count(".") == 2
    # ps saw the helper's curl (so the watch was meaningful) but never the secrets.
    assert any("curl" in line and slow_proxy.url in line for line in run.ps), \
        "ps never caught the helper's curl; the check proved nothing"
    assert_secrets_hidden(run, env["MLFLOW_AUTH_PASSWORD"], env["MLFLOW_CLIENT_SECRET"])
    # The token is accepted by the MLflow server (the reference's troubleshooting call, with
    # the MLflow 3 endpoint).
    r = httpx.get(f"{client_site.url}/api/2.0/mlflow/experiments/search?max_results=1",
                  headers={"Authorization": f"Bearer {run.token}"}, timeout=30)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("shell", SHELLS)
def test_helper_reports_a_wrong_password(shell: str, helpers_dir: Path,
                                         client_site: ClientSite, slow_proxy: Proxy) -> None:
    password = "Not-" + client_site.realm.users["bob"].password
    env = helper_env(client_site, slow_proxy.url, password=password)
    run = source_helper(shell, helpers_dir, env)
    assert run.status not in (None, 0) and run.token == ""
    assert "mlflow-auth: Keycloak refused: Invalid user credentials (HTTP 400)" in run.stderr
    assert "check MLFLOW_AUTH_USERNAME and MLFLOW_AUTH_PASSWORD" in run.stderr
    assert "successful" not in run.stdout
    assert any("curl" in line and slow_proxy.url in line for line in run.ps)
    assert_secrets_hidden(run, password, env["MLFLOW_CLIENT_SECRET"])


@pytest.mark.parametrize("shell", SHELLS)
def test_helper_reports_unreachable_keycloak(shell: str, helpers_dir: Path,
                                             client_site: ClientSite) -> None:
    dead = f"http://127.0.0.1:{free_port()}/realms/r/protocol/openid-connect/token"
    env = helper_env(client_site, dead)
    run = source_helper(shell, helpers_dir, env)
    assert run.status not in (None, 0) and run.token == ""
    assert f"mlflow-auth: cannot reach Keycloak at {dead}" in run.stderr
    assert "Failed to connect" in run.stderr  # curl's reason
    assert_secrets_hidden(run, env["MLFLOW_AUTH_PASSWORD"], env["MLFLOW_CLIENT_SECRET"])


@pytest.mark.parametrize("shell", SHELLS)
def test_helper_reports_missing_variables_and_bad_ca_bundle(
        shell: str, helpers_dir: Path, client_site: ClientSite, tmp_path: Path) -> None:
    env = helper_env(client_site, client_site.token_url)
    del env["MLFLOW_AUTH_PASSWORD"]
    run = source_helper(shell, helpers_dir, env)
    assert run.status not in (None, 0)
    assert "not set (or not exported): MLFLOW_AUTH_PASSWORD" in run.stderr
    env = helper_env(client_site, client_site.token_url)
    env["MLFLOW_CA_BUNDLE"] = str(tmp_path / "missing-ca.pem")
    run = source_helper(shell, helpers_dir, env)
    assert run.status not in (None, 0)
    assert "MLFLOW_CA_BUNDLE=" in run.stderr and "is not a readable file" in run.stderr


@pytest.fixture
def tls_endpoint(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTPS token endpoint with a self-signed certificate: (URL, the certificate)."""
    cert, key = self_signed(tmp_path)

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_body(404, b'{"error": "Realm does not exist"}')

    with serving(Handler, tls=server_context(cert, key)) as url:
        yield f"{url}/realms/r/protocol/openid-connect/token", cert


@pytest.mark.parametrize("shell", SHELLS)
def test_tls_is_verified_and_a_ca_bundle_adds_trust(
        shell: str, helpers_dir: Path, client_site: ClientSite,
        tls_endpoint: tuple[str, Path]) -> None:
    url, cert = tls_endpoint
    env = helper_env(client_site, url)
    run = source_helper(shell, helpers_dir, env)
    assert run.status not in (None, 0)
    assert f"the TLS certificate of {url} is not trusted" in run.stderr
    assert "set MLFLOW_CA_BUNDLE" in run.stderr
    # With the CA (here the self-signed certificate itself) TLS passes and the endpoint answers.
    env["MLFLOW_CA_BUNDLE"] = str(cert)
    run = source_helper(shell, helpers_dir, env)
    assert run.status not in (None, 0)
    assert "Keycloak refused: Realm does not exist (HTTP 404)" in run.stderr


def test_python_client_verifies_tls_too(tls_endpoint: tuple[str, Path], tmp_path: Path) -> None:
    url, cert = tls_endpoint
    env = {"MLFLOW_KEYCLOAK_TOKEN_URL": url, "MLFLOW_CLIENT_SECRET": "s",
           "MLFLOW_KEYCLOAK_TOKEN_CACHE": str(tmp_path / "t.json")}
    with pytest.raises(KeycloakUnreachable, match="not trusted") as info:
        manager_from_env(env).token()
    assert "MLFLOW_CA_BUNDLE" in str(info.value)
    with pytest.raises(TokenConfigError, match="Realm does not exist"):
        manager_from_env({**env, "MLFLOW_CA_BUNDLE": str(cert)}).token()


@pytest.mark.parametrize("shell", SHELLS)
def test_helper_refuses_to_run_unsourced(shell: str, helpers_dir: Path,
                                         client_site: ClientSite) -> None:
    name, _ = SHELLS[shell]
    result = subprocess.run([shell, str(helpers_dir / name)],
                            env=helper_env(client_site, client_site.token_url),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "must be sourced, not run" in result.stderr


def test_shared_python_is_assembled_and_guarded(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow_stack.client import helpers

    for name in HELPER_NAMES:
        text = helper_text(name)
        assert "@FORM_PY@" not in text and "@PARSE_PY@" not in text
        assert 'def fail(message, hint):' in text and '"grant_type": "password"' in text
    real = helpers._template
    monkeypatch.setattr(helpers, "_template", lambda n: "print('x')" if n.endswith(".in")
                        else real(n))
    with pytest.raises(ValueError, match="must not contain single quotes"):
        helper_text("mlflow-auth.sh")
