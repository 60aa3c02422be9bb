"""Cluster services for the real node (tests/harness/node.py): CoreDNS and SeaweedFS's S3 gateway,
run as processes in the node's network namespace (node._spawn: logged, stopped by pid with the
node) and published to pods as selector-less Services whose EndpointSlice points at the node IP,
the way the reference's cluster offers them (kube-dns in kube-system, seaweedfs-filer:8333 in
seaweedfs with the `seaweedfs-s3-config` Secret). `expose` does the same for any other process
(PostgreSQL, Keycloak).

  CoreDNS     10.99.0.1:53 udp+tcp; Service kube-system/kube-dns 10.96.0.10 (kubelet's
              clusterDNS). Plugins: hosts (a file the caller sets, reloaded every second),
              kubernetes (cluster.local and the reverse zones, through the inner kubeconfig),
              file (an empty root zone: every other name is NXDOMAIN at once, as there is no
              outside network to forward to). `ip netns exec <node>` processes resolve through it
              too (/etc/netns/<node>/resolv.conf, removed when the node stops).
  SeaweedFS   `weed server -s3`: master, volume, filer on 127.0.0.1 inside the namespace, the S3
              gateway on 10.99.0.1:8333 with one admin identity; Service seaweedfs/seaweedfs-filer.
              It gets a private /tmp (its Unix sockets have fixed names there: see _private_tmp).

Binaries: `coredns` and `weed` from scripts/build-node.sh, in node.bin_dir.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
import httpx
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from .node import CLUSTER_DNS, NETNS_ETC, NODE_IP, KubeNode, Proc
from .procs import log_tail

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

T = TypeVar("T")

CLUSTER_DOMAIN = "cluster.local"
DNS_PORT = 53
START_TIMEOUT = 90.0
FIELD_MANAGER = "mlflow-stack-harness"
# Marks our EndpointSlices as not the endpointslice controller's (it only manages its own).
MANAGED_BY = "mlflow-stack-harness"

DNS_NAMESPACE = "kube-system"
DNS_SERVICE = "kube-dns"

S3_NAMESPACE = "seaweedfs"
S3_SERVICE = "seaweedfs-filer"
S3_PORT = 8333
# The reference's credentials Secret (its playbook reads access_key / secret_key; so does
# mlflow_stack.kubernetes.sources.s3_keys_from_cluster, which tries that pair first).
S3_SECRET = "seaweedfs-s3-config"
# weed's other listeners, on 127.0.0.1 in the namespace (gRPC ports are these + 10000). The
# volume server leaves its default 8080, a port other test services like to use.
WEED_MASTER_PORT = 9333
WEED_VOLUME_PORT = 9340
WEED_FILER_PORT = 8888


# --- Services without selectors ------------------------------------------------------------------

@dataclass(frozen=True)
class ServicePort:
    name: str
    port: int
    protocol: str = "TCP"


@dataclass(frozen=True)
class Exposed:
    """A Service whose one endpoint is a process in the node's namespace."""

    namespace: str
    name: str
    cluster_ip: str
    ports: tuple[ServicePort, ...]
    target_ip: str

    @property
    def host(self) -> str:
        """The Service's DNS name, as pods (and `ip netns exec` processes) resolve it."""
        return f"{self.name}.{self.namespace}.svc.{CLUSTER_DOMAIN}"

    def port(self, name: str) -> int:
        return next(p.port for p in self.ports if p.name == name)


