"""`doctor`'s Keycloak checks: discovery and issuer, the realm against the config, the
configured client secret, clock skew. Reads only; a problem is a Finding, never an exception.
"""

from __future__ import annotations

import email.utils
import secrets
import time

import httpx

from mlflow_stack.components.keycloak.observe import observe
from mlflow_stack.components.keycloak.plan import plan
from mlflow_stack.components.keycloak.session import AdminSession, connect
from mlflow_stack.components.protocol import Finding, ok, problem, skipped
from mlflow_stack.config.model import Settings
from mlflow_stack.errors import StackError
from mlflow_stack.launch.oidc_auth import discovery_url, issuer

MAX_CLOCK_SKEW_SECONDS = 30.0
CLIENT_CHECK = "Keycloak client and roles"


def check(settings: Settings) -> list[Finding]:
    """Every Keycloak check, in doctor's order. A refused admin login is the client check's
    finding; the others need no login and run anyway."""
    try:
        client = check_keycloak_client(connect(settings), settings)
    except StackError as exc:
        client = problem(CLIENT_CHECK, exc.message,
                         exc.hint or "check the Keycloak admin credentials")
    return [check_oidc_discovery(settings), client, check_client_secret(settings),
            check_clock_skew(settings)]


def check_oidc_discovery(settings: Settings) -> Finding:
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
    try:
        issuer_seen = response.json().get("issuer")
    except ValueError:
        return problem(name, f"{url} answered, but not with JSON",
                       "check auth.keycloak_url: it must point at Keycloak itself")
    if issuer_seen != issuer(settings):
        return problem(name, f"Keycloak calls itself {issuer_seen}, the server expects "
                       f"{issuer(settings)}", "use the same host spelling in auth.keycloak_url "
                       "as Keycloak's hostname setting (localhost is not 127.0.0.1)")
    return ok(name, f"{url} answers, issuer matches")


def check_keycloak_client(s: AdminSession, settings: Settings) -> Finding:
    """The realm against the config: what `plan` would change."""
    name = CLIENT_CHECK
    try:
        pending = [step.change for step in plan(s, settings, observe(s, settings))
                   if step.pending]
    except StackError as exc:
        return problem(name, exc.message, exc.hint or "check the Keycloak admin credentials")
    if pending:
        listed = "; ".join(f"{c.action} {c.target}" + (f" ({c.detail})" if c.detail else "")
                           for c in pending[:6])
        return problem(name, f"{len(pending)} difference(s) from the config: {listed}",
                       "mlflow-stack apply repairs them (mlflow-stack plan shows them)")
    return ok(name, f"client {settings.auth.client_id}: redirect URIs, scopes, mappers and "
                     "admin role grants match the config")


def check_client_secret(settings: Settings) -> Finding:
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
    try:
        error = response.json().get("error", "") if response.status_code != 200 else ""
    except ValueError:
        error = f"HTTP {response.status_code}"
    if error != "invalid_grant":
        return problem(name, f"Keycloak refuses the configured client secret ({error})",
                       "unset MLFLOW_STACK_OIDC_CLIENT_SECRET to read it back from Keycloak, "
                       "or copy the current secret from the client's Credentials tab")
    return ok(name, "Keycloak accepts the configured client secret")


def check_clock_skew(settings: Settings) -> Finding:
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
