"""A real ingress controller on the real node: Traefik v3 with its Kubernetes Ingress and Gateway
API providers, for tests that route HTTP(S) by host name to pods.

Traefik (built by scripts/build-node.sh from tools/kube-node/traefik, with the Gateway API CRDs
next to it) runs as a process in the node's network namespace, started by `node._spawn` (so
`Traefik.stop()` or else `node.stop()` stops it by pid), not as a pod:

  entrypoints   web 10.99.0.1:80, websecure 10.99.0.1:443, traefik (ping) 127.0.0.1:9000
  providers     kubernetesIngress (IngressClass `traefik`, controller traefik.io/ingress-controller)
                kubernetesGateway (GatewayClass `traefik`, Gateway `ingress/traefik`, listener
                `http` on port 80 = the web entrypoint), both through the node's inner
                kubeconfig (admin identity, https://127.0.0.1:6443) read from KUBECONFIG
  Service       `ingress/traefik`, ClusterIP, no selector: an EndpointSlice points at 10.99.0.1
                (ports 80/443), so pods reach the controller by Service IP like a real one

Since there is no controller pod, a NetworkPolicy admitting the `ingress` namespace has nothing
to select on; the node's bridge CNI does not enforce NetworkPolicy anyway.

The TLS material for `*.example.test` comes from `example_tls()`: its own CA (clients verify
against `ca_pem`) and a serving pair, for a kubernetes.io/tls Secret an Ingress names in `tls`.
"""

from __future__ import annotations

import base64
import datetime as dt
import ssl
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .node import NODE_IP, KubeNode, Proc, _wait
from .procs import log_tail

NAMESPACE = "ingress"  # the namespace the platform's NetworkPolicy admits for ingress traffic
INGRESS_CLASS = "traefik"
INGRESS_CONTROLLER = "traefik.io/ingress-controller"
GATEWAY_CLASS = "traefik"
GATEWAY_CONTROLLER = "traefik.io/gateway-controller"
GATEWAY = "traefik"
GATEWAY_LISTENER = "http"
HTTP_PORT = 80
HTTPS_PORT = 443
PING_PORT = 9000
DOMAIN = "example.test"
START_TIMEOUT = 60.0
CRD_TIMEOUT = 60.0
CERT_VALIDITY = dt.timedelta(days=2)


@dataclass(frozen=True)
class TlsPair:
    """A CA and a serving pair for `*.example.test` (and example.test), all PEM."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes = field(repr=False)

    def client_context(self) -> ssl.SSLContext:
        """Verifies servers against this CA only (hostname checked against the SNI name)."""
        return ssl.create_default_context(cadata=self.ca_pem.decode())


def example_tls(domain: str = DOMAIN, validity: dt.timedelta = CERT_VALIDITY) -> TlsPair:
    """A throw-away CA and a `*.<domain>` serving cert it signs (EC P-256, 2 days unless
    validity says otherwise: doctor calls a certificate with 14 days or less a problem)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{domain} test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_encipherment=False,
                          content_commitment=False, data_encipherment=False, key_agreement=False,
                          key_cert_sign=True, crl_sign=True, encipher_only=False,
                          decipher_only=False),
            critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"*.{domain}")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName(f"*.{domain}"), x509.DNSName(domain)]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return TlsPair(
        ca_pem=ca.public_bytes(serialization.Encoding.PEM),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()),
    )


@dataclass
class Traefik:
    """The running controller: where it listens, its pid and log, and how long it took."""

    node: KubeNode
    proc: Proc
    version: str
    http_url: str  # http://10.99.0.1 (inside the node's netns)
    https_url: str
    service_ip: str  # ClusterIP of ingress/traefik
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.popen.pid

    @property
    def log(self) -> Path:
        return self.proc.log

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.proc.log, lines)

    def stop(self) -> None:
        """Stop traefik by pid (idempotent); `node.stop()` would too, after the API server."""
        self.node.stop_process(self.proc.name)

    def get(self, host: str, path: str = "/", *, https: bool = False,
            verify: ssl.SSLContext | bool = True, address: str = NODE_IP,
            timeout: float = 5.0) -> httpx.Response:
        """GET path from inside the node's network at the controller's address (or `address`,
        e.g. its Service IP), as a client that resolved `host` to it: Host header `host`, and
        for https the SNI name `host` (the certificate is verified against `verify`, its
        hostname against `host`)."""
        url = f"{'https' if https else 'http'}://{address}{path}"

        def get() -> httpx.Response:
            with httpx.Client(trust_env=False, timeout=timeout, verify=verify) as client:
                # httpcore uses sni_hostname as the TLS server_hostname: SNI + hostname check.
                extensions = {"sni_hostname": host} if https else {}
                return client.get(url, headers={"Host": host}, extensions=extensions)
        return self.node.in_netns(get)


