"""The `keycloak` MLflow auth plugin against a real Keycloak and a real server with SSO.

The reference's client example runs with only environment variables set and keeps working for
more than two 30 s token lifetimes, with no 401 and at most one token request per lifetime.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import pytest
import requests
from pydantic import SecretStr

from harness.client_site import LIFESPAN, ClientSite
from harness.fake_keycloak import TOKEN_URL, FakeClock, FakeKeycloak
from harness.http_server import QuietHandler, serving
from harness.ports import free_port
from harness.s3 import S3Server
from harness.sso import running, sso_settings
from mlflow_stack.client.auth_provider import (
    KeycloakAuth,
    KeycloakRequestAuthProvider,
    reset_managers,
)
from mlflow_stack.client.oidc import KeycloakClient
from mlflow_stack.client.token_cache import TokenCache
from mlflow_stack.client.tokens import TokenManager, TokenSource

USAGE = Path(__file__).parent / "reference_usage.py"


def test_entry_point_is_registered() -> None:
    names = {ep.name: ep.value for ep in entry_points(group="mlflow.request_auth_provider")}
    assert names.get("keycloak") == \
        "mlflow_stack.client.auth_provider:KeycloakRequestAuthProvider", (
            "install the package (pip install -e .) so the entry point is registered")
    # MLflow's registry loads the entry points when it is imported.
    from mlflow.tracking.request_auth import registry

    providers = {p.get_name(): p for p in registry._request_auth_provider_registry}
    assert isinstance(providers.get("keycloak"), KeycloakRequestAuthProvider)


def run_usage(env: dict[str, str], seconds: float, experiment: str,
              timeout: float = 600) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    result = subprocess.run([sys.executable, str(USAGE), str(seconds), experiment], env=env,
                            capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("RESULT "))
    return dict(json.loads(line.removeprefix("RESULT "))), result


@pytest.mark.integration
def test_reference_example_survives_token_expiry(client_site: ClientSite,
                                                 tmp_path: Path) -> None:
    kc = client_site.keycloak
    env = client_site.env(tmp_path / "cache" / "tokens.json", who="alice")
    kc.sync_access_log()  # every token request so far is counted
    token_calls_before = kc.count_requests(client_site.token_path, method="POST")
    refusals_before = client_site.server_log_401s()
    started = time.monotonic()
    seconds = 2 * LIFESPAN + 10
    summary, result = run_usage(env, seconds, "my-experiment")
    elapsed = time.monotonic() - started
    kc.sync_access_log()
    token_calls = kc.count_requests(client_site.token_path, method="POST") - token_calls_before

    assert summary["steps"] > 100 and summary["logged"] == summary["steps"] + 1
    # Zero 401s on the wire (the server's access log) and no silent retry in the plugin.
    assert client_site.server_log_401s() == refusals_before
    assert "refused the Keycloak token" not in result.stderr
    # At most one token request per token lifetime, plus the first (benchmark figure P4).
    allowed = 1 + math.ceil(elapsed / LIFESPAN)
    assert token_calls <= allowed, (token_calls, elapsed)
    # The plugin made all of them: one password grant, then refresh-token grants only.
    grants = summary["grants"]
    assert grants.get("password") == 1, grants
    assert grants.get("refresh_token", 0) >= 2, grants  # it did renew, more than once
    assert sum(grants.values()) == token_calls
    print(f"P4: {token_calls} token requests in {elapsed:.0f} s with {LIFESPAN} s tokens "
          f"({summary['steps']} metrics logged, {grants})")


@pytest.mark.integration
def test_service_account_client_credentials(client_site: ClientSite, tmp_path: Path) -> None:
    env = client_site.env(tmp_path / "tokens.json", who=None,
                          MLFLOW_KEYCLOAK_TOKEN_URL=client_site.token_url,
                          MLFLOW_KEYCLOAK_CLIENT_ID="ci-runner",
                          MLFLOW_CLIENT_SECRET=client_site.ci_secret)
    summary, _ = run_usage(env, 0, f"ci-{uuid.uuid4().hex[:6]}")
    assert summary["grants"] == {"client_credentials": 1}


@pytest.mark.integration
def test_wrong_password_is_a_clear_error(client_site: ClientSite, tmp_path: Path) -> None:
    env = client_site.env(tmp_path / "tokens.json", who="bob")
    env["MLFLOW_AUTH_PASSWORD"] = "not-" + env["MLFLOW_AUTH_PASSWORD"]
    code = "import mlflow; mlflow.search_experiments()"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode != 0
    assert "Keycloak refused the username or password of user 'bob'" in result.stderr
    assert "MLFLOW_AUTH_PASSWORD" in result.stderr  # the hint
    assert env["MLFLOW_AUTH_PASSWORD"] not in result.stderr + result.stdout


@pytest.mark.integration
def test_unreachable_keycloak_is_a_clear_error(client_site: ClientSite, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/realms/x/protocol/openid-connect/token"
    env = client_site.env(tmp_path / "tokens.json", MLFLOW_KEYCLOAK_TOKEN_URL=dead)
    code = "import mlflow; mlflow.search_experiments()"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode != 0
    assert f"cannot reach Keycloak at {dead}" in result.stderr


# --------------------------------------------------------------------------------------------
# presigned multipart transfers: the bearer token goes to the server, never to S3

PROBE = Path(__file__).parent / "presigned_probe.py"


@pytest.fixture(scope="module")
def s3_site(client_site: ClientSite, s3_server: S3Server,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second server of the same realm with artifacts on S3 (presigned transfers enabled)."""
    port = free_port()
    settings = sso_settings(client_site.realm, port).model_copy(deep=True)
    settings.artifacts.backend = "s3"
    settings.artifacts.bucket = "mlflow-client-presigned"
    settings.artifacts.endpoint_url = s3_server.endpoint_url
    secrets = settings.secrets.model_copy(update={
        "s3_access_key_id": SecretStr(s3_server.access_key),
        "s3_secret_access_key": SecretStr(s3_server.secret_key)})
    settings = settings.model_copy(update={"secrets": secrets})
    with running(settings, tmp_path_factory.mktemp("client-s3") / "state") as server:
        yield server.url


