"""`mlflow-stack login` end to end through Chromium on the real Keycloak login page, the login
used by the MLflow plugin and `token`, `logout` revoking it, and the device flow."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
import yaml
from pydantic import SecretStr

from harness.client_site import CLI, CLI_CLIENT, ClientSite, run_cli
from harness.fake_keycloak import TOKEN_URL
from harness.keycloak import KeycloakServer, create_realm, create_user, jwt_claims
from mlflow_stack.client.login import BrowserLogin, LoginFailed, pkce_pair
from mlflow_stack.client.oidc import KeycloakClient, TokenConfigError
from mlflow_stack.components import keycloak as kc
from mlflow_stack.config.loader import load_config
from mlflow_stack.config.secrets import Secrets
from mlflow_stack.deploy import apply_system

URL = re.compile(r"(https?://\S+)")


class Reader:
    """Collects a pipe's lines in a thread; `wait_for` a regex."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        regex = re.compile(pattern)
        with self._cond:
            found = self._cond.wait_for(
                lambda: any(regex.search(line) for line in self.lines), timeout)
            assert found, f"no {pattern!r} in {''.join(self.lines)!r}"
            match = next(m for line in self.lines if (m := regex.search(line)))
            return match

    @property
    def text(self) -> str:
        self._thread.join(timeout=10)
        return "".join(self.lines)


@contextmanager
def cli(args: list[str], env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], Reader,
                                                                 Reader]]:
    proc = subprocess.Popen([*CLI, *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        yield proc, Reader(proc.stdout), Reader(proc.stderr)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def sign_in(page: Any, site: ClientSite, who: str) -> None:
    page.wait_for_selector("#username", timeout=30_000)
    page.fill("#username", who)
    page.fill("#password", site.realm.users[who].password)
    page.click("#kc-login")


@pytest.mark.integration
def test_browser_login_token_plugin_and_logout(client_site: ClientSite, chromium: Any,
                                               tmp_path: Path) -> None:
    cache = tmp_path / "tokens.json"
    env = client_site.env(cache, who=None)  # no credentials at all: only what login stores
    with cli(["login", "--issuer", client_site.realm.issuer, "--client-id", CLI_CLIENT,
              "--no-browser", "--timeout", "120"], env) as (proc, out, err):
        url = err.wait_for(r"(http://\S+/protocol/openid-connect/auth\?\S+)").group(1)
        assert "code_challenge_method=S256" in url and "redirect_uri=http%3A%2F%2F127.0.0.1" \
            in url
        context = chromium.new_context()
        page = context.new_page()
        page.goto(url)
        sign_in(page, client_site, "carol")  # the real Keycloak login form
        page.wait_for_url(re.compile(r"^http://127\.0\.0\.1:\d+/callback\?"), timeout=30_000)
        assert "Signed in as carol" in page.inner_text("body")
        context.close()
        assert proc.wait(timeout=60) == 0, err.text
    assert "Logged in as carol" in out.text
    stored = json.loads(cache.read_text())
    assert cache.stat().st_mode & 0o777 == 0o600
    (entry,) = stored["entries"].values()
    assert entry["kind"] == "login" and entry["client_id"] == CLI_CLIENT
    assert entry["tokens"]["refresh_token"]
    refresh_token = entry["tokens"]["refresh_token"]

    # `token` and the MLflow plugin use the stored login; nothing else is configured.
    result = run_cli(["token"], env)
    assert result.returncode == 0, result.stderr
    assert jwt_claims(result.stdout.strip())["preferred_username"] == "carol"
    code = ("import mlflow; e = mlflow.create_experiment('carol-login-exp'); "
            "print('EXP', mlflow.get_experiment(e).name)")
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=180, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "EXP carol-login-exp" in run.stdout

    # logout revokes the refresh token at Keycloak and forgets it.
    result = run_cli(["logout"], env)
    assert result.returncode == 0, result.stderr
    assert "refresh token is revoked and deleted" in result.stdout
    assert json.loads(cache.read_text())["entries"] == {}
    refused = httpx.post(client_site.token_url, data={
        "grant_type": "refresh_token", "refresh_token": refresh_token,
        "client_id": CLI_CLIENT}, timeout=30)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    result = run_cli(["token"], env)
    assert result.returncode == 2
    assert "no Keycloak credentials" in result.stderr and "mlflow-stack login" in result.stderr
    result = run_cli(["logout"], env)
    assert result.returncode == 0 and "Not logged in" in result.stdout


@pytest.mark.integration
def test_device_login(client_site: ClientSite, chromium: Any, tmp_path: Path) -> None:
    cache = tmp_path / "tokens.json"
    env = client_site.env(cache, who=None)
    with cli(["login", "--device", "--offline", "--issuer", client_site.realm.issuer,
              "--client-id", CLI_CLIENT, "--timeout", "120"], env) as (proc, out, err):
        code = err.wait_for(r"enter the code (\S+)").group(1)
        complete = err.wait_for(r"or open (\S+user_code=\S+)").group(1)
        assert code in complete
        context = chromium.new_context()
        page = context.new_page()
        page.goto(complete)
        sign_in(page, client_site, "bob")
        page.wait_for_load_state("load")
        # Keycloak asks the user to grant the CLI client access.
        page.click("input[name=accept], button[name=accept], #kc-login")
        page.wait_for_load_state("load")
        context.close()
        assert proc.wait(timeout=60) == 0, err.text
    assert "Logged in as bob" in out.text
    (entry,) = json.loads(cache.read_text())["entries"].values()
    assert "offline_access" in (entry["tokens"]["scope"] or "")
    assert entry["tokens"]["refresh_expires_at"] is None  # offline: no fixed expiry
    result = run_cli(["token", "--shell", "fish"], env)
    assert result.returncode == 0 and result.stdout.startswith("set -gx MLFLOW_TRACKING_TOKEN '")
    assert run_cli(["logout"], env).returncode == 0


@pytest.mark.integration
def test_login_with_the_client_apply_creates(keycloak: KeycloakServer, chromium: Any,
                                             tmp_path: Path) -> None:
    """No hand-made client: `apply` creates mlflow-cli, `login -c CONFIG` defaults to it."""
    realm, password = f"login-{uuid.uuid4().hex[:8]}", "dave-pw-1"
    create_realm(keycloak, realm)
    create_user(keycloak, realm, "dave", password, "dave@example.test")
    config = tmp_path / "mlflow-stack.yaml"
    config.write_text(yaml.safe_dump({"auth": {
        "provider": "keycloak", "keycloak_url": keycloak.url, "realm": realm,
        "admin_username": keycloak.admin_user, "realm_admin_users": ["dave"]}}))
    settings = load_config(config, require_secrets=False).settings
    apply_system(kc.SYSTEM, settings.model_copy(update={"secrets": Secrets.model_construct(
        keycloak_admin_password=SecretStr(keycloak.admin_password))}))

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "KEYCLOAK_"))}
    env["MLFLOW_KEYCLOAK_TOKEN_CACHE"] = str(tmp_path / "tokens.json")
    with cli(["login", "-c", str(config), "--no-browser", "--timeout", "120"], env) \
            as (proc, out, err):
        url = err.wait_for(r"(http://\S+/protocol/openid-connect/auth\?\S+)").group(1)
        assert "client_id=mlflow-cli" in url
        context = chromium.new_context()
        page = context.new_page()
        page.goto(url)
        page.wait_for_selector("#username", timeout=30_000)
        page.fill("#username", "dave")
        page.fill("#password", password)
        page.click("#kc-login")
        page.wait_for_url(re.compile(r"^http://127\.0\.0\.1:\d+/callback\?"), timeout=30_000)
        context.close()
        assert proc.wait(timeout=60) == 0, err.text
    assert "Logged in as dave" in out.text and "(client mlflow-cli)" in out.text
    result = run_cli(["token"], env)
    assert result.returncode == 0, result.stderr
    claims = jwt_claims(result.stdout.strip())
    # What the server checks: its own client as audience, the realm roles, this realm's issuer.
    assert claims["azp"] == "mlflow-cli" and "mlflow" in claims["aud"]
    assert "mlflow-admin" in claims["realm_access"]["roles"]
    assert claims["iss"] == keycloak.issuer(realm)
    assert run_cli(["logout"], env).returncode == 0


