"""Issue 11 §3 against real SSO servers (real Keycloak, S3 and local artifacts): request bodies,
slow connections, strict Host parsing, artifact paths, account listings, auth-failure logging.

Two servers for the module: artifacts on S3 (JuiceFS gateway) and on local disk, both with the
default worker count, and short timeouts (set through the tunables `up` passes on).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from harness.keycloak import KeycloakServer
from harness.ports import free_port
from harness.s3 import S3Server
from harness.server_watch import ServerWatch, prime_workers
from harness.sso import ADMIN_ROLE, USER_ROLE, SsoRealm, SsoServer, provision_realm, running
from harness.waits import wait_until
from mlflow_stack.config.model import Settings
from mlflow_stack.config.secrets import Secrets

pytestmark = pytest.mark.integration
API = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
HEADER_TIMEOUT = 2.0
BODY_IDLE_TIMEOUT = 2.0
AUTH_LOG_INTERVAL = 6.0
LIMIT = 16 * 2**20  # server.max_request_body's default
TUNABLES = {"MLFLOW_STACK_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
            "MLFLOW_STACK_BODY_IDLE_TIMEOUT_SECONDS": str(BODY_IDLE_TIMEOUT),
            "MLFLOW_STACK_AUTH_LOG_INTERVAL_SECONDS": str(AUTH_LOG_INTERVAL)}


@dataclass
class Live:
    realm: SsoRealm
    server: SsoServer
    bucket: str | None

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return self.server.settings.server.port

    @property
    def log(self) -> Path:
        return self.server.state.log_file

    def call(self, who: str | None, method: str, path: str,
             headers_extra: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.realm.token(who)}"} if who else {}
        headers.update(headers_extra or {})
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=60.0,
                             **kwargs)


def _start(stack: ExitStack, keycloak: KeycloakServer, base: Path, name: str,
           s3: S3Server | None) -> Live:
    port = free_port()
    realm = provision_realm(keycloak, f"hardening-{name}-{uuid.uuid4().hex[:6]}",
                            f"http://127.0.0.1:{port}", users={
                                "alice": [ADMIN_ROLE], "bob": [USER_ROLE], "dave": [USER_ROLE]})
    bucket = f"hardening-{uuid.uuid4().hex[:8]}" if s3 else None
    artifacts = ({"backend": "s3", "bucket": bucket, "endpoint_url": s3.endpoint_url}
                 if s3 else {})
    settings = Settings.model_validate({
        "server": {"port": port}, "artifacts": artifacts,
        "auth": {"provider": "keycloak", "keycloak_url": keycloak.url, "realm": realm.realm,
                 "client_id": realm.client_id},
    }).model_copy(update={"secrets": Secrets.model_construct(
        oidc_client_secret=SecretStr(realm.client_secret),
        s3_access_key_id=SecretStr(s3.access_key) if s3 else None,
        s3_secret_access_key=SecretStr(s3.secret_key) if s3 else None)})
    with pytest.MonkeyPatch.context() as env:  # read by `up` when it starts the server
        for key, value in TUNABLES.items():
            env.setenv(key, value)
        server = stack.enter_context(running(settings, base / name))
    return Live(realm, server, bucket)


@pytest.fixture(scope="module")
def s3_live(keycloak: KeycloakServer, s3_server: S3Server,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with ExitStack() as stack:
        yield _start(stack, keycloak, tmp_path_factory.mktemp("hardening"), "s3", s3_server)


@pytest.fixture(scope="module")
def local_live(keycloak: KeycloakServer, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Live]:
    with ExitStack() as stack:
        yield _start(stack, keycloak, tmp_path_factory.mktemp("hardening"), "local", None)


# --------------------------------------------------------------------------------------------
# raw HTTP/1.1 over a socket: what clients that misbehave send


def connect(live: Live) -> socket.socket:
    return socket.create_connection(("127.0.0.1", live.port), timeout=30)


def head(live: Live, method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{live.port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(sock: socket.socket, timeout: float) -> tuple[int, bytes]:
    """Status and body of one response (Content-Length framed), within timeout seconds."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response: {data[:200]!r}")
        data += chunk
    header, _, body = data.partition(b"\r\n\r\n")
    status = int(header.split(b" ", 2)[1])
    length = next((int(line.split(b":", 1)[1]) for line in header.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, body


def seconds_until_closed(sock: socket.socket, limit: float) -> float | None:
    """How long until the server closes the connection (None: still open after limit s)."""
    start = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - start < limit:
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - start
        except TimeoutError:
            continue
        except OSError:  # reset counts as closed
            return time.monotonic() - start
    return None


# --------------------------------------------------------------------------------------------
# 1. request bodies


@pytest.mark.parametrize("path", [f"{API}/runs/log-batch", "/ajax-api/2.0/mlflow/runs/log-batch",
                                  f"{API}/permissions/users/x@example.test/experiments/0",
                                  "/v1/traces"])
def test_declared_oversized_body_is_refused_before_it_is_sent(s3_live: Live, path: str) -> None:
    token = s3_live.realm.token("bob")
    with connect(s3_live) as sock:
        sock.sendall(head(s3_live, "POST", path, {
            "Authorization": f"Bearer {token}", "Content-Type": "application/json",
            "Content-Length": str(50_000_000)}))
        status, body = read_response(sock, timeout=10)  # without a byte of the body
    assert status == 413, body[:300]
    assert json.loads(body)["error_code"] == "REQUEST_LIMIT_EXCEEDED"


def test_chunked_oversized_body_is_refused_while_streaming(s3_live: Live) -> None:
    token = s3_live.realm.token("bob")
    chunk = b"x" * 2**20
    sent = 0
    with connect(s3_live) as sock:
        sock.sendall(head(s3_live, "POST", f"{API}/runs/log-batch", {
            "Authorization": f"Bearer {token}", "Content-Type": "application/json",
            "Transfer-Encoding": "chunked"}))
        try:
            while sent < 4 * LIMIT:  # bounded: a server that reads on forever fails the test
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                sent += len(chunk)
        except OSError:
            pass  # the server answered and closed
        status, body = read_response(sock, timeout=10)
    assert status == 413, body[:300]
    assert sent < 2 * LIMIT


def test_bodies_within_the_bound_and_large_artifact_uploads_pass(s3_live: Live) -> None:
    exp = s3_live.call("bob", "POST", f"{API}/experiments/create",
                       json={"name": f"bodies-{uuid.uuid4().hex[:6]}"}).json()["experiment_id"]
    run = s3_live.call("bob", "POST", f"{API}/runs/create", json={"experiment_id": exp}).json()
    run_id = run["run"]["info"]["run_id"]
    params = [{"key": f"p{i}", "value": "v" * 5000} for i in range(100)]  # ~0.5 MB
    logged = s3_live.call("bob", "POST", f"{API}/runs/log-batch",
                          json={"run_id": run_id, "params": params})
    assert logged.status_code == 200, logged.text[:300]
    blob = bytes(range(256)) * (LIMIT // 256 + 4096)  # over the JSON bound
    path = f"{ARTIFACTS}/{exp}/{run_id}/artifacts/big.bin"
    assert s3_live.call("bob", "PUT", path, content=blob).status_code == 200
    got = s3_live.call("bob", "GET", path)
    assert got.status_code == 200 and got.content == blob


def test_artifacts_pass_through_the_sso_server_without_a_copy(s3_live: Live) -> None:
    """What plain MLflow clients send and fetch through the server (files under MLflow's
    500 MiB multipart threshold): streamed between the connection and S3, never a whole copy
    on the server's disk (server/patches/flask_pool.py, stream_downloads.py)."""
    size, piece = 96 * 2**20, 2**20
    exp = s3_live.call("bob", "POST", f"{API}/experiments/create",
                       json={"name": f"stream-{uuid.uuid4().hex[:6]}"}).json()["experiment_id"]
    run_id = s3_live.call("bob", "POST", f"{API}/runs/create",
                          json={"experiment_id": exp}).json()["run"]["info"]["run_id"]
    path = f"{ARTIFACTS}/{exp}/{run_id}/artifacts/model.bin"
    seed = os.urandom(piece)

    def body() -> Iterator[bytes]:
        for index in range(size // piece):
            yield index.to_bytes(4, "big") + seed[4:]

    expected = hashlib.sha256(b"".join(body())).hexdigest()
    pid = json.loads(s3_live.server.state.pid_file.read_text())["pid"]
    state = s3_live.server.state
    # Each worker's one-time first use (boto3, the S3 client, ORM) is paid before the baseline.
    prime_workers(s3_live.url, pid,
                  headers={"Authorization": f"Bearer {s3_live.realm.new_token('alice')}"})
    with ServerWatch(pid, [state.root], ignore_files={state.log_file}) as watch:
        sent = s3_live.call("bob", "PUT", path, content=body(),
                            headers_extra={"Content-Length": str(size)})
        assert sent.status_code == 200, sent.text[:300]
        digest = hashlib.sha256()
        headers = {"Authorization": f"Bearer {s3_live.realm.token('bob')}"}
        with httpx.stream("GET", f"{s3_live.url}{path}", headers=headers, timeout=60) as got:
            assert got.status_code == 200
            assert got.headers["content-length"] == str(size)
            for chunk in got.iter_bytes():
                digest.update(chunk)
    report = watch.report
    explain = (f"USS +{report.uss_growth / 2**20:.1f} MiB, largest open file "
               f"{report.largest_open_file.size / 2**20:.1f} MiB "
               f"{report.largest_open_file.path!r}, largest in the state dir "
               f"{report.largest_dir_file.size / 2**20:.1f} MiB {report.largest_dir_file.path!r}")
    assert digest.hexdigest() == expected
    assert report.largest_open_file.size < 16 * 2**20, explain
    assert report.largest_dir_file.size < 16 * 2**20, explain
    # Never the file in memory either (before: +192 MiB). The 64 MiB goal of issue 15 §3 is
    # bench/artifact_io.py's to measure: these workers' growth varies by tens of MiB per run.
    assert report.uss_growth < size, explain


# --------------------------------------------------------------------------------------------
# 2. slow connections


def test_half_sent_request_heads_are_closed_within_the_bound(s3_live: Live) -> None:
    socks = [connect(s3_live) for _ in range(50)]
    try:
        for i, sock in enumerate(socks):
            if i % 2:  # half send part of a head, half nothing at all
                sock.sendall(f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{s3_live.port}\r\n"
                             .encode())
        with ThreadPoolExecutor(max_workers=50) as pool:
            waits = list(pool.map(lambda s: seconds_until_closed(s, HEADER_TIMEOUT + 8), socks))
    finally:
        for sock in socks:
            sock.close()
    assert all(w is not None for w in waits), waits
    assert max(w for w in waits if w is not None) <= HEADER_TIMEOUT + 8
    # A complete request still gets its answer, and a kept-alive connection its second one.
    with connect(s3_live) as sock:
        for _ in range(2):
            sock.sendall(head(s3_live, "GET", "/health", {}))
            assert read_response(sock, timeout=10)[0] == 200
            # Idle between requests for half the header timeout (deliberate: the behaviour
            # under test is that a kept-alive connection's pause is not cut).
            time.sleep(HEADER_TIMEOUT / 2)


def test_body_that_stops_arriving_gets_408(s3_live: Live) -> None:
    token = s3_live.realm.token("bob")
    with connect(s3_live) as sock:
        sock.sendall(head(s3_live, "POST", f"{API}/experiments/create", {
            "Authorization": f"Bearer {token}", "Content-Type": "application/json",
            "Content-Length": "100"}) + b'{"name": ')
        start = time.monotonic()
        status, body = read_response(sock, timeout=BODY_IDLE_TIMEOUT + 10)
        assert status == 408, body[:300]
        assert time.monotonic() - start >= BODY_IDLE_TIMEOUT - 0.5
        assert seconds_until_closed(sock, 5) is not None


def test_slow_but_steady_artifact_upload_is_not_cut(s3_live: Live) -> None:
    exp = s3_live.call("bob", "POST", f"{API}/experiments/create",
                       json={"name": f"slow-{uuid.uuid4().hex[:6]}"}).json()["experiment_id"]
    run_id = s3_live.call("bob", "POST", f"{API}/runs/create", json={"experiment_id": exp}
                          ).json()["run"]["info"]["run_id"]
    path = f"{ARTIFACTS}/{exp}/{run_id}/artifacts/slow.bin"
    piece, pieces = b"s" * 1024, 16  # one piece every 0.5 s: 8 s, well over both timeouts
    token = s3_live.realm.token("bob")
    with connect(s3_live) as sock:
        sock.sendall(head(s3_live, "PUT", path, {
            "Authorization": f"Bearer {token}", "Content-Length": str(len(piece) * pieces)}))
        for _ in range(pieces):
            time.sleep(BODY_IDLE_TIMEOUT / 4)  # the slow client itself: deliberate pacing
            sock.sendall(piece)
        status, body = read_response(sock, timeout=30)
    assert status == 200, body[:300]
    assert s3_live.call("bob", "GET", path).content == piece * pieces


# --------------------------------------------------------------------------------------------
# 3. strict Host parsing


def test_malformed_host_headers_are_refused(s3_live: Live) -> None:
    token = s3_live.realm.token("bob")
    port = s3_live.port
    path = f"{API}/experiments/search?max_results=1"
    for bad in (f"127.0.0.1:{port}@evil.example", "127.0.0.1:evil", f"127.0.0.1:{port}:1",
                "127.0.0.1:99999", "127.0.0.1:0", "evil.example/x", "[::1", "a b"):
        r = httpx.get(f"{s3_live.url}{path}", headers={"Host": bad,
                                                      "Authorization": f"Bearer {token}"})
        assert r.status_code == 400, (bad, r.status_code, r.text[:200])
    # Well formed but not ours (another port of the loopback included): MLflow's 403.
    for other in ("evil.example", "127.0.0.1:1", "localhost:1"):
        r = httpx.get(f"{s3_live.url}{path}", headers={"Host": other,
                                                      "Authorization": f"Bearer {token}"})
        assert r.status_code == 403, (other, r.status_code)
    for good in (f"127.0.0.1:{port}", f"localhost:{port}", "127.0.0.1"):
        r = httpx.get(f"{s3_live.url}{path}", headers={"Host": good,
                                                      "Authorization": f"Bearer {token}"})
        assert r.status_code == 200, (good, r.status_code)


# --------------------------------------------------------------------------------------------
# 4. artifact paths


BAD_PATHS = ["..%5c..%5cetc%5cpasswd", "x/..%5c..%5csecret", "s3://{bucket}/artifacts/x",
             "s3:%2F%2F{bucket}%2Fartifacts", "s3:/{bucket}/x", "a%255c..%255cb", "C:%5cwin"]


def _no_internals(live: Live, response: httpx.Response) -> None:
    text = response.text
    assert "s3://" not in text and "HeadObject" not in text, text[:300]
    if live.bucket:
        assert live.bucket not in text, text[:300]
    assert str(live.server.state.root) not in text, text[:300]


@pytest.mark.parametrize("which", ["s3", "local"])
def test_bad_artifact_paths_are_refused_without_internals(
        which: str, request: pytest.FixtureRequest) -> None:
    live: Live = request.getfixturevalue(f"{which}_live")
    bucket = live.bucket or "mlflow"
    for raw in BAD_PATHS:
        path = raw.format(bucket=bucket)
        calls: list[tuple[str, str, dict[str, Any]]] = [
            ("GET", f"{ARTIFACTS}/{path}", {}), ("PUT", f"{ARTIFACTS}/{path}", {"content": b"x"}),
            ("DELETE", f"{ARTIFACTS}/{path}", {}),
            ("POST", f"/api/2.0/mlflow-artifacts/mpu/create/{path}", {"json": {"path": path}}),
            ("GET", f"/api/2.0/mlflow-artifacts/presigned/{path}", {}),
            ("GET", ARTIFACTS, {"params": {"path": path.replace("%5c", "\\")}}),
            ("GET", f"{API}/artifacts/list", {"params": {"path": path, "run_id": "0" * 32}}),
            ("GET", "/get-artifact", {"params": {"path": path, "run_uuid": "0" * 32}}),
        ]
        for method, url, kwargs in calls:
            r = live.call("alice", method, url, **kwargs)
            assert r.status_code == 400, (method, url, r.status_code, r.text[:300])
            assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
            _no_internals(live, r)


@pytest.mark.parametrize("which", ["s3", "local"])
def test_artifact_errors_do_not_show_the_store(which: str, request: pytest.FixtureRequest
                                              ) -> None:
    live: Live = request.getfixturevalue(f"{which}_live")
    exp = live.call("bob", "POST", f"{API}/experiments/create",
                    json={"name": f"missing-{uuid.uuid4().hex[:6]}"}).json()["experiment_id"]
    run_id = live.call("bob", "POST", f"{API}/runs/create", json={"experiment_id": exp}
                       ).json()["run"]["info"]["run_id"]
    missing = live.call("bob", "GET", f"{ARTIFACTS}/{exp}/{run_id}/artifacts/missing.txt")
    assert missing.status_code == 404, missing.text[:300]
    _no_internals(live, missing)
    via_run = live.call("bob", "GET", "/get-artifact",
                        params={"run_uuid": run_id, "path": "missing.txt"})
    assert via_run.status_code == 404, via_run.text[:300]
    _no_internals(live, via_run)
    fine = live.call("bob", "PUT", f"{ARTIFACTS}/{exp}/{run_id}/artifacts/dir/ok.txt",
                     content=b"ok")
    assert fine.status_code == 200
    assert live.call("bob", "GET", f"{API}/artifacts/list", params={
        "run_id": run_id, "path": "dir"}).json()["files"][0]["path"] == "dir/ok.txt"


# --------------------------------------------------------------------------------------------
# 6. account listings


LISTINGS = [f"{API}/users", "/ajax-api/2.0/mlflow/users", f"{API}/users?service=true",
            f"{API}/permissions/groups", "/ajax-api/2.0/mlflow/permissions/groups"]


def test_only_admins_list_accounts_and_groups(s3_live: Live) -> None:
    for path in LISTINGS:
        assert s3_live.call("bob", "GET", path).status_code == 403, path
        assert s3_live.call(None, "GET", path).status_code == 401, path
    users = s3_live.call("alice", "GET", f"{API}/users")
    assert users.status_code == 200 and "bob@example.test" in users.json()
    for path in LISTINGS[1:]:
        assert s3_live.call("alice", "GET", path).status_code == 200, path
    # What a user needs for themselves still works.
    me = s3_live.call("bob", "GET", f"{API}/users/current")
    assert me.status_code == 200 and "bob@example.test" in me.text


def test_a_user_still_grants_their_own_experiment_by_name(s3_live: Live) -> None:
    assert s3_live.call("dave", "GET", f"{API}/users/current").status_code == 200  # provisioned
    exp = s3_live.call("bob", "POST", f"{API}/experiments/create",
                       json={"name": f"shared-{uuid.uuid4().hex[:6]}"}).json()["experiment_id"]
    create_run = ("POST", f"{API}/runs/create")
    assert s3_live.call("dave", *create_run, json={"experiment_id": exp}).status_code == 403
    grant = s3_live.call("bob", "POST",
                         f"{API}/permissions/users/dave@example.test/experiments/{exp}",
                         json={"permission": "EDIT"})
    assert grant.status_code in (200, 201), grant.text[:300]
    # mlflow-oidc-auth caches a user's permission per worker for PERMISSION_CACHE_TTL_SECONDS
    # (30): the READ seen above may stand that long.
    assert wait_until(lambda: s3_live.call("dave", *create_run, json={"experiment_id": exp}
                                           ).status_code == 200, timeout=45, interval=2)
    assert s3_live.call("bob", "GET", f"{API}/permissions/experiments/{exp}/users"
                        ).status_code == 200  # who has access to what bob manages


# --------------------------------------------------------------------------------------------
# 5. auth-failure logging (last: it waits for the summary line)


def test_forged_token_flood_does_not_grow_the_log(s3_live: Live) -> None:
    good = s3_live.realm.token("bob")
    header, payload, signature = good.split(".")
    url = f"{s3_live.url}{API}/experiments/search?max_results=1"
    # Deliberately wait out one interval: a window opened by earlier tests' failures ends by
    # then and its summary is written, so the one asserted below is the flood's. (When those
    # failures happened is not known here, so no shorter wait is safe.)
    time.sleep(AUTH_LOG_INTERVAL)
    before = s3_live.log.stat().st_size
    local = threading.local()

    def forge(i: int) -> int:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=60.0)
        forged = f"{header}.{payload}.{signature[:-6]}{i:06d}"
        return int(local.client.get(url, headers={"Authorization": f"Bearer {forged}"}
                                    ).status_code)

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(forge, range(2000)))
    assert set(statuses) == {401}

    def since_before() -> str:
        return s3_live.log.read_bytes()[before:].decode(errors="replace")

    # The summary comes at the end of the interval, written by a timer in each worker.
    assert wait_until(lambda: "further authentication failures" in since_before(),
                      timeout=AUTH_LOG_INTERVAL + 10, interval=0.5), since_before()[-2000:]
    text = since_before()
    grown = s3_live.log.stat().st_size - before  # summary lines included
    assert grown < 20_000, (grown, text[-2000:])
    assert s3_live.call("bob", "GET", f"{API}/experiments/search?max_results=1"
                        ).status_code == 200
