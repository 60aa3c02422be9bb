"""A real single-node Kubernetes for tests: pods run, probes are executed, Services route.

Adapted from the recipe in ../shared/reference/k8s-node (Kubernetes 1.36 on cgroup v1 with
Debian containerd 1.6 + runc + CNI bridge). Everything lives in a network namespace this harness
creates under a unique name and deletes on stop:

  etcd, kube-apiserver, kube-controller-manager, kube-scheduler   `nsenter --net=<netns>`
  containerd, kubelet, kube-proxy    also in a private mount namespace (held by a `sleep` process)
                                     in which the host-wide sysctls kubelet wants to "fix"
                                     (vm.overcommit_memory, kernel.panic, kernel.panic_on_oops)
                                     are bind-mounted files reading back the expected values
  pods                               cgroups under /<name> in every cgroup v1 hierarchy
                                     (kubelet `cgroupRoot`), removed on stop
  host access                        a socat bridge 127.0.0.1:<free port> -> apiserver; the
                                     kubeconfig in `admin_kubeconfig` points there

The host's interfaces, routes, iptables, sysctls and cgroup mounts are never changed: inside the
namespace there is a veth pair (node IP 10.99.0.1, a default route to nowhere), the CNI bridge
`cni0` (pods 10.244.0.0/24) and kube-proxy's iptables rules (Services 10.96.0.0/16). Every
process is started by this module and stopped by its pid (pod processes: by the pids in our own
cgroups). Needs root (namespaces, cgroups, containerd).

Binaries come from scripts/build-node.sh, images (pause, the platform's server image) from
scripts/build-node-images.sh, both cached; `start_node` runs them first (no-ops when cached).
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .kubeapi import (
    ADMIN_GROUPS,
    ADMIN_USER,
    CERT_VALIDITY,
    KubeAPIServer,
    Pki,
    make_pki,
)
from .ports import free_port, wait_for_port
from .procs import log_tail, spawn, stop_group

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_NODE = REPO_ROOT / "scripts" / "build-node.sh"
BUILD_IMAGES = REPO_ROOT / "scripts" / "build-node-images.sh"
BUILD_TIMEOUT = 60 * 60.0  # cold: Go build of six binaries + Debian rootfs + image on 2 cores
START_TIMEOUT = 120.0
NODE_READY_TIMEOUT = 180.0
STOP_TIMEOUT = 20.0

NODE_IP = "10.99.0.1"
NODE_CIDR = "10.99.0.1/24"
GATEWAY = "10.99.0.254"  # nothing answers there: traffic for outside the namespace goes nowhere
POD_CIDR = "10.244.0.0/24"
CLUSTER_CIDR = "10.244.0.0/16"
SERVICE_CIDR = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"
CLUSTER_DNS = "10.96.0.10"
APISERVER_PORT = 6443
ETCD_CLIENT = "http://127.0.0.1:2379"
# Every host-wide sysctl kubelet checks and "fixes" (setupKernelTunables), with the value it
# wants: in the node's mount namespace these read back as already set, so it never writes one.
FAKE_SYSCTLS = {"vm/overcommit_memory": "1", "vm/panic_on_oom": "0", "kernel/panic": "10",
                "kernel/panic_on_oops": "1", "kernel/keys/root_maxkeys": "1000000",
                "kernel/keys/root_maxbytes": "25000000"}
CLONE_NEWNET = 0x40000000
RUNC = "/usr/sbin/runc"
CNI_BIN_DIR = "/usr/lib/cni"
# One record per running node (owner, pids, cgroups, namespace): a session killed before its
# teardown leaves one behind, and the next start_node cleans up after it (_reap_abandoned).
RECORDS = Path("/run/mlflow-stack-nodes")
# `ip netns exec <name>` bind-mounts /etc/netns/<name>/* over /etc: services that give the node a
# resolv.conf there (node_services.start_coredns) remove it on stop; _reap_abandoned too.
NETNS_ETC = Path("/etc/netns")

T = TypeVar("T")


# --- builds ------------------------------------------------------------------------------------

def _run_build(script: Path) -> str:
    """Run a build script (a no-op when its cache is current); returns its last stdout line."""
    try:
        result = subprocess.run(
            ["bash", str(script)], capture_output=True, stdin=subprocess.DEVNULL, text=True,
            timeout=BUILD_TIMEOUT, check=False,
        )
    except subprocess.TimeoutExpired as exc:
        tail = (exc.stderr or b"")
        text = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
        raise RuntimeError(f"{script.name} did not finish in {BUILD_TIMEOUT:.0f} s:\n"
                           + "\n".join(text.splitlines()[-40:])) from exc
    if result.stderr:
        sys.stderr.write(result.stderr)  # progress and timings, shown with -s or on failure
    if result.returncode != 0:
        raise RuntimeError(f"{script.name} failed (exit {result.returncode}):\n"
                           + "\n".join(result.stderr.splitlines()[-40:]))
    lines = result.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"{script.name} printed no result path")
    return lines[-1]


def build_node_binaries() -> Path:
    bin_dir = Path(_run_build(BUILD_NODE))
    for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
                 "kubelet", "kube-proxy"):
        if not os.access(bin_dir / name, os.X_OK):
            raise RuntimeError(f"{BUILD_NODE.name} succeeded but {bin_dir / name} is missing")
    return bin_dir


@dataclass(frozen=True)
class NodeImage:
    ref: str
    tar: Path


def build_node_images() -> dict[str, NodeImage]:
    """{'pause': ..., 'server': ...}: the refs and docker-archive tars of the node's images."""
    manifest = json.loads(Path(_run_build(BUILD_IMAGES)).read_text())
    images = {name: NodeImage(entry["ref"], Path(entry["tar"]))
              for name, entry in manifest.items() if "tar" in entry}
    for name in ("pause", "server"):
        if name not in images or not images[name].tar.is_file():
            raise RuntimeError(f"{BUILD_IMAGES.name} succeeded but the {name} image is missing")
    return images


