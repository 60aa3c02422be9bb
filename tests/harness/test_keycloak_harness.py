"""The Keycloak harness against a real Keycloak (kc.sh start-dev from the cached dist)."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from keycloak import KeycloakError, KeycloakOpenID

from . import keycloak as kc
from .keycloak import (
    KeycloakServer,
    admin_token,
    create_client,
    create_realm,
    create_user,
    jwt_claims,
    password_grant,
    start_keycloak,
)

pytestmark = pytest.mark.integration


def _is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def test_ready_on_loopback_with_discovery(keycloak: KeycloakServer) -> None:
    assert keycloak.url.startswith("http://127.0.0.1:")
    assert keycloak.start_seconds < kc.READY_TIMEOUT
    config = httpx.get(f"{keycloak.issuer('master')}/.well-known/openid-configuration").json()
    assert config["issuer"] == keycloak.issuer("master")
    assert config["jwks_uri"] == f"{keycloak.issuer('master')}/protocol/openid-connect/certs"


def test_only_loopback_sockets_and_management_port_moved(keycloak: KeycloakServer) -> None:
    connections = keycloak.jvm().net_connections(kind="inet")
    listening = {c.laddr.port for c in connections if c.status == "LISTEN"}
    assert keycloak.port in listening
    assert keycloak.management_port in listening
    assert 9000 not in listening and 8080 not in listening
    for conn in connections:
        assert _is_loopback(conn.laddr.ip), f"bound beyond loopback: {conn}"
        if conn.raddr:
            assert _is_loopback(conn.raddr.ip), f"connection leaves the machine: {conn}"
    health = httpx.get(f"http://127.0.0.1:{keycloak.management_port}/health/ready")
    assert health.status_code == 200 and health.json()["status"] == "UP"


def test_admin_token(keycloak: KeycloakServer) -> None:
    token = admin_token(keycloak)
    claims = jwt_claims(token)  # admin-cli issues lightweight tokens: no username claim
    assert claims["iss"] == keycloak.issuer("master")
    assert claims["azp"] == "admin-cli"
    realms = httpx.get(f"{keycloak.url}/admin/realms",
                       headers={"Authorization": f"Bearer {token}"})
    assert realms.status_code == 200
    assert "master" in {realm["realm"] for realm in realms.json()}


def test_realm_user_client_password_grant(keycloak: KeycloakServer) -> None:
    realm = "harness"
    create_realm(keycloak, realm)
    user_id = create_user(keycloak, realm, "alice", "alice-pw-1", "alice@example.test")
    secret = create_client(keycloak, realm, "harness-client")
    assert user_id and secret

    token = password_grant(keycloak, realm, "harness-client", "alice", "alice-pw-1", secret)
    openid = KeycloakOpenID(server_url=keycloak.url, realm_name=realm,
                            client_id="harness-client", client_secret_key=secret)
    claims = openid.decode_token(token["access_token"])  # verified against the realm JWKS
    assert claims["iss"] == keycloak.issuer(realm)
    assert claims["sub"] == user_id
    assert claims["preferred_username"] == "alice"
    assert claims["email"] == "alice@example.test"
    assert claims["azp"] == "harness-client"

    with pytest.raises(KeycloakError, match="invalid_grant"):
        password_grant(keycloak, realm, "harness-client", "alice", "wrong", secret)
    with pytest.raises(KeycloakError, match="unauthorized_client"):
        password_grant(keycloak, realm, "harness-client", "alice", "alice-pw-1", "bad-secret")


def test_access_log_counts_discovery_and_jwks(keycloak: KeycloakServer) -> None:
    realm = "counting"
    create_realm(keycloak, realm)
    certs = f"^/realms/{realm}/protocol/openid-connect/certs$"
    discovery = f"^/realms/{realm}/\\.well-known/openid-configuration$"
    assert keycloak.count_requests(certs) == 0
    assert keycloak.count_requests(discovery) == 0

    with httpx.Client() as client:
        for _ in range(3):
            assert client.get(f"{keycloak.issuer(realm)}/protocol/openid-connect/certs").is_success
        for _ in range(2):
            url = f"{keycloak.issuer(realm)}/.well-known/openid-configuration"
            assert client.get(url).is_success

    assert keycloak.wait_for_request_count(certs, 3) == 3
    assert keycloak.wait_for_request_count(discovery, 2) == 2
    keycloak.sync_access_log()  # everything answered is logged: nothing late or duplicated
    assert keycloak.count_requests(certs) == 3
    assert keycloak.count_requests(discovery) == 2
    assert keycloak.count_requests(certs, method="POST") == 0


def test_cached_dist_stays_pristine(keycloak: KeycloakServer, keycloak_dist: Path) -> None:
    assert keycloak.home.resolve() != keycloak_dist
    assert (keycloak.home / "data" / "h2").is_dir()
    assert not (keycloak_dist / "data").exists()
    marker = (keycloak_dist / ".complete.json").stat().st_mtime
    changed = [
        os.path.join(root, name)
        for root, _dirs, files in os.walk(keycloak_dist)
        for name in files
        if os.stat(os.path.join(root, name)).st_mtime > marker
    ]
    assert changed == []


def test_start_failure_raises_with_log_tail(tmp_path: Path) -> None:
    fake = tmp_path / "dist"
    (fake / "bin").mkdir(parents=True)
    (fake / "lib" / "quarkus").mkdir(parents=True)
    (fake / "lib" / "lib").mkdir()
    kc_sh = fake / "bin" / "kc.sh"
    kc_sh.write_text("#!/bin/sh\necho 'fake keycloak cannot start' >&2\nexit 3\n")
    kc_sh.chmod(0o755)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="fake keycloak cannot start"):
        start_keycloak(tmp_path / "run", fake)
    assert time.monotonic() - started < 10


def test_ensure_dist_is_safe_when_processes_race(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from harness.keycloak import ensure_keycloak_dist;"
        "from pathlib import Path;"
        "print(ensure_keycloak_dist(Path(sys.argv[2])))"
    )
    harness_parent = str(Path(kc.__file__).resolve().parents[1])
    procs = [
        subprocess.Popen([sys.executable, "-c", code, harness_parent, str(cache)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [proc.communicate(timeout=600) for proc in procs]
    for proc, (_out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
    paths = {out.strip() for out, _ in results}
    assert paths == {str(cache.resolve() / f"keycloak-{kc.KEYCLOAK_VERSION}")}
    dist = Path(paths.pop())
    assert (dist / "bin" / "kc.sh").stat().st_mode & 0o111
    leftovers = [p.name for p in cache.iterdir() if not p.name.startswith(".keycloak-")]
    assert leftovers == [dist.name]