def _apply(node: KubeNode, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """Server-side apply (idempotent: a second call with the same body changes nothing)."""
    with node.api.admin_http() as http:
        response = http.patch(
            path, params={"fieldManager": FIELD_MANAGER, "force": "true"},
            content=json.dumps(body), headers={"Content-Type": "application/apply-patch+yaml"})
    if response.status_code not in (200, 201):
        raise RuntimeError(f"applying {body['kind']} {path}: {response.status_code} "
                           f"{response.text[:500]}")
    result: dict[str, Any] = response.json()
    return result


def ensure_namespace(node: KubeNode, namespace: str) -> None:
    _apply(node, f"/api/v1/namespaces/{namespace}",
           {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})


def expose(node: KubeNode, namespace: str, name: str, port_name: str, port: int,
           protocol: str = "TCP", target_ip: str = NODE_IP, *,
           extra_ports: Sequence[ServicePort] = (), cluster_ip: str | None = None) -> Exposed:
    """A selector-less Service namespace/name (created with its namespace when missing) and an
    EndpointSlice sending its ports to target_ip (the same port numbers): a process listening in
    the node's namespace becomes reachable from pods by Service IP and DNS name. kube-proxy
    programs the rules a moment later (the callers here wait for an answer through them)."""
    ports = (ServicePort(port_name, port, protocol), *extra_ports)
    ensure_namespace(node, namespace)
    spec: dict[str, Any] = {
        "type": "ClusterIP",
        "ports": [{"name": p.name, "port": p.port, "targetPort": p.port, "protocol": p.protocol}
                  for p in ports]}
    if cluster_ip is not None:
        spec["clusterIP"] = cluster_ip
    service = _apply(node, f"/api/v1/namespaces/{namespace}/services/{name}", {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace}, "spec": spec})
    _apply(node, f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices/{name}", {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"kubernetes.io/service-name": name,
                                "endpointslice.kubernetes.io/managed-by": MANAGED_BY}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [target_ip], "conditions": {"ready": True}}],
        "ports": [{"name": p.name, "port": p.port, "protocol": p.protocol} for p in ports]})
    return Exposed(namespace=namespace, name=name, cluster_ip=service["spec"]["clusterIP"],
                   ports=ports, target_ip=target_ip)


# --- a minimal DNS client (stdlib only: the harness checks answers and response codes) --------

RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
QTYPES = {"A": 1, "NS": 2, "PTR": 12, "AAAA": 28, "SRV": 33, "ANY": 255}


@dataclass(frozen=True)
class DnsReply:
    rcode: str
    answers: tuple[str, ...]  # A/AAAA addresses, PTR names; other types as "type <n>"
    seconds: float


def dns_query(server: str, name: str, qtype: str = "A", *, tcp: bool = False,
              timeout: float = 2.0, port: int = DNS_PORT) -> DnsReply:
    """One query to server (from the calling thread's network namespace). Raises OSError
    (socket.timeout included) when nothing answers."""
    ident = random.randrange(1 << 16)
    question = b"".join(bytes([len(label)]) + label.encode("ascii")
                        for label in name.rstrip(".").split(".")) + b"\0"
    query = struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + question \
        + struct.pack("!HH", QTYPES[qtype], 1)
    started = time.monotonic()
    if tcp:
        with socket.create_connection((server, port), timeout=timeout) as conn:
            conn.sendall(struct.pack("!H", len(query)) + query)
            length = struct.unpack("!H", _recv_exactly(conn, 2))[0]
            reply = _recv_exactly(conn, length)
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            sock.sendto(query, (server, port))
            while True:
                reply, _ = sock.recvfrom(65535)
                if reply[:2] == query[:2]:
                    break
    seconds = time.monotonic() - started
    return _parse_reply(reply, seconds)


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("DNS server closed the connection mid-reply")
        data += chunk
    return data


def _skip_name(message: bytes, offset: int) -> int:
    while True:
        length = message[offset]
        if length & 0xC0 == 0xC0:  # compression pointer: the name ends here
            return offset + 2
        offset += 1 + length
        if length == 0:
            return offset


def _read_name(message: bytes, offset: int) -> str:
    labels = []
    for _ in range(128):  # bounded: a malformed pointer loop must not hang the test
        length = message[offset]
        if length & 0xC0 == 0xC0:
            offset = ((length & 0x3F) << 8) | message[offset + 1]
            continue
        if length == 0:
            break
        labels.append(message[offset + 1:offset + 1 + length].decode("ascii", "replace"))
        offset += 1 + length
    return ".".join(labels) + "."