# --- network namespace helpers ------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def in_netns(netns_path: Path, fn: Callable[[], T]) -> T:
    """Run fn in a fresh thread that has joined the network namespace at netns_path: sockets it
    opens (httpx, socket) are inside the node's network. The calling thread is untouched."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({netns_path}): {os.strerror(err)}")
            finally:
                os.close(fd)
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="in-netns", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def _ip(*args: str, netns: str | None = None) -> None:
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")


def _netns_names() -> set[str]:
    result = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in result.stdout.splitlines() if line.strip()}


# --- cgroups -------------------------------------------------------------------------------------

def _cgroup_mounts(fstype: str) -> list[Path]:
    """Mount points of the cgroup hierarchies of one type ("cgroup": v1, "cgroup2")."""
    mounts = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2] == fstype:
            mounts.append(Path(parts[1]))
    return mounts


def _cgroup_pids(root: Path) -> set[int]:
    pids: set[int] = set()
    if not root.is_dir():
        return pids
    for procs in root.rglob("cgroup.procs"):
        with contextlib.suppress(OSError, ValueError):
            pids.update(int(p) for p in procs.read_text().split())
    return pids


def _remove_cgroup_tree(root: Path) -> None:
    """rmdir the cgroup directories under root, deepest first (cgroupfs only removes empty ones
    with rmdir; their files go with them)."""
    if not root.is_dir():
        return
    dirs = sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts),
                  reverse=True)
    for d in [*dirs, root]:
        with contextlib.suppress(OSError):
            d.rmdir()


# --- PKI -----------------------------------------------------------------------------------------

def _issue_serving_cert(pki: Pki) -> tuple[bytes, bytes]:
    """The apiserver's serving pair, valid for every name a client inside or outside uses."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    names: list[x509.GeneralName] = [
        x509.DNSName(n) for n in ("localhost", "kubernetes", "kubernetes.default",
                                  "kubernetes.default.svc", "kubernetes.default.svc.cluster.local")
    ]
    names += [x509.IPAddress(ipaddress.ip_address(a))
              for a in ("127.0.0.1", NODE_IP, KUBERNETES_SERVICE_IP)]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(pki.ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + CERT_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(pki.ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _write(path: Path, data: str | bytes, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data.encode() if isinstance(data, str) else data)
    return path


def _kubeconfig(server: str, ca: Path, cert: Path, key: Path) -> str:
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "node", "cluster": {"server": server,
                                                  "certificate-authority": str(ca)}}],
        "users": [{"name": ADMIN_USER, "user": {"client-certificate": str(cert),
                                                "client-key": str(key)}}],
        "contexts": [{"name": "node", "context": {"cluster": "node", "user": ADMIN_USER,
                                                  "namespace": "default"}}],
        "current-context": "node",
    }, sort_keys=False)


# --- the node ------------------------------------------------------------------------------------

@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path


