"""The real-node tests are opt-in for now: a machine without caches first builds six Kubernetes
binaries, a Debian rootfs and the server image (see the README's "Real node" paragraph), which
the whole suite should not pay for until CI budgets it. They run when named on the command line
(`pytest tests/node`) or with MLFLOW_STACK_NODE_TESTS=1; otherwise they are reported as skipped
with this reason. Once selected, a node that cannot start fails them, never skips them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.node import KubeNode
from harness.node_ingress import Traefik, start_traefik

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


@pytest.fixture(scope="session")
def traefik(kube_node: KubeNode) -> Iterator[Traefik]:
    """Traefik (Ingress + Gateway API providers) on the session's node, started once and
    stopped (by pid) before the node."""
    controller = start_traefik(kube_node)
    try:
        yield controller
    finally:
        controller.stop()
