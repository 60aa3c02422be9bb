"""mlflow-oidc-auth's app with the gaps our deployment cannot accept closed.

Registered as the ``mlflow.app`` entry point ``mlflow-stack-sso`` (``mlflow server --app-name
mlflow-stack-sso``). It is mlflow-oidc-auth's own app plus the patches of ``server/patches/``,
one concern per module, each checking the upstream shape it relies on first (a reshaped
function stops the server here, at start-up). This module only composes them, in order.

Security:

- ``jwks_refresh``: a forced key-set refresh at most once a minute (forged tokens do not
  become a flood against Keycloak);
- ``bearer_auth``: bearer tokens must be access tokens acting as the account bound to their
  subject; their roles are re-derived and synced for every new token (a role taken away in
  Keycloak stops working); a verified token is remembered until its ``exp``;
- ``login_identity``: browser logins follow the same identity rule;
- ``denial_reason``: a 401 says why, when the holder can act on it;
- ``basic_auth``: mlflow-oidc-auth's own access tokens refused, or checked against Keycloak;
- ``otlp_ingest``: OTLP trace ingestion writes only to traces and runs the caller may update;
- ``trace_links``: linking traces to a run needs READ on the traces too;
- ``cross_site``: state-changing requests from other origins refused on every route;
- ``host_validation``: MLflow's Host header check on every route, not only Flask's;
- ``metrics_scrape``: except exactly ``GET /metrics`` (Prometheus scrapes by pod IP);
- then ``hardening`` (request bounds, strict Host, artifact paths, listings, auth log) and
  ``surfaces`` (assistant, AI gateway, telemetry notice).

Speed (the "SSO tax" of ``bench/sso_tax.py``; none of it weakens a check): ``user_facts``
(user flags cached for seconds), ``flask_pool`` (Flask on a thread pool), ``run_lookup``
(a run's experiment looked up once), ``idle_middleware`` (layers with nothing to do step
aside), ``flask_first`` (tracking requests routed straight to Flask), ``compact_json`` (API
responses without pretty-printing: the same JSON values, ~0.4x the bytes, C encoder),
``read_sessions`` (read-only store sessions do not expire the objects they loaded at commit),
``fast_runs_search`` (``runs/search`` from rows, without ORM entities or protobufs: the same
JSON), ``fast_reads`` (metric history, the charts' bulk-interval call and artifact listings
likewise, the charts' call in one statement instead of two per run), ``fast_registry``
(registry searches read tags, aliases and latest versions as rows, not ORM objects),
``parse_cache`` (search filters and orderings parsed once per text), ``registry_filter`` (a
registry search page the user may read whole is not parsed and written again by the permission
filter), ``grant_reads`` (a user's pattern grants and groups read once per filtered search, not
once per row, when the permission cache has expired), ``lean_dispatch`` (the authentication and
permission middlewares without BaseHTTPMiddleware's task and response copy when they pass a
request on), ``idle_ping`` (a pooled database connection pinged only after it sat idle for a
second), ``empty_body`` (a request without a body is not parsed for one),
``cookie_session`` (Flask's signed session not set up for requests without a cookie),
``mcp_prefixes`` (the MCP registry's route prefixes worked out once). Disk:
``stream_downloads`` (downloads through the server stream from S3, without a temporary copy of
the file).

Measured with ``bench/sso_tax.py`` (3 workers, PostgreSQL, 4 client threads): plain
mlflow-oidc-auth runs log-metric at ~0.5x the requests/s of no auth; this app at ~1.0x.
"""

from __future__ import annotations

from mlflow_stack.server import group_plugin
from mlflow_stack.server.patches import (
    BeforeApp,
    OnApp,
    basic_auth,
    bearer_auth,
    compact_json,
    cookie_session,
    cross_site,
    denial_reason,
    empty_body,
    fast_reads,
    fast_registry,
    fast_runs_search,
    flask_first,
    flask_pool,
    grant_reads,
    host_validation,
    idle_middleware,
    idle_ping,
    jwks_refresh,
    lean_dispatch,
    login_identity,
    mcp_prefixes,
    metrics_scrape,
    otlp_ingest,
    parse_cache,
    read_sessions,
    registry_filter,
    run_lookup,
    stream_downloads,
    trace_links,
    user_facts,
)

#: Applied before mlflow-oidc-auth builds its app, in this order.
BEFORE_APP: tuple[BeforeApp, ...] = (
    jwks_refresh, bearer_auth, user_facts, denial_reason, login_identity, otlp_ingest,
    flask_pool, idle_middleware, compact_json, read_sessions, idle_ping, empty_body,
)
#: Applied to the built app, in this order (the middleware added last runs outermost).
ON_APP: tuple[OnApp, ...] = (run_lookup, trace_links, flask_first, basic_auth, cross_site,
                             host_validation, metrics_scrape, fast_runs_search, fast_reads,
                             fast_registry, parse_cache, registry_filter, grant_reads,
                             lean_dispatch, stream_downloads, cookie_session, mcp_prefixes)

_PATCHED = False


def install() -> None:
    """Apply the patches that come before the app, once (idempotent)."""
    global _PATCHED
    if _PATCHED:
        return
    group_plugin.require_configured_plugin()
    for patch in BEFORE_APP:
        patch.apply()
    _PATCHED = True


install()

from mlflow_oidc_auth.app import app  # noqa: E402  (patched modules first, then the app)

# After the app: its import pulls in the validators whose references are replaced, and its
# routes are all in place.
for _patch in ON_APP:
    _patch.apply(app)
from mlflow_stack.server import hardening  # noqa: E402

hardening.install(app)  # request bounds, strict Host, artifact paths, listings, auth log
from mlflow_stack.server import surfaces  # noqa: E402

surfaces.install(app)  # assistant, AI gateway, telemetry notice
from mlflow_stack.server import audit  # noqa: E402

audit.configure()
from mlflow_stack.server import db_metrics  # noqa: E402

db_metrics.install()  # mlflow_db_connection_errors_total on /metrics
app.add_middleware(audit.AuditTrail)  # outermost: sees every final status

__all__ = ["BEFORE_APP", "ON_APP", "app", "install"]
