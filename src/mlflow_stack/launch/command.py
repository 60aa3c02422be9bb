"""The MLflow server's command line and environment, built from settings in one place.

The local target runs exactly this; the Kubernetes target puts the same argv and env in the pod
(secret values become Secret references there). Nothing here may assume a local machine: every
path comes in through `ServerPaths`.
"""

from __future__ import annotations

from mlflow_stack.config.model import Settings
from mlflow_stack.config.types import quantity_bytes
from mlflow_stack.launch.existing_secrets import retarget
from mlflow_stack.launch.oidc_auth import oidc_launch
from mlflow_stack.launch.spec import (
    DB_SECRET,
    S3_SECRET,
    EnvVar,
    SecretRef,
    ServerLaunch,
    ServerPaths,
)
from mlflow_stack.launch.stores import artifacts_destination, backend_store_uri

# The mlflow.app entry point of a platform without SSO (server/plain_app.py).
PLAIN_APP = "mlflow-stack"

# The server's gunicorn settings: preloaded app, uvicorn's h11 workers.
GUNICORN_CONF = "mlflow_stack.server.gunicorn_conf"
# `mlflow server` whose server replaces it instead of running under it (server/serve.py).
SERVER_COMMAND = ["mlflow-stack-server"]

MAX_REQUEST_BODY_ENV = "MLFLOW_STACK_MAX_REQUEST_BODY"
# Tunables the server runtime reads from its environment (sso_app and the modules it installs);
# a local server inherits these from `up`'s environment, nothing else of ours (see
# local/process.py: server_environment). Add a new one here.
SERVER_TUNABLES = (
    "MLFLOW_STACK_JWKS_MIN_REFRESH_SECONDS", "MLFLOW_STACK_TOKEN_CACHE_SECONDS",
    "MLFLOW_STACK_USER_CACHE_SECONDS", "MLFLOW_STACK_FLASK_THREADS",
    "MLFLOW_STACK_HEADER_TIMEOUT_SECONDS", "MLFLOW_STACK_BODY_IDLE_TIMEOUT_SECONDS",
    "MLFLOW_STACK_AUTH_LOG_INTERVAL_SECONDS", "MLFLOW_STACK_DB_PING_AFTER",
)


def allowed_hosts(settings: Settings, internal_hosts: list[str]) -> list[str]:
    """Host headers the server accepts: the public host, loopback, in-cluster names.

    Loopback only with the server's own port, exactly: MLflow matches patterns with fnmatch, so
    ``127.0.0.1:*`` also let ``127.0.0.1:5000@evil.example`` through (the plain MLflow app of a
    platform without SSO has no stricter check in front).
    """
    hosts = []
    if settings.public_hostname:
        hosts.append(settings.public_hostname)
    port = settings.server.port
    hosts += ["localhost", f"localhost:{port}", "127.0.0.1", f"127.0.0.1:{port}"]
    hosts += internal_hosts + settings.server.extra_allowed_hosts
    return list(dict.fromkeys(hosts))


