"""Browser login through the real Keycloak login page (Debian Chromium driven by Playwright),
and sessions surviving a server restart (stable SECRET_KEY)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from harness.keycloak import KeycloakServer
from harness.ports import free_port
from harness.sso import ADMIN_ROLE, USER_ROLE, SsoRealm, provision_realm, sso_settings
from mlflow_stack.config.model import Settings
from mlflow_stack.local import platform
from mlflow_stack.local.state import StateDir
from mlflow_stack.progress import NullProgress

pytestmark = pytest.mark.integration
REALM = f"sso-browser-{uuid.uuid4().hex[:8]}"
GROUPS_DETAILS = "/api/2.0/mlflow/permissions/groups/details"


@dataclass
class Site:
    realm: SsoRealm
    settings: Settings
    state: StateDir
    url: str


@pytest.fixture(scope="module")
def site(keycloak: KeycloakServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    port = free_port()
    realm = provision_realm(keycloak, REALM, f"http://127.0.0.1:{port}", users={
        "ann": [ADMIN_ROLE], "ben": [USER_ROLE], "cat": []})
    settings = sso_settings(realm, port)
    state = StateDir(tmp_path_factory.mktemp("sso-browser") / "state")
    result = platform.up(settings, state, NullProgress())
    try:
        yield Site(realm, settings, state, result.record.url)
    finally:
        platform.down(state)


@pytest.fixture(scope="module")
def browser(chromium: object) -> object:
    return chromium


def login(browser: object, site: Site, who: str) -> object:
    """A fresh browser context logged in as `who` through Keycloak's own login form."""
    context = browser.new_context()  # type: ignore[attr-defined]
    page = context.new_page()
    page.goto(f"{site.url}/")  # AUTOMATIC_LOGIN_REDIRECT sends us straight to Keycloak
    page.wait_for_url(f"{site.realm.issuer}/**", timeout=30_000)
    user = site.realm.users[who]
    page.fill("#username", user.username)
    page.fill("#password", user.password)
    page.click("#kc-login")
    page.wait_for_url(f"{site.url}/**", timeout=30_000)
    page.wait_for_load_state("load")
    return page


def test_admin_reaches_ui_and_permissions_page(browser: object, site: Site) -> None:
    page = login(browser, site, "ann")
    status = page.request.get(f"{site.url}/auth/status").json()  # type: ignore[attr-defined]
    assert status["authenticated"] is True and status["username"] == "ann@example.test", status
    assert page.request.get(f"{site.url}{GROUPS_DETAILS}").status == 200  # type: ignore[attr-defined]
    page.goto(f"{site.url}/")  # type: ignore[attr-defined]
    page.wait_for_selector("text=Experiments", timeout=30_000)  # type: ignore[attr-defined]
    page.goto(f"{site.url}/oidc/ui/")  # type: ignore[attr-defined]
    page.wait_for_load_state("load")  # type: ignore[attr-defined]
    assert "/oidc/ui" in page.url  # type: ignore[attr-defined]
    assert page.locator("body").inner_text().strip()  # type: ignore[attr-defined]


def test_user_logs_in_and_creates_experiment(browser: object, site: Site) -> None:
    page = login(browser, site, "ben")
    status = page.request.get(f"{site.url}/auth/status").json()  # type: ignore[attr-defined]
    assert status["authenticated"] is True and status["username"] == "ben@example.test", status
    created = page.request.post(  # type: ignore[attr-defined]
        f"{site.url}/ajax-api/2.0/mlflow/experiments/create",
        data={"name": f"ben-{uuid.uuid4().hex[:6]}"})
    assert created.status == 200, created.text()
    assert page.request.get(f"{site.url}{GROUPS_DETAILS}").status == 403  # type: ignore[attr-defined]


def test_user_without_role_is_refused_readably(browser: object, site: Site) -> None:
    page = login(browser, site, "cat")
    page.wait_for_selector("text=/not allowed/i", timeout=30_000)  # type: ignore[attr-defined]
    text = page.locator("body").inner_text()  # type: ignore[attr-defined]
    assert "not allowed" in text.lower(), text[:500]
    api = page.request.get(f"{site.url}/api/2.0/mlflow/experiments/search?max_results=1")  # type: ignore[attr-defined]
    assert api.status == 401


def test_restart_keeps_browser_sessions(browser: object, site: Site) -> None:
    page = login(browser, site, "ann")
    assert page.request.get(f"{site.url}{GROUPS_DETAILS}").status == 200  # type: ignore[attr-defined]
    key_before = site.state.secret_key_file.read_text()
    assert site.state.secret_key_file.stat().st_mode & 0o777 == 0o600
    assert platform.down(site.state) is not None
    platform.up(site.settings, site.state, NullProgress())
    assert site.state.secret_key_file.read_text() == key_before
    assert page.request.get(f"{site.url}{GROUPS_DETAILS}").status == 200  # type: ignore[attr-defined]
    status = page.request.get(f"{site.url}/auth/status").json()  # type: ignore[attr-defined]
    assert status["authenticated"] is True
