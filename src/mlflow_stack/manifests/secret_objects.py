"""Secret objects: what each holds, and where its values come from.

Values are written only when asked (`include_secrets`) and known; otherwise the manifests refer to
the Secret by name and the render result says how to provide it.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from mlflow_stack.config.model import Settings
from mlflow_stack.config.secrets import env_names
from mlflow_stack.launch.spec import (
    DB_SECRET,
    OIDC_SECRET,
    S3_SECRET,
    SECRET_KEY_SECRET,
    ServerLaunch,
)
from mlflow_stack.manifests import labels as lb

if TYPE_CHECKING:
    from mlflow_stack.config.existing_secrets import ExistingSecret

# A value: plain text (not secret, e.g. DB_HOST), a secret, or None (not known here).
Value = str | SecretStr | None

SECRET_KEY_HOW = (
    "generated once and never changed (a new key logs every user out): `mlflow-stack apply` "
    "keeps the existing one; `render --include-secrets` reuses the one in the output directory"
)


@dataclass
class SecretSpec:
    name: str
    namespace: str
    component: str
    how: str  # where the values come from, for a user who provides the Secret
    type: str = "Opaque"
    values: dict[str, Value] = field(default_factory=dict)

    @property
    def missing(self) -> list[str]:
        # An empty value (e.g. ADMIN_PASSWORD= in a dotenv file) is never a usable secret.
        return [k for k, v in self.values.items() if not _plain(v)]


@dataclass(frozen=True)
class SecretNeeded:
    """A Secret the manifests refer to but that was not rendered."""

    namespace: str
    name: str
    type: str
    keys: tuple[str, ...]
    missing: tuple[str, ...]  # keys whose values were not known
    how: str
    # Set for a Secret the cluster already has (kubernetes.existing_secrets): referred to only,
    # never written, pruned or uninstalled.
    existing: ExistingSecret | None = None


def _plain(value: Value) -> str | None:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return value


def secret_object(settings: Settings, spec: SecretSpec) -> dict[str, Any]:
    """The Secret with every value base64-encoded in `data` (server-side apply compares `data`;
    `stringData` is write-only and would show as a change on every plan)."""
    data = {}
    for key, value in spec.values.items():
        text = _plain(value)
        if text is None:
            raise ValueError(f"secret {spec.name}: value of {key} is unknown")
        data[key] = base64.b64encode(text.encode()).decode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": lb.metadata(settings, spec.name, spec.component, namespace=spec.namespace),
        "type": spec.type,
        "data": data,
    }


def needed(spec: SecretSpec) -> SecretNeeded:
    return SecretNeeded(spec.namespace, spec.name, spec.type, tuple(spec.values),
                        tuple(spec.missing), spec.how)


def server_secret_specs(
    settings: Settings, launch: ServerLaunch, secret_key: SecretStr | None
) -> list[SecretSpec]:
    """Every Secret the server's environment refers to, plus the reference's extra keys."""
    s, ns = settings, settings.kubernetes.namespace
    specs: dict[str, SecretSpec] = {}

    def spec(name: str, how: str) -> SecretSpec:
        return specs.setdefault(name, SecretSpec(name, ns, "server", how))

    if s.database.backend == "postgresql":
        db = spec(DB_SECRET, f"database password: {env_names('db_password')} or "
                  f"{env_names('admin_password')}")
        # The reference's keys; other tools read the connection details from this Secret.
        db.values.update({"DB_HOST": s.database.host, "DB_PORT": str(s.database.port),
                          "DB_NAME": s.database.name, "DB_USER": s.database.user,
                          "DB_PASSWORD": s.secrets.effective_db_password})
    if s.artifacts.backend == "s3":
        s3 = spec(S3_SECRET, f"S3 keys: {env_names('s3_access_key_id')} and "
                  f"{env_names('s3_secret_access_key')}")
        s3.values.update({"AWS_ACCESS_KEY_ID": s.secrets.s3_access_key_id,
                          "AWS_SECRET_ACCESS_KEY": s.secrets.s3_secret_access_key})
        if s.artifacts.endpoint_url:
            s3.values["S3_ENDPOINT_URL"] = s.artifacts.endpoint_url
    if s.sso:
        oidc = spec(OIDC_SECRET, f"the Keycloak client's secret: "
                    f"{env_names('oidc_client_secret')} (apply reads it from Keycloak)")
        oidc.values.update({"client-id": s.auth.client_id,
                            "client-secret": s.secrets.oidc_client_secret})
        spec(SECRET_KEY_SECRET, SECRET_KEY_HOW).values["SECRET_KEY"] = secret_key
    # Whatever else the server's environment refers to (the builder is the authority).
    for var in launch.env:
        ref = var.secret
        if ref is None:
            continue
        target = spec(ref.secret_name, f"key {ref.key} referenced by the server's environment")
        value: Value = ref.value
        if value is None and ref.key == "SECRET_KEY":
            value = secret_key
        if target.values.get(ref.key) is None:
            target.values[ref.key] = value
    return list(specs.values())


def pull_secret_spec(settings: Settings) -> SecretSpec | None:
    r = settings.registry
    if not r.host or settings.kubernetes.existing_secrets.pull_secret:
        return None
    user = f"robot${r.robot_name}"
    token = settings.secrets.harbor_robot_token
    config: SecretStr | None = None
    if token is not None:
        secret = token.get_secret_value()
        auth = base64.b64encode(f"{user}:{secret}".encode()).decode()
        config = SecretStr(json.dumps({"auths": {r.host: {
            "username": user, "password": secret, "auth": auth}}}))
    return SecretSpec(
        r.pull_secret, settings.kubernetes.namespace, "server",
        f"registry robot {user}: token from {env_names('harbor_robot_token')} (env or ~/.env)",
        type="kubernetes.io/dockerconfigjson", values={".dockerconfigjson": config},
    )


def tls_secret_spec(settings: Settings) -> SecretSpec:
    """Never rendered with values: the certificate lives in the cluster, not in the settings."""
    k = settings.kubernetes
    source = k.tls_source_secret or (
        f"{settings.domain.replace('.', '-')}-tls" if settings.domain else "<wildcard-tls>")
    return SecretSpec(
        k.tls_secret, k.namespace, "server",
        f"a copy of the wildcard certificate Secret {source} from namespace "
        f"{k.tls_source_namespace} (`apply` copies it)",
        type="kubernetes.io/tls", values={"tls.crt": None, "tls.key": None},
    )
