"""Single sign-on: OIDC discovery, the Keycloak client and roles, the client secret, the group
plugin and the clock skew to Keycloak."""

from __future__ import annotations

import email.utils
import importlib.util
import secrets
import time

import httpx

from mlflow_stack.config.model import Settings
from mlflow_stack.errors import StackError
from mlflow_stack.local.state import StateDir
from mlflow_stack.ops.doctor.findings import Finding, ok, problem, skipped
from mlflow_stack.server.oidc import discovery_url, issuer

MAX_CLOCK_SKEW_SECONDS = 30.0


def check_oidc_discovery(settings: Settings, state: StateDir) -> Finding:
    name = "OIDC discovery"
    url = discovery_url(settings)
    try:
        response = httpx.get(url, timeout=10, verify=settings.auth.verify_tls)
    except httpx.HTTPError as exc:
        return problem(name, f"{url} unreachable: {exc}",
                       "check auth.keycloak_url and that Keycloak runs")
    if response.status_code != 200:
        return problem(name, f"{url} answered {response.status_code}",
                       f"check that realm {settings.auth.realm!r} exists")
    issuer_seen = response.json().get("issuer")
    if issuer_seen != issuer(settings):
        return problem(name, f"Keycloak calls itself {issuer_seen}, the server expects "
                       f"{issuer(settings)}", "use the same host spelling in auth.keycloak_url "
                       "as Keycloak's hostname setting (localhost is not 127.0.0.1)")
    return ok(name, f"{url} answers, issuer matches")


def check_keycloak_client(settings: Settings, state: StateDir) -> Finding:
    from mlflow_stack.components import keycloak

    name = "Keycloak client and roles"
    try:
        pending = [c for c in keycloak.plan(settings) if c.is_change]
    except StackError as exc:
        return problem(name, exc.message, exc.hint or "check the Keycloak admin credentials")
    if pending:
        listed = "; ".join(f"{c.action} {c.target}" + (f" ({c.detail})" if c.detail else "")
                           for c in pending[:6])
        return problem(name, f"{len(pending)} difference(s) from the config: {listed}",
                       "mlflow-stack apply repairs them (mlflow-stack plan shows them)")
    return ok(name, f"client {settings.auth.client_id}: redirect URIs, scopes, mappers and "
                     "admin role grants match the config")


def check_client_secret(settings: Settings, state: StateDir) -> Finding:
    """The secret the server would use, tested against Keycloak's token endpoint."""
    name = "OIDC client secret"
    secret = settings.secrets.oidc_client_secret
    if secret is None:
        return ok(name, "not set: read back from Keycloak at start-up")
    url = f"{issuer(settings)}/protocol/openid-connect/token"
    try:
        # A password grant for a user that does not exist: Keycloak authenticates the client
        # first, so a right secret gets "invalid_grant" (bad user), a wrong one a client error.
        response = httpx.post(url, timeout=10, verify=settings.auth.verify_tls, data={
            "grant_type": "password", "client_id": settings.auth.client_id,
            "client_secret": secret.get_secret_value(),
            "username": "mlflow-stack-doctor-probe", "password": secrets.token_hex(16)})
    except httpx.HTTPError as exc:
        return problem(name, f"{url} unreachable: {exc}", "check auth.keycloak_url")
    error = response.json().get("error", "") if response.status_code != 200 else ""
    if error != "invalid_grant":
        return problem(name, f"Keycloak refuses the configured client secret ({error})",
                       "unset MLFLOW_STACK_OIDC_CLIENT_SECRET to read it back from Keycloak, "
                       "or copy the current secret from the client's Credentials tab")
    return ok(name, "Keycloak accepts the configured client secret")


def check_group_plugin(settings: Settings, state: StateDir) -> Finding:
    name = "group plugin"
    module = settings.auth.group_plugin
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        return problem(name, f"{module!r} is not importable by the server",
                       "install mlflow-stack into the server's environment (it ships "
                       "mlflow_keycloak_groups) or fix auth.group_plugin")
    return ok(name, f"{module} importable")


def check_clock_skew(settings: Settings, state: StateDir) -> Finding:
    name = "clock skew to Keycloak"
    try:
        response = httpx.get(discovery_url(settings), timeout=10,
                             verify=settings.auth.verify_tls)
    except httpx.HTTPError as exc:
        return skipped(name, f"Keycloak unreachable: {exc}")
    date = response.headers.get("date")
    if not date:
        return skipped(name, "Keycloak sent no Date header")
    skew = time.time() - email.utils.parsedate_to_datetime(date).timestamp()
    if abs(skew) > MAX_CLOCK_SKEW_SECONDS:
        return problem(name, f"this clock is {skew:+.0f} s off Keycloak's",
                       "synchronise clocks (NTP): tokens look expired or not yet valid")
    return ok(name, f"{skew:+.1f} s")
