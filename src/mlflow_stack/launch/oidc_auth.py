"""The SSO part of the server's command line and environment (mlflow-oidc-auth + Keycloak).

Everything the reference's Deployment sets, plus what it misses: audience and issuer pinned (so a
token for another client or realm is refused), bearer provisioning for API-first users, a stable
SECRET_KEY, the auth DB with its own alembic version table (it would otherwise share MLflow's),
deny-less-than-MLflow defaults and proxy trust. Names are mlflow-oidc-auth 10.1.3's (config.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mlflow_stack.config.model import Settings
from mlflow_stack.launch.spec import OIDC_SECRET, SECRET_KEY_SECRET, EnvVar, SecretRef, ServerPaths
from mlflow_stack.launch.stores import auth_db_uri

CLIENT_SECRET_KEY = "client-secret"
SECRET_KEY_KEY = "SECRET_KEY"
# mlflow-oidc-auth migrates its schema with alembic; MLflow's table is `alembic_version`.
AUTH_ALEMBIC_TABLE = "alembic_version_oidc_auth"


@dataclass(frozen=True)
class OidcLaunch:
    argv: list[str] = field(default_factory=list)
    env: list[EnvVar] = field(default_factory=list)


def issuer(settings: Settings) -> str:
    """The realm's issuer exactly as Keycloak writes it into tokens (no trailing slash)."""
    assert settings.auth.keycloak_url is not None
    return f"{settings.auth.keycloak_url.rstrip('/')}/realms/{settings.auth.realm}"


def discovery_url(settings: Settings) -> str:
    return f"{issuer(settings)}/.well-known/openid-configuration"


def redirect_uri(settings: Settings) -> str:
    return f"{settings.public_url}/callback"


def _bool(value: bool) -> str:
    return "true" if value else "false"


def oidc_launch(settings: Settings, paths: ServerPaths) -> OidcLaunch:
    """Extra argv and env for `auth.provider: keycloak`; empty when SSO is off."""
    a = settings.auth
    if not settings.sso:
        return OidcLaunch()
    s = settings.secrets
    https = settings.server.public_scheme == "https" and settings.public_hostname is not None
    env = [
        EnvVar("OIDC_DISCOVERY_URL", discovery_url(settings)),
        EnvVar("OIDC_ISSUER", issuer(settings)),
        EnvVar("OIDC_CLIENT_ID", a.client_id),
        EnvVar("OIDC_CLIENT_SECRET", secret=SecretRef(
            OIDC_SECRET, CLIENT_SECRET_KEY, s.oidc_client_secret)),
        # Keycloak's audience mapper puts the client id in `aud`; tokens for other clients of
        # the realm (aud: account) are refused.
        EnvVar("OIDC_AUDIENCE", a.client_id),
        EnvVar("OIDC_PROVIDER_DISPLAY_NAME", a.display_name),
        EnvVar("OIDC_SCOPE", a.scope),
        EnvVar("OIDC_REDIRECT_URI", redirect_uri(settings)),
        # The default `mlflow` would refuse every mlflow-user.
        EnvVar("OIDC_GROUP_NAME", a.user_role),
        EnvVar("OIDC_ADMIN_GROUP_NAME", a.admin_role),
        EnvVar("OIDC_GROUPS_ATTRIBUTE", a.groups_attribute),
        # Accounts are named by the verified email; preferred_username only names service
        # accounts (client credentials, no email): server/identity.py enforces both.
        EnvVar("OIDC_USERNAME_FIELD", "email,preferred_username"),
        # mlflow-oidc-auth's own long-lived tokens: refused, or checked against Keycloak at
        # most this many seconds old (server/access_tokens.py).
        EnvVar("MLFLOW_STACK_ACCESS_TOKENS", _bool(a.access_tokens)),
        EnvVar("MLFLOW_STACK_REVOCATION_SECONDS", str(a.revocation_seconds)),
        # mlflow-oidc-auth's per-process cache of permission decisions: the bound on how
        # long a grant written to the database directly (permissions as code) waits.
        EnvVar("PERMISSION_CACHE_TTL_SECONDS", str(a.permission_cache_seconds)),
        # Its cache of workspace grants (default 300 s) has the same bound, so a workspace
        # grant written by apply also takes effect within permission_cache_seconds.
        EnvVar("WORKSPACE_CACHE_TTL_SECONDS", str(a.permission_cache_seconds)),
        EnvVar("OIDC_GROUP_DETECTION_PLUGIN", settings.auth.group_plugin),
        EnvVar("MLFLOW_KEYCLOAK_CLIENT_ROLES", _bool(a.include_client_roles)),
        EnvVar("AUTOMATIC_LOGIN_REDIRECT", _bool(a.automatic_login_redirect)),
        EnvVar("DEFAULT_LANDING_PAGE_IS_PERMISSIONS", "false"),
        EnvVar("DEFAULT_MLFLOW_PERMISSION", a.default_permission),
        # API-first users (token from Keycloak, never a browser login) get an account, and an
        # admin token an admin one: the realm is ours and aud/iss are pinned above.
        EnvVar("OIDC_PROVISION_ON_BEARER_AUTH", "true"),
        EnvVar("OIDC_TRUST_BEARER_GROUP_CLAIMS", "true"),
        EnvVar("OIDC_VERIFY_SSL", _bool(a.verify_tls)),
        EnvVar("OIDC_USERS_DB_URI", auth_db_uri(settings, paths)),
        # The audit trail (server/audit.py): its own file locally, stdout in a pod.
        EnvVar("AUDIT_LOG_ENABLED", _bool(a.audit_log)),
        EnvVar("MLFLOW_STACK_AUDIT_LOG", paths.audit_log),
        EnvVar("OIDC_ALEMBIC_VERSION_TABLE", AUTH_ALEMBIC_TABLE),
        # Identical on every worker and replica, and across restarts: sessions stay valid.
        EnvVar("SECRET_KEY", secret=SecretRef(SECRET_KEY_SECRET, SECRET_KEY_KEY, s.secret_key)),
        EnvVar("SESSION_COOKIE_SECURE", _bool(https)),
    ]
    if ca := paths.ca_bundle or a.ca_bundle:
        env.append(EnvVar("REQUESTS_CA_BUNDLE", str(ca)))
    if settings.server.trusted_proxies:
        env.append(EnvVar("TRUSTED_PROXIES", ",".join(settings.server.trusted_proxies)))
    return OidcLaunch(argv=["--app-name", a.app_name], env=env)
