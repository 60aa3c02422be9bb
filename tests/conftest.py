"""Session-wide real services. The logic lives in tests/harness; these only scope and stop them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, TypeVar

import pytest

from harness import interrupts, time_report
from harness.browser import launch_chromium
from harness.keycloak import KeycloakServer, default_cache_dir, ensure_keycloak_dist, start_keycloak
from harness.kubeapi import KubeAPIServer, start_kube_apiserver
from harness.node import KubeNode, start_node
from harness.postgres import PostgresServer, start_postgres
from harness.s3 import S3Server, start_s3
from harness.tls import SslCalls, count_ssl_calls


def pytest_configure(config: pytest.Config) -> None:
    interrupts.stop_on_sigterm()  # CI's SIGTERM stops the run with teardown, not without
    time_report.pytest_configure(config)  # where the run's time went, per module, at the end


class _Stoppable(Protocol):
    def stop(self) -> None: ...


S = TypeVar("S", bound=_Stoppable)


def _stopped_at_the_end(server: S) -> Iterator[S]:
    """Yield server to the fixture's users, then stop it (also when a test failed)."""
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session", autouse=True)
def isolated_user_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """No test touches the user's own platform: the default state directory, the token cache
    and the dotenv file the CLI would read point into a temp dir for the whole session (and
    for every command a test starts). Tests pass --state-dir and --port explicitly anyway."""
    home = tmp_path_factory.mktemp("user-home")
    isolated = {
        "MLFLOW_STACK_HOME": str(home / "mlflow-stack"),
        "MLFLOW_KEYCLOAK_TOKEN_CACHE": str(home / "keycloak-tokens.json"),
        "MLFLOW_STACK_ENV_FILE": str(home / "no.env"),
    }
    saved = {name: os.environ.get(name) for name in isolated}
    os.environ.update(isolated)
    try:
        yield home
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A PostgreSQL superuser login (password auth over TCP) on 127.0.0.1, once per session."""
    yield from _stopped_at_the_end(start_postgres(tmp_path_factory.mktemp("postgres")))


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """An S3 endpoint (JuiceFS gateway) whose credentials may create buckets, once per session."""
    yield from _stopped_at_the_end(start_s3(tmp_path_factory.mktemp("s3")))


@pytest.fixture(scope="session")
def keycloak_dist() -> Path:
    """The Keycloak distribution, fetched by package name once and cached."""
    return ensure_keycloak_dist(default_cache_dir())


@pytest.fixture(scope="session")
def keycloak(
    tmp_path_factory: pytest.TempPathFactory, keycloak_dist: Path
) -> Iterator[KeycloakServer]:
    """A real Keycloak (start-dev) on 127.0.0.1, once per session (20-45 s to start)."""
    server = start_keycloak(tmp_path_factory.mktemp("keycloak"), keycloak_dist)
    yield from _stopped_at_the_end(server)
    assert server.process.poll() is not None, "Keycloak still running after stop()"


@pytest.fixture(scope="session")
def kube_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeAPIServer]:
    """A real kube-apiserver + etcd (no kubelet, no controllers) on 127.0.0.1, once per session."""
    yield from _stopped_at_the_end(start_kube_apiserver(tmp_path_factory.mktemp("kubeapi")))


@pytest.fixture(scope="session")
def kube_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeNode]:
    """A real single-node Kubernetes (kubelet, containerd, controllers) in its own network
    namespace, once per session; builds its binaries and images first when not cached."""
    yield from _stopped_at_the_end(start_node(tmp_path_factory.mktemp("kube-node")))


@pytest.fixture(scope="session")
def chromium() -> Iterator[object]:
    """Debian Chromium under Playwright, shared by all browser tests (one sync loop at a time)."""
    with launch_chromium() as browser:
        yield browser


@pytest.fixture
def ssl_calls(monkeypatch: pytest.MonkeyPatch) -> SslCalls:
    """What this test's code asks of the stdlib's SSLContext (ALPN lists set, client wraps)."""
    return count_ssl_calls(monkeypatch)