@dataclass
class KubeNode:
    """A running single-node cluster. `api` is the API server as the kube_api tests know it
    (admin_http, user_kubeconfig, service_account_token), reached through the host bridge."""

    name: str
    base_dir: Path
    bin_dir: Path
    images: dict[str, NodeImage]
    api: KubeAPIServer
    netns_path: Path
    node_name: str
    timings: dict[str, float] = field(default_factory=dict)
    _procs: list[Proc] = field(default_factory=list, repr=False)
    _cgroups: list[Path] = field(default_factory=list, repr=False)
    _netns_created: bool = field(default=False, repr=False)
    _host_state: dict[str, str] = field(default_factory=dict, repr=False)
    _cleanups: list[tuple[str, Callable[[], None]]] = field(default_factory=list, repr=False)

    @property
    def url(self) -> str:
        return self.api.url

    @property
    def admin_kubeconfig(self) -> Path:
        return self.api.admin_kubeconfig

    @property
    def containerd_socket(self) -> Path:
        return self.base_dir / "run" / "containerd.sock"

    @property
    def pids(self) -> dict[str, int]:
        return {p.name: p.popen.pid for p in self._procs if p.popen.poll() is None}

    def on_stop(self, what: str, fn: Callable[[], None]) -> None:
        """Have stop() call fn (last registered first, before any process stops): for what a
        service started later (tests/harness/node_services.py) leaves outside base_dir."""
        self._cleanups.append((what, fn))

    def image(self, name: str) -> str:
        return self.images[name].ref

    def in_netns(self, fn: Callable[[], T]) -> T:
        return in_netns(self.netns_path, fn)

    def http_get(self, url: str, timeout: float = 5.0) -> httpx.Response:
        """GET url from inside the node's network (pod and Service IPs are reachable there)."""
        def get() -> httpx.Response:
            with httpx.Client(trust_env=False, timeout=timeout) as client:
                return client.get(url)
        return self.in_netns(get)

    def bridge(self, name: str, inner_port: int, inner_host: str = NODE_IP) -> int:
        """A loopback port on the host forwarding into the namespace (to a service the harness
        runs there), for test code that is not inside the node's network; stopped with it."""
        return _start_bridge(self, inner_port, inner_host, name)

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None,
              log: Path | None = None) -> Proc:
        """Start argv in the node's network namespace (a backing service), stopped with the node
        by pid. env replaces the minimal default environment; log defaults to logs/<name>.log."""
        return self._spawn(name, argv, env=env, log=log)

    def run(self, argv: list[str], env: dict[str, str], timeout: float = 900.0,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run argv to completion on the node's network, as a user's machine inside the cluster
        network would (`ip netns exec`: Service and pod IPs are reachable, and cluster names
        resolve once the node's DNS runs and /etc/netns/<name>/resolv.conf exists)."""
        return subprocess.run(["ip", "netns", "exec", self.name, *argv], env=env, cwd=cwd,
                              capture_output=True, text=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL)

    def tag_image(self, name: str, ref: str) -> str:
        """Give the node's image `name` another reference (as a registry would serve it under
        the config's registry/project/image:tag); returns ref."""
        result = self._ctr("images", "tag", "--force", self.image(name), ref)
        if result.returncode != 0:
            raise RuntimeError(f"ctr images tag {self.image(name)} {ref}: "
                               f"{result.stderr.strip() or result.stdout.strip()}")
        return ref

    def logs(self) -> dict[str, Path]:
        return {p.name: p.log for p in self._procs}

    def check_alive(self) -> None:
        """Raise with the log tail of any node process that has exited."""
        for proc in self._procs:
            if proc.popen.poll() is not None:
                raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}; log "
                                   f"{proc.log}:\n{log_tail(proc.log)}")

    def hostpath_volume(self, name: str, storage_class: str, capacity: str = "1Gi",
                        access_modes: tuple[str, ...] = ("ReadWriteOnce",),
                        owner: int = 10001) -> Path:
        """A PersistentVolume backed by a fresh directory (owned by `owner`, the image's user:
        fsGroup does not apply to hostPath) for PVCs of `storage_class` to bind."""
        directory = self.base_dir / "volumes" / name
        directory.mkdir(parents=True, exist_ok=True)
        os.chown(directory, owner, owner)
        directory.chmod(0o770)
        with self.api.admin_http() as http:
            response = http.post("/api/v1/persistentvolumes", json={
                "apiVersion": "v1", "kind": "PersistentVolume",
                "metadata": {"name": name},
                "spec": {"capacity": {"storage": capacity}, "accessModes": list(access_modes),
                         "storageClassName": storage_class,
                         "persistentVolumeReclaimPolicy": "Retain",
                         "hostPath": {"path": str(directory), "type": "Directory"}},
            })
            if response.status_code != 201:
                raise RuntimeError(f"creating PV {name}: {response.status_code} "
                                   f"{response.text[:500]}")
        return directory

    def memory(self) -> dict[str, float]:
        """Resident memory (MiB) of each node process, of the containerd shims and of the pods'
        processes (everything in our cgroups), and the total."""
        result: dict[str, float] = {}
        seen: set[int] = set()
        for name, pid in self.pids.items():
            with contextlib.suppress(psutil.Error):
                result[name] = psutil.Process(pid).memory_info().rss / 2**20
                seen.add(pid)
        shims = [p for p in psutil.process_iter(["name", "cmdline"])
                 if p.info["name"] == "containerd-shim-runc-v2"
                 and str(self.containerd_socket) in " ".join(p.info["cmdline"] or [])]
        result["containerd-shims"] = sum(_rss(p) for p in shims) / 2**20
        seen.update(p.pid for p in shims)
        pod_pids = set()
        for hierarchy in self._cgroups[:1]:
            pod_pids = _cgroup_pids(hierarchy) - seen
        result["pods"] = sum(_rss_pid(pid) for pid in pod_pids) / 2**20
        result["total"] = sum(result.values())
        return result

    # -- stop ------------------------------------------------------------------------------------

    def stop_process(self, name: str) -> None:
        """Stop (by pid) and forget the node process `name` before the node stops: an add-on
        such as traefik (harness/node_ingress.py) ends while the API server it watches still
        runs. Unknown names are ignored."""
        for proc in [p for p in self._procs if p.name == name]:
            _stop_proc(proc.popen)
            self._procs.remove(proc)
        self._record()


    def stop(self) -> None:
        """Stop everything this node started, by pid, and remove its cgroups, network namespace
        and containerd/kubelet state. Idempotent; raises at the end if something could not be
        cleaned up (after trying everything)."""
        problems: list[str] = []
        by_name = {p.name: p for p in self._procs}
        started = time.monotonic()
        while self._cleanups:
            what, fn = self._cleanups.pop()
            try:
                fn()
            except Exception as exc:  # reported with the rest, after everything stopped
                problems.append(f"{what}: {type(exc).__name__}: {exc}")

        def stop(name: str) -> None:
            proc = by_name.pop(name, None)
            if proc is not None:
                _stop_proc(proc.popen)

        stop("kubelet")
        stop("kube-proxy")
        self._mark("stop: kubelet, kube-proxy", started)
        # Pod processes (everything in our cgroups is ours) and their shims, then containerd
        # (it does not stop shims when it exits), then whatever started in between.
        self._kill_leftovers()
        self._mark("stop: pods", started)
        stop("containerd")
        self._kill_leftovers()
        self._mark("stop: containerd", started)
        for name in ("mount-holder", "kube-controller-manager", "kube-scheduler",
                     "kube-apiserver", "etcd", "apiserver-bridge"):
            stop(name)
        for proc in list(by_name.values()):
            _stop_proc(proc.popen)
        self._procs.clear()
        self._mark("stop: control plane", started)
        # runc also mirrors the pods' cgroups into the cgroup2 hierarchy of a hybrid layout.
        for root in [*self._cgroups, *(m / self.name for m in _cgroup_mounts("cgroup2"))]:
            _remove_cgroup_tree(root)
            if root.exists():
                problems.append(f"cgroup {root} could not be removed")
        self._cgroups.clear()
        if self._netns_created:
            try:
                _ip("netns", "delete", self.name)
                self._netns_created = False
            except RuntimeError as exc:
                problems.append(str(exc))
        self._mark("stop: cgroups, namespace", started)
        _remove_in_background([self.base_dir / sub
                               for sub in ("containerd", "kubelet", "etcd-data", "volumes")])
        self._mark("stop: state removed", started)
        sys.stderr.write(f"kube-node: stopped {self.name}: "
                         + ", ".join(f"{k[6:]} {v} s" for k, v in self.timings.items()
                                     if k.startswith("stop: ")) + "\n")
        if not problems:
            (RECORDS / f"{self.name}.json").unlink(missing_ok=True)
        if self._host_state:
            now = _host_state()
            problems += [f"the host's {key} changed while the node ran: "
                         f"{self._host_state[key]!r} -> {now.get(key)!r}"
                         for key in self._host_state if now.get(key) != self._host_state[key]]
        if problems:
            raise RuntimeError("node stop: " + "; ".join(problems))

    def _ctr(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ctr", "--address", str(self.containerd_socket), "--namespace", "k8s.io", *args],
            capture_output=True, text=True, timeout=timeout, check=False)

    def _kill_leftovers(self) -> None:
        shims = [p.pid for p in psutil.process_iter(["name", "cmdline"])
                 if p.info["name"] == "containerd-shim-runc-v2"
                 and str(self.containerd_socket) in " ".join(p.info["cmdline"] or [])]
        pids = set(shims)
        for root in self._cgroups:
            pids |= _cgroup_pids(root)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
            time.sleep(0.1)

    # -- start -----------------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], *, mount_ns: int | None = None,
               env: dict[str, str] | None = None, log: Path | None = None) -> Proc:
        """Start argv inside the node's network namespace (and the node's mount namespace when
        mount_ns is the pid holding it). nsenter execs argv, so the pid is the process's own."""
        enter = ["nsenter", f"--net={self.netns_path}"]
        if mount_ns is not None:
            enter = ["nsenter", f"--target={mount_ns}", "--mount", f"--net={self.netns_path}"]
        log = log or self.base_dir / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        popen = spawn([*enter, "--", *argv], log, env=env or _child_env(), cwd=self.base_dir)
        proc = Proc(name, popen, log)
        self._procs.append(proc)
        self._record()
        return proc

    def _spawn_host(self, name: str, argv: list[str]) -> Proc:
        """Start argv in the host's namespaces (the bridge, the mount namespace's holder)."""
        log = self.base_dir / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        popen = spawn(argv, log, env=_child_env(), cwd=self.base_dir)
        proc = Proc(name, popen, log)
        self._procs.append(proc)
        self._record()
        return proc

    def _record(self) -> None:
        """Write what a later session needs to clean up after this one if it dies unstopped."""
        procs = []
        for proc in self._procs:
            with contextlib.suppress(psutil.Error):
                procs.append([proc.popen.pid, psutil.Process(proc.popen.pid).create_time()])
        me = psutil.Process()
        RECORDS.mkdir(mode=0o700, exist_ok=True)
        _write(RECORDS / f"{self.name}.json", json.dumps({
            "owner": [me.pid, me.create_time()], "netns": self.name if self._netns_created else "",
            "cgroups": [str(c) for c in self._cgroups], "procs": procs,
            "containerd_socket": str(self.containerd_socket), "base_dir": str(self.base_dir),
        }))

    def _mark(self, what: str, started: float) -> None:
        self.timings[what] = round(time.monotonic() - started, 2)