def build_server_launch(
    settings: Settings,
    paths: ServerPaths,
    *,
    executable: list[str] | None = None,
    bind_host: str | None = None,
    internal_hosts: list[str] | None = None,
) -> ServerLaunch:
    """`mlflow server` argv and env for these settings.

    `executable` is how to invoke `mlflow server` (default `mlflow-stack-server`, the same
    CLI); `bind_host` overrides the configured listen address (the pod listens on 0.0.0.0).
    """
    s = settings
    argv = [
        *(executable or SERVER_COMMAND),
        "server",
        "--host", bind_host or s.server.bind_host,
        "--port", str(s.server.port),
        "--workers", str(s.effective_workers),
        "--backend-store-uri", backend_store_uri(s, paths),
        "--serve-artifacts",
        "--artifacts-destination", artifacts_destination(s, paths),
        # One import of the app, forked into the workers (server/gunicorn_conf.py).
        "--gunicorn-opts", f"-c python:{GUNICORN_CONF}",
    ]
    if s.server.prometheus:
        argv += ["--expose-prometheus", str(paths.prometheus_dir)]
    if s.server.workspaces:
        argv.append("--enable-workspaces")

    env = [
        # The job runner costs ~1.9 GiB and ~7 s of start-up; off unless asked for.
        EnvVar("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", str(s.server.job_execution).lower()),
        # Nothing phones home from the platform (MLflow's usage telemetry is on by default).
        EnvVar("MLFLOW_DISABLE_TELEMETRY", str(not s.server.telemetry).lower()),
        *surface_env(s),
        # MLflow's workers and mlflow-oidc-auth (config.py) both read this one switch; set
        # either way so an inherited value cannot turn workspaces on behind the config.
        EnvVar("MLFLOW_ENABLE_WORKSPACES", str(s.server.workspaces).lower()),
        EnvVar("MLFLOW_SERVER_ALLOWED_HOSTS", ",".join(allowed_hosts(s, internal_hosts or []))),
        EnvVar("TMPDIR", str(paths.tmp_dir)),
        EnvVar("MLFLOW_TMP_DIR", str(paths.tmp_dir)),
        # Read by the SSO app (server/request_limits.py): larger JSON bodies get 413.
        EnvVar(MAX_REQUEST_BODY_ENV, str(int(quantity_bytes(s.server.max_request_body)))),
    ]
    if s.public_hostname:
        env.append(EnvVar("MLFLOW_SERVER_CORS_ALLOWED_ORIGINS", s.public_url))
    if s.database.backend == "postgresql":
        env.append(EnvVar("PGPASSWORD", secret=SecretRef(
            DB_SECRET, "DB_PASSWORD", s.secrets.effective_db_password)))
    if s.artifacts.backend == "s3":
        env += _s3_env(s, paths)
    sso = oidc_launch(s, paths)
    # Without SSO, MLflow's own app with the platform's limits and surface choices.
    app = [] if sso.argv else ["--app-name", PLAIN_APP]
    # Secrets the cluster already has (kubernetes.existing_secrets) are referred to as they are.
    return ServerLaunch(argv=argv + app + sso.argv, env=retarget(s, env + sso.env))


def surface_env(s: Settings) -> list[EnvVar]:
    """What MLflow 3.17 turns on by itself, off unless the config asks (see server/surfaces.py).

    The AI Gateway (stores provider API keys) and the Assistant's remote mode are MLflow's own
    switches. The Assistant has none: MLflow serves it to every client on a loopback address
    (a same-host proxy makes that everyone), so our SSO app refuses its routes
    (``MLFLOW_STACK_ASSISTANT``), and on every platform its Bash tool and coding-agent CLIs may
    run only in MLflow's Docker sandbox, never on the host.
    """
    from mlflow_stack.server.surfaces import AI_GATEWAY_ENV, ASSISTANT_ENV

    env = [
        EnvVar(AI_GATEWAY_ENV, str(s.server.ai_gateway).lower()),
        EnvVar(ASSISTANT_ENV, str(s.server.assistant).lower()),
        EnvVar("MLFLOW_ENABLE_REMOTE_ASSISTANT", "false"),
    ]
    if not s.server.assistant:
        env.append(EnvVar("MLFLOW_ENABLE_ASSISTANT_SANDBOX", "true"))
    return env


def _s3_env(s: Settings, paths: ServerPaths) -> list[EnvVar]:
    a = s.artifacts
    env = [
        EnvVar("AWS_ACCESS_KEY_ID", secret=SecretRef(
            S3_SECRET, "AWS_ACCESS_KEY_ID", s.secrets.s3_access_key_id)),
        EnvVar("AWS_SECRET_ACCESS_KEY", secret=SecretRef(
            S3_SECRET, "AWS_SECRET_ACCESS_KEY", s.secrets.s3_secret_access_key)),
        EnvVar("AWS_DEFAULT_REGION", a.region),
    ]
    if a.endpoint_url:
        env.append(EnvVar("MLFLOW_S3_ENDPOINT_URL", a.endpoint_url))
    # Large files bypass the server: clients discover presigned multipart upload and ranged
    # download from /api/3.0/mlflow/server-info (on whenever the server proxies to S3; the
    # MLFLOW_ENABLE_PROXY_MULTIPART_* variables are client-side only). A download longer than
    # the URL's life must re-ask for it on every expiry, and MLflow gives up after 7 of those.
    env.append(EnvVar("MLFLOW_PRESIGNED_DOWNLOAD_URL_TTL_SECONDS", str(a.presigned_url_ttl)))
    if ca := paths.ca_bundle or a.ca_bundle:
        env.append(EnvVar("AWS_CA_BUNDLE", str(ca)))
    if not a.verify_tls:
        env.append(EnvVar("MLFLOW_S3_IGNORE_TLS", "true"))
    return env
