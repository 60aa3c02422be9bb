"""The one settings tree: everything the reference deployment configures, validated.

Secrets are not part of the YAML: they live in `Settings.secrets`, filled from the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from mlflow_stack import MLFLOW_VERSION, __version__
from mlflow_stack.config.cleanup import GcSettings, check_gc
from mlflow_stack.config.existing_secrets import ExistingSecrets
from mlflow_stack.config.monitoring import MonitoringSettings, check_monitoring
from mlflow_stack.config.permissions import PermissionsSettings
from mlflow_stack.config.pod import (
    AutoscalingSettings,
    CaBundleSettings,
    ObjectMetadata,
    PodSecurityLevel,
    PodSettings,
)
from mlflow_stack.config.secrets import Secrets
from mlflow_stack.config.section import Section
from mlflow_stack.config.types import (
    BucketName,
    ConfigMapName,
    ContainerName,
    DeploymentName,
    GatewayName,
    HelmReleaseName,
    Hostname,
    HttpUrlStr,
    IngressClassName,
    NamespaceName,
    PgIdentifier,
    Port,
    PvcName,
    Quantity,
    SecretName,
    StorageClassName,
    quantity_bytes,
)
from mlflow_stack.config.workspaces import WorkspaceSpec, check_workspaces


class ServerSettings(Section):
    """The MLflow tracking server process (the same command line locally and in the pod)."""

    bind_host: str = Field("127.0.0.1", description="Address the server listens on.")
    port: Port = Field(5000, description="Port the server listens on.")
    hostname: Hostname | None = Field(
        None, description="Public host name (default mlflow.<domain> when a domain is set)."
    )
    public_scheme: Literal["http", "https"] = "https"
    workers: int | None = Field(
        None, ge=1, le=32, description="Worker processes; default chosen from memory_limit."
    )
    memory_limit: Quantity = Field("1Gi", description="Memory budget used to choose workers.")
    # 16Mi: above what MLflow's API accepts in one request anyway — log-batch is refused over
    # 1 MB by MLflow itself, a registry tag value is at most 100 kB, a dataset schema 1 MiB —
    # and above OTLP trace batches (collectors' usual 4 MiB); traces and models the client
    # logs as artifacts are not bounded. Memory: one 50 MB JSON body cost the server ~600 MiB;
    # 16 MiB ones raised a worker by 50-130 MiB here (log-batch with 5 kB params).
    max_request_body: Quantity = Field(
        "16Mi", description="Largest request body of the JSON APIs with SSO (413 above; "
        "artifact uploads are not bounded). At least 64Ki.",
    )

    @model_validator(mode="after")
    def _body_bound_usable(self) -> ServerSettings:
        if quantity_bytes(self.max_request_body) < 64 * 2**10:
            raise ValueError(f"server.max_request_body: {self.max_request_body!r} is too small: "
                             "expected at least 64Ki (ordinary API calls would be refused)")
        return self
    job_execution: bool = Field(
        False, description="MLflow's background job runner (~1.9 GiB and ~7 s of start-up)."
    )
    trusted_proxies: list[str] = Field(
        default_factory=list, description="Proxy addresses whose X-Forwarded-* headers are trusted."
    )
    extra_allowed_hosts: list[str] = Field(default_factory=list)
    prometheus: bool = Field(True, description="Expose /metrics.")
    health_timeout: float = Field(180.0, gt=0, description="Seconds to wait for /health.")
    assistant: bool = Field(
        False, description="MLflow's Assistant, which runs a shell and coding agents on the "
        "server host (with SSO: administrators only).",
    )
    ai_gateway: bool = Field(
        False, description="MLflow's AI Gateway, which stores LLM provider API keys.",
    )
    telemetry: bool = Field(
        False, description="MLflow's usage telemetry (server and UI) to mlflow.org's collector.",
    )
    workspaces: bool = Field(
        False, description="MLflow's workspaces (`--enable-workspaces`): experiments, "
        "registered models and prompts live in one workspace each, chosen per request by the "
        "X-MLFLOW-WORKSPACE header; with SSO, access to a workspace is granted per group "
        "(top-level `workspaces`). Existing objects are in the `default` workspace.",
    )


class DatabaseSettings(Section):
    """Metadata store. `sqlite` keeps it in the state directory (local only)."""

    backend: Literal["sqlite", "postgresql"] = "sqlite"
    host: Hostname | None = None
    port: Port = 5432
    name: PgIdentifier = "mlflow"
    user: PgIdentifier = "admin"
    admin_user: PgIdentifier | None = Field(
        None, description="Role that creates the database and owner; default `user`."
    )
    auth_name: PgIdentifier = Field("mlflow_auth", description="Database of the SSO layer.")
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = (
        "prefer"
    )
    namespace: NamespaceName | None = Field(
        None, description="Namespace of the in-cluster PostgreSQL."
    )
    release_name: HelmReleaseName | None = None


class ArtifactSettings(Section):
    """Artifact store, proxied by the server so clients hold no storage credentials."""

    backend: Literal["local", "s3"] = "local"
    bucket: BucketName = "mlflow"
    prefix: str = Field("artifacts", pattern=r"^[A-Za-z0-9._/-]*$")
    endpoint_url: HttpUrlStr | None = Field(
        None, description="S3 endpoint. Clients send and fetch large artifacts here directly on "
        "URLs the server presigns for it, so it must be reachable from clients too."
    )
    region: str = "us-east-1"
    verify_tls: bool = True
    ca_bundle: Path | None = None
    presigned_url_ttl: int = Field(
        3600, ge=60, le=7 * 24 * 3600,
        description="Seconds a presigned download URL stays valid (MLflow: 300; its upload URLs "
        "always last 3600).",
    )
    models_dir: Path | None = Field(
        None, description="Shared models folder (the reference's JuiceFS volume) to mount/create."
    )
    credentials_secret: SecretName | None = Field(
        None, description="Kubernetes Secret holding the S3 keys (reference: seaweedfs-s3-config)."
    )
    credentials_namespace: NamespaceName | None = None

    @property
    def destination(self) -> str:
        prefix = self.prefix.strip("/")
        return f"s3://{self.bucket}/{prefix}" if prefix else f"s3://{self.bucket}"


class AuthSettings(Section):
    """Single sign-on. `keycloak` runs the server with mlflow-oidc-auth against the realm."""

    provider: Literal["none", "keycloak"] = "none"
    keycloak_url: HttpUrlStr | None = None
    realm: str = Field("thinkube", min_length=1)
    client_id: str = Field("mlflow", min_length=1)
    cli_client_id: str | None = Field(
        "mlflow-cli", min_length=1,
        description="Public client apply creates for `mlflow-stack login` (PKCE browser flow "
        "and device grant on http://127.0.0.1/*); null: don't create one.",
    )
    admin_username: str = "admin"
    admin_realm: str = "master"
    admin_role: str = "mlflow-admin"
    user_role: str = "mlflow-user"
    realm_admin_users: list[str] = Field(
        default_factory=list, description="Realm users granted the admin role."
    )
    display_name: str = "Login with Keycloak"
    scope: str = "openid profile email"
    access_token_lifespan: int = Field(3600, ge=60)
    groups_attribute: str = "realm_access.roles"
    include_client_roles: bool = False
    group_plugin: str = Field(
        "mlflow_keycloak_groups", pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$",
        description="Module mlflow-oidc-auth loads to map token roles to groups.",
    )
    default_permission: Literal["NO_PERMISSIONS", "READ", "USE", "EDIT", "MANAGE"] = Field(
        "READ", description="What a signed-in user may do with resources nobody granted them "
        "(creators get MANAGE on what they create).",
    )
    app_name: str = Field(
        "mlflow-stack-sso", description="mlflow.app entry point: mlflow-stack-sso (oidc-auth "
        "plus role re-sync and bounded JWKS refresh) or oidc-auth (plain mlflow-oidc-auth).",
    )
    automatic_login_redirect: bool = True
    verify_tls: bool = True
    ca_bundle: Path | None = None
    access_tokens: bool = Field(
        False, description="Let users mint mlflow-oidc-auth's long-lived access tokens (HTTP "
        "Basic). Each use is then checked against Keycloak (user exists, is enabled, holds the "
        "role) at most `revocation_seconds` old; apply gives the server's client a read-only "
        "service account for that. Off: minting and Basic auth are refused.",
    )
    revocation_seconds: int = Field(
        30, ge=1, le=60, description="How stale Keycloak's answer about an access-token user "
        "may be (per server process) before it is asked again.",
    )
    audit_log: bool = Field(
        True, description="The audit trail: sign-ins, refused requests, permission and user "
        "changes, deletions, as JSON lines (a file beside the server log locally, stdout in a "
        "pod).",
    )
    permission_cache_seconds: int = Field(
        30, ge=1, le=3600, description="How long each server process reuses a permission "
        "decision: a grant changed by `apply` or in the database (not through the "
        "permissions UI) takes effect within this many seconds.",
    )
    lock_identity_attribute: bool = Field(
        True, description="apply makes the realm's `email` attribute (the MLflow identity) "
        "editable by administrators only, so users cannot set someone else's address.",
    )

    @model_validator(mode="after")
    def _distinct_clients(self) -> AuthSettings:
        if self.cli_client_id is not None and self.cli_client_id == self.client_id:
            raise ValueError(f"cli_client_id {self.cli_client_id!r} must differ from client_id: "
                             "the login client is public, the server's is confidential")
        return self


class ModelsVolume(Section):
    enabled: bool = True
    name: PvcName = "thinkube-models"
    storage_class: StorageClassName = "juicefs-rwx"
    capacity: Quantity = "500Gi"
    mount_path: str = "/models"


class StorageSettings(Section):
    """Kubernetes volumes: the local artifacts PVC and the shared models volume."""

    storage_class: StorageClassName = "k8s-hostpath"
    capacity: Quantity = "1Gi"
    local_pvc: bool = True
    local_pvc_name: PvcName = "mlflow-storage"
    models: ModelsVolume = Field(default_factory=ModelsVolume)


class RegistrySettings(Section):
    """Where the server image comes from."""

    host: Hostname | None = None
    project: str = "library"
    image: str = "mlflow-custom"
    tag: str = Field(f"{__version__}-mlflow{MLFLOW_VERSION}", min_length=1)
    robot_name: str = "thinkube-deployer"
    pull_secret: SecretName = "harbor-registry-secret"


class Resources(Section):
    cpu: Quantity
    memory: Quantity


class KubernetesSettings(Section):
    namespace: NamespaceName = "mlflow"
    kubeconfig: Path | None = None
    context: str | None = None
    kubectl_bin: str | None = Field(None, description="Accepted for inventory compatibility.")
    ingress_class: IngressClassName = "nginx"
    route: Literal["ingress", "httproute"] = "ingress"
    replicas: int = Field(1, ge=1, le=20)
    requests: Resources = Field(default_factory=lambda: Resources(cpu="100m", memory="256Mi"))
    limits: Resources = Field(default_factory=lambda: Resources(cpu="500m", memory="1Gi"))
    tls_secret: SecretName = "mlflow-tls-secret"
    tls_source_namespace: NamespaceName = "default"
    tls_source_secret: SecretName | None = None
    ingress_namespace: NamespaceName = Field(
        "ingress", description="Namespace of the ingress controller (allowed in by the "
        "NetworkPolicy)."
    )
    gateway_name: GatewayName | None = Field(
        None, description="Gateway the HTTPRoute attaches to (required when route is httproute)."
    )
    gateway_namespace: NamespaceName | None = Field(
        None, description="Namespace of that Gateway (default: the MLflow namespace)."
    )
    proxy_timeout: int = Field(
        3600, ge=30, description="Seconds the ingress waits on one request (large artifacts)."
    )
    drain_seconds: int = Field(
        10, ge=0, le=300, description="Seconds a stopping pod keeps serving after it leaves the "
        "Service (preStop), while kube-proxy and the ingress controller stop sending it "
        "requests: rolling upgrades and drains then fail no request. 0: no wait."
    )
    network_policy: bool = Field(True, description="Render a NetworkPolicy for the server.")
    metrics_namespace: NamespaceName | None = Field(
        None, description="Namespace whose pods may scrape /metrics on the server port "
        "(Prometheus; allowed in by the NetworkPolicy). Default: none."
    )
    autoscaling: AutoscalingSettings = Field(default_factory=AutoscalingSettings)
    pod: PodSettings = Field(default_factory=PodSettings)
    service: ObjectMetadata = Field(default_factory=ObjectMetadata)
    ca_bundle: CaBundleSettings = Field(default_factory=CaBundleSettings)
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)
    pod_security: PodSecurityLevel = Field(
        "restricted", description="Pod Security Admission level enforced on the namespace "
        "(labels pod-security.kubernetes.io/*); none: leave the namespace's labels alone."
    )
    existing_secrets: ExistingSecrets = Field(
        default_factory=ExistingSecrets, description="Secrets the cluster already has (External "
        "Secrets, sealed-secrets, by hand), used instead of ours; apply only refers to them.")
    gc: GcSettings = Field(default_factory=GcSettings, description="Scheduled `mlflow gc`.")


class DiscoverySettings(Section):
    enabled: bool = True
    configmap: ConfigMapName = "thinkube-service-config"
    display_name: str = "MLflow"
    description: str = "ML experiment tracking and model registry"
    category: str = "ai"
    icon: str = "/icons/tk_ai.svg"
    code_server_namespace: NamespaceName = "code-server"
    code_server_deployment: DeploymentName = "code-server"
    code_server: bool = Field(True, description="Render the code-server integration objects.")
    code_server_container: ContainerName = Field(
        "code-server", description="Container patched with env."
    )
    code_server_home: str = Field("/home/thinkube", description="Where the helpers appear.")


class Settings(Section):
    """The whole platform configuration."""

    domain: Hostname | None = Field(None, description="Base domain (reference: domain_name).")
    server: ServerSettings = Field(default_factory=ServerSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    artifacts: ArtifactSettings = Field(default_factory=ArtifactSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    kubernetes: KubernetesSettings = Field(default_factory=KubernetesSettings)
    discovery: DiscoverySettings = Field(default_factory=DiscoverySettings)
    permissions: PermissionsSettings = Field(default_factory=PermissionsSettings)
    workspaces: list[WorkspaceSpec] = Field(
        default_factory=list, description="Workspaces and the groups (Keycloak roles) granted "
        "each, reconciled by apply/up (needs server.workspaces and SSO).")
    secrets: Secrets = Field(default_factory=Secrets.none, exclude=True)

    @model_validator(mode="after")
    def _cross_checks(self) -> Settings:
        if self.database.backend == "postgresql" and not self.database.host:
            raise ValueError("database.host is required when database.backend is postgresql")
        if self.sso and not self.auth.keycloak_url:
            raise ValueError("auth.keycloak_url is required when auth.provider is keycloak")
        if self.kubernetes.metrics_namespace and not self.server.prometheus:
            raise ValueError(
                "kubernetes.metrics_namespace lets a namespace scrape /metrics, but "
                "server.prometheus is false (nothing serves /metrics): turn server.prometheus "
                "on or remove kubernetes.metrics_namespace")
        if self.permissions.managed and not self.sso:
            raise ValueError("permissions.grants need single sign-on (auth.provider: keycloak): "
                             "without it MLflow has no users or grants")
        check_workspaces(self.workspaces, enabled=self.server.workspaces, sso=self.sso)
        check_gc(self.kubernetes.gc, database=self.database.backend,
                 artifacts=self.artifacts.backend)
        k = self.kubernetes
        check_monitoring(k.monitoring, prometheus=self.server.prometheus,
                         network_policy=k.network_policy, metrics_namespace=k.metrics_namespace)
        return self

    # Derived values, computed in one place so local and Kubernetes targets agree.
    @property
    def sso(self) -> bool:
        """Keycloak single sign-on in front of MLflow (else MLflow without auth)."""
        return self.auth.provider == "keycloak"

    @property
    def databases(self) -> tuple[str, ...]:
        """The databases in use: MLflow's, and the SSO layer's own when SSO is on."""
        if self.sso and self.database.auth_name != self.database.name:
            return (self.database.name, self.database.auth_name)
        return (self.database.name,)

    @property
    def public_hostname(self) -> str | None:
        if self.server.hostname:
            return self.server.hostname
        return f"mlflow.{self.domain}" if self.domain else None

    @property
    def local_url(self) -> str:
        host = self.server.bind_host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"http://{host}:{self.server.port}"

    @property
    def public_url(self) -> str:
        host = self.public_hostname
        return f"{self.server.public_scheme}://{host}" if host else self.local_url

    @property
    def effective_workers(self) -> int:
        """Workers that fit 3/4 of the memory budget (the rest is headroom for requests).

        Workers are forked from one import (server/gunicorn_conf.py), so what a pod's cgroup
        is charged is the tree's PSS (shared pages once). bench/workers.py, SSO, S3 artifacts,
        job runner off, MLflow 3.17.2: master + 1 worker ~335 MiB PSS once it has served
        runs, metrics and artifacts; each further worker ~110 MiB (mostly pages its objects'
        reference counts un-share) -> sized with 225 MiB base + 110 MiB per worker, at most 4
        (1Gi -> 4, 768Mi -> 3, 512Mi -> 1).
        """
        if self.server.workers:
            return self.server.workers
        mib = quantity_bytes(self.server.memory_limit) / 2**20
        return max(1, min(4, int((0.75 * mib - 225) // 110)))

    def missing_secrets(self) -> list[tuple[str, str]]:
        """(what, variables) for each secret the configured backends need but don't have."""
        from mlflow_stack.config.secrets import env_names

        s = self.secrets
        missing: list[tuple[str, str]] = []
        if self.database.backend == "postgresql" and s.effective_db_password is None:
            missing.append(
                ("database password", f"{env_names('admin_password')} or "
                 f"{env_names('db_password')}")
            )
        if self.artifacts.backend == "s3":
            if s.s3_access_key_id is None:
                missing.append(("S3 access key", env_names("s3_access_key_id")))
            if s.s3_secret_access_key is None:
                missing.append(("S3 secret key", env_names("s3_secret_access_key")))
        return missing