def start_node(base_dir: Path, bin_dir: Path | None = None,
               images: dict[str, NodeImage] | None = None) -> KubeNode:
    """Create the namespace, start every component, import the images and wait until the node
    is Ready and the default ServiceAccount exists. On any failure everything started so far is
    stopped and the error names the service with its log tail."""
    if os.geteuid() != 0:
        raise RuntimeError("the node harness needs root (network namespace, cgroups, containerd)")
    for tool in ("ip", "nsenter", "unshare", "containerd", "ctr", "socat", "iptables"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} not found: run scripts/build-node.sh (it installs the "
                               "node's Debian packages)")
    build_started = time.monotonic()
    bins = bin_dir or build_node_binaries()
    imgs = images or build_node_images()
    build_seconds = time.monotonic() - build_started

    base_dir.mkdir(parents=True, exist_ok=True)
    _reap_abandoned()
    existing = _netns_names()
    name = ""
    while not name or name in existing:
        name = f"mlflow-stack-{secrets.token_hex(4)}"
    api = KubeAPIServer(
        url="", base_dir=base_dir, admin_kubeconfig=base_dir / "admin.kubeconfig",
        pki=make_pki(base_dir / "pki"), etcd_url=ETCD_CLIENT,
        apiserver_log=base_dir / "logs" / "kube-apiserver.log",
        etcd_log=base_dir / "logs" / "etcd.log", startup_seconds=0.0,
    )
    node = KubeNode(name=name, base_dir=base_dir, bin_dir=bins, images=imgs, api=api,
                    netns_path=Path("/var/run/netns") / name, node_name=name)
    node.timings["builds (cached check)"] = round(build_seconds, 2)
    try:
        _start(node)
    except BaseException:
        with contextlib.suppress(Exception):
            node.stop()
        raise
    return node


