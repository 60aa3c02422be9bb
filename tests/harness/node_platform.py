"""The reference deployment on the real node, made the way a platform engineer makes it:
`mlflow-stack apply` with an inventory like the reference's, run from a machine on the cluster
network (`ip netns exec`: cluster names resolve through the node's CoreDNS).

What the reference cluster already has is set up first: PostgreSQL, SeaweedFS and Keycloak under
their reference names (harness.node_backing, harness.node_services), the realm and its admin
user, the wildcard certificate's Secret in `default`, and volumes for the two storage classes.
`Deployed` then lets tests act as the engineer (`cli`), as a data scientist (`user_env`, `run`)
and as the cluster's admin (`get`, `patch`).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
import yaml
from psycopg import sql

from mlflow_stack.config.loader import load_config
from mlflow_stack.manifests.workload import image

from .keycloak import admin_client, create_realm, create_user
from .node import KubeNode
from .node_backing import (
    KEYCLOAK_NAMESPACE,
    KEYCLOAK_PORT,
    KEYCLOAK_SERVICE,
    NodeKeycloak,
    NodePostgres,
    start_node_keycloak,
    start_node_postgres,
)
from .node_ingress import example_tls, tls_secret
from .node_services import SeaweedFS

CLI = [sys.executable, "-m", "mlflow_stack.cli.main"]
REALM = "thinkube"
REALM_ADMIN = "tkadmin"
NAMESPACE = "mlflow"
DOMAIN = "example.test"
HOSTNAME = f"mlflow.{DOMAIN}"
SERVICE_URL = f"http://mlflow.{NAMESPACE}.svc.cluster.local:5000"
PUBLIC_URL = f"https://{HOSTNAME}"  # through the ingress controller (Traefik)
# The deployer's secrets: never passed on to a data scientist's process.
DEPLOYER_SECRETS = ("ADMIN_PASSWORD", "KEYCLOAK_ADMIN_PASSWORD", "HARBOR_ROBOT_TOKEN")

T = TypeVar("T")


@dataclass
class User:
    name: str
    password: str = field(repr=False)
    email: str


@dataclass
class Deployed:
    node: KubeNode
    postgres: NodePostgres
    keycloak: NodeKeycloak
    s3: SeaweedFS
    home: Path
    inventory: Path
    env: dict[str, str] = field(repr=False)
    admin_password: str = field(repr=False)
    realm_admin: User
    outputs: list[subprocess.CompletedProcess[str]] = field(default_factory=list, repr=False)
    first_apply_seconds: float = 0.0
    config: Path = Path()  # the config applied last (tests that change it set it)

    # -- as the platform engineer ----------------------------------------------------------

    def cli(self, *args: str, timeout: float = 900.0,
            **extra: str) -> subprocess.CompletedProcess[str]:
        return self.node.run([*CLI, *args], {**self.env, **extra}, timeout=timeout,
                             cwd=self.home)

    def native_config(self, name: str, **changes: Any) -> Path:
        """The inventory as a native config with changes ({"kubernetes.replicas": 2}): what a
        user switches to for the settings the reference's variables do not cover."""
        settings = load_config(self.inventory, require_secrets=False).settings
        data = settings.model_dump(mode="json", exclude={"secrets"}, exclude_defaults=True)
        for dotted, value in changes.items():
            node = data
            *parents, leaf = dotted.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        path = self.home / name
        path.write_text(yaml.safe_dump(data))
        return path

    # -- as a data scientist ---------------------------------------------------------------

    def client_secret(self) -> str:
        admin = admin_client(self.keycloak.server, REALM)
        client_uuid = admin.get_client_id("mlflow")
        assert client_uuid is not None, "apply did not create the mlflow client"
        return str(admin.get_client_secrets(client_uuid)["value"])

    def token_url(self) -> str:
        return f"{self.keycloak.url}/realms/{REALM}/protocol/openid-connect/token"

    def user_env(self, user: User | None = None, url: str = PUBLIC_URL) -> dict[str, str]:
        """A data scientist's environment with the `keycloak` auth provider: the tracking URI,
        the token URL and client, and their own login; no S3 keys, no database password."""
        user = user or self.realm_admin
        base = {k: v for k, v in self.env.items() if k not in DEPLOYER_SECRETS}
        return {**base, "MLFLOW_TRACKING_URI": url, "MLFLOW_TRACKING_AUTH": "keycloak",
                "MLFLOW_KEYCLOAK_TOKEN_URL": self.token_url(),
                "MLFLOW_KEYCLOAK_CLIENT_ID": "mlflow", "MLFLOW_CLIENT_SECRET": self.client_secret(),
                "MLFLOW_AUTH_USERNAME": user.name, "MLFLOW_AUTH_PASSWORD": user.password}

    def run_python(self, code_or_path: str, *args: str, env: dict[str, str],
                   timeout: float = 600.0) -> dict[str, Any]:
        """Run a Python script (a path, or code) on the cluster network; its `RESULT {json}`
        line, asserting it succeeded."""
        argv = [sys.executable, code_or_path] if code_or_path.endswith(".py") \
            else [sys.executable, "-c", code_or_path]
        result = self.node.run([*argv, *args], env, timeout=timeout, cwd=self.home)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        line = next(ln for ln in result.stdout.splitlines() if ln.startswith("RESULT "))
        return dict(json.loads(line.removeprefix("RESULT ")))

    def start_python(self, code: str, *args: str, env: dict[str, str],
                     log: Path) -> subprocess.Popen[bytes]:
        """Start a Python snippet on the cluster network in the background (a client under
        load while the test does something to the platform)."""
        with log.open("wb") as out:
            return subprocess.Popen(["ip", "netns", "exec", self.node.name, sys.executable,
                                     "-c", code, *args], env=env, cwd=self.home, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def new_user(self, name: str, roles: tuple[str, ...] = ("mlflow-user",)) -> User:
        user = User(name, secrets.token_urlsafe(12), f"{name}@{DOMAIN}")
        user_id = create_user(self.keycloak.server, REALM, user.name, user.password, user.email)
        admin = admin_client(self.keycloak.server, REALM)
        admin.assign_realm_roles(user_id, [admin.get_realm_role(r) for r in roles])
        return user

    def token(self, user: User) -> str:
        """A fresh access token for user (password grant on the mlflow client). Its issuer is
        the in-cluster Keycloak URL the server trusts: the request goes to the Service's IP
        with that URL's Host (this process resolves names with the host's resolver)."""
        secret = self.client_secret()
        service = self.get(f"/api/v1/namespaces/{KEYCLOAK_NAMESPACE}/services/{KEYCLOAK_SERVICE}")
        host = self.keycloak.url.removeprefix("http://")
        url = self.token_url().replace(host, f"{service['spec']['clusterIP']}:{KEYCLOAK_PORT}")

        def fetch() -> str:
            with httpx.Client(trust_env=False, timeout=30, headers={"Host": host}) as http:
                response = http.post(url, data={
                    "grant_type": "password", "client_id": "mlflow", "client_secret": secret,
                    "username": user.name, "password": user.password, "scope": "openid"})
                response.raise_for_status()
                return str(response.json()["access_token"])
        return self.node.in_netns(fetch)

    # -- as the cluster's admin ------------------------------------------------------------

    def get(self, path: str) -> dict[str, Any]:
        with self.node.api.admin_http() as http:
            response = http.get(path)
            response.raise_for_status()
            body: dict[str, Any] = response.json()
            return body

    def patch_deployment(self, patch: dict[str, Any]) -> None:
        with self.node.api.admin_http() as http:
            response = http.patch(
                f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/mlflow", json=patch,
                headers={"Content-Type": "application/strategic-merge-patch+json"})
            assert response.status_code == 200, response.text

    def server_pods(self) -> list[dict[str, Any]]:
        return list(self.get(f"/api/v1/namespaces/{NAMESPACE}/pods?labelSelector=app%3Dmlflow")
                    ["items"])

    def ready_pods(self) -> list[dict[str, Any]]:
        return [p for p in self.server_pods() if not p["metadata"].get("deletionTimestamp")
                and {c["type"]: c["status"] for c in p["status"].get("conditions", [])}
                .get("Ready") == "True"]

    def bucket_keys(self, bucket: str) -> list[str]:
        def keys(client: Any) -> list[str]:
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            return [o["Key"] for page in pages for o in page.get("Contents", [])]
        return self.s3.s3(keys)

    def bucket_names(self) -> set[str]:
        return self.s3.s3(lambda client: {b["Name"] for b in client.list_buckets()["Buckets"]})


def wait_for(check: Callable[[], T], what: str, timeout: float = 180.0,
             interval: float = 2.0) -> T:
    """Poll check until it returns something truthy; AssertionError naming `what` after
    timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {value!r})")
        time.sleep(interval)


def _base_env(home: Path) -> dict[str, str]:
    keep = ("PATH", "LANG", "LC_ALL", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if k.startswith(keep)}
    return {**env, "HOME": str(home), "COLUMNS": "200",
            "MLFLOW_STACK_HOME": str(home / "state"),
            "MLFLOW_STACK_ENV_FILE": str(home / "no.env")}


def deploy_reference(node: KubeNode, s3: SeaweedFS, base: Path, keycloak_dist: Path) -> Deployed:
    """Everything the reference cluster has before MLflow, then `apply` twice (from nothing,
    then again); the first run must succeed (AssertionError with its output otherwise)."""
    home = base / "home"
    home.mkdir(parents=True)
    postgres = start_node_postgres(node, base / "postgres")
    admin_password = secrets.token_urlsafe(18)
    # The reference's shared admin: the PostgreSQL role the inventory's mlflow_db_user names.
    with psycopg.connect(postgres.server.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE admin LOGIN SUPERUSER PASSWORD {}").format(
            sql.Literal(admin_password)))
    keycloak = start_node_keycloak(node, base / "keycloak", keycloak_dist)
    create_realm(keycloak.server, REALM)
    realm_admin = User(REALM_ADMIN, secrets.token_urlsafe(12), f"{REALM_ADMIN}@{DOMAIN}")
    create_user(keycloak.server, REALM, realm_admin.name, realm_admin.password,
                realm_admin.email)
    # The wildcard certificate (signed by a test CA the users' machines trust) in `default`.
    tls = example_tls(DOMAIN, validity=dt.timedelta(days=90))
    tls_secret(node, "default", f"{DOMAIN.replace('.', '-')}-tls", tls)
    ca_file = home / "ca.pem"
    ca_file.write_bytes(tls.ca_pem)
    node.hostpath_volume("platform-storage-pv", "k8s-hostpath", "1Gi")
    node.hostpath_volume("platform-models-pv", "juicefs-rwx", "500Gi",
                         access_modes=("ReadWriteMany",))

    inventory = home / "inventory.yaml"
    inventory.write_text(yaml.safe_dump({"all": {"vars": {
        "mlflow_namespace": NAMESPACE, "mlflow_hostname": HOSTNAME, "mlflow_capacity": "1Gi",
        "mlflow_db_name": "mlflow", "mlflow_db_user": "admin",
        "mlflow_artifacts_bucket": "mlflow", "mlflow_client_id": "mlflow",
        "storage_class_name": "k8s-hostpath",
        "postgres_namespace": "postgres", "postgres_release_name": "postgresql-official",
        "postgres_hostname": postgres.host,
        "seaweedfs_namespace": "seaweedfs", "seaweedfs_s3_secret": "seaweedfs-s3-config",
        "seaweedfs_s3_hostname": s3.endpoint,
        "keycloak_url": keycloak.url, "keycloak_realm": REALM,
        "admin_username": keycloak.server.admin_user, "auth_realm_username": REALM_ADMIN,
        "harbor_registry": "localhost", "harbor_project": "library",
        "harbor_robot_name": "thinkube-deployer", "domain_name": DOMAIN,
        "kubeconfig": str(node.base_dir / "inner.kubeconfig"),
        "primary_ingress_class": "traefik",
    }}}))
    # The registry the inventory names serves the image the node already holds.
    node.tag_image("server", image(load_config(inventory, require_secrets=False).settings))
    env = {**_base_env(home), "SSL_CERT_FILE": str(ca_file), "REQUESTS_CA_BUNDLE": str(ca_file),
           "ADMIN_PASSWORD": admin_password,
           "KEYCLOAK_ADMIN_PASSWORD": keycloak.server.admin_password,
           "HARBOR_ROBOT_TOKEN": secrets.token_urlsafe(12)}
    deployed = Deployed(node, postgres, keycloak, s3, home, inventory, env, admin_password,
                        realm_admin, config=inventory)
    started = time.monotonic()
    first = deployed.cli("apply", "-c", str(inventory))
    deployed.first_apply_seconds = time.monotonic() - started
    assert first.returncode == 0, first.stdout + first.stderr
    deployed.outputs.append(first)
    deployed.outputs.append(deployed.cli("apply", "-c", str(inventory)))
    return deployed
