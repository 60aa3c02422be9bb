"""One resolution step where each command starts: config + environment + what must be read
from Keycloak or the cluster -> the settings every system works from.

Secrets that are not in the environment are found here, once, and nowhere else:
- S3 keys: the environment, else the reference's `seaweedfs-s3-config` Secret
  (artifacts.credentials_secret) when the command works on a cluster.
- Secrets the cluster already has (kubernetes.existing_secrets): the database password, S3 keys
  and OIDC client secret are read from them when the command works on a cluster, and win over
  the environment (the pods use those values).
- OIDC client secret: the environment, else the one Keycloak holds for the client. A client
  that does not exist yet gets a new random secret when the command creates it (`provision`):
  Keycloak's create step gives the client exactly that secret, so every system agrees on it
  from the first step on.

The result is a new Settings (pydantic models are not mutated); resolving it again reads
nothing. The SSO session key is not resolved here: it belongs to where the server keeps its
state (the local state directory, or the Kubernetes Secret the kubernetes system observes).
"""

from __future__ import annotations

import secrets as random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import SecretStr

from mlflow_stack.config.existing_secrets import in_use as existing_in_use
from mlflow_stack.config.model import Settings
from mlflow_stack.errors import ConfigError

if TYPE_CHECKING:
    from mlflow_stack.components.protocol import System

# What a command needs of the OIDC client secret: "create" (plan, apply: a missing client
# gets a new secret), "read" (the client must exist: up, verify), "skip" (uninstall).
ClientSecret = Literal["create", "read", "skip"]
# How a system's client is had: by default a new connection; `deploy` passes its run's own, so
# the systems reuse the Keycloak session and the cluster client opened here.
Connect = Callable[["System", Settings], Any]


def _new_connection(system: System, settings: Settings) -> Any:
    return system.connect(settings)


def resolve(settings: Settings, *, cluster: bool, client_secret: ClientSecret,
            connect: Connect | None = None) -> Settings:
    """`cluster`: the command works on Kubernetes (S3 keys may come from a Secret there).
    `connect` gives a system's client (default: a new connection each time)."""
    connect = connect or _new_connection
    update: dict[str, SecretStr] = {}
    a, s = settings.artifacts, settings.secrets
    if cluster and existing_in_use(settings):
        from mlflow_stack.components import kubernetes
        from mlflow_stack.kubernetes import sources

        # Values the pods read from Secrets the cluster already has: apply's own steps use the
        # same ones (see sources.existing_secret_values).
        update.update(sources.existing_secret_values(connect(kubernetes.SYSTEM, settings),
                                                     settings))
    if cluster and a.backend == "s3" and a.credentials_secret and (
            s.s3_access_key_id is None or s.s3_secret_access_key is None) \
            and "s3_access_key_id" not in update:
        from mlflow_stack.components import kubernetes
        from mlflow_stack.kubernetes import sources

        key_id, key = sources.s3_keys_from_cluster(connect(kubernetes.SYSTEM, settings),
                                                   settings)
        update["s3_access_key_id"] = s.s3_access_key_id or key_id
        update["s3_secret_access_key"] = s.s3_secret_access_key or key
    if settings.sso and s.oidc_client_secret is None and client_secret != "skip" \
            and "oidc_client_secret" not in update:
        update["oidc_client_secret"] = _oidc_client_secret(
            settings, provision=client_secret == "create", connect=connect)
    if not update:
        return settings
    return settings.model_copy(update={"secrets": s.model_copy(update=update)})


def _oidc_client_secret(settings: Settings, *, provision: bool, connect: Connect) -> SecretStr:
    # To create the client, apply needs the admin login anyway: connect's error says so.
    if settings.secrets.effective_keycloak_admin_password is None and not provision:
        raise ConfigError(
            f"the OIDC client secret of {settings.auth.client_id!r} is not set",
            hint="Set MLFLOW_STACK_OIDC_CLIENT_SECRET, or KEYCLOAK_ADMIN_PASSWORD / "
                 "ADMIN_PASSWORD so it can be read from Keycloak.",
        )
    from mlflow_stack.components import keycloak  # python-keycloak only when needed

    session = connect(keycloak.SYSTEM, settings)
    value = keycloak.read_client_secret(session, settings)
    if value is not None:
        return value
    if not provision:
        raise keycloak.ClientNotProvisioned(
            f"client {settings.auth.client_id!r} does not exist in realm "
            f"{settings.auth.realm!r} at {session.url}", hint="Run `mlflow-stack apply` first.")
    return SecretStr(random.token_urlsafe(32))