def _start(node: KubeNode) -> None:
    started = time.monotonic()
    base = node.base_dir
    pki = node.api.pki
    node._host_state = _host_state()
    _create_netns(node)
    node._record()
    _create_cgroups(node)
    node._record()
    node._mark("namespace + cgroups", started)

    # PKI: the harness CA; the apiserver's serving cert valid inside and outside; an admin
    # (system:masters) client cert that every component uses.
    # The controller-manager signs CSRs (kubelet serving certs) with the CA key.
    _write(pki.dir / "ca.key", pki.ca_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    serving_cert, serving_key = _issue_serving_cert(pki)
    _write(pki.dir / "apiserver.crt", serving_cert)
    _write(pki.dir / "apiserver.key", serving_key)
    admin_cert, admin_key = pki.issue(ADMIN_USER, organizations=ADMIN_GROUPS)
    _write(pki.dir / "admin.crt", admin_cert)
    _write(pki.dir / "admin.key", admin_key)
    inner_kubeconfig = _write(base / "inner.kubeconfig", _kubeconfig(
        f"https://127.0.0.1:{APISERVER_PORT}", pki.ca_path, pki.dir / "admin.crt",
        pki.dir / "admin.key"))

    # Control plane.
    etcd = node._spawn("etcd", [
        str(node.bin_dir / "etcd"), "--name", "node", "--data-dir", str(base / "etcd-data"),
        "--listen-client-urls", ETCD_CLIENT, "--advertise-client-urls", ETCD_CLIENT,
        "--listen-peer-urls", "http://127.0.0.1:2380",
        "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
        "--initial-cluster", "node=http://127.0.0.1:2380", "--initial-cluster-state", "new",
        "--unsafe-no-fsync", "--log-level", "warn",
    ])
    _wait(node, etcd, lambda: node.http_get(f"{ETCD_CLIENT}/health", 1.0).status_code == 200,
          "etcd healthy")
    node._mark("etcd healthy", started)
    apiserver = node._spawn("kube-apiserver", [
        str(node.bin_dir / "kube-apiserver"),
        "--bind-address=0.0.0.0", f"--advertise-address={NODE_IP}",
        f"--secure-port={APISERVER_PORT}", f"--etcd-servers={ETCD_CLIENT}",
        f"--tls-cert-file={pki.dir / 'apiserver.crt'}",
        f"--tls-private-key-file={pki.dir / 'apiserver.key'}",
        f"--cert-dir={pki.dir}", f"--client-ca-file={pki.ca_path}",
        f"--service-account-key-file={pki.dir / 'sa.pub'}",
        f"--service-account-signing-key-file={pki.dir / 'sa.key'}",
        "--service-account-issuer=https://kubernetes.default.svc",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--authorization-mode=Node,RBAC", "--allow-privileged=true",
        f"--kubelet-client-certificate={pki.dir / 'admin.crt'}",
        f"--kubelet-client-key={pki.dir / 'admin.key'}",
        # else logs/exec/port-forward look the node's name up in DNS
        "--kubelet-preferred-address-types=InternalIP",
        "--profiling=false", "--v=1",
    ])
    node.api.apiserver_log = apiserver.log
    node.api.etcd_log = etcd.log

    def apiserver_ready() -> bool:
        def get() -> bool:
            with node.api.admin_http() as http:
                http.base_url = httpx.URL(f"https://127.0.0.1:{APISERVER_PORT}")
                response = http.get("/readyz", timeout=2.0)
                return response.status_code == 200
        return node.in_netns(get)

    _wait(node, apiserver, apiserver_ready, "kube-apiserver /readyz ok")
    node._mark("apiserver ready", started)
    common = [f"--kubeconfig={inner_kubeconfig}",
              f"--authentication-kubeconfig={inner_kubeconfig}",
              f"--authorization-kubeconfig={inner_kubeconfig}",
              "--leader-elect=false", "--bind-address=127.0.0.1", "--profiling=false", "--v=1"]
    node._spawn("kube-controller-manager", [
        str(node.bin_dir / "kube-controller-manager"), *common,
        f"--service-account-private-key-file={pki.dir / 'sa.key'}",
        f"--root-ca-file={pki.ca_path}",
        f"--cluster-signing-cert-file={pki.ca_path}",
        f"--cluster-signing-key-file={pki.dir / 'ca.key'}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
    ])
    node._spawn("kube-scheduler", [str(node.bin_dir / "kube-scheduler"), *common])
    bridge_port = _start_bridge(node)
    node.api.url = f"https://127.0.0.1:{bridge_port}"
    _write(node.api.admin_kubeconfig, _kubeconfig(
        node.api.url, pki.ca_path, pki.dir / "admin.crt", pki.dir / "admin.key"))

    # Node: containerd, kubelet, kube-proxy in a private mount namespace.
    holder = _start_mount_holder(node)
    _write_node_configs(node, inner_kubeconfig)
    containerd = node._spawn("containerd", [
        "containerd", "--config", str(base / "containerd" / "config.toml"),
    ], mount_ns=holder)
    _wait(node, containerd, node.containerd_socket.exists, "containerd socket")
    node._mark("containerd up", started)
    for image in node.images.values():
        result = node._ctr("images", "import", str(image.tar), timeout=600)
        if result.returncode != 0:
            raise RuntimeError(f"ctr images import {image.tar} failed: "
                               f"{result.stderr.strip() or result.stdout.strip()}")
    node._mark("images imported", started)
    kubelet = node._spawn("kubelet", [
        str(node.bin_dir / "kubelet"), f"--config={base / 'kubelet.yaml'}",
        f"--kubeconfig={inner_kubeconfig}", f"--root-dir={base / 'kubelet'}",
        f"--node-ip={NODE_IP}", f"--hostname-override={node.node_name}", "--v=1",
    ], mount_ns=holder)
    node._spawn("kube-proxy", [
        str(node.bin_dir / "kube-proxy"), f"--config={base / 'kube-proxy.yaml'}", "--v=1",
    ], mount_ns=holder)

    def node_ready() -> bool:
        with node.api.admin_http() as http:
            response = http.get(f"/api/v1/nodes/{node.node_name}")
            if response.status_code != 200:
                return False
            conditions = response.json().get("status", {}).get("conditions", [])
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    _wait(node, kubelet, node_ready, "node Ready", NODE_READY_TIMEOUT)
    node._mark("node Ready", started)

    def default_sa() -> bool:
        with node.api.admin_http() as http:
            return http.get("/api/v1/namespaces/default/serviceaccounts/default").status_code \
                == 200

    _wait(node, kubelet, default_sa, "default ServiceAccount")
    node._mark("up", started)
    node.api.startup_seconds = node.timings["up"]


_REMOVERS: list[subprocess.Popen[bytes]] = []


def _remove_in_background(paths: list[Path]) -> None:
    """Delete the node's state (containerd's snapshots: ~2 GB of small files, half a minute of
    I/O) without holding up the session's end: renamed aside at once, removed by a niced `rm`."""
    trash = []
    for path in paths:
        if path.exists():
            aside = path.with_name(f".{path.name}.removing-{secrets.token_hex(3)}")
            path.rename(aside)
            trash.append(str(aside))
    if trash:
        _REMOVERS.append(subprocess.Popen(
            ["nice", "-n", "19", "rm", "-rf", "--", *trash], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))


def _reap_abandoned() -> None:
    """Clean up after nodes whose owning test session died without stopping them (killed
    pytest): their recorded processes (only while pid and start time still match), shims, pod
    processes in their cgroups, the cgroups and the namespace. Live sessions' nodes are left
    alone."""
    if not RECORDS.is_dir():
        return
    for record_path in sorted(RECORDS.glob("*.json")):
        try:
            record = json.loads(record_path.read_text())
            owner_pid, owner_started = record["owner"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if _same_process(owner_pid, owner_started):
            continue
        pids = {pid for pid, started in record.get("procs", []) if _same_process(pid, started)}
        socket_path = record.get("containerd_socket", "")
        pids |= {p.pid for p in psutil.process_iter(["name", "cmdline"])
                 if p.info["name"] == "containerd-shim-runc-v2" and socket_path
                 and socket_path in " ".join(p.info["cmdline"] or [])}
        cgroups = [Path(c) for c in record.get("cgroups", [])]
        for root in cgroups:
            pids |= _cgroup_pids(root)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
            time.sleep(0.1)
        name = record_path.stem
        for root in [*cgroups, *(m / name for m in _cgroup_mounts("cgroup2"))]:
            _remove_cgroup_tree(root)
        if record.get("netns") and record["netns"] in _netns_names():
            with contextlib.suppress(RuntimeError):
                _ip("netns", "delete", record["netns"])
        if str(record.get("netns", "")).startswith("mlflow-stack-") and "/" not in record["netns"]:
            shutil.rmtree(NETNS_ETC / record["netns"], ignore_errors=True)
        base = Path(record.get("base_dir", ""))
        if base.is_absolute() and base != Path("/"):
            for sub in ("containerd", "kubelet", "etcd-data", "volumes"):
                shutil.rmtree(base / sub, ignore_errors=True)
        record_path.unlink(missing_ok=True)
        sys.stderr.write(f"kube-node: cleaned up node {name} left running by dead pid "
                         f"{owner_pid} ({len(pids)} processes)\n")


def _same_process(pid: int, started: float) -> bool:
    try:
        return abs(psutil.Process(pid).create_time() - started) < 0.01
    except psutil.Error:
        return False


def _host_state() -> dict[str, str]:
    """What the node must never change on the host: the sysctls kubelet and kube-proxy care
    about, and the host's network interfaces (checked again on stop)."""
    state = {f"sysctl {key}": _read(Path("/proc/sys") / key) for key in FAKE_SYSCTLS}
    for key in ("net/ipv4/ip_forward", "net/netfilter/nf_conntrack_max"):
        state[f"sysctl {key}"] = _read(Path("/proc/sys") / key)
    state["interfaces"] = " ".join(sorted(os.listdir("/sys/class/net")))
    return state


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return "(unreadable)"


def _create_netns(node: KubeNode) -> None:
    _ip("netns", "add", node.name)
    node._netns_created = True
    ns = node.name
    _ip("link", "set", "lo", "up", netns=ns)
    _ip("link", "add", "nodeif", "type", "veth", "peer", "name", "nodeif-peer", netns=ns)
    _ip("addr", "add", NODE_CIDR, "dev", "nodeif", netns=ns)
    _ip("link", "set", "nodeif", "up", netns=ns)
    _ip("link", "set", "nodeif-peer", "up", netns=ns)
    _ip("route", "add", "default", "via", GATEWAY, "dev", "nodeif", "onlink", netns=ns)
    # net.ipv4.ip_forward is per network namespace: this one only (pods <-> Services).
    result = subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"enabling ip_forward in {ns}: {result.stderr.strip()}")


def _create_cgroups(node: KubeNode) -> None:
    hierarchies = _cgroup_mounts("cgroup")
    if not hierarchies:
        raise RuntimeError("no cgroup v1 hierarchy mounted: the node harness supports the cgroup "
                           "v1 (hybrid) layout kubelet 1.36 runs on here (failCgroupV1: false)")
    for hierarchy in hierarchies:
        root = hierarchy / node.name
        root.mkdir()
        node._cgroups.append(root)
        if (hierarchy / "cpuset.cpus").exists():
            # A new cpuset cgroup starts empty: no task could run in it.
            for knob in ("cpuset.cpus", "cpuset.mems"):
                (root / knob).write_text((hierarchy / knob).read_text())


def _start_bridge(node: KubeNode, inner_port: int = APISERVER_PORT,
                  inner_host: str = "127.0.0.1", name: str = "apiserver-bridge") -> int:
    """socat on 127.0.0.1:<free port> that forwards each connection into the namespace."""
    inner = f"nsenter --net={node.netns_path} socat STDIO TCP:{inner_host}:{inner_port}"
    last = ""
    for _ in range(3):
        port = free_port()
        proc = node._spawn_host(name, [
            "socat", f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr",
            "EXEC:" + inner.replace(":", "\\:"),
        ])
        if wait_for_port(port, 10.0) and proc.popen.poll() is None:
            return port
        last = log_tail(proc.log)
        _stop_proc(proc.popen)
        node._procs.remove(proc)
    raise RuntimeError(f"the {name} (socat) did not start: {last}")


def _start_mount_holder(node: KubeNode) -> int:
    """A process holding the node's private mount namespace, in which the host-wide sysctl files
    kubelet checks are bind mounts of files with the values it expects (so it never writes the
    host's). containerd, kubelet and kube-proxy join it with nsenter."""
    fake = node.base_dir / "fakesys"
    mounts = []
    for key, value in FAKE_SYSCTLS.items():
        path = _write(fake / key.replace("/", "_"), value + "\n", 0o644)
        mounts.append(f"mount --bind {path} /proc/sys/{key}")
    ready = node.base_dir / "mount-holder.ready"
    script = " && ".join([*mounts, f"touch {ready}", "exec sleep infinity"])
    proc = node._spawn_host("mount-holder", [
        "unshare", "--mount", "--propagation", "private", "sh", "-c", script])
    deadline = time.monotonic() + 10
    while not ready.exists():
        if proc.popen.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the node's mount namespace could not be set up: "
                               f"{log_tail(proc.log)}")
        time.sleep(0.05)
    return proc.popen.pid