def test_login_needs_a_keycloak(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "MLFLOW_KEYCLOAK_TOKEN_CACHE": str(tmp_path / "t.json")}
    result = run_cli(["login", "--no-browser"], env)
    assert result.returncode == 2
    assert "which Keycloak?" in result.stderr and "--issuer" in result.stderr


def discovery(status: int) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(
        lambda request: httpx.Response(status, json={} if status == 200 else {
            "error": "Realm does not exist"})))


def test_callback_ignores_a_forged_state_and_reports_keycloak_errors() -> None:
    client = KeycloakClient(TOKEN_URL, CLI_CLIENT)
    with BrowserLogin(client, http=discovery(200)) as flow:
        forged = httpx.get(f"{flow.redirect_uri}?state=forged&code=x", timeout=10)
        assert forged.status_code == 400 and "state mismatch" in forged.text
        state = re.search(r"state=([^&]+)", flow.authorization_url)
        assert state is not None
        denied = httpx.get(f"{flow.redirect_uri}?state={state.group(1)}&error=access_denied"
                           "&error_description=User+said+no", timeout=10)
        assert denied.status_code == 400
        with pytest.raises(LoginFailed, match="User said no"):
            flow.wait(5)
    with BrowserLogin(client, http=discovery(200)) as flow, \
            pytest.raises(LoginFailed, match="no sign-in within"):
        flow.wait(0.2)


def test_browser_login_checks_the_realm_first() -> None:
    client = KeycloakClient(TOKEN_URL, CLI_CLIENT)
    with pytest.raises(TokenConfigError, match="Realm does not exist"), \
            BrowserLogin(client, http=discovery(404)):
        pass


def test_pkce_pair() -> None:
    import base64
    import hashlib

    verifier, challenge = pkce_pair()
    assert 43 <= len(verifier) <= 128
    digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    assert challenge == digest.decode()