def _parse_reply(message: bytes, seconds: float) -> DnsReply:
    _, flags, qdcount, ancount, _, _ = struct.unpack("!HHHHHH", message[:12])
    offset = 12
    for _ in range(qdcount):
        offset = _skip_name(message, offset) + 4
    answers = []
    for _ in range(ancount):
        offset = _skip_name(message, offset)
        rtype, _, _, rdlength = struct.unpack("!HHIH", message[offset:offset + 10])
        offset += 10
        rdata = message[offset:offset + rdlength]
        if rtype == 1:
            answers.append(socket.inet_ntop(socket.AF_INET, rdata))
        elif rtype == 28:
            answers.append(socket.inet_ntop(socket.AF_INET6, rdata))
        elif rtype == 12:
            answers.append(_read_name(message, offset))
        else:
            answers.append(f"type {rtype}")
        offset += rdlength
    return DnsReply(RCODES.get(flags & 0xF, str(flags & 0xF)), tuple(answers), seconds)


def _poll(check: Callable[[], T | None], what: str, proc: Proc, node: KubeNode,
          timeout: float = START_TIMEOUT) -> T:
    """check() until it returns a value; fail loudly with proc's log tail (or of whatever node
    process died) when proc exits or time runs out."""
    deadline = time.monotonic() + timeout
    last = "not yet"
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode} before {what}; "
                               f"log {proc.log}:\n{log_tail(proc.log)}")
        node.check_alive()
        try:
            value = check()
            if value is not None:
                return value
        except (OSError, httpx.HTTPError, BotoCoreError, ClientError, ValueError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.2)
    raise RuntimeError(f"{proc.name}: no {what} after {timeout:.0f} s ({last}); log "
                       f"{proc.log}:\n{log_tail(proc.log)}")


# --- CoreDNS -------------------------------------------------------------------------------------

@dataclass
class CoreDNS:
    """CoreDNS serving the node. `server` is what pods use (the kube-dns Service IP);
    `listen` is the process's own address (what the netns resolv.conf names)."""

    node: KubeNode
    proc: Proc
    corefile: Path
    hosts_file: Path
    resolv_conf: Path
    service: Exposed
    startup_seconds: float
    hosts: dict[str, str] = field(default_factory=dict)
    listen: str = NODE_IP
    server: str = CLUSTER_DNS

    @property
    def pid(self) -> int:
        return self.proc.popen.pid

    @property
    def log(self) -> Path:
        return self.proc.log

    def query(self, name: str, qtype: str = "A", *, tcp: bool = False,
              server: str | None = None, timeout: float = 2.0) -> DnsReply:
        """Ask CoreDNS (its own address, or `server`, e.g. the Service IP) from the netns."""
        return self.node.in_netns(lambda: dns_query(server or self.listen, name, qtype,
                                                    tcp=tcp, timeout=timeout))

    def set_hosts(self, hosts: Mapping[str, str], timeout: float = 20.0) -> None:
        """Replace the public names CoreDNS answers (name -> IPv4, e.g. mlflow.example.test ->
        the ingress) and wait until it serves the new set (the hosts plugin rereads its file
        every second)."""
        _write_hosts(self.hosts_file, hosts)
        gone = set(self.hosts) - set(hosts)
        self.hosts = dict(hosts)

        def served() -> bool | None:
            for name, ip in hosts.items():
                if self.query(name).answers != (ip,):
                    return None
            for name in gone:
                if self.query(name).rcode != "NXDOMAIN":
                    return None
            return True

        _poll(served, "answer with the new hosts entries", self.proc, self.node, timeout)


def _write_hosts(path: Path, hosts: Mapping[str, str]) -> None:
    lines = ["# written by tests/harness/node_services.py (CoreDNS hosts plugin)"]
    lines += [f"{ip} {name}" for name, ip in sorted(hosts.items())]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)  # whole file at once: the plugin never reads half of it


def _corefile(kubeconfig: Path, hosts_file: Path, root_zone: Path) -> str:
    # Plugin order is CoreDNS's (plugin.cfg), not this file's: hosts, then kubernetes, then file.
    # hosts falls through for every name it lacks; kubernetes is authoritative for cluster.local
    # (NXDOMAIN for unknown Services) and passes reverse names outside its ranges on; the empty
    # root zone answers the rest NXDOMAIN with its SOA (negative TTL 30 s).
    return f"""\
.:{DNS_PORT} {{
    bind {NODE_IP}
    errors
    log . {{
        class denial error
    }}
    hosts {hosts_file} {{
        ttl 5
        reload 1s
        fallthrough
    }}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} node
        pods insecure
        ttl 5
        fallthrough in-addr.arpa ip6.arpa
    }}
    file {root_zone} .
}}
"""