def _write_node_configs(node: KubeNode, inner_kubeconfig: Path) -> None:
    base = node.base_dir
    pki = node.api.pki
    (base / "podlogs").mkdir(exist_ok=True)
    (base / "kubelet").mkdir(exist_ok=True)
    sock = node.containerd_socket
    sock.parent.mkdir(parents=True, exist_ok=True)
    _write(base / "containerd" / "config.toml", f"""\
version = 2
root = "{base}/containerd/root"
state = "{base}/containerd/state"
oom_score = 0
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  level = "info"
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  netns_mounts_under_state_dir = true
  sandbox_image = "{node.image('pause')}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{RUNC}"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{base}/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{base}/containerd/opt"
""", 0o644)
    _write(base / "cni" / "net.d" / "10-bridge.conflist", json.dumps({
        "cniVersion": "0.4.0", "name": "node",
        "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False,
             "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]],
                      "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(base / "cni" / "ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }, indent=1), 0o644)
    _write(base / "cni" / "net.d" / "99-loopback.conf", json.dumps(
        {"cniVersion": "0.4.0", "name": "lo", "type": "loopback"}), 0o644)
    _write(base / "kubelet.yaml", yaml.safe_dump({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,  # kubelet 1.36 refuses cgroup v1 unless told
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{node.name}",  # pods under our own cgroups, not the host's /kubepods
        "containerRuntimeEndpoint": f"unix://{sock}",
        "imageServiceEndpoint": f"unix://{sock}",
        "address": NODE_IP, "port": 10250, "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": 10248,
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(pki.ca_path)}},
        "authorization": {"mode": "Webhook"},
        "clusterDomain": "cluster.local", "clusterDNS": [CLUSTER_DNS],
        "resolvConf": "/etc/resolv.conf",
        "failSwapOn": False,
        "protectKernelDefaults": False,
        "serializeImagePulls": False,
        # Images can't be pulled again: never garbage-collect them.
        "imageMinimumGCAge": "24h", "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                         "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
        "localStorageCapacityIsolation": True,
        "maxPods": 50,
        "registerNode": True,
        "syncFrequency": "10s", "fileCheckFrequency": "10s",
        "nodeStatusUpdateFrequency": "5s",
        "podLogsDir": str(base / "podlogs"),
    }, sort_keys=False), 0o644)
    _write(base / "kube-proxy.yaml", yaml.safe_dump({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(inner_kubeconfig)},
        "clusterCIDR": CLUSTER_CIDR,
        "hostnameOverride": node.node_name,
        "bindAddress": NODE_IP,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        # 0: leave the (host-wide) conntrack sysctls alone
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                      "tcpCloseWaitTimeout": "0s"},
    }, sort_keys=False), 0o644)


