"""Attacks that already fail, kept failing (issue 11): forged and misused tokens, CORS, and no
acknowledged write lost to a killed worker or a restart.

One realm and one server for the module, as a user runs it: PostgreSQL metadata, the default
two workers, a public host name (so the CORS allow-list holds a configured origin). Every forged
token carries the real claims of a genuine access token (which the server accepts), so each is
refused only for the one thing the attacker changed. test_sso_api.py covers a tampered
signature, wrong audience and issuer, expired tokens and a forged-token flood.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from pydantic import SecretStr

from harness.attacks import (
    b64url_decode,
    hmac_signed,
    new_rsa_key,
    public_jwk,
    public_key_secrets,
    realm_jwks,
    rsa_signed,
    signing_jwk,
    split_token,
    trap_server,
    unsigned,
)
from harness.keycloak import KeycloakServer, jwt_claims
from harness.ports import free_port
from harness.postgres import PostgresServer
from harness.server_watch import workers
from harness.sso import ADMIN_ROLE, USER_ROLE, SsoRealm, SsoServer, provision_realm, running
from harness.waits import wait_until
from mlflow_stack.config.model import Settings
from mlflow_stack.config.secrets import Secrets
from mlflow_stack.local import platform, process
from mlflow_stack.progress import NullProgress

pytestmark = pytest.mark.integration
REALM = f"attacks-tokens-{uuid.uuid4().hex[:8]}"
PUBLIC_HOST = "mlflow.attacks.test"
PUBLIC_ORIGIN = f"https://{PUBLIC_HOST}"
EVIL_ORIGIN = "https://evil.example"
API = "/api/2.0/mlflow"
# A tracking call (MLflow's Flask app) and one of mlflow-oidc-auth's own routes.
PROTECTED = (f"{API}/experiments/search?max_results=1", f"{API}/users/current")


@dataclass
class Env:
    realm: SsoRealm
    server: SsoServer

    def get(self, token: str, path: str, **headers: str) -> httpx.Response:
        return httpx.get(f"{self.server.url}{path}", timeout=30.0,
                         headers={"Authorization": f"Bearer {token}", **headers})

    def post(self, token: str, path: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(f"{self.server.url}{path}", json=body, timeout=30.0,
                          headers={"Authorization": f"Bearer {token}"})

    def assert_refused(self, token: str, what: str) -> None:
        for path in PROTECTED:
            r = self.get(token, path)
            assert r.status_code == 401, (what, path, r.status_code, r.text[:300])

    def assert_accepted(self, token: str) -> None:
        for path in PROTECTED:
            r = self.get(token, path)
            assert r.status_code == 200, (path, r.status_code, r.text[:300])


@pytest.fixture(scope="module")
def env(keycloak: KeycloakServer, postgres_server: PostgresServer,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    port = free_port()
    realm = provision_realm(keycloak, REALM, f"http://127.0.0.1:{port}",
                            users={"alice": [ADMIN_ROLE], "bob": [USER_ROLE]})
    suffix = uuid.uuid4().hex[:8]
    pg = postgres_server
    settings = Settings.model_validate({
        # Two workers: the kill test below takes down each of them in turn.
        "server": {"port": port, "hostname": PUBLIC_HOST, "workers": 2},
        "database": {"backend": "postgresql", "host": pg.host, "port": pg.port,
                     "user": pg.superuser, "name": f"mlflow_atk_{suffix}",
                     "auth_name": f"mlflow_atk_auth_{suffix}"},
        "auth": {"provider": "keycloak", "keycloak_url": keycloak.url, "realm": realm.realm,
                 "client_id": realm.client_id},
    })
    settings = settings.model_copy(update={"secrets": Secrets.model_construct(
        db_password=SecretStr(pg.password), oidc_client_secret=SecretStr(realm.client_secret))})
    assert settings.effective_workers == 2
    with running(settings, tmp_path_factory.mktemp("attacks-tokens") / "state") as server:
        yield Env(realm, server)


@pytest.fixture(scope="module")
def genuine(env: Env) -> str:
    """bob's real access token: accepted on both routes (what every forgery starts from)."""
    token = env.realm.token("bob")
    env.assert_accepted(token)
    return token


