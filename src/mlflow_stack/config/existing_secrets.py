"""`kubernetes.existing_secrets`: Secrets the cluster already has (the charts' `existingSecret`).

Each entry names a Secret in the MLflow namespace, and the key of each value in it, that the
platform uses instead of a Secret of its own: one a person created, or External Secrets or
sealed-secrets manage. The platform only refers to such a Secret: it never creates, changes,
prunes or deletes it, and never needs its value from the deployer's environment (where `apply`
itself needs a value, it reads it from the Secret: see kubernetes/sources.py).

The field names avoid the words the loader refuses as inline secrets (`secret_key`,
`password`, ...): these fields hold names, never values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from mlflow_stack.config.types import SecretName

if TYPE_CHECKING:
    from mlflow_stack.config.model import Settings

# Kubernetes' rule for the keys of a Secret's data (IsConfigMapKey).
_KEY_RE = re.compile(r"[-._a-zA-Z0-9]+")
FIELD = "kubernetes.existing_secrets"


def check_secret_key(value: str) -> str:
    if not value or len(value) > 253 or not _KEY_RE.fullmatch(value) or value in (".", ".."):
        raise ValueError(
            f"{value!r} is not a valid Secret key: expected at most 253 letters, digits, '-', "
            "'_' or '.' (not '.' or '..' alone), e.g. DB_PASSWORD or client-secret")
    return value


SecretKeyName = Annotated[str, AfterValidator(check_secret_key)]


class _Ref(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: SecretName = Field(description="The Secret's name in the MLflow namespace.")


class DatabaseSecret(_Ref):
    """The database owner's password (database.user)."""

    password_key: SecretKeyName = "DB_PASSWORD"


class S3Secret(_Ref):
    """The S3 access key pair."""

    access_key_id_key: SecretKeyName = "AWS_ACCESS_KEY_ID"
    secret_access_key_key: SecretKeyName = "AWS_SECRET_ACCESS_KEY"


class OidcClientSecret(_Ref):
    """The Keycloak client's secret (it must be the one Keycloak holds for auth.client_id)."""

    client_secret_key: SecretKeyName = "client-secret"


class SessionKeySecret(_Ref):
    """The SSO layer's Flask SECRET_KEY (never change it: a new key logs every user out)."""

    key: SecretKeyName = "SECRET_KEY"


class ExistingSecrets(BaseModel):
    """Secrets the cluster already has, used instead of the ones apply would create."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    database: DatabaseSecret | None = None
    s3: S3Secret | None = None
    oidc_client: OidcClientSecret | None = None
    session_key: SessionKeySecret | None = None
    pull_secret: SecretName | None = Field(
        None, description="A kubernetes.io/dockerconfigjson Secret for the image (instead of "
        "registry.pull_secret made from HARBOR_ROBOT_TOKEN).")
    tls: SecretName | None = Field(
        None, description="A kubernetes.io/tls Secret the Ingress serves (instead of the copy "
        "of the wildcard certificate in kubernetes.tls_secret).")


@dataclass(frozen=True)
class KeyUse:
    """One value the platform reads from an existing Secret."""

    key: str
    field: str  # the setting naming the key, e.g. kubernetes.existing_secrets.s3.access_key_id_key
    what: str  # what the value is, for messages


@dataclass(frozen=True)
class ExistingSecret:
    """An existing Secret the platform refers to, and the keys it must hold."""

    namespace: str
    name: str
    field: str  # the setting naming the Secret
    type: str  # what Kubernetes type it should have (informative: never checked strictly)
    keys: tuple[KeyUse, ...]

    @property
    def target(self) -> str:
        return f"{self.namespace}/{self.name}"

    def problems(self, data: Mapping[str, Any] | None) -> list[str]:
        """What the Secret lacks, naming it, the key and the setting; [] if nothing. `data`:
        the live Secret's data, None when it does not exist. An empty value counts as
        missing (a pod would start with an empty password)."""
        if data is None:
            return [f"Secret {self.target} does not exist ({self.field})"]
        return [f"Secret {self.target} has no key {use.key!r} ({use.field})"
                for use in self.keys if not data.get(use.key)]


def in_use(settings: Settings) -> list[ExistingSecret]:
    """The existing Secrets this config refers to (only for the backends it enables)."""
    e, ns = settings.kubernetes.existing_secrets, settings.kubernetes.namespace
    used: list[ExistingSecret] = []

    def add(section: str, name: str, type_: str, *keys: tuple[str, str, str]) -> None:
        # A section with its own key settings names the Secret in `.name`; pull_secret and
        # tls are the name themselves (their keys are fixed by the Secret's type).
        field = f"{FIELD}.{section}"
        uses = tuple(KeyUse(key, f"{field}.{attr}" if attr else field, what)
                     for key, attr, what in keys)
        named = f"{field}.name" if any(attr for _, attr, _ in keys) else field
        used.append(ExistingSecret(ns, name, named, type_, uses))

    if e.database and settings.database.backend == "postgresql":
        add("database", e.database.name, "Opaque",
            (e.database.password_key, "password_key", "the database password"))
    if e.s3 and settings.artifacts.backend == "s3":
        add("s3", e.s3.name, "Opaque",
            (e.s3.access_key_id_key, "access_key_id_key", "the S3 access key id"),
            (e.s3.secret_access_key_key, "secret_access_key_key", "the S3 secret key"))
    if e.oidc_client and settings.sso:
        add("oidc_client", e.oidc_client.name, "Opaque",
            (e.oidc_client.client_secret_key, "client_secret_key", "the OIDC client secret"))
    if e.session_key and settings.sso:
        add("session_key", e.session_key.name, "Opaque",
            (e.session_key.key, "key", "the SSO session key"))
    if e.pull_secret and settings.registry.host:
        add("pull_secret", e.pull_secret, "kubernetes.io/dockerconfigjson",
            (".dockerconfigjson", "", "the registry credentials"))
    if e.tls and tls_rendered(settings):
        add("tls", e.tls, "kubernetes.io/tls", ("tls.crt", "", "the certificate"),
            ("tls.key", "", "the certificate's key"))
    return used


def tls_rendered(settings: Settings) -> bool:
    """Whether the Ingress serves a certificate (the conditions render uses)."""
    k = settings.kubernetes
    return bool(settings.public_hostname) and k.route == "ingress" \
        and settings.server.public_scheme == "https"


def pull_secret_name(settings: Settings) -> str:
    """The image pull Secret the pods name."""
    return settings.kubernetes.existing_secrets.pull_secret or settings.registry.pull_secret


def tls_secret_name(settings: Settings) -> str:
    """The Secret the Ingress serves its certificate from."""
    k = settings.kubernetes
    return k.existing_secrets.tls or k.tls_secret