ROOT_ZONE = """\
$ORIGIN .
@ 3600 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 30
@ 3600 IN NS ns.dns.cluster.local.
"""


def start_coredns(node: KubeNode, hosts: Mapping[str, str] | None = None) -> CoreDNS:
    """CoreDNS for the node's pods and `ip netns exec` processes; returns once it answers
    through the kube-dns Service (kube-proxy's rules) and the netns resolv.conf is in place."""
    started = time.monotonic()
    binary = node.bin_dir / "coredns"
    if not binary.is_file():
        raise RuntimeError(f"{binary} is missing: scripts/build-node.sh builds it")
    directory = node.base_dir / "coredns"
    directory.mkdir(parents=True, exist_ok=True)
    hosts_file = directory / "hosts"
    _write_hosts(hosts_file, hosts or {})
    root_zone = directory / "root.zone"
    root_zone.write_text(ROOT_ZONE)
    corefile = directory / "Corefile"
    corefile.write_text(_corefile(node.base_dir / "inner.kubeconfig", hosts_file, root_zone))
    proc = node._spawn("coredns", [str(binary), "-conf", str(corefile)])

    # Served (the kubernetes plugin has synced) at its own address first ...
    def synced() -> bool | None:
        reply = node.in_netns(lambda: dns_query(NODE_IP, f"kubernetes.default.svc."
                                                f"{CLUSTER_DOMAIN}", timeout=1.0))
        return True if reply.answers == ("10.96.0.1",) else None

    _poll(synced, "answer for kubernetes.default", proc, node)
    # ... then through the Service, over both protocols.
    service = expose(node, DNS_NAMESPACE, DNS_SERVICE, "dns", DNS_PORT, "UDP",
                     extra_ports=[ServicePort("dns-tcp", DNS_PORT, "TCP")],
                     cluster_ip=CLUSTER_DNS)

    def through_service() -> bool | None:
        def ask() -> bool:
            name = f"{DNS_SERVICE}.{DNS_NAMESPACE}.svc.{CLUSTER_DOMAIN}"
            return all(dns_query(CLUSTER_DNS, name, tcp=tcp, timeout=1.0).answers
                       == (CLUSTER_DNS,) for tcp in (False, True))
        return True if node.in_netns(ask) else None

    _poll(through_service, f"answer through the {DNS_SERVICE} Service ({CLUSTER_DNS})", proc,
          node)

    resolv_dir = NETNS_ETC / node.name
    resolv_dir.mkdir(parents=True, exist_ok=True)
    node.on_stop(f"removing {resolv_dir}", lambda: shutil.rmtree(resolv_dir))
    resolv_conf = resolv_dir / "resolv.conf"
    resolv_conf.write_text(f"nameserver {NODE_IP}\nsearch svc.{CLUSTER_DOMAIN} "
                           f"{CLUSTER_DOMAIN}\noptions ndots:5\n")
    return CoreDNS(node=node, proc=proc, corefile=corefile, hosts_file=hosts_file,
                   resolv_conf=resolv_conf, service=service, hosts=dict(hosts or {}),
                   startup_seconds=round(time.monotonic() - started, 2))


def netns_exec(node: KubeNode, argv: list[str], timeout: float = 60.0
               ) -> subprocess.CompletedProcess[str]:
    """Run argv with `ip netns exec <node>` (it sees the node's resolv.conf), capturing output."""
    return subprocess.run(["ip", "netns", "exec", node.name, *argv], capture_output=True,
                          text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)


# --- SeaweedFS -----------------------------------------------------------------------------------