# --------------------------------------------------------------------------------------------
# forged tokens


def test_alg_none_token_is_refused(env: Env, genuine: str) -> None:
    for alg in ("none", "None", "NONE", "nOnE"):
        forged = unsigned(genuine, alg)
        assert forged.endswith(".") and split_token(forged)[1] == split_token(genuine)[1]
        env.assert_refused(forged, f"alg {alg}")
    env.assert_accepted(genuine)


def test_hmac_with_the_realms_public_key_as_secret_is_refused(env: Env, genuine: str) -> None:
    """Key confusion: the public key (as anyone fetches it from the JWKS) as an HMAC secret."""
    header, claims = split_token(genuine)
    key = signing_jwk(realm_jwks(env.realm.server.url, env.realm.realm))
    assert key["kid"] == header["kid"], "the genuine token is signed by the published key"
    variants = public_key_secrets(key)
    assert "spki-pem" in variants and "cert-pem" in variants
    for name, secret in variants.items():
        for alg in ("HS256", "HS384", "HS512"):
            for kid in (key["kid"], None):
                head = {"kid": kid} if kid else {}
                env.assert_refused(hmac_signed(claims, secret, alg, head),
                                   f"{alg} with {name}, kid {kid}")
    env.assert_accepted(genuine)


def _verifies_with(token: str, jwk_key: Any) -> bool:
    """The forged token is a valid RS256 JWS for the attacker's key (so only the key is wrong)."""
    signing_input, _, signature = token.rpartition(".")
    try:
        jwk_key.public_key().verify(b64url_decode(signature), signing_input.encode(),
                                    padding.PKCS1v15(), hashes.SHA256())
    except Exception:
        return False
    return True


def test_token_signed_with_an_attackers_key_without_kid_is_refused(env: Env,
                                                                    genuine: str) -> None:
    _, claims = split_token(genuine)
    key = new_rsa_key()
    forged = rsa_signed(claims, key)
    assert _verifies_with(forged, key) and "kid" not in split_token(forged)[0]
    env.assert_refused(forged, "attacker key, no kid")
    env.assert_accepted(genuine)


def test_token_signed_with_an_attackers_key_and_the_realms_kid_is_refused(
        env: Env, genuine: str) -> None:
    header, claims = split_token(genuine)
    key = new_rsa_key()
    forged = rsa_signed(claims, key, {"kid": header["kid"]})
    assert _verifies_with(forged, key)
    env.assert_refused(forged, "attacker key, realm kid")
    env.assert_accepted(genuine)


def test_key_urls_and_embedded_keys_in_the_header_are_never_used(env: Env,
                                                                 genuine: str) -> None:
    """jku / x5u point at the attacker's server (which serves the attacker's key set); jwk
    embeds the attacker's key. None is fetched or trusted."""
    header, claims = split_token(genuine)
    key = new_rsa_key()
    attacker_kid = f"attacker-{uuid.uuid4().hex[:6]}"
    jwks = {"keys": [public_jwk(key, attacker_kid), public_jwk(key, header["kid"])]}
    with trap_server(json.dumps(jwks).encode()) as trap:
        headers: dict[str, dict[str, Any]] = {}
        for kid in (attacker_kid, header["kid"]):
            headers[f"jku, kid {kid}"] = {"kid": kid, "jku": f"{trap.url}/jwks.json"}
            headers[f"x5u, kid {kid}"] = {"kid": kid, "x5u": f"{trap.url}/cert.pem"}
            headers[f"jwk, kid {kid}"] = {"kid": kid, "jwk": public_jwk(key, kid)}
        headers["jwk, no kid"] = {"jwk": public_jwk(key)}
        for what, head in headers.items():
            forged = rsa_signed(claims, key, head)
            assert _verifies_with(forged, key)
            env.assert_refused(forged, what)
        # A fetch that never comes cannot be polled for: give one the server might start in
        # the background (after its answer) a deliberate second to reach the trap.
        time.sleep(1.0)
        assert trap.requests == [], f"the server fetched the attacker's URL: {trap.requests}"
    env.assert_accepted(genuine)


