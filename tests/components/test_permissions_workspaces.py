"""Workspaces against the real platform (Keycloak, the SSO server on PostgreSQL): a platform
started without workspaces gets data, is restarted with `server.workspaces` and two declared
team workspaces (reconciled by `up`), and then:

- everything created before stays reachable, in the default workspace, for whoever reached it;
- a member of team A cannot see or touch team B's experiments, registered models or prompts
  through REST (search shows nothing, get and update are refused), and the reverse;
- an administrator sees both.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from harness.keycloak import KeycloakServer, admin_client
from harness.ports import free_port
from harness.postgres import PostgresServer
from harness.sso import ADMIN_ROLE, USER_ROLE, SsoRealm, provision_realm, running
from mlflow_stack.components.permissions import SYSTEM
from mlflow_stack.config.model import Settings
from mlflow_stack.config.secrets import Secrets
from mlflow_stack.deploy import apply_system, plan_system

pytestmark = pytest.mark.integration
API = "/api/2.0/mlflow"
CACHE_SECONDS = 2
PROMPT_TAG = {"key": "mlflow.prompt.is_prompt", "value": "true"}
WORKSPACES = [
    {"name": "team-a", "description": "Team A", "groups": {"team-a": "EDIT"}},
    # MANAGE: members may also create in it (EDIT may not, see the test below).
    {"name": "team-b", "description": "Team B", "groups": {"team-b": "MANAGE"}},
]


@dataclass
class Platform:
    realm: SsoRealm
    url: str
    settings: Settings
    # (workspace, kind) -> name -> id (experiments) or name (models, prompts)
    made: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)

    def call(self, who: str, method: str, path: str, body: dict[str, Any] | None = None,
             workspace: str | None = None, **params: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.realm.token(who)}"}
        if workspace is not None:
            headers["X-MLFLOW-WORKSPACE"] = workspace
        return httpx.request(method, f"{self.url}{path}", json=body, params=params,
                             headers=headers, timeout=30.0)

    def create(self, who: str, workspace: str | None, kind: str, name: str) -> None:
        if kind == "experiment":
            r = self.call(who, "POST", f"{API}/experiments/create", {"name": name}, workspace)
            value = r.json().get("experiment_id", "")
        else:
            body: dict[str, Any] = {"name": name}
            if kind == "prompt":
                body["tags"] = [PROMPT_TAG]
            r = self.call(who, "POST", f"{API}/registered-models/create", body, workspace)
            value = name
        assert r.status_code == 200, r.text
        self.made.setdefault((workspace or "default", kind), {})[name] = value

    def search(self, who: str, workspace: str | None, kind: str) -> set[str] | None:
        """The names a search returns, None when it is refused."""
        if kind == "experiment":
            r = self.call(who, "GET", f"{API}/experiments/search", workspace=workspace,
                          max_results="1000")
            key = "experiments"
        else:
            # MLflow leaves prompts out of a model search unless the filter names them.
            path = f"{API}/registered-models/search"
            if kind == "prompt":
                r = self.call(who, "GET", path, workspace=workspace, max_results="1000",
                              filter="tags.`mlflow.prompt.is_prompt` = 'true'")
            else:
                r = self.call(who, "GET", path, workspace=workspace, max_results="1000")
            key = "registered_models"
        if r.status_code == 403:
            return None
        assert r.status_code == 200, r.text
        return {str(o["name"]) for o in r.json().get(key, [])}

    def get(self, who: str, workspace: str | None, kind: str, name: str) -> int:
        ident = self.made[(workspace or "default", kind)][name]
        if kind == "experiment":
            r = self.call(who, "GET", f"{API}/experiments/get", workspace=workspace,
                          experiment_id=ident)
        else:
            r = self.call(who, "GET", f"{API}/registered-models/get", workspace=workspace,
                          name=ident)
        return r.status_code

    def update(self, who: str, workspace: str | None, kind: str, name: str) -> int:
        """A write that leaves the object as it was (a tag, a description)."""
        ident = self.made[(workspace or "default", kind)][name]
        if kind == "experiment":
            r = self.call(who, "POST", f"{API}/experiments/set-experiment-tag",
                          {"experiment_id": ident, "key": "touched", "value": who}, workspace)
        else:
            r = self.call(who, "PATCH", f"{API}/registered-models/update",
                          {"name": ident, "description": f"touched by {who}"}, workspace)
        return r.status_code


def _settings(realm: SsoRealm, port: int, pg: PostgresServer, suffix: str,
              workspaces: bool) -> Settings:
    data: dict[str, Any] = {
        "server": {"port": port, "workers": 1, "workspaces": workspaces},
        "database": {"backend": "postgresql", "host": pg.host, "port": pg.port,
                     "user": pg.superuser, "name": f"mlflow_{suffix}",
                     "auth_name": f"mlflow_auth_{suffix}"},
        # READ: the project's default; what a user reached before must stay reachable.
        "auth": {"provider": "keycloak", "keycloak_url": realm.server.url, "realm": realm.realm,
                 "client_id": realm.client_id, "default_permission": "READ",
                 "permission_cache_seconds": CACHE_SECONDS},
    }
    if workspaces:
        data["workspaces"] = WORKSPACES
    secrets = Secrets.model_construct(db_password=SecretStr(pg.password),
                                      oidc_client_secret=SecretStr(realm.client_secret))
    return Settings.model_validate(data).model_copy(update={"secrets": secrets})


KINDS = ("experiment", "registered_model", "prompt")


@pytest.fixture(scope="module")
def platform(keycloak: KeycloakServer, postgres_server: PostgresServer,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    port = free_port()
    suffix = uuid.uuid4().hex[:8]
    realm = provision_realm(keycloak, f"ws-{suffix}", f"http://127.0.0.1:{port}", users={
        "alice": [ADMIN_ROLE], "bob": [USER_ROLE], "carol": [USER_ROLE]})
    admin = admin_client(keycloak, realm.realm)
    for team in ("team-a", "team-b"):
        admin.create_realm_role({"name": team})
    realm.set_roles("bob", [USER_ROLE, "team-a"])
    realm.set_roles("carol", [USER_ROLE, "team-b"])
    state = tmp_path_factory.mktemp("ws") / "state"

    # 1. The platform as it was: no workspaces, data in it.
    before = _settings(realm, port, postgres_server, suffix, workspaces=False)
    with running(before, state) as server:
        p = Platform(realm, server.url, before)
        for kind in KINDS:
            p.create("alice", None, kind, f"legacy-{kind}")
        p.create("bob", None, "experiment", "bob-legacy")  # bob owns it (MANAGE)
        assert p.call("carol", "GET", f"{API}/experiments/search",
                      max_results="1").status_code == 200

    # 2. The same database with workspaces on: `up` creates the workspaces and the grants.
    after = _settings(realm, port, postgres_server, suffix, workspaces=True)
    with running(after, state) as server:
        p.url, p.settings = server.url, after
        for ws in ("team-a", "team-b"):
            for kind in KINDS:
                # Creating in a workspace by header takes MANAGE on it: the admin does.
                p.create("alice", ws, kind, f"{ws}-{kind}")
        time.sleep(CACHE_SECONDS + 0.5)
        yield p


def test_up_reconciled_the_workspaces_and_a_second_plan_is_empty(platform: Platform) -> None:
    r = platform.call("alice", "GET", "/api/3.0/mlflow/workspaces")
    assert r.status_code == 200, r.text
    described = {w["name"]: w.get("description") for w in r.json()["workspaces"]}
    assert described["team-a"] == "Team A" and described["team-b"] == "Team B"
    assert "default" in described
    pending = [c for c in plan_system(SYSTEM, platform.settings) if c.is_change]
    assert pending == []


@pytest.mark.parametrize("kind", KINDS)
def test_existing_objects_stay_reachable_in_the_default_workspace(
        platform: Platform, kind: str) -> None:
    name = f"legacy-{kind}"
    for who in ("alice", "bob", "carol"):
        for header in (None, "default"):  # MLflow serves a header-less request from default
            found = platform.search(who, header, kind)
            assert found is not None and name in found, (who, header, found)
            assert platform.get(who, header, kind, name) == 200, (who, header)
    # Before: READ for everyone (auth.default_permission), the admin writes; still so.
    assert platform.update("bob", "default", kind, name) == 403
    assert platform.update("alice", "default", kind, name) == 200


def test_an_owner_keeps_his_own_objects(platform: Platform) -> None:
    assert platform.update("bob", None, "experiment", "bob-legacy") == 200
    assert platform.update("bob", "default", "experiment", "bob-legacy") == 200
    assert platform.update("carol", "default", "experiment", "bob-legacy") == 403


@pytest.mark.parametrize("kind", KINDS)
def test_a_team_sees_and_edits_its_workspace_only(platform: Platform, kind: str) -> None:
    for who, mine, theirs in (("bob", "team-a", "team-b"), ("carol", "team-b", "team-a")):
        own, other = f"{mine}-{kind}", f"{theirs}-{kind}"
        found = platform.search(who, mine, kind)
        assert found is not None and own in found and other not in found, (who, found)
        assert platform.get(who, mine, kind, own) == 200
        assert platform.update(who, mine, kind, own) == 200  # EDIT/MANAGE on the workspace

        # The other team's workspace: nothing listed, nothing read or written.
        found = platform.search(who, theirs, kind)
        assert not found, (who, theirs, found)
        assert platform.get(who, theirs, kind, other) in (403, 404), who
        assert platform.update(who, theirs, kind, other) in (403, 404), who
        # Nor through another workspace's header, or none (MLflow resolves names and ids
        # within the request's workspace).
        for header in (mine, None):
            listed = platform.search(who, header, kind) or set()
            assert other not in listed
            made = platform.made[(theirs, kind)]
            key = made[other]
            if kind == "experiment":
                r = platform.call(who, "GET", f"{API}/experiments/get", workspace=header,
                                  experiment_id=key)
            else:
                r = platform.call(who, "GET", f"{API}/registered-models/get",
                                  workspace=header, name=key)
            assert r.status_code in (403, 404), (who, header, r.text)


@pytest.mark.parametrize("kind", KINDS)
def test_an_admin_sees_both(platform: Platform, kind: str) -> None:
    for ws in ("team-a", "team-b"):
        found = platform.search("alice", ws, kind)
        assert found is not None and f"{ws}-{kind}" in found
        assert platform.get("alice", ws, kind, f"{ws}-{kind}") == 200



def _ui_experiments(page: Any, url: str, workspace: str) -> tuple[str | None, set[str], str]:
    """Open the UI's experiment list with `workspace` active (the UI keeps it in localStorage
    and sends it as X-MLFLOW-WORKSPACE): the header its search carried, the names the server
    answered, and the page's text once the list is drawn."""
    page.evaluate("ws => localStorage.setItem('mlflow.activeWorkspace', ws)", workspace)
    page.goto(f"{url}/#/experiments")
    with page.expect_response(lambda r: "mlflow/experiments/search" in r.url,
                              timeout=60_000) as answer:
        page.reload()  # a fresh app: nothing answered from an earlier search's cache
    response = answer.value
    assert response.status == 200, response.text()
    names = {str(e["name"]) for e in response.json().get("experiments", [])}
    page.wait_for_load_state("networkidle")
    return response.request.headers.get("x-mlflow-workspace"), names, page.inner_text("body")