@dataclass
class SeaweedFS:
    """SeaweedFS with its S3 gateway. `endpoint` is the in-cluster URL pods use (by Service
    name), `node_endpoint` the gateway's own address inside the namespace."""

    node: KubeNode
    proc: Proc
    access_key: str
    secret_key: str
    data_dir: Path
    service: Exposed
    startup_seconds: float
    region: str = "us-east-1"

    @property
    def pid(self) -> int:
        return self.proc.popen.pid

    @property
    def log(self) -> Path:
        return self.proc.log

    @property
    def endpoint(self) -> str:
        return f"http://{self.service.host}:{S3_PORT}"

    @property
    def node_endpoint(self) -> str:
        return f"http://{NODE_IP}:{S3_PORT}"

    @property
    def service_endpoint(self) -> str:
        """By Service IP: what a caller inside the namespace without DNS uses."""
        return f"http://{self.service.cluster_ip}:{S3_PORT}"

    def s3(self, fn: Callable[[S3Client], T], endpoint: str | None = None) -> T:
        """fn(client) on a fresh boto3 client, run inside the node's namespace (its sockets
        are opened there; don't keep the client)."""
        client = _s3_client(endpoint or self.node_endpoint, self.access_key, self.secret_key,
                            self.region)
        return self.node.in_netns(lambda: fn(client))


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def _s3_client(endpoint: str, access_key: str, secret_key: str, region: str) -> S3Client:
    return boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=access_key,
        aws_secret_access_key=secret_key, region_name=region,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                      connect_timeout=2, read_timeout=10, proxies={}))


def _kill(proc: Proc) -> None:
    """SIGKILL weed's process group (ours) and reap it, before the node stops the rest: on
    SIGTERM it stops its volume server first, then its filer waits 15 s trying to flush its
    metadata log to it. Its data is the session's, thrown away. node.stop then finds it gone."""
    if proc.popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.popen.pid, signal.SIGKILL)
        proc.popen.wait(timeout=10)


def _private_tmp(base_dir: Path, bin_dir: Path) -> list[str]:
    """A prefix that runs a command with its own empty /tmp (in a private mount namespace),
    base_dir and bin_dir still reachable at their paths (either may be under /tmp: pytest's
    base temp, a test cache there). weed puts Unix sockets for its in-process gRPC at fixed
    paths (/tmp/seaweedfs-<service>-grpc-<port>.sock, no flag for it) and dials them instead of
    TCP: on the shared /tmp, a second node's weed would take over the first one's sockets
    (allocating volumes on the wrong server). The shell holds base_dir as its cwd and bin_dir
    open as fd 3 across the tmpfs mount and binds both back by /proc/self/cwd and
    /proc/self/fd/3 (not canonicalized: those paths would name the new, empty directories);
    exec keeps the pid weed's."""
    script = ('cd "$0" && exec 3<"$1" && mount -t tmpfs -o size=16m,mode=1777 node-tmp /tmp '
              '&& mkdir -p "$0" "$1" && mount --no-canonicalize --bind /proc/self/cwd "$0" '
              '&& mount --no-canonicalize --bind /proc/self/fd/3 "$1" && exec 3<&- '
              '&& cd "$0" && shift && exec "$@"')
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
            str(base_dir), str(bin_dir)]


