"""What the client tests share: the realm/server handle, clean user environments, the CLI runner.

The fixtures that create them are in tests/client/conftest.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from .keycloak import KeycloakServer
from .sso import SsoRealm, SsoServer

REALM = f"client-{uuid.uuid4().hex[:8]}"
LIFESPAN = 30  # seconds: the `mlflow` client's access tokens
CLI_CLIENT = "mlflow-cli"
CI_CLIENT = "ci-runner"
# The real entry point, as users run it.
CLI = [sys.executable, "-m", "mlflow_stack.cli.main"]


@dataclass
class ClientSite:
    keycloak: KeycloakServer
    realm: SsoRealm
    server: SsoServer
    ci_secret: str

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def token_url(self) -> str:
        return f"{self.realm.issuer}/protocol/openid-connect/token"

    @property
    def token_path(self) -> str:
        return rf"^/realms/{self.realm.realm}/protocol/openid-connect/token$"

    def env(self, cache: Path, who: str | None = "alice", **extra: str) -> dict[str, str]:
        """A clean user environment: the reference's variables for `who` (password grant)."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("MLFLOW_", "AWS_", "ADMIN_PASSWORD", "KEYCLOAK_"))}
        env.update({
            "MLFLOW_TRACKING_URI": self.url,
            "MLFLOW_TRACKING_AUTH": "keycloak",
            "MLFLOW_KEYCLOAK_TOKEN_CACHE": str(cache),
        })
        if who is not None:
            env.update({
                "MLFLOW_KEYCLOAK_TOKEN_URL": self.token_url,
                "MLFLOW_KEYCLOAK_CLIENT_ID": self.realm.client_id,
                "MLFLOW_CLIENT_SECRET": self.realm.client_secret,
                "MLFLOW_AUTH_USERNAME": who,
                "MLFLOW_AUTH_PASSWORD": self.realm.users[who].password,
            })
        env.update(extra)
        return env

    def server_log_401s(self) -> int:
        text = self.server.state.log_file.read_text(errors="replace")
        return sum(1 for line in text.splitlines() if '" 401' in line)


def run_cli(args: list[str], env: dict[str, str],
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)
