"""The real-node tests are opt-in for now: a machine without caches first builds six Kubernetes
binaries, a Debian rootfs and the server image (see the README's "Real node" paragraph), which
the whole suite should not pay for until CI budgets it. They run when named on the command line
(`pytest tests/node`) or with MLFLOW_STACK_NODE_TESTS=1; otherwise they are reported as skipped
with this reason. Once selected, a node that cannot start fails them, never skips them."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from harness.node import NODE_IP, KubeNode
from harness.node_services import CoreDNS, SeaweedFS, start_coredns, start_seaweedfs

NODE_TESTS = Path(__file__).resolve().parent
OPT_IN = "MLFLOW_STACK_NODE_TESTS"


def _named(config: pytest.Config) -> bool:
    for arg in config.args:
        path = Path(arg.split("::", 1)[0]).resolve()
        if path == NODE_TESTS or NODE_TESTS in path.parents:
            return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(OPT_IN) == "1" or _named(config):
        return
    skip = pytest.mark.skip(reason=f"real-node tests are opt-in: run `pytest tests/node` or set "
                                   f"{OPT_IN}=1 (builds the node and the server image first)")
    for item in items:
        if NODE_TESTS in item.path.resolve().parents:
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