@pytest.mark.parametrize(("who", "mine", "theirs"), [("bob", "team-a", "team-b"),
                                                     ("carol", "team-b", "team-a")])
def test_the_ui_shows_a_team_its_workspace_only(platform: Platform, chromium: Any, who: str,
                                                mine: str, theirs: str) -> None:
    """The same isolation in the real UI (Chromium, signed in through Keycloak's form)."""
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.goto(f"{platform.url}/")  # automatic login redirect: Keycloak's form
        page.wait_for_url(f"{platform.realm.issuer}/**", timeout=30_000)
        user = platform.realm.users[who]
        page.fill("#username", user.username)
        page.fill("#password", user.password)
        page.click("#kc-login")
        page.wait_for_url(f"{platform.url}/**", timeout=30_000)

        header, names, text = _ui_experiments(page, platform.url, mine)
        assert header == mine
        assert f"{mine}-experiment" in names and f"{theirs}-experiment" not in names
        assert f"{mine}-experiment" in text

        # The other team's workspace chosen by hand: the UI's search finds nothing of theirs.
        header, names, text = _ui_experiments(page, platform.url, theirs)
        assert f"{theirs}-experiment" not in names, (header, names)
        assert f"{theirs}-experiment" not in text
    finally:
        context.close()


def test_creating_in_a_workspace_takes_manage_on_it(platform: Platform) -> None:
    """mlflow-oidc-auth gates creation by header (hooks/before_request.py): EDIT works on what
    is there, MANAGE (team-b's) creates; a header-less create lands in default."""
    p = platform
    for kind, path in (("experiment", "experiments/create"),
                       ("model", "registered-models/create")):
        r = p.call("bob", "POST", f"{API}/{path}", {"name": f"bob-{kind}-a"}, "team-a")
        assert r.status_code == 403, r.text
        r = p.call("carol", "POST", f"{API}/{path}", {"name": f"carol-{kind}-b"}, "team-b")
        assert r.status_code == 200, r.text
    assert "carol-experiment-b" not in (p.search("bob", "team-a", "experiment") or set())
    r = p.call("bob", "POST", f"{API}/experiments/create", {"name": "bob-no-header"})
    assert r.status_code == 200, r.text
    assert "bob-no-header" in (p.search("alice", "default", "experiment") or set())