def start_seaweedfs(node: KubeNode, access_key: str, secret_key: str) -> SeaweedFS:
    """`weed server -s3` in the node's namespace (data under base_dir/seaweedfs), an admin S3
    identity with the given keys, the seaweedfs-filer Service and the reference's
    seaweedfs-s3-config Secret; returns once S3 answers signed requests through the Service."""
    started = time.monotonic()
    binary = node.bin_dir / "weed"
    if not binary.is_file():
        raise RuntimeError(f"{binary} is missing: scripts/build-node.sh builds it")
    directory = node.base_dir / "seaweedfs"
    data = directory / "data"
    meta = directory / "master"
    for d in (data, meta):
        d.mkdir(parents=True, exist_ok=True)
    identities = directory / "s3.json"
    identities.write_text(json.dumps({"identities": [{
        "name": "admin",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}, indent=1))
    identities.chmod(0o600)
    private_tmp = _private_tmp(node.base_dir, binary.parent)
    proc = node._spawn("seaweedfs", [*private_tmp, str(binary), "server",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-s3.ip.bind={NODE_IP}",
        f"-dir={data}", f"-master.dir={meta}",
        f"-master.port={WEED_MASTER_PORT}", f"-volume.port={WEED_VOLUME_PORT}",
        f"-filer.port={WEED_FILER_PORT}",
        "-master.telemetry=false",  # no outside network, and nothing phones home
        "-master.volumeSizeLimitMB=64", "-volume.max=0",  # small volumes; as many as fit
        "-filer", "-s3", f"-s3.port={S3_PORT}", f"-s3.config={identities}",
        "-s3.port.iceberg=0", "-s3.port.lance=0",  # extra gateways nobody here uses
        "-volume.preStopSeconds=0",  # default 10: stopping would wait that long
    ])
    node.on_stop("stopping seaweedfs", lambda: _kill(proc))

    def buckets(endpoint: str) -> Callable[[], bool | None]:
        client = _s3_client(endpoint, access_key, secret_key, "us-east-1")

        def check() -> bool | None:
            node.in_netns(client.list_buckets)
            return True
        return check

    _poll(buckets(f"http://{NODE_IP}:{S3_PORT}"), f"S3 answer at {NODE_IP}:{S3_PORT}", proc,
          node)
    service = expose(node, S3_NAMESPACE, S3_SERVICE, "s3", S3_PORT)
    _apply(node, f"/api/v1/namespaces/{S3_NAMESPACE}/secrets/{S3_SECRET}", {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": S3_SECRET, "namespace": S3_NAMESPACE},
        "data": {"access_key": _b64(access_key), "secret_key": _b64(secret_key)}})
    _poll(buckets(f"http://{service.cluster_ip}:{S3_PORT}"),
          f"S3 answer through the {S3_SERVICE} Service", proc, node)
    return SeaweedFS(node=node, proc=proc, access_key=access_key, secret_key=secret_key,
                     data_dir=directory, service=service,
                     startup_seconds=round(time.monotonic() - started, 2))


# --- throw-away client pods ----------------------------------------------------------------------

@dataclass(frozen=True)
class PodResult:
    exit_code: int
    message: str  # what the snippet wrote to /dev/termination-log
    log: str


def run_python_pod(node: KubeNode, namespace: str, name: str, script: str,
                   args: Sequence[str] = (), env: Mapping[str, str] | None = None,
                   timeout: float = 120.0) -> PodResult:
    """Run `python -c script args...` in a pod of the server image (namespace created when
    missing), wait for it to finish, return its exit code, termination message and log, and
    delete it. The pod uses the cluster's DNS like any other (dnsPolicy ClusterFirst)."""
    ensure_namespace(node, namespace)
    base = f"/api/v1/namespaces/{namespace}/pods"
    with node.api.admin_http() as http:
        created = http.post(base, json={
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "enableServiceLinks": False,
                     "automountServiceAccountToken": False,
                     "terminationGracePeriodSeconds": 0,
                     "containers": [{
                         "name": "run", "image": node.image("server"),
                         "imagePullPolicy": "IfNotPresent",
                         "command": ["python", "-c", script, *args],
                         "env": [{"name": k, "value": v} for k, v in (env or {}).items()],
                     }]}})
        if created.status_code != 201:
            raise RuntimeError(f"creating pod {namespace}/{name}: {created.status_code} "
                               f"{created.text[:500]}")
        try:
            deadline = time.monotonic() + timeout
            pod: dict[str, Any] = {}
            while time.monotonic() < deadline:
                pod = http.get(f"{base}/{name}").json()
                if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                    break
                time.sleep(0.5)
            else:
                raise AssertionError(f"pod {namespace}/{name} did not finish within "
                                     f"{timeout:.0f} s: {pod.get('status')}")
            state = pod["status"]["containerStatuses"][0]["state"]["terminated"]
            log = http.get(f"{base}/{name}/log")
            return PodResult(exit_code=state["exitCode"], message=state.get("message", ""),
                             log=log.text if log.status_code == 200 else f"(log: {log.text})")
        finally:
            http.delete(f"{base}/{name}", params={"gracePeriodSeconds": "0"})
