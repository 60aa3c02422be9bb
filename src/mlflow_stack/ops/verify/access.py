"""The server's front door: /health answers, an admin-only call is refused to a non-admin
(403), a tracking call without a token is refused (401)."""

from __future__ import annotations

import httpx

from mlflow_stack.ops.verify.context import Skip, StepFailed, Verification

API = "/api/2.0/mlflow"
# mlflow-oidc-auth 10.1.3: routers/users.py list_user_details, Depends(check_admin_permission).
ADMIN_ONLY_PATH = f"{API}/users/details"
CURRENT_USER_PATH = f"{API}/users/current"
# A tracking call (not /health, which is open by design).
ANONYMOUS_PATH = f"{API}/experiments/search?max_results=1"


def health(v: Verification) -> str:
    try:
        response = v.http.get(f"{v.url}/health")
    except httpx.HTTPError as exc:
        raise StepFailed(f"{v.url} does not answer: {exc}") from None
    if response.status_code != 200:
        raise StepFailed(f"{v.url}/health answered HTTP {response.status_code}")
    return f"{v.url}/health answered 200"


def anonymous_status(v: Verification) -> int:
    return v.http.get(f"{v.url}{ANONYMOUS_PATH}").status_code


def role_refused(v: Verification) -> str:
    if not v.auth_on:
        raise Skip(v.auth_off_reason or "no token")
    assert v.identity is not None
    if not v.identity.temporary:
        current = v.http.get(f"{v.url}{CURRENT_USER_PATH}", headers=v.headers())
        if current.status_code != 200:
            raise Skip(f"cannot tell whether {v.identity.description} is an admin "
                       f"(GET {CURRENT_USER_PATH}: HTTP {current.status_code})")
        if current.json().get("is_admin"):
            raise Skip(f"{v.identity.description} is an MLflow admin; this check needs "
                       "a non-admin identity (-c CONFIG with the Keycloak admin password "
                       "verifies as a temporary mlflow-user)")
    response = v.http.get(f"{v.url}{ADMIN_ONLY_PATH}", headers=v.headers())
    if response.status_code != 403:
        raise StepFailed(f"GET {ADMIN_ONLY_PATH} (admins only) answered HTTP "
                         f"{response.status_code} to a non-admin, expected 403")
    return f"GET {ADMIN_ONLY_PATH} (admins only) answered 403"


def anonymous(v: Verification) -> str:
    if not v.auth_on:
        raise Skip(v.auth_off_reason or "no token")
    code = anonymous_status(v)
    if code != 401:
        raise StepFailed(f"GET {ANONYMOUS_PATH} without a token answered HTTP {code}, "
                         "expected 401")
    return f"GET {ANONYMOUS_PATH} without a token answered 401"
