"""The real-node tests run with the rest of the suite, last: the node's builds (Kubernetes
binaries, CoreDNS, SeaweedFS, Traefik, a Debian rootfs and the server image; see the README's
"Real node" paragraph) start in the background when `scripts/test.sh` begins and are usually done
by the time pytest reaches them; the session fixture then waits for them (the build scripts hold
a lock). MLFLOW_STACK_NODE_TESTS=0 leaves them out (reported as skipped with this reason), for a
machine that cannot run a node (not root, no cgroup v1); a node that cannot start fails them."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.keycloak import default_cache_dir, ensure_keycloak_dist
from harness.node import NODE_IP, KubeNode
from harness.node_ingress import Traefik, start_traefik
from harness.node_platform import Deployed, deploy_reference
from harness.node_services import CoreDNS, SeaweedFS, start_coredns, start_seaweedfs

NODE_TESTS = Path(__file__).resolve().parent
OPT_OUT = "MLFLOW_STACK_NODE_TESTS"


def _is_node_test(item: pytest.Item) -> bool:
    return NODE_TESTS in item.path.resolve().parents


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Last, so their background builds have the rest of the run to finish in.
    items.sort(key=_is_node_test)
    if os.environ.get(OPT_OUT) != "0":
        return
    skip = pytest.mark.skip(reason=f"{OPT_OUT}=0: the real-node tests were turned off")
    for item in items:
        if _is_node_test(item):
            item.add_marker(skip)


# Public names CoreDNS answers from its hosts file (the reference's are under the site's domain,
# pointing at the ingress); CoreDNS.set_hosts replaces them.
PUBLIC_HOSTS = {"mlflow.example.test": NODE_IP}


@pytest.fixture(scope="session")
def node_dns(kube_node: KubeNode) -> CoreDNS:
    """CoreDNS for the session's node (kube-dns 10.96.0.10); stopped with the node, which also
    removes the resolv.conf it gave `ip netns exec`."""
    return start_coredns(kube_node, PUBLIC_HOSTS)


@pytest.fixture(scope="session")
def node_s3(kube_node: KubeNode) -> SeaweedFS:
    """SeaweedFS's S3 gateway for the session's node (seaweedfs-filer.seaweedfs:8333, the
    seaweedfs-s3-config Secret); stopped with the node."""
    return start_seaweedfs(kube_node, access_key="AK" + secrets.token_hex(8).upper(),
                           secret_key=secrets.token_urlsafe(30))


@pytest.fixture(scope="session")
def reference_platform(kube_node: KubeNode, node_dns: CoreDNS, node_s3: SeaweedFS,
                       traefik: Traefik, tmp_path_factory: pytest.TempPathFactory) -> Deployed:
    """The reference deployment applied on the node from nothing (harness.node_platform);
    test_platform.py, test_platform_ha.py and test_uninstall.py use it in that order."""
    return deploy_reference(kube_node, node_s3, tmp_path_factory.mktemp("platform"),
                            ensure_keycloak_dist(default_cache_dir()))


@pytest.fixture(scope="session")
def traefik(kube_node: KubeNode) -> Iterator[Traefik]:
    """Traefik (Ingress + Gateway API providers) on the session's node, started once and
    stopped (by pid) before the node."""
    controller = start_traefik(kube_node)
    try:
        yield controller
    finally:
        controller.stop()