def _wait(node: KubeNode, proc: Proc, check: Callable[[], bool], what: str,
          timeout: float = START_TIMEOUT) -> None:
    """Poll check until true; fail with the log tail of proc (or of any node process that died)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        node.check_alive()
        try:
            if check():
                return
        except (httpx.HTTPError, OSError, ValueError, KeyError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.2)
    node.check_alive()
    raise RuntimeError(f"{proc.name}: no '{what}' after {timeout:.0f} s ({last or 'not yet'}); "
                       f"log {proc.log}:\n{log_tail(proc.log)}")


def _stop_proc(popen: subprocess.Popen[bytes]) -> None:
    stop_group(popen.pid, timeout=STOP_TIMEOUT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        popen.wait(timeout=5.0)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _rss(proc: psutil.Process) -> int:
    try:
        return int(proc.memory_info().rss)
    except psutil.Error:
        return 0


def _rss_pid(pid: int) -> int:
    try:
        return _rss(psutil.Process(pid))
    except psutil.Error:
        return 0


def _child_env() -> dict[str, str]:
    # Minimal and fixed: no proxy variables, no KUBECONFIG from the caller.
    return {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LC_ALL": "C", "TZ": "UTC", "HOME": os.environ.get("HOME", "/root")}


@contextlib.contextmanager
def running_node(base_dir: Path) -> Iterator[KubeNode]:
    node = start_node(base_dir)
    try:
        yield node
    finally:
        node.stop()