def test_refresh_token_is_not_a_bearer_token(env: Env) -> None:
    response = env.realm.grant("bob")
    refresh = str(response["refresh_token"])
    claims = jwt_claims(refresh)
    assert claims["typ"] == "Refresh" and claims["azp"] == env.realm.client_id
    env.assert_refused(refresh, "refresh token")
    env.assert_accepted(str(response["access_token"]))


# --------------------------------------------------------------------------------------------
# CORS


CORS_PATHS = (f"{API}/experiments/search?max_results=1",
              "/ajax-api/2.0/mlflow/experiments/search?max_results=1",
              "/api/2.0/mlflow-artifacts/artifacts?path=0", f"{API}/users/current",
              "/login", "/oidc/ui/", "/health")
OTHER_ORIGINS = (EVIL_ORIGIN, "null", f"{PUBLIC_ORIGIN}.evil.example",
                 f"http://{PUBLIC_HOST}", f"https://evil.example/{PUBLIC_HOST}")


def _preflight(env: Env, path: str, origin: str) -> httpx.Response:
    return httpx.options(f"{env.server.url}{path}", timeout=30.0, headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})


def test_cors_preflight_allows_only_the_public_origin(env: Env) -> None:
    for path in CORS_PATHS:
        for origin in OTHER_ORIGINS:
            r = _preflight(env, path, origin)
            assert "access-control-allow-origin" not in r.headers, (path, origin, r.headers)
    # The configured origin does get an answer (the CORS layer is there and answering).
    r = _preflight(env, "/health", PUBLIC_ORIGIN)
    assert r.headers.get("access-control-allow-origin") == PUBLIC_ORIGIN, r.headers


def test_cors_simple_request_allows_only_the_public_origin(env: Env, genuine: str) -> None:
    for path in CORS_PATHS:
        for origin in OTHER_ORIGINS:
            r = env.get(genuine, path, Origin=origin)
            assert "access-control-allow-origin" not in r.headers, (path, origin, r.headers)
    r = env.get(genuine, PROTECTED[0], Origin=PUBLIC_ORIGIN)
    assert r.status_code == 200
    assert r.headers.get("access-control-allow-origin") == PUBLIC_ORIGIN, r.headers
    assert r.headers.get("access-control-allow-credentials") == "true"
    # ...and a state-changing request from another origin is refused outright.
    for origin in (EVIL_ORIGIN, PUBLIC_ORIGIN):
        r = httpx.post(f"{env.server.url}{API}/experiments/create", timeout=30.0,
                       json={"name": f"cors-{uuid.uuid4().hex[:6]}"},
                       headers={"Authorization": f"Bearer {genuine}", "Origin": origin})
        assert r.status_code == (200 if origin == PUBLIC_ORIGIN else 403), (origin, r.text)


# --------------------------------------------------------------------------------------------
# durability: what the server acknowledged is kept


@dataclass
class Writes:
    acked: dict[int, float] = field(default_factory=dict)  # step -> monotonic time of the 200
    failed: list[tuple[int, str]] = field(default_factory=list)