def test_without_the_default_grant_users_find_nothing_in_default(platform: Platform) -> None:
    """Why apply grants auth.user_role on default: oidc-auth lets a non-admin search a
    workspace only with READ on it, header or not. Removed by hand, plan shows it and apply
    puts it back."""
    import sqlalchemy

    p = platform
    db, password = p.settings.database, p.settings.secrets.effective_db_password
    assert db.host is not None and password is not None
    engine = sqlalchemy.create_engine(sqlalchemy.URL.create(
        "postgresql+psycopg", username=db.user, password=password.get_secret_value(),
        host=db.host, port=db.port, database=db.auth_name))
    try:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(
                "DELETE FROM workspace_group_permissions WHERE workspace = 'default'"))
    finally:
        engine.dispose()
    time.sleep(CACHE_SECONDS + 0.5)
    for header in (None, "default"):
        assert p.search("bob", header, "experiment") == set()
    assert p.get("bob", "default", "experiment", "legacy-experiment") == 403
    drift = [(c.action, c.target, c.detail) for c in plan_system(SYSTEM, p.settings)
             if c.is_change]
    assert drift == [("create", "group mlflow-user: workspace 'default'", "READ")]
    apply_system(SYSTEM, p.settings)
    time.sleep(CACHE_SECONDS + 0.5)
    found = p.search("bob", "default", "experiment")
    assert found is not None and "legacy-experiment" in found


