"""The audit trail (server/audit.py): its line format, then against the real server and
Keycloak that each audited action — a sign-in, a refused request, a permission change, a user
change, a deletion of an experiment, run, registered model, prompt and artifact — writes exactly
one line, apart from the server log, and never a credential.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.attacks import login_until_callback
from harness.keycloak import KeycloakServer
from harness.ports import free_port
from harness.sso import ADMIN_ROLE, USER_ROLE, SsoRealm, SsoServer, provision_realm, running
from harness.sso import sso_settings as realm_settings
from mlflow_stack.server import audit

API = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"


# --- the format ------------------------------------------------------------------------------

def test_an_upstream_permission_event_names_who_whom_and_what() -> None:
    line = audit.from_upstream({
        "timestamp": "2026-12-04T10:00:00+00:00", "event": "permission.update",
        "actor": "alice@example.test", "resource_type": "group_experiment_permission",
        "resource_id": "7", "detail": {"group_name": "team-b", "permission": "EDIT",
                                       "access_token": "eyJ-not-for-the-log"},
        "status": "success"}, "10.0.0.9")
    assert line == {
        "time": "2026-12-04T10:00:00+00:00", "log": "audit", "action": "permission.update",
        "user": "alice@example.test", "subject": "group team-b", "object": "experiment 7",
        "result": "success", "source": "10.0.0.9", "detail": {"permission": "EDIT"}}


def test_a_user_event_names_the_account_as_subject() -> None:
    line = audit.from_upstream({"event": "user.create", "actor": "alice", "resource_type": "user",
                                "resource_id": "svc", "status": "success"}, None)
    assert (line["subject"], line["object"]) == ("user svc", None)


@pytest.mark.parametrize(("method", "path", "action"), [
    ("POST", "/api/2.0/mlflow/experiments/delete", "experiment.delete"),
    ("POST", "/ajax-api/2.0/mlflow/runs/delete", "run.delete"),
    ("DELETE", "/api/2.0/mlflow/registered-models/delete", "registered_model.delete"),
    ("DELETE", "/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/x.txt", "artifact.delete"),
    ("DELETE", "/api/2.0/mlflow/logged-models/m-123", "logged_model.delete"),
    ("POST", "/api/3.0/mlflow/traces/delete-traces", "trace.delete"),
])
def test_deletion_routes_are_recognised(method: str, path: str, action: str) -> None:
    found = audit._deletion(method, path)
    assert found is not None and found[0] == action


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/api/2.0/mlflow/experiments/delete"),
    ("POST", "/api/2.0/mlflow/runs/delete-tag"),
    ("DELETE", "/api/2.0/mlflow/registered-models/delete-tag"),
])
def test_other_routes_are_not_deletions(method: str, path: str) -> None:
    assert audit._deletion(method, path) is None


# --- the real server -------------------------------------------------------------------------

@dataclass
class Env:
    realm: SsoRealm
    server: SsoServer

    @property
    def trail(self) -> Path:
        return self.server.state.audit_log

    def lines(self) -> list[dict[str, Any]]:
        text = self.trail.read_text() if self.trail.exists() else ""
        return [json.loads(line) for line in text.splitlines()]

    def call(self, who: str | None, method: str, path: str, body: Any = None,
             **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.realm.token(who)}"} if who else {}
        return httpx.request(method, f"{self.server.url}{path}", json=body, timeout=30.0,
                             headers=headers, **kwargs)

    def ok(self, who: str, method: str, path: str, body: Any = None,
           **kwargs: Any) -> dict[str, Any]:
        r = self.call(who, method, path, body, **kwargs)
        assert r.status_code in (200, 201), (method, path, r.status_code, r.text[:300])
        return r.json() if r.content.strip() else {}


@pytest.fixture(scope="module")
def env(keycloak: KeycloakServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    port = free_port()
    realm = provision_realm(keycloak, f"audit-{uuid.uuid4().hex[:8]}",
                            f"http://127.0.0.1:{port}",
                            users={"alice": [ADMIN_ROLE], "bob": [USER_ROLE]})
    settings = realm_settings(realm, port)
    settings = settings.model_copy(update={"auth": settings.auth.model_copy(
        update={"default_permission": "NO_PERMISSIONS"})})
    with running(settings, tmp_path_factory.mktemp("audit") / "state") as server:
        e = Env(realm, server)
        for who in ("alice", "bob"):  # accounts provisioned once, before counting lines
            e.ok(who, "GET", f"{API}/experiments/search", params={"max_results": 1})
        yield e


def one(env: Env, before: int, action: str) -> dict[str, Any]:
    """The single line written since `before`, which must be `action`."""
    written = env.lines()[before:]
    assert [w["action"] for w in written] == [action], written
    line = written[0]
    assert line["log"] == "audit" and line["source"] == "127.0.0.1", line
    return line


@pytest.mark.integration
def test_a_refused_request_is_one_line_with_who_and_what(env: Env) -> None:
    exp = env.ok("alice", "POST", f"{API}/experiments/create",
                 {"name": f"private-{uuid.uuid4().hex[:6]}"})["experiment_id"]
    before = len(env.lines())
    assert env.call("bob", "GET", f"{API}/experiments/get",
                    params={"experiment_id": exp}).status_code == 403
    line = one(env, before, "request.refused")
    assert (line["user"], line["result"], line["object"]) == (
        "bob@example.test", "denied", f"GET {API}/experiments/get")
    assert line["detail"]["status"] == 403

    before = len(env.lines())
    assert env.call(None, "GET", f"{API}/experiments/search").status_code == 401
    line = one(env, before, "request.refused")
    assert (line["user"], line["detail"]["status"]) == (None, 401)


@pytest.mark.integration
def test_a_browser_sign_in_is_one_line(env: Env) -> None:
    bob = env.realm.users["bob"]
    before = len(env.lines())
    with httpx.Client(timeout=30.0) as client:
        login = login_until_callback(client, env.server.url, bob.username, bob.password)
        done = client.get(login.callback, follow_redirects=False)
        assert done.status_code in (302, 303, 307), done.text[:300]
    line = one(env, before, "auth.login")
    assert (line["user"], line["result"]) == ("bob@example.test", "success")


@pytest.mark.integration
def test_permission_and_user_changes_are_one_line_each(env: Env) -> None:
    exp = env.ok("alice", "POST", f"{API}/experiments/create",
                 {"name": f"shared-{uuid.uuid4().hex[:6]}"})["experiment_id"]
    before = len(env.lines())
    env.ok("alice", "POST", f"{API}/permissions/users/bob@example.test/experiments/{exp}",
           {"permission": "READ"})
    line = one(env, before, "permission.create")
    assert (line["user"], line["subject"], line["object"], line["detail"]) == (
        "alice@example.test", "user bob@example.test", f"experiment {exp}",
        {"permission": "READ"})

    before = len(env.lines())
    env.ok("alice", "PATCH", f"{API}/permissions/users/bob@example.test/experiments/{exp}",
           {"permission": "EDIT"})
    assert one(env, before, "permission.update")["detail"] == {"permission": "EDIT"}

    before = len(env.lines())
    name = f"svc-{uuid.uuid4().hex[:6]}"
    env.ok("alice", "POST", f"{API}/users", {"username": name, "display_name": name,
                                             "is_service_account": True})
    line = one(env, before, "user.create")
    assert (line["user"], line["subject"]) == ("alice@example.test", f"user {name}")


@pytest.mark.integration
def test_deletions_are_one_line_each_naming_the_object(env: Env) -> None:
    suffix = uuid.uuid4().hex[:6]
    exp = env.ok("bob", "POST", f"{API}/experiments/create",
                 {"name": f"gone-{suffix}"})["experiment_id"]
    run = env.ok("bob", "POST", f"{API}/runs/create", {"experiment_id": exp})["run"]["info"]
    artifact = f"{ARTIFACTS}/{exp}/{run['run_id']}/artifacts/notes.txt"
    r = httpx.put(f"{env.server.url}{artifact}", content=b"hello", timeout=30.0,
                  headers={"Authorization": f"Bearer {env.realm.token('bob')}"})
    assert r.status_code == 200, r.text
    env.ok("bob", "POST", f"{API}/registered-models/create", {"name": f"model-{suffix}"})
    env.ok("bob", "POST", f"{API}/registered-models/create", {
        "name": f"prompt-{suffix}", "tags": [{"key": "mlflow.prompt.is_prompt",
                                              "value": "true"}]})

    cases: list[tuple[str, str, Any, dict[str, Any], str, str]] = [
        ("DELETE", artifact, None, {}, "artifact.delete",
         f"artifact path={exp}/{run['run_id']}/artifacts/notes.txt"),
        ("POST", f"{API}/runs/delete", {"run_id": run["run_id"]}, {}, "run.delete",
         f"run run_id={run['run_id']}"),
        ("POST", f"{API}/experiments/delete", {"experiment_id": exp}, {},
         "experiment.delete", f"experiment experiment_id={exp}"),
        ("DELETE", f"{API}/registered-models/delete", {"name": f"model-{suffix}"}, {},
         "registered_model.delete", f"registered_model name=model-{suffix}"),
        ("DELETE", f"{API}/registered-models/delete", {"name": f"prompt-{suffix}"}, {},
         "registered_model.delete", f"registered_model name=prompt-{suffix}"),
    ]
    for method, path, body, params, action, obj in cases:
        before = len(env.lines())
        env.ok("bob", method, path, body, params=params)
        line = one(env, before, action)
        assert (line["user"], line["object"], line["result"]) == (
            "bob@example.test", obj, "success"), line


@pytest.mark.integration
def test_the_trail_is_apart_from_the_server_log_and_holds_no_credential(env: Env) -> None:
    trail = env.trail.read_text()
    assert trail and all(json.loads(line)["log"] == "audit" for line in trail.splitlines())
    assert '"log": "audit"' not in env.server.state.log_file.read_text()
    secrets = [env.realm.client_secret, env.realm.token("alice"), env.realm.token("bob"),
               *(u.password for u in env.realm.users.values())]
    assert not [s for s in secrets if s in trail]