def gateway_api_crds(node: KubeNode) -> list[dict[str, Any]]:
    """The standard-channel Gateway API CRDs build-node.sh copied from sigs.k8s.io/gateway-api's
    module zip (only the CustomResourceDefinitions: the bundle's ValidatingAdmissionPolicy
    only guards against installing older CRD versions over these)."""
    path = node.bin_dir / "gateway-api-crds.yaml"
    if not path.is_file():
        raise RuntimeError(f"{path} is missing: scripts/build-node.sh writes it with traefik")
    return [doc for doc in yaml.safe_load_all(path.read_text())
            if doc and doc.get("kind") == "CustomResourceDefinition"]


def create(node: KubeNode, path: str, obj: dict[str, Any]) -> dict[str, Any]:
    """POST obj to the collection at path as admin; an object that already exists (a second
    start on the same node) is read back instead."""
    with node.api.admin_http() as http:
        response = http.post(path, json=obj)
        if response.status_code == 409:
            response = http.get(f"{path}/{obj['metadata']['name']}")
        if response.status_code not in (200, 201):
            raise RuntimeError(f"creating {obj['kind']} {obj['metadata']['name']} at {path}: "
                               f"{response.status_code} {response.text[:500]}")
        result: dict[str, Any] = response.json()
        return result