def _write_metrics(env: Env, token: str, run_id: str, steps: range, threads: int,
                   during: Callable[[Writes], None], deadline: float) -> Writes:
    """Log one metric value per step from `threads` clients while `during` runs; record which
    steps the server acknowledged. Bounded by the number of steps and by `deadline`."""
    writes = Writes()
    lock = threading.Lock()

    def writer(offset: int) -> None:
        with httpx.Client(base_url=env.server.url, timeout=15.0,
                          headers={"Authorization": f"Bearer {token}"}) as client:
            for step in steps[offset::threads]:
                if time.monotonic() > deadline:
                    return
                try:
                    r = client.post(f"{API}/runs/log-metric", json={
                        "run_id": run_id, "key": "acked", "value": float(step),
                        "timestamp": 1_700_000_000_000 + step, "step": step})
                    outcome = "ok" if r.status_code == 200 else str(r.status_code)
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                with lock:
                    if outcome == "ok":
                        writes.acked[step] = time.monotonic()
                    else:
                        writes.failed.append((step, outcome))
                if outcome != "ok":
                    time.sleep(0.5)  # the server is away: don't burn through the steps

    pool = [threading.Thread(target=writer, args=(i,), daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    try:
        during(writes)
    finally:
        for t in pool:
            t.join(timeout=max(1.0, deadline - time.monotonic() + 20))
    assert not any(t.is_alive() for t in pool), "writers did not finish"
    return writes


def _wait(check: Callable[[], bool], seconds: float, what: str) -> None:
    assert wait_until(check, seconds, interval=0.2), f"timed out after {seconds:.0f} s: {what}"


def _read_back(env: Env, token: str, run_id: str) -> dict[int, float]:
    r = env.get(token, f"{API}/metrics/get-history?run_id={run_id}&metric_key=acked"
                       "&max_results=25000")
    assert r.status_code == 200, r.text[:300]
    return {int(m["step"]): float(m["value"]) for m in r.json().get("metrics", [])}


def _assert_all_kept(env: Env, token: str, run_id: str, writes: Writes) -> None:
    stored = _read_back(env, token, run_id)
    lost = sorted(s for s in writes.acked if stored.get(s) != float(s))
    assert not lost, f"{len(lost)} acknowledged writes lost, e.g. steps {lost[:10]}"


def _new_run(env: Env, token: str) -> str:
    r = env.post(token, f"{API}/experiments/create", {"name": f"acked-{uuid.uuid4().hex[:8]}"})
    assert r.status_code == 200, r.text
    r = env.post(token, f"{API}/runs/create", {"experiment_id": r.json()["experiment_id"]})
    assert r.status_code == 200, r.text
    return str(r.json()["run"]["info"]["run_id"])


def _acked_at_least(writes: Writes, n: int) -> bool:
    return len(writes.acked) >= n


def _replaced(server_pid: int, victim: int) -> bool:
    pids = {p.pid for p in workers(server_pid)}
    return victim not in pids and len(pids) == 2


def test_no_acknowledged_write_is_lost_when_workers_are_killed(env: Env) -> None:
    token = env.realm.token("bob")
    run_id = _new_run(env, token)
    record = process.find_running(env.server.state).record
    assert record is not None
    server_pid = record.pid
    killed: list[tuple[int, float]] = []

    def kill_workers(writes: Writes) -> None:
        for _ in range(2):  # one worker, then (after the pool is whole again) the other
            _wait(partial(_acked_at_least, writes, len(writes.acked) + 40), 60,
                  "writes acknowledged")
            alive = workers(server_pid)
            assert len(alive) == 2, [p.pid for p in alive]
            victim = next(p for p in alive if p.pid not in {k for k, _ in killed})
            os.kill(victim.pid, signal.SIGKILL)  # a worker of our own server, by pid
            killed.append((victim.pid, time.monotonic()))
            _wait(partial(_replaced, server_pid, victim.pid), 90,
                  "gunicorn replaced the killed worker")

    writes = _write_metrics(env, token, run_id, range(450), threads=3, during=kill_workers,
                            deadline=time.monotonic() + 240)
    assert len(killed) == 2
    last_kill = killed[-1][1]
    assert any(t > last_kill for t in writes.acked.values()), "no write acknowledged after the kill"
    _assert_all_kept(env, token, run_id, writes)


def test_no_acknowledged_write_is_lost_across_down_and_up(env: Env) -> None:
    """Runs last: it restarts the module's server."""
    token = env.realm.token("bob")
    run_id = _new_run(env, token)
    restarted: list[float] = []

    def restart(writes: Writes) -> None:
        _wait(partial(_acked_at_least, writes, 50), 60, "writes acknowledged")
        assert platform.down(env.server.state) is not None
        platform.up(env.server.settings, env.server.state, NullProgress())
        restarted.append(time.monotonic())

    writes = _write_metrics(env, token, run_id, range(400), threads=2, during=restart,
                            deadline=time.monotonic() + 300)
    assert restarted and any(t > restarted[0] for t in writes.acked.values()), \
        "no write acknowledged after the restart"
    _assert_all_kept(env, token, run_id, writes)
