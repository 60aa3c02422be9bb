"""A real Kubernetes API server for tests: upstream etcd + kube-apiserver on loopback, no kubelet.

Like controller-runtime's envtest: the API (validation, defaulting, admission, RBAC, server-side
apply, subresources) is the real one, but nothing reconciles. No controller manager, scheduler or
kubelet runs, so:
  - Pods are never created for Deployments/Jobs, and their status stays empty: tests that wait on
    a rollout patch the status subresource themselves (`fake_deployment_rollout`).
  - A deleted Namespace stays Terminating (its "kubernetes" finalizer is the namespace
    controller's job); objects with foreground-deletion or other controller finalizers stay too.
  - ServiceAccounts are not auto-created in new namespaces ("default" included), and no legacy
    token Secrets are filled. Bound tokens work: the TokenRequest API is the apiserver's own
    (`service_account_token`).
Admission: upstream's default plugin set, less StorageObjectInUseProtection, whose
"kubernetes.io/pvc-protection" finalizer only the PVC-protection controller removes (with it on,
a deleted PVC would stay Terminating forever here). ServiceAccount admission stays on: it only
acts on Pods, which nothing here creates.

The binaries are built from their Go modules by scripts/build-kube-harness.sh (cold: 10-20 min on
2 cores; then reused from the cache dir it prints).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import ipaddress
import os
import secrets
import shutil
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .ports import free_port
from .procs import log_tail, spawn, stop_group

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-kube-harness.sh"
BUILD_TIMEOUT = 45 * 60.0  # a cold build on 2 cores is 10-20 min; leave headroom
ETCD_START_TIMEOUT = 30.0
APISERVER_START_TIMEOUT = 120.0
STOP_TIMEOUT = 20.0
START_ATTEMPTS = 3  # free ports are picked then bound by the child: retry if one was taken
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"  # an allocation range only: no traffic goes there
ADMIN_USER = "harness-admin"
ADMIN_GROUPS = ("system:masters",)
DISABLED_ADMISSION_PLUGINS = ("StorageObjectInUseProtection",)
CERT_VALIDITY = dt.timedelta(days=2)


def build_binaries() -> Path:
    """Run the build script (a no-op when up to date) and return the bin dir it prints."""
    try:
        result = subprocess.run(
            ["bash", str(BUILD_SCRIPT)], capture_output=True, stdin=subprocess.DEVNULL,
            text=True, timeout=BUILD_TIMEOUT, check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(
            f"{BUILD_SCRIPT.name} did not finish in {BUILD_TIMEOUT:.0f} s; "
            f"output tail:\n{_text_tail(exc.stderr)}"
        ) from exc
    if result.stderr:
        sys.stderr.write(result.stderr)  # progress, shown by pytest on failure or with -s
    if result.returncode != 0:
        raise RuntimeError(
            f"{BUILD_SCRIPT.name} failed (exit {result.returncode}):\n{_text_tail(result.stderr)}"
        )
    lines = result.stdout.strip().splitlines()
    bin_dir = Path(lines[-1]) if lines else Path()
    for name in ("etcd", "kube-apiserver"):
        if not os.access(bin_dir / name, os.X_OK):
            raise RuntimeError(f"{BUILD_SCRIPT.name} succeeded but {bin_dir / name} is missing")
    return bin_dir


@dataclass
class Pki:
    """The harness's own CA (signs the serving cert and every client cert) and SA signing key."""

    dir: Path
    ca_cert: x509.Certificate
    ca_key: ec.EllipticCurvePrivateKey = field(repr=False)

    @property
    def ca_path(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_pem(self) -> bytes:
        return self.ca_cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, common_name: str, *, organizations: tuple[str, ...] = (),
              server: bool = False) -> tuple[bytes, bytes]:
        """A (cert PEM, key PEM) pair signed by the CA: a serving cert for 127.0.0.1/localhost
        when `server`, else a client cert (CN = username, O = groups, as Kubernetes reads them)."""
        key = ec.generate_private_key(ec.SECP256R1())
        name_attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
        name_attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(name_attrs))
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + CERT_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(digital_signature=True, key_encipherment=False,
                              content_commitment=False, data_encipherment=False,
                              key_agreement=False, key_cert_sign=False, crl_sign=False,
                              encipher_only=False, decipher_only=False),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.DNSName("localhost"),
                    x509.DNSName("kubernetes.default.svc"),
                ]),
                critical=False,
            )
        cert = builder.sign(self.ca_key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def make_pki(directory: Path) -> Pki:
    """Write ca.crt, the apiserver serving pair and the service-account key pair into directory."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mlflow-stack-harness-ca")])
    now = dt.datetime.now(dt.UTC)
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + CERT_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True,
                          crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(dir=directory, ca_cert=ca_cert, ca_key=ca_key)
    _write_private(directory / "ca.crt", pki.ca_pem)
    serving_cert, serving_key = pki.issue("kube-apiserver", server=True)
    _write_private(directory / "apiserver.crt", serving_cert)
    _write_private(directory / "apiserver.key", serving_key)
    # Service-account tokens are signed with this key (RS256, as most clusters do).
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_private(directory / "sa.key", _key_pem(sa_key))
    _write_private(directory / "sa.pub", sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return pki


@dataclass
class KubeAPIServer:
    """A running etcd + kube-apiserver pair. `admin_kubeconfig` is a system:masters identity."""

    url: str
    base_dir: Path
    admin_kubeconfig: Path
    pki: Pki = field(repr=False)
    etcd_url: str
    apiserver_log: Path
    etcd_log: Path
    startup_seconds: float
    _apiserver: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _etcd: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def ca_path(self) -> Path:
        return self.pki.ca_path

    @property
    def pids(self) -> dict[str, int]:
        """Pids of the processes still held (for memory measurement or debugging)."""
        procs = {"kube-apiserver": self._apiserver, "etcd": self._etcd}
        return {name: proc.pid for name, proc in procs.items() if proc is not None}

    def user_kubeconfig(self, username: str, groups: tuple[str, ...] = (),
                        path: Path | None = None) -> Path:
        """A kubeconfig authenticating as `username` in `groups` (a client cert signed by the
        harness CA). It has no permissions until a (Cluster)RoleBinding grants some."""
        cert, key = self.pki.issue(username, organizations=groups)
        target = path or self.base_dir / "kubeconfigs" / f"user-{_slug(username)}.yaml"
        return self._write_kubeconfig(target, username, {
            "client-certificate-data": _b64(cert), "client-key-data": _b64(key)})

    def token_kubeconfig(self, token: str, path: Path | None = None,
                         name: str = "token-user") -> Path:
        """A kubeconfig that sends `token` as a bearer token (e.g. from `service_account_token`)."""
        target = path or self.base_dir / "kubeconfigs" / f"token-{_slug(name)}.yaml"
        return self._write_kubeconfig(target, name, {"token": token})

    def service_account_token(self, namespace: str, name: str,
                              expiration_seconds: int = 3600) -> str:
        """A bound token for ServiceAccount namespace/name from the TokenRequest API, creating
        the ServiceAccount (not its namespace) if missing. Its permissions are whatever RBAC
        binds to system:serviceaccount:<namespace>:<name>."""
        with self.admin_http() as http:
            base = f"/api/v1/namespaces/{namespace}/serviceaccounts"
            created = http.post(base, json={
                "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": name, "namespace": namespace}})
            if created.status_code not in (201, 409):
                raise RuntimeError(
                    f"creating ServiceAccount {namespace}/{name}: {created.status_code} "
                    f"{created.text[:500]}")
            response = http.post(f"{base}/{name}/token", json={
                "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"expirationSeconds": expiration_seconds}})
            if response.status_code != 201:
                raise RuntimeError(
                    f"TokenRequest for {namespace}/{name}: {response.status_code} "
                    f"{response.text[:500]}")
            return str(response.json()["status"]["token"])

    def admin_http(self) -> httpx.Client:
        """An httpx client for raw API calls as the admin identity (base_url = the server)."""
        context = ssl.create_default_context(cafile=str(self.ca_path))
        pki = self.base_dir / "pki"
        context.load_cert_chain(pki / "admin.crt", pki / "admin.key")
        return httpx.Client(base_url=self.url, verify=context, timeout=10.0, trust_env=False)

    def stop(self) -> None:
        """Stop kube-apiserver, then etcd (each SIGTERM, then SIGKILL), by pid. Idempotent."""
        for attr in ("_apiserver", "_etcd"):
            proc = getattr(self, attr)
            setattr(self, attr, None)
            if proc is not None:
                _stop(proc)

    def _write_kubeconfig(self, path: Path, user: str, credentials: dict[str, str]) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "harness", "cluster": {
                "server": self.url, "certificate-authority-data": _b64(self.pki.ca_pem)}}],
            "users": [{"name": user, "user": credentials}],
            "contexts": [{"name": "harness", "context": {
                "cluster": "harness", "user": user, "namespace": "default"}}],
            "current-context": "harness",
            "preferences": {},
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_private(path, yaml.safe_dump(config, sort_keys=False).encode())
        return path


def start_kube_apiserver(base_dir: Path, bin_dir: Path | None = None) -> KubeAPIServer:
    """Start etcd and kube-apiserver under base_dir (data, certs, logs, kubeconfigs) on free
    127.0.0.1 ports and wait until /readyz answers ok. Builds the binaries first when needed."""
    bins = bin_dir or build_binaries()
    base_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    pki = make_pki(base_dir / "pki")
    admin_cert, admin_key = pki.issue(ADMIN_USER, organizations=ADMIN_GROUPS)
    _write_private(pki.dir / "admin.crt", admin_cert)
    _write_private(pki.dir / "admin.key", admin_key)

    etcd, etcd_url, etcd_log = _start_etcd(bins / "etcd", base_dir)
    try:
        apiserver, url, apiserver_log = _start_apiserver(
            bins / "kube-apiserver", base_dir, etcd_url, etcd_log)
    except BaseException:
        _stop(etcd)
        raise
    server = KubeAPIServer(
        url=url, base_dir=base_dir, admin_kubeconfig=base_dir / "admin.kubeconfig", pki=pki,
        etcd_url=etcd_url, apiserver_log=apiserver_log, etcd_log=etcd_log,
        startup_seconds=time.monotonic() - started, _apiserver=apiserver, _etcd=etcd,
    )
    server._write_kubeconfig(server.admin_kubeconfig, ADMIN_USER, {
        "client-certificate-data": _b64(admin_cert), "client-key-data": _b64(admin_key)})
    return server


def fake_deployment_rollout(server: KubeAPIServer, namespace: str, name: str,
                            ready: bool = True) -> dict[str, Any]:
    """Write the status a deployment controller + kubelets would (no Pods run here): all
    replicas updated/ready/available for the current generation when `ready`, else none
    available. Returns the Deployment as the server then holds it."""
    with server.admin_http() as http:
        path = f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}"
        current = http.get(path)
        current.raise_for_status()
        deployment = current.json()
        replicas = int(deployment["spec"].get("replicas", 1))
        ok = replicas if ready else 0
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        status = {
            "observedGeneration": deployment["metadata"]["generation"],
            "replicas": replicas, "updatedReplicas": replicas,
            "readyReplicas": ok, "availableReplicas": ok, "unavailableReplicas": replicas - ok,
            "conditions": [
                {"type": "Available", "status": "True" if ready else "False",
                 "reason": "MinimumReplicasAvailable" if ready else "MinimumReplicasUnavailable",
                 "lastUpdateTime": now, "lastTransitionTime": now},
                {"type": "Progressing", "status": "True",
                 "reason": "NewReplicaSetAvailable" if ready else "ReplicaSetUpdated",
                 "lastUpdateTime": now, "lastTransitionTime": now},
            ],
        }
        patched = http.patch(f"{path}/status", json={"status": status},
                             headers={"Content-Type": "application/merge-patch+json"})
        patched.raise_for_status()
        result: dict[str, Any] = patched.json()
        return result


def _start_etcd(binary: Path, base_dir: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    log_path = base_dir / "etcd.log"
    data_dir = base_dir / "etcd-data"
    last_error = ""
    for _ in range(START_ATTEMPTS):
        client_port, peer_port = free_port(), free_port()
        client_url = f"http://127.0.0.1:{client_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        argv = [
            str(binary), "--name", "harness", "--data-dir", str(data_dir),
            "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"harness={peer_url}", "--initial-cluster-state", "new",
            "--initial-cluster-token", f"harness-{secrets.token_hex(4)}",
            # A throwaway store: durability does not matter, start/write speed does.
            "--unsafe-no-fsync", "--log-level", "warn",
        ]
        offset = _log_size(log_path)
        proc = spawn(argv, log_path, env=_child_env(), cwd=base_dir)
        deadline = time.monotonic() + ETCD_START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = httpx.get(f"{client_url}/health", timeout=1.0, trust_env=False)
                if health.status_code == 200 and health.json().get("health") == "true":
                    return proc, client_url, log_path
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.1)
        exited = proc.poll()
        _stop(proc)
        state = (f"exited with {exited}" if exited is not None
                 else f"not healthy after {ETCD_START_TIMEOUT:.0f} s")
        last_error = f"etcd {state}; log {log_path}:\n{log_tail(log_path)}"
        if "address already in use" not in _log_since(log_path, offset):
            break
        shutil.rmtree(data_dir, ignore_errors=True)  # start the next try as a new member
    raise RuntimeError(f"etcd did not start: {last_error}")


def _start_apiserver(binary: Path, base_dir: Path, etcd_url: str,
                     etcd_log: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    """Start kube-apiserver and wait for /readyz (retrying on a new port if its was taken)."""
    log_path = base_dir / "kube-apiserver.log"
    pki = base_dir / "pki"
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.load_cert_chain(pki / "admin.crt", pki / "admin.key")
    last_error = ""
    for _ in range(START_ATTEMPTS):
        port = free_port()
        url = f"https://127.0.0.1:{port}"
        argv = [
            str(binary),
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={port}",
            f"--etcd-servers={etcd_url}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--cert-dir={pki}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--authorization-mode=Node,RBAC",
            f"--disable-admission-plugins={','.join(DISABLED_ADMISSION_PLUGINS)}",
            # The "kubernetes" Service's endpoints would point at 127.0.0.1, which Endpoints
            # validation rejects (noise in the log, retried forever): don't reconcile them.
            "--endpoint-reconciler-type=none",
            "--profiling=false",
            "--v=1",
        ]
        offset = _log_size(log_path)
        proc = spawn(argv, log_path, env=_child_env(), cwd=base_dir)
        try:
            _wait_ready(url, context, proc)
            return proc, url, log_path
        except RuntimeError as exc:
            exited = proc.poll()
            _stop(proc)
            last_error = (f"{exc}\nlog {log_path}:\n{log_tail(log_path)}\n"
                          f"--- etcd log {etcd_log}:\n{log_tail(etcd_log, 10)}")
            if exited is None or "address already in use" not in _log_since(log_path, offset):
                break
    raise RuntimeError(f"kube-apiserver did not start: {last_error}")


def _wait_ready(url: str, context: ssl.SSLContext, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + APISERVER_START_TIMEOUT
    last = "no answer"
    with httpx.Client(base_url=url, verify=context, trust_env=False, timeout=2.0) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"kube-apiserver exited with {proc.returncode} during start-up")
            try:
                response = http.get("/readyz")
                if response.status_code == 200 and response.text.strip() == "ok":
                    return
                last = f"/readyz {response.status_code}: {response.text.strip()[-300:]}"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.2)
        # The verbose form names the failing check.
        with contextlib.suppress(httpx.HTTPError):
            last += "\n" + http.get("/readyz?verbose", timeout=5.0).text[-2000:]
    raise RuntimeError(f"kube-apiserver not ready after {APISERVER_START_TIMEOUT:.0f} s: {last}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    stop_group(proc.pid, timeout=STOP_TIMEOUT)
    if proc.poll() is None:
        proc.wait(timeout=5.0)


def _child_env() -> dict[str, str]:
    # Minimal and fixed: no proxy variables, no KUBECONFIG, no ETCD_* from the caller.
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC",
            "HOME": os.environ.get("HOME", "/nonexistent")}


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:80]


def _log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _log_since(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


def _text_tail(text: str | bytes | None, lines: int = 40) -> str:
    if text is None:
        return "(no output)"
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def write_unreachable_kubeconfig(path: Path) -> Path:
    """A kubeconfig naming an API server nothing listens on (port 9 on loopback)."""
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9",
                                               "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    return path