def test_a_new_local_sqlite_platform_starts_with_its_workspaces(
        keycloak: KeycloakServer, tmp_path: Path) -> None:
    """`up` reconciles before the server has ever run: MLflow's schema (where the workspaces
    live) is created first, as the server would."""
    port = free_port()
    realm = provision_realm(keycloak, f"ws-local-{uuid.uuid4().hex[:8]}",
                            f"http://127.0.0.1:{port}",
                            users={"alice": [ADMIN_ROLE], "bob": [USER_ROLE]})
    admin_client(keycloak, realm.realm).create_realm_role({"name": "team-a"})
    realm.set_roles("bob", [USER_ROLE, "team-a"])
    settings = Settings.model_validate({
        "server": {"port": port, "workers": 1, "workspaces": True},
        "auth": {"provider": "keycloak", "keycloak_url": realm.server.url, "realm": realm.realm,
                 "client_id": realm.client_id, "permission_cache_seconds": CACHE_SECONDS},
        "workspaces": [{"name": "team-a", "groups": {"team-a": "MANAGE"}}],
    })
    settings = settings.model_copy(update={"secrets": Secrets.model_construct(
        oidc_client_secret=SecretStr(realm.client_secret))})
    with running(settings, tmp_path / "state") as server:
        p = Platform(realm, server.url, settings)
        p.create("bob", "team-a", "experiment", "bob-a")
        assert p.search("bob", "team-a", "experiment") == {"bob-a"}
        assert "bob-a" not in (p.search("bob", None, "experiment") or set())
        assert "Default" in (p.search("bob", None, "experiment") or set())
