"""Where Secret values come from when applying to a cluster (render uses the settings alone).

- SECRET_KEY: MLFLOW_STACK_SECRET_KEY, else the one in the existing Secret, else a new one; so
  it is created once and never regenerated (a new key logs every user out).
- OIDC client secret and S3 keys: resolved before any system runs (mlflow_stack.resolve); the
  S3 keys may come from the reference's `seaweedfs-s3-config` Secret, read here.
- TLS: copied from kubernetes.tls_source_namespace / the wildcard certificate's Secret.
Values are returned as SecretStr and only ever written into Secret objects.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from lightkube.resources.core_v1 import Namespace, Secret
from pydantic import SecretStr

from mlflow_stack.config.model import Settings
from mlflow_stack.errors import ConfigError
from mlflow_stack.kubernetes.client import Kube, get_or_none
from mlflow_stack.launch.spec import SECRET_KEY_SECRET

# Key names the S3 credentials Secret may use (the reference reads access_key / secret_key).
_S3_KEYS = (("access_key", "secret_key"), ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
            ("accessKey", "secretKey"))


def read_secret(kube: Kube, namespace: str, name: str) -> dict[str, str] | None:
    """The decoded data of a Secret, or None when it (or its namespace) does not exist."""
    secret = get_or_none(kube, Secret, name, namespace)
    if secret is None:
        return None
    result = {}
    for key, value in (secret.data or {}).items():
        try:
            result[key] = base64.b64decode(value).decode()
        except (binascii.Error, UnicodeDecodeError):
            continue  # binary values are never ours to reuse
    return result


def namespace_exists(kube: Kube, name: str) -> bool:
    return get_or_none(kube, Namespace, name) is not None


def existing_secret_key(kube: Kube, settings: Settings) -> SecretStr | None:
    data = read_secret(kube, settings.kubernetes.namespace, SECRET_KEY_SECRET)
    value = (data or {}).get("SECRET_KEY")
    return SecretStr(value) if value else None


class SecretValueMissing(ConfigError):
    """A value apply needs is not in the Secret the config names on the cluster (doctor
    reports this as a finding; other commands stop on it)."""


class S3KeysNotFound(SecretValueMissing):
    """The S3 keys are in neither the environment nor the credentials Secret on the cluster."""


# Secrets fields apply's own steps use, by the kubernetes.existing_secrets section and key
# setting holding them: the database owner's password (the role, the admin login when no
# other is set), the S3 keys (the bucket), the OIDC client secret (a new Keycloak client gets
# it). The session key, pull secret and certificate are only ever used by the pods.
_APPLY_READS = {
    "database": (("password_key", "db_password"),),
    "s3": (("access_key_id_key", "s3_access_key_id"),
           ("secret_access_key_key", "s3_secret_access_key")),
    "oidc_client": (("client_secret_key", "oidc_client_secret"),),
}


def existing_secret_values(kube: Kube, settings: Settings) -> dict[str, SecretStr]:
    """The values apply needs from the Secrets kubernetes.existing_secrets names, by Secrets
    field. What the pods will use wins over the environment: a different value there would
    make the database role, the bucket check or a new Keycloak client disagree with them.
    Raises SecretValueMissing naming every missing Secret and key (and its setting)."""
    from mlflow_stack.config.existing_secrets import in_use

    values: dict[str, SecretStr] = {}
    problems: list[str] = []
    for existing in in_use(settings):
        section = existing.field.removeprefix("kubernetes.existing_secrets.").split(".")[0]
        reads = dict(_APPLY_READS.get(section, ()))
        if not reads:
            continue
        data = read_secret(kube, existing.namespace, existing.name)
        lacking = existing.problems(data)
        problems += lacking
        if lacking:
            continue
        assert data is not None
        for use in existing.keys:
            values[reads[use.field.rsplit(".", 1)[1]]] = SecretStr(data[use.key])
    if problems:
        raise SecretValueMissing(
            "; ".join(problems),
            hint="mlflow-stack never writes a Secret named in kubernetes.existing_secrets: "
                 "create it with those keys (or fix its ExternalSecret / SealedSecret), or name "
                 "another Secret or key.")
    return values


def s3_keys_from_cluster(kube: Kube, settings: Settings) -> tuple[SecretStr, SecretStr]:
    """(access key id, secret key) from the credentials Secret the config names
    (artifacts.credentials_secret)."""
    a = settings.artifacts
    namespace = a.credentials_namespace or settings.kubernetes.namespace
    data = read_secret(kube, namespace, str(a.credentials_secret))
    if data is None:
        raise S3KeysNotFound(
            f"S3 keys are not in the environment and Secret {namespace}/{a.credentials_secret} "
            "(artifacts.credentials_secret) does not exist",
            hint="Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or fix the Secret's name.")
    for key_id, key_secret in _S3_KEYS:
        if data.get(key_id) and data.get(key_secret):
            return SecretStr(data[key_id]), SecretStr(data[key_secret])
    names = ", ".join(f"{i}/{k}" for i, k in _S3_KEYS)
    raise S3KeysNotFound(f"Secret {namespace}/{a.credentials_secret} holds none of the key pairs "
                         f"{names}",
                         hint="Put the keys into the Secret, or set AWS_ACCESS_KEY_ID and "
                              "AWS_SECRET_ACCESS_KEY.")


def tls_source(settings: Settings) -> tuple[str, str] | None:
    """(namespace, name) of the wildcard certificate Secret to copy, if one is known."""
    k = settings.kubernetes
    name = k.tls_source_secret or (
        f"{settings.domain.replace('.', '-')}-tls" if settings.domain else None)
    return (k.tls_source_namespace, name) if name else None


def tls_values(kube: Kube, settings: Settings) -> dict[str, Any] | None:
    """tls.crt / tls.key of the source certificate, or None when it is not there."""
    source = tls_source(settings)
    if source is None:
        return None
    data = read_secret(kube, *source)
    if not data or not data.get("tls.crt") or not data.get("tls.key"):
        return None
    return {"tls.crt": SecretStr(data["tls.crt"]), "tls.key": SecretStr(data["tls.key"])}