@pytest.mark.integration
def test_presigned_multipart_transfers_carry_no_bearer_to_s3(
        client_site: ClientSite, s3_site: str, s3_server: S3Server, tmp_path: Path) -> None:
    mib = str(5 * 2**20)  # S3's smallest part; a 12 MiB file -> 3 parts each way
    env = client_site.env(tmp_path / "tokens.json", who="carol", MLFLOW_TRACKING_URI=s3_site,
                          MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE=mib,
                          MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE=mib,
                          MLFLOW_MULTIPART_DOWNLOAD_MINIMUM_FILE_SIZE=mib,
                          MLFLOW_MULTIPART_DOWNLOAD_CHUNK_SIZE=mib)
    result = subprocess.run([sys.executable, str(PROBE)], env=env, capture_output=True,
                            text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("RESULT "))
    seen = json.loads(line.removeprefix("RESULT "))["requests"]
    server = urlsplit(s3_site).netloc
    s3 = urlsplit(s3_server.endpoint_url).netloc
    to_server = [r for r in seen if r["netloc"] == server]
    to_s3 = [r for r in seen if r["netloc"] == s3]
    assert {r["netloc"] for r in seen} <= {server, s3}, seen
    # Every call to the server carries the bearer token: tracking, the multipart create and
    # complete calls, and the presigned-download URL request.
    assert to_server and all(r["auth"] == "Bearer" for r in to_server), to_server
    paths = {r["path"] for r in to_server}
    assert any("/mpu/create/" in p for p in paths), paths
    assert any("/mpu/complete/" in p for p in paths), paths
    assert any("presigned" in p for p in paths), paths
    # The parts went straight to S3 on presigned URLs, and without the token.
    assert sum(1 for r in to_s3 if r["method"] == "PUT") >= 3, to_s3
    assert sum(1 for r in to_s3 if r["method"] == "GET") >= 3, to_s3
    assert all(r["auth"] is None for r in to_s3), to_s3


# --------------------------------------------------------------------------------------------
# the auth object on its own: header, and one retry after a 401


class _Api(QuietHandler):
    """Answers 401 to the tokens in `refused`, else 200 with what it received."""

    refused: ClassVar[set[str]] = set()
    seen: ClassVar[list[tuple[str, str, bytes]]] = []

    def _handle(self) -> None:
        token = self.headers.get("Authorization", "").removeprefix("Bearer ")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).seen.append((self.command, token, body))
        self.send_body(401 if token in self.refused else 200, b"", content_type=None)

    do_GET = do_PUT = _handle


@pytest.fixture
def api() -> Iterator[str]:
    _Api.refused.clear()
    _Api.seen.clear()
    with serving(_Api) as url:
        yield url


def test_bearer_replaces_other_authorization_and_401_is_retried_once(
        api: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    fake = FakeKeycloak(clock=clock)
    source = TokenSource("password", KeycloakClient(TOKEN_URL, "mlflow", "client-secret-1"),
                         "alice", "alice-pw-1")
    manager = TokenManager(source, TokenCache(tmp_path / "t.json"), clock=clock,
                           http=fake.http())
    auth = KeycloakAuth(manager)
    first = manager.token()
    # MLflow may have set a static MLFLOW_TRACKING_TOKEN header: ours wins.
    r = requests.get(api, auth=auth, headers={"Authorization": "Bearer stale"}, timeout=10)
    assert r.status_code == 200 and _Api.seen[-1][1] == first
    # The server starts refusing the token (session revoked): renewed once, request resent
    # with its streamed body from the start.
    _Api.refused.add(first)
    payload = tmp_path / "upload.bin"
    payload.write_bytes(b"x" * 100_000)
    with payload.open("rb") as body, caplog.at_level(logging.WARNING):
        r = requests.put(f"{api}/artifact", data=body, auth=auth, timeout=10)
    assert r.status_code == 200
    assert [h.status_code for h in r.history] == [401]
    second = manager.token()
    assert second != first
    assert [(m, t, len(b)) for m, t, b in _Api.seen[-2:]] == [
        ("PUT", first, 100_000), ("PUT", second, 100_000)]
    assert "retrying once with a renewed token" in caplog.text
    assert fake.grants == {"password": 1, "refresh_token": 1}
    # A server that refuses every token (no MLflow role): no retry storm.
    _Api.refused.add(second)
    for _ in range(5):
        assert requests.get(api, auth=auth, timeout=10).status_code == 401
    assert fake.grants == {"password": 1, "refresh_token": 1}


def test_provider_shares_one_manager_per_environment(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    reset_managers()
    monkeypatch.setenv("MLFLOW_KEYCLOAK_TOKEN_URL", TOKEN_URL)
    monkeypatch.setenv("MLFLOW_CLIENT_SECRET", "client-secret-1")
    monkeypatch.setenv("MLFLOW_KEYCLOAK_TOKEN_CACHE", str(tmp_path / "t.json"))
    provider = KeycloakRequestAuthProvider()
    assert provider.get_name() == "keycloak"
    one, two = provider.get_auth(), provider.get_auth()
    assert one.manager is two.manager
    monkeypatch.setenv("MLFLOW_AUTH_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_AUTH_PASSWORD", "alice-pw-1")
    three = provider.get_auth()
    assert three.manager is not one.manager and three.manager.source.kind == "password"
    reset_managers()
