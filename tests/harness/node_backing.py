"""The reference's backing services on the real node, under the reference's names: PostgreSQL
(`postgresql-official` in `postgres`) and Keycloak (`keycloak` in `keycloak`).

They run as processes inside the node's network namespace (not as pods: their images would have
to be built here, and the platform only needs them at their in-cluster names), listening on the
node IP, each behind a selector-less Service whose EndpointSlice points at that IP: pods, and
processes run with `ip netns exec`, reach them by their cluster DNS names exactly as in the
reference cluster. Test code on the host reaches them through a loopback bridge (`reach_*`), and
a test can stop one to inject a fault. Stopped with the node (by pid).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from .keycloak import KeycloakServer, start_keycloak
from .node import NODE_IP, KubeNode
from .node_services import expose
from .postgres import PostgresServer, start_postgres
from .procs import Placement

POSTGRES_NAMESPACE = "postgres"
POSTGRES_SERVICE = "postgresql-official"
POSTGRES_PORT = 5432
KEYCLOAK_NAMESPACE = "keycloak"
KEYCLOAK_SERVICE = "keycloak"
KEYCLOAK_PORT = 8080


def service_host(name: str, namespace: str) -> str:
    return f"{name}.{namespace}.svc.cluster.local"


def _placement(node: KubeNode, name: str, port: int) -> Placement:
    reach_port = node.bridge(f"{name}-bridge", port)

    def spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        return node.spawn(name, argv, env=env, log=log).popen

    return Placement(spawn=spawn, host=NODE_IP, port=port, reach_host="127.0.0.1",
                     reach_port=reach_port)


@dataclass
class NodePostgres:
    server: PostgresServer  # host/port: the loopback bridge
    host: str = service_host(POSTGRES_SERVICE, POSTGRES_NAMESPACE)
    port: int = POSTGRES_PORT


def start_node_postgres(node: KubeNode, base_dir: Path) -> NodePostgres:
    server = start_postgres(base_dir, _placement(node, "postgres", POSTGRES_PORT))
    # Its own stop: a fast shutdown (the node's would wait 20 s for clients) and its data dir.
    node.on_stop("postgres", server.stop)
    expose(node, POSTGRES_NAMESPACE, POSTGRES_SERVICE, "tcp-postgresql", POSTGRES_PORT)
    return NodePostgres(server)


@dataclass
class NodeKeycloak:
    server: KeycloakServer  # url: the loopback bridge (admin calls from the host)
    url: str = f"http://{service_host(KEYCLOAK_SERVICE, KEYCLOAK_NAMESPACE)}:{KEYCLOAK_PORT}"


def start_node_keycloak(node: KubeNode, base_dir: Path, dist: Path) -> NodeKeycloak:
    server = start_keycloak(base_dir, dist, placement=_placement(node, "keycloak", KEYCLOAK_PORT))
    node.on_stop("keycloak", server.stop)
    expose(node, KEYCLOAK_NAMESPACE, KEYCLOAK_SERVICE, "http", KEYCLOAK_PORT)
    return NodeKeycloak(server)