def install_gateway_api(node: KubeNode, timeout: float = CRD_TIMEOUT) -> list[str]:
    """Create the Gateway API CRDs and wait until each is Established; returns their names."""
    names = []
    for crd in gateway_api_crds(node):
        create(node, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        names.append(crd["metadata"]["name"])
    pending = set(names)
    deadline = time.monotonic() + timeout
    with node.api.admin_http() as http:
        while pending and time.monotonic() < deadline:
            for name in sorted(pending):
                response = http.get(
                    f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
                conditions = response.json().get("status", {}).get("conditions", []) \
                    if response.status_code == 200 else []
                if any(c["type"] == "Established" and c["status"] == "True"
                       for c in conditions):
                    pending.discard(name)
            if pending:
                time.sleep(0.2)
    if pending:
        raise RuntimeError(f"Gateway API CRDs not Established after {timeout:.0f} s: "
                           f"{sorted(pending)}")
    return names


def tls_secret(node: KubeNode, namespace: str, name: str, pair: TlsPair) -> dict[str, Any]:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return create(node, f"/api/v1/namespaces/{namespace}/secrets", {
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": name},
        "data": {"tls.crt": b64(pair.cert_pem), "tls.key": b64(pair.key_pem)},
    })


def namespace(node: KubeNode, name: str) -> None:
    create(node, "/api/v1/namespaces",
           {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


def _controller_objects(node: KubeNode) -> str:
    """IngressClass, GatewayClass, the Gateway and the controller's Service; returns the
    Service's ClusterIP."""
    namespace(node, NAMESPACE)
    create(node, "/apis/networking.k8s.io/v1/ingressclasses", {
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": INGRESS_CLASS},
        "spec": {"controller": INGRESS_CONTROLLER}})
    create(node, "/apis/gateway.networking.k8s.io/v1/gatewayclasses", {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
        "metadata": {"name": GATEWAY_CLASS},
        "spec": {"controllerName": GATEWAY_CONTROLLER}})
    create(node, f"/apis/gateway.networking.k8s.io/v1/namespaces/{NAMESPACE}/gateways", {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": GATEWAY},
        "spec": {"gatewayClassName": GATEWAY_CLASS, "listeners": [{
            # Traefik maps a listener to the entrypoint with the same port (web).
            "name": GATEWAY_LISTENER, "protocol": "HTTP", "port": HTTP_PORT,
            "allowedRoutes": {"namespaces": {"from": "All"}}}]}})
    ports = [{"name": "web", "port": HTTP_PORT, "protocol": "TCP"},
             {"name": "websecure", "port": HTTPS_PORT, "protocol": "TCP"}]
    service = create(node, f"/api/v1/namespaces/{NAMESPACE}/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "traefik"},
        "spec": {"type": "ClusterIP",
                 "ports": [{**p, "targetPort": p["port"]} for p in ports]}})
    # No selector (no pod to select): the endpoint is the node's address, where traefik listens.
    create(node, f"/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices", {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "traefik-node",
                     "labels": {"kubernetes.io/service-name": "traefik",
                                "endpointslice.kubernetes.io/managed-by": "mlflow-stack-harness"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [NODE_IP], "conditions": {"ready": True}}],
        "ports": ports})
    return str(service["spec"]["clusterIP"])


def start_traefik(node: KubeNode, *, log_level: str = "INFO",
                  timeout: float = START_TIMEOUT) -> Traefik:
    """Install the Gateway API CRDs and the controller's classes/Gateway/Service, start traefik
    in the node's netns and wait for its ping. Fails with traefik's log tail if it does not
    come up; `stop()` (or `node.stop()`) stops it."""
    binary = node.bin_dir / "traefik"
    if not binary.is_file():
        raise RuntimeError(f"{binary} is missing: scripts/build-node.sh builds it")
    started = time.monotonic()
    timings: dict[str, float] = {}
    install_gateway_api(node)
    timings["gateway api crds"] = round(time.monotonic() - started, 2)
    service_ip = _controller_objects(node)
    timings["controller objects"] = round(time.monotonic() - started, 2)
    kubeconfig = node.base_dir / "inner.kubeconfig"  # https://127.0.0.1:6443, admin identity
    argv = [
        # Traefik's Kubernetes providers read a kubeconfig from KUBECONFIG only (flags take an
        # endpoint + token), and node._spawn passes a fixed environment: env adds it and execs.
        "env", f"KUBECONFIG={kubeconfig}", str(binary),
        "--global.checkNewVersion=false", "--global.sendAnonymousUsage=false",
        f"--log.level={log_level}",
        f"--entryPoints.web.address={NODE_IP}:{HTTP_PORT}",
        f"--entryPoints.websecure.address={NODE_IP}:{HTTPS_PORT}",
        f"--entryPoints.traefik.address=127.0.0.1:{PING_PORT}",
        "--ping=true", "--ping.entryPoint=traefik",
        "--providers.kubernetesIngress=true",
        f"--providers.kubernetesIngress.ingressEndpoint.ip={NODE_IP}",
        "--providers.kubernetesGateway=true",
        f"--providers.kubernetesGateway.statusAddress.ip={NODE_IP}",
    ]
    proc = node._spawn("traefik", argv)
    spawned = time.monotonic()

    def pinged() -> bool:
        return node.http_get(f"http://127.0.0.1:{PING_PORT}/ping", 1.0).status_code == 200

    _wait(node, proc, pinged, "traefik /ping ok", timeout)
    timings["ping ok"] = round(time.monotonic() - spawned, 2)
    version = node.in_netns(lambda: _version(binary))
    return Traefik(node=node, proc=proc, version=version, http_url=f"http://{NODE_IP}",
                   https_url=f"https://{NODE_IP}", service_ip=service_ip, timings=timings)


def _version(binary: Path) -> str:
    result = subprocess.run([str(binary), "version"], capture_output=True, text=True,
                            timeout=30, check=False)
    for line in result.stdout.splitlines():
        if line.strip().lower().startswith("version:"):
            return line.split(":", 1)[1].strip()
    return result.stdout.strip() or "unknown"


# --- a backend for routes -----------------------------------------------------------------------

# Answers every GET with its own name, the path and the Host it saw (so a test can tell which
# route brought the request), on port 8080, as the image's non-root user.
ECHO_SERVER = """
import http.server, os, sys
name = sys.argv[1]
class Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{name} {self.path} host={self.headers.get('Host')}".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("", 8080), Echo).serve_forever()
"""
ECHO_PORT = 8080


def echo_app(node: KubeNode, namespace_name: str, name: str) -> None:
    """A one-replica Deployment of ECHO_SERVER (the server image) and a ClusterIP Service
    `name` on port 80 -> 8080, in namespace_name (created if missing)."""
    labels = {"app": name}
    namespace(node, namespace_name)
    create(node, f"/apis/apps/v1/namespaces/{namespace_name}/deployments", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": {
                     "enableServiceLinks": False, "automountServiceAccountToken": False,
                     "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
                     "containers": [{
                         "name": "echo", "image": node.image("server"),
                         "imagePullPolicy": "IfNotPresent",
                         "command": ["python", "-c", ECHO_SERVER, name],
                         "ports": [{"name": "http", "containerPort": ECHO_PORT}],
                         "readinessProbe": {"tcpSocket": {"port": ECHO_PORT},
                                            "periodSeconds": 1},
                     }]}}}})
    create(node, f"/api/v1/namespaces/{namespace_name}/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"selector": labels,
                 "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})


def wait_until(check: Callable[[], bool], what: str, timeout: float,
               detail: Callable[[], str] = lambda: "") -> float:
    """Poll check (0.2 s) until true; returns the seconds it took, or fails naming `what`."""
    started = time.monotonic()
    last = ""
    while time.monotonic() - started < timeout:
        try:
            if check():
                return time.monotonic() - started
        except (httpx.HTTPError, OSError, KeyError, ValueError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.2)
    raise AssertionError(f"{what} not within {timeout:.0f} s ({last or 'not yet'}); "
                         f"{detail()}")
