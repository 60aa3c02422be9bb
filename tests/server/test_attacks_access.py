"""Attacks that already fail, kept failing (issue 11): other users' objects, path traversal,
filter injection, open redirects and cross-site requests.

One realm and one server for the module: SQLite metadata and local artifacts in the state dir
(so the tests can look at the filesystem), the default two workers and the default permission
(`READ`: unshared objects are readable by every signed-in user, writable only by their creator).
bob and dave are mlflow users, alice is the admin.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest

from harness.attacks import (
    browser_session_cookie,
    browser_target,
    login_until_callback,
    origin_of,
    raw_request,
)
from harness.keycloak import KeycloakServer
from harness.ports import free_port
from harness.sso import ADMIN_ROLE, USER_ROLE, SsoRealm, SsoServer, provision_realm, running
from harness.sso import sso_settings as realm_settings

pytestmark = pytest.mark.integration
REALM = f"attacks-access-{uuid.uuid4().hex[:8]}"
API = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"


@dataclass
class Env:
    realm: SsoRealm
    server: SsoServer
    tmp: Path  # everything the module's server may write lives under here

    def call(self, who: str, method: str, path: str, body: dict[str, Any] | None = None,
             **kwargs: Any) -> httpx.Response:
        return httpx.request(method, f"{self.server.url}{path}", json=body, timeout=30.0,
                             headers={"Authorization": f"Bearer {self.realm.token(who)}"}, **kwargs)

    def ok(self, who: str, method: str, path: str,
           body: dict[str, Any] | None = None) -> dict[str, Any]:
        r = self.call(who, method, path, body)
        assert r.status_code in (200, 201), (who, method, path, r.status_code, r.text[:300])
        result: dict[str, Any] = r.json() if r.content.strip() else {}
        return result

    def raw(self, who: str, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        """A request with the path exactly as given (httpx would normalise `..`)."""
        answer: tuple[int, bytes] = raw_request(
            self.server.url, method, path, body,
            {"Authorization": f"Bearer {self.realm.token(who)}"})
        return answer

    @property
    def state_root(self) -> Path:
        return Path(self.server.state.root)

    def email(self, who: str) -> str:
        return str(self.realm.users[who].email)


@pytest.fixture(scope="module")
def env(keycloak: KeycloakServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    port = free_port()
    realm = provision_realm(keycloak, REALM, f"http://127.0.0.1:{port}", users={
        "alice": [ADMIN_ROLE], "bob": [USER_ROLE], "dave": [USER_ROLE]})
    settings = realm_settings(realm, port)
    assert settings.auth.default_permission == "READ" and settings.effective_workers > 1
    tmp = tmp_path_factory.mktemp("attacks-access")
    with running(settings, tmp / "state") as server:
        env = Env(realm, server, tmp)
        # Every account exists before a test sets permissions for it (a first request creates
        # it), made while there is nothing but the Default experiment whose decision it caches.
        for who in realm.users:
            env.ok(who, "GET", f"{API}/experiments/search?max_results=1")
        yield env


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class Owned:
    """bob's experiment, run (with an artifact) and registered model (with version 1)."""

    experiment_id: str
    experiment_name: str
    run_id: str
    model: str

    @property
    def artifact_dir(self) -> str:
        return f"{ARTIFACTS}/{self.experiment_id}/{self.run_id}/artifacts"


def make_owned(env: Env, owner: str = "bob", hide_from: str | None = None) -> Owned:
    """A fresh set of objects; with hide_from, that user is set NO_PERMISSIONS on them before
    anyone else has touched them."""
    exp_name = _name("exp")
    exp = str(env.ok(owner, "POST", f"{API}/experiments/create", {"name": exp_name})
              ["experiment_id"])
    model = _name("model")
    env.ok(owner, "POST", f"{API}/registered-models/create", {"name": model})
    if hide_from:
        grant = {"permission": "NO_PERMISSIONS"}
        env.ok(owner, "POST", f"{API}/permissions/users/{env.email(hide_from)}/experiments/{exp}",
               grant)
        env.ok(owner, "POST",
               f"{API}/permissions/users/{env.email(hide_from)}/registered-models/{model}", grant)
    run = env.ok(owner, "POST", f"{API}/runs/create", {"experiment_id": exp})["run"]["info"]
    run_id = str(run["run_id"])
    env.ok(owner, "POST", f"{API}/runs/log-metric",
           {"run_id": run_id, "key": "secret", "value": 42.0, "timestamp": 1})
    owned = Owned(exp, exp_name, run_id, model)
    r = env.call(owner, "PUT", f"{owned.artifact_dir}/owner.txt", content=b"owner's bytes")
    assert r.status_code == 200, r.text
    env.ok(owner, "POST", f"{API}/model-versions/create",
           {"name": model, "source": run["artifact_uri"], "run_id": run_id})
    return owned


def run_dir_on_disk(env: Env, owned: Owned) -> Path:
    return Path(env.server.state.artifacts_dir, owned.experiment_id, owned.run_id, "artifacts")


# --------------------------------------------------------------------------------------------
# another user's objects: dave may read bob's (default READ) but not change them


def test_another_users_experiment_cannot_be_renamed_or_deleted(env: Env) -> None:
    o = make_owned(env)
    for path, body in ((f"{API}/experiments/update",
                        {"experiment_id": o.experiment_id, "new_name": _name("pwned")}),
                       (f"{API}/experiments/delete", {"experiment_id": o.experiment_id})):
        r = env.call("dave", "POST", path, body)
        assert r.status_code == 403, (path, r.status_code, r.text[:200])
    exp = env.ok("dave", "GET", f"{API}/experiments/get?experiment_id={o.experiment_id}")
    assert exp["experiment"]["name"] == o.experiment_name
    assert exp["experiment"]["lifecycle_stage"] == "active"
    new_name = _name("renamed")
    env.ok("bob", "POST", f"{API}/experiments/update",
           {"experiment_id": o.experiment_id, "new_name": new_name})
    env.ok("bob", "POST", f"{API}/experiments/delete", {"experiment_id": o.experiment_id})


def test_another_users_run_cannot_be_written_or_deleted(env: Env) -> None:
    o = make_owned(env)
    writes: dict[str, dict[str, Any]] = {
        "log-metric": {"run_id": o.run_id, "key": "pwned", "value": 1.0, "timestamp": 1},
        "set-tag": {"run_id": o.run_id, "key": "pwned", "value": "yes"},
        "delete": {"run_id": o.run_id},
    }
    for op, body in writes.items():
        r = env.call("dave", "POST", f"{API}/runs/{op}", body)
        assert r.status_code == 403, (op, r.status_code, r.text[:200])
    run = env.ok("dave", "GET", f"{API}/runs/get?run_id={o.run_id}")["run"]
    assert run["info"]["lifecycle_stage"] == "active"
    assert "pwned" not in {m["key"] for m in run["data"].get("metrics", [])}
    assert "pwned" not in {t["key"] for t in run["data"].get("tags", [])}
    for op, body in writes.items():
        env.ok("bob", "POST", f"{API}/runs/{op}", body)


def test_another_users_registered_model_cannot_be_changed(env: Env) -> None:
    o = make_owned(env)
    source = f"mlflow-artifacts:/{o.experiment_id}/{o.run_id}/artifacts"
    writes: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "registered-models/rename", {"name": o.model, "new_name": _name("pwned")}),
        ("POST", "model-versions/create", {"name": o.model, "source": source,
                                           "run_id": o.run_id}),
        ("POST", "registered-models/alias", {"name": o.model, "alias": "prod", "version": "1"}),
        ("DELETE", "registered-models/delete", {"name": o.model}),
    ]
    for method, op, body in writes:
        r = env.call("dave", method, f"{API}/{op}", body)
        assert r.status_code == 403, (op, r.status_code, r.text[:200])
    model = env.ok("dave", "GET", f"{API}/registered-models/get?name={o.model}")
    assert not model["registered_model"].get("aliases")
    versions = env.ok("dave", "GET", f"{API}/registered-models/get-latest-versions?name={o.model}")
    assert [v["version"] for v in versions["model_versions"]] == ["1"]
    # The owner can do all of it.
    for method, op, body in writes[1:3]:
        env.ok("bob", method, f"{API}/{op}", body)
    new_name = _name("renamed")
    env.ok("bob", "POST", f"{API}/registered-models/rename",
           {"name": o.model, "new_name": new_name})
    env.ok("bob", "DELETE", f"{API}/registered-models/delete", {"name": new_name})


def test_another_users_artifacts_cannot_be_uploaded_or_deleted(env: Env) -> None:
    o = make_owned(env)
    on_disk = run_dir_on_disk(env, o)
    assert (on_disk / "owner.txt").read_bytes() == b"owner's bytes"
    for name in ("planted.txt", "owner.txt"):  # a new file, and overwriting the owner's
        r = env.call("dave", "PUT", f"{o.artifact_dir}/{name}", content=b"dave was here")
        assert r.status_code == 403, (name, r.status_code, r.text[:200])
    r = env.call("dave", "DELETE", f"{o.artifact_dir}/owner.txt")
    assert r.status_code == 403, (r.status_code, r.text[:200])
    assert sorted(p.name for p in on_disk.iterdir()) == ["owner.txt"]
    assert (on_disk / "owner.txt").read_bytes() == b"owner's bytes"
    assert env.call("dave", "GET", f"{o.artifact_dir}/owner.txt").content == b"owner's bytes"
    assert env.call("bob", "PUT", f"{o.artifact_dir}/more.txt", content=b"x").status_code == 200
    assert env.call("bob", "DELETE", f"{o.artifact_dir}/owner.txt").status_code == 200
    assert sorted(p.name for p in on_disk.iterdir()) == ["more.txt"]


@pytest.fixture(scope="module")
def hidden(env: Env) -> Owned:
    """bob's objects with NO_PERMISSIONS for dave; dave's own experiment beside them."""
    return make_owned(env, hide_from="dave")


def test_objects_hidden_from_a_user_cannot_be_read_by_them(env: Env, hidden: Owned) -> None:
    o = hidden
    reads = [
        f"{API}/experiments/get?experiment_id={o.experiment_id}",
        f"{API}/experiments/get-by-name?experiment_name={o.experiment_name}",
        f"{API}/runs/get?run_id={o.run_id}",
        f"{API}/metrics/get-history?run_id={o.run_id}&metric_key=secret",
        f"{API}/artifacts/list?run_id={o.run_id}",
        f"/get-artifact?run_id={o.run_id}&path=owner.txt",
        f"{o.artifact_dir}/owner.txt",
        f"{ARTIFACTS}?path={o.experiment_id}/{o.run_id}/artifacts",
        f"{API}/registered-models/get?name={o.model}",
        f"{API}/registered-models/get-latest-versions?name={o.model}",
        f"{API}/model-versions/get?name={o.model}&version=1",
        f"{API}/model-versions/get-download-uri?name={o.model}&version=1",
        f"/model-versions/get-artifact?name={o.model}&version=1&path=owner.txt",
    ]
    for path in reads:
        assert env.call("bob", "GET", path).status_code == 200, path
        for _ in range(3):  # fresh connections: every worker answers the same
            r = env.call("dave", "GET", path)
            assert r.status_code == 403, (path, r.status_code, r.text[:200])
    r = env.call("dave", "POST", f"{API}/runs/search", {"experiment_ids": [o.experiment_id]})
    assert r.status_code == 403, r.text[:200]


# --------------------------------------------------------------------------------------------
# path traversal in artifact paths: refused, nothing outside the run's artifact root touched


def _traversals(o: Owned, state: Path, name: str) -> dict[str, str]:
    """Artifact request paths that all try to reach `state / name` (outside the artifact root)."""
    run = o.artifact_dir
    absolute = str(state / name).lstrip("/")
    return {
        "dotdot": f"{run}/../../../../{name}",
        "dotdot-in-subdir": f"{run}/sub/../../../../../{name}",
        "encoded-dots": f"{run}/%2e%2e/%2e%2e/%2e%2e/%2e%2e/{name}",
        "encoded-dots-and-slashes": f"{run}/%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f{name}",
        "encoded-slashes": f"{run}/..%2f..%2f..%2f..%2f{name}",
        "double-encoded": f"{run}/%252e%252e%252f%252e%252e%252f%252e%252e%252f%252e%252e%252f"
                          f"{name}",
        "from-experiment": f"{ARTIFACTS}/{o.experiment_id}/../{name}",
        "absolute": f"{ARTIFACTS}//{absolute}",
        "absolute-encoded": f"{ARTIFACTS}/{quote('/' + absolute, safe='')}",
        "absolute-in-run": f"{run}//{absolute}",
    }


TRAVERSALS = list(_traversals(Owned("1", "e", "r", "m"), Path("/s"), "n"))
METHODS = ("PUT", "GET", "DELETE")


def _files_named(root: Path, name: str) -> list[Path]:
    return list(root.rglob(f"*{name}*"))


@pytest.mark.parametrize(("case", "method"), [(c, m) for c in TRAVERSALS for m in METHODS],
                         ids=[f"{c}-{m}" for c in TRAVERSALS for m in METHODS])
def test_artifact_path_traversal_is_refused(env: Env, case: str, method: str) -> None:
    o = make_owned(env)
    name = _name(f"traversal-{case}-{method}")
    target = env.state_root / name
    path = _traversals(o, env.state_root, name)[case]
    secret = f"outside the artifact root {uuid.uuid4().hex}".encode()
    if method != "PUT":
        target.write_bytes(secret)  # something to read or delete out there
    status, body = env.raw("bob", method, path, b"written by traversal")
    inside = run_dir_on_disk(env, o)
    outside = [p for p in _files_named(env.tmp, name) if p != target and inside not in p.parents]
    assert not outside, f"{method} {path} wrote {outside}"
    if method == "PUT":
        assert not target.exists(), f"PUT {path} wrote {target}"
    else:
        assert target.read_bytes() == secret, f"{method} {path} changed {target}"
        assert secret not in body, f"{method} {path} returned the file outside the root"
    assert 400 <= status < 500, (method, path, status, body[:600])


def test_artifact_listing_cannot_leave_the_run(env: Env) -> None:
    o = make_owned(env)
    run = f"{o.experiment_id}/{o.run_id}/artifacts"
    state = str(env.state_root)
    for value in (f"{run}/../../..", f"{run}/%2e%2e/%2e%2e/%2e%2e", "..", "../..",
                  f"{o.experiment_id}/..", state, quote(state, safe="")):
        status, body = env.raw("bob", "GET", f"{ARTIFACTS}?path={value}")
        assert 400 <= status < 500, (value, status, body[:300])
        assert b"secret-key" not in body and b"server.json" not in body, (value, body[:300])


# --------------------------------------------------------------------------------------------
# SQL-like filter strings and order_by: 400 or only what the user may read, never a 500


EXPERIMENT_FILTERS = ["name = 'x' OR 1=1", "name LIKE '%' OR '1'='1'", "name LIKE '%'",
                      "name = 'x'; DROP TABLE experiments;--", "name = 'x' --", "' OR ''='",
                      "name = 'x'' OR ''1''=''1'", "name = \"x\" UNION SELECT * FROM users",
                      "name LIKE '%exp-%'"]
RUN_FILTERS = ["metrics.secret > 0 OR 1=1", "attributes.run_name = 'a' OR '1'='1'",
               "tags.x = 'a'; DROP TABLE runs;--", "attributes.run_name LIKE '%' --",
               "params.p = 'x'' OR ''1''=''1'", "metrics.secret > 0",
               "attributes.experiment_id != '-1'"]
MODEL_FILTERS = ["name LIKE '%' OR 1=1", "name LIKE '%'", "name LIKE '%model-%'",
                 "name = 'x'; DROP TABLE registered_models;--", "name = 'x'' OR ''1''=''1'"]
ORDER_BYS = ["start_time; DROP TABLE runs", "metrics.secret DESC, (SELECT 1)",
             "attributes.start_time DESC; --", "name'", "(CASE WHEN 1=1 THEN name END)"]


@pytest.fixture(scope="module")
def daves_experiment(env: Env, hidden: Owned) -> str:
    exp = str(env.ok("dave", "POST", f"{API}/experiments/create", {"name": _name("dave")})
              ["experiment_id"])
    env.ok("dave", "POST", f"{API}/runs/create", {"experiment_id": exp})
    return exp


def _assert_nothing_hidden(r: httpx.Response, o: Owned, what: str) -> None:
    assert r.status_code in (200, 400), (what, r.status_code, r.text[:300])
    if r.status_code == 200:
        data = r.json()
        ids = {e["experiment_id"] for e in data.get("experiments", [])}
        ids |= {run["info"]["experiment_id"] for run in data.get("runs", [])}
        assert o.experiment_id not in ids, (what, ids)
        for secret in (o.run_id, o.model, o.experiment_name):
            assert secret not in r.text, (what, secret, r.text[:300])


def _assert_store_intact(env: Env, o: Owned) -> None:
    runs = env.ok("bob", "POST", f"{API}/runs/search", {"experiment_ids": [o.experiment_id]})
    assert [r["info"]["run_id"] for r in runs["runs"]] == [o.run_id]
    env.ok("bob", "GET", f"{API}/registered-models/get?name={o.model}")


@pytest.mark.parametrize("filter_string", EXPERIMENT_FILTERS)
def test_experiment_search_filter_injection(env: Env, hidden: Owned,
                                            filter_string: str) -> None:
    r = env.call("dave", "POST", f"{API}/experiments/search",
                 {"filter": filter_string, "max_results": 1000})
    _assert_nothing_hidden(r, hidden, filter_string)
    _assert_store_intact(env, hidden)


@pytest.mark.parametrize("filter_string", RUN_FILTERS)
def test_run_search_filter_injection(env: Env, hidden: Owned, daves_experiment: str,
                                     filter_string: str) -> None:
    r = env.call("dave", "POST", f"{API}/runs/search",
                 {"experiment_ids": [daves_experiment], "filter": filter_string})
    _assert_nothing_hidden(r, hidden, filter_string)
    r = env.call("dave", "POST", f"{API}/runs/search",
                 {"experiment_ids": [daves_experiment, hidden.experiment_id],
                  "filter": filter_string})
    assert r.status_code == 403, (filter_string, r.status_code, r.text[:300])
    _assert_store_intact(env, hidden)


@pytest.mark.parametrize("filter_string", MODEL_FILTERS)
def test_model_search_filter_injection(env: Env, hidden: Owned, filter_string: str) -> None:
    for path in ("registered-models/search", "model-versions/search"):
        r = env.call("dave", "GET", f"{API}/{path}", params={"filter": filter_string})
        _assert_nothing_hidden(r, hidden, f"{path} {filter_string}")
    _assert_store_intact(env, hidden)


def _pages(env: Env, who: str, path: str, params: dict[str, str]) -> list[list[str]]:
    """Every page of a registry search, as the model names on each."""
    pages: list[list[str]] = []
    token = ""
    while True:
        body = env.ok(who, "GET", f"{API}/{path}?" + "&".join(
            f"{k}={quote(v)}" for k, v in {**params, "page_token": token}.items() if v))
        rows = body.get("registered_models", body.get("model_versions", []))
        pages.append([row["name"] for row in rows])
        token = body.get("next_page_token", "")
        if not token:
            return pages


def test_registry_search_pages_show_only_what_the_user_may_read(env: Env) -> None:
    """A page the user may read whole goes out as MLflow wrote it (server/patches/
    registry_filter.py); one with a hidden model is filtered and topped up to full pages."""
    prefix = _name("paged")
    names = [f"{prefix}-{i}" for i in range(6)]
    hidden = {names[1], names[4]}
    exp = str(env.ok("bob", "POST", f"{API}/experiments/create", {"name": prefix})
              ["experiment_id"])
    run = env.ok("bob", "POST", f"{API}/runs/create", {"experiment_id": exp})["run"]["info"]
    for name in names:
        env.ok("bob", "POST", f"{API}/registered-models/create", {"name": name})
        env.ok("bob", "POST", f"{API}/model-versions/create",
               {"name": name, "source": run["artifact_uri"], "run_id": run["run_id"]})
        if name in hidden:
            env.ok("bob", "POST", f"{API}/permissions/users/{env.email('dave')}"
                   f"/registered-models/{name}", {"permission": "NO_PERMISSIONS"})
    visible = [n for n in names if n not in hidden]
    matching = {"filter": f"name LIKE '{prefix}-%'"}
    models = {**matching, "order_by": "name ASC"}
    for who, expected in (("alice", names), ("bob", names), ("dave", visible)):
        for size in ("2", "3", "100"):
            pages = _pages(env, who, "registered-models/search", {**models, "max_results": size})
            assert [n for p in pages for n in p] == expected, (who, size, pages)
            assert all(len(p) == int(size) for p in pages[:-1]), (who, size, pages)
            pages = _pages(env, who, "model-versions/search", {**matching, "max_results": size})
            assert sorted(n for p in pages for n in p) == expected, (who, size, pages)
            assert all(len(p) == int(size) for p in pages[:-1]), (who, size, pages)
    # dave's first page of two holds a hidden model: the filter removes it and tops the page up.
    assert _pages(env, "dave", "registered-models/search", {**models, "max_results": "2"}) == \
        [[names[0], names[2]], [names[3], names[5]]]
    # A page dave may read whole is the page bob (also no admin) and alice (the admin) get.
    only = {"filter": f"name = '{names[3]}'"}
    for path in ("registered-models/search", "model-versions/search"):
        r = env.call("dave", "GET", f"{API}/{path}", params=only)
        assert r.status_code == 200 and r.json() == env.ok("alice", "GET", f"{API}/{path}?"
                                                          f"filter={quote(only['filter'])}")
        for name in hidden:
            r = env.call("dave", "GET", f"{API}/{path}", params={"filter": f"name = '{name}'"})
            assert r.status_code == 200 and name not in r.text, (path, name, r.text[:300])


@pytest.mark.parametrize("order_by", ORDER_BYS)
def test_order_by_injection(env: Env, hidden: Owned, daves_experiment: str,
                            order_by: str) -> None:
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "runs/search", {"experiment_ids": [daves_experiment], "order_by": [order_by]}),
        ("POST", "experiments/search", {"order_by": [order_by], "max_results": 1000}),
    ]
    for method, path, body in requests:
        _assert_nothing_hidden(env.call("dave", method, f"{API}/{path}", body), hidden,
                               f"{path} {order_by}")
    r = env.call("dave", "GET", f"{API}/registered-models/search",
                 params={"order_by": order_by})
    _assert_nothing_hidden(r, hidden, f"registered-models {order_by}")
    _assert_store_intact(env, hidden)


# --------------------------------------------------------------------------------------------
# open redirects: after login the browser never leaves the server's origin


def _auth_status(client: httpx.Client, env: Env) -> dict[str, Any]:
    status: dict[str, Any] = client.get(f"{env.server.url}/auth/status").json()
    return status


def _login_with_next(env: Env, next_value: str) -> tuple[str, dict[str, Any]]:
    """bob logs in with ?next=next_value; where the callback sends him, and his auth status."""
    bob = env.realm.users["bob"]
    with httpx.Client(timeout=30.0) as client:
        flow = login_until_callback(client, env.server.url, bob.username, bob.password,
                                    {"next": next_value})
        # /login leaves the origin only for the realm's own login page, and asks Keycloak to
        # come back to our callback.
        auth = f"{env.realm.issuer}/protocol/openid-connect/auth"
        assert flow.login_location.startswith(f"{auth}?"), flow.login_location
        query = parse_qs(urlsplit(flow.login_location).query)
        assert query["redirect_uri"] == [f"{env.server.url}/callback"], query
        assert flow.callback.startswith(f"{env.server.url}/callback?"), flow.callback
        done = client.get(flow.callback, follow_redirects=False)
        assert done.status_code in (302, 303, 307), (done.status_code, done.text[:300])
        return done.headers["location"], _auth_status(client, env)


NEXT_VALUES = ["https://evil.example/", "//evil.example", "/\\evil.example", "/\\/evil.example",
               "/\t/evil.example", "/%09/evil.example", " //evil.example", "https:evil.example",
               "javascript:alert(document.domain)", "/login?next=https://evil.example/"]


@pytest.mark.parametrize("next_value", NEXT_VALUES)
def test_login_next_never_redirects_off_site(env: Env, next_value: str) -> None:
    location, status = _login_with_next(env, next_value)
    assert status.get("authenticated") is True, status  # the redirect after a real login
    target = browser_target(f"{env.server.url}/callback", location)
    assert origin_of(target) == origin_of(env.server.url), (next_value, location, target)


def test_login_next_to_a_page_of_the_site_is_followed(env: Env) -> None:
    """The control for the test above: `next` is honoured, only off-site targets are not."""
    location, status = _login_with_next(env, "/#/experiments/0")
    assert status.get("authenticated") is True, status
    assert browser_target(f"{env.server.url}/callback", location) == \
        f"{env.server.url}/#/experiments/0"


def _tampered(callback: str) -> str:
    state = parse_qs(urlsplit(callback).query)["state"][0]
    return callback.replace(f"state={state}", f"state={state[:-2]}xx", 1)


CALLBACK_TAMPERING = ["forged-state", "no-state", "tampered-state", "other-browser",
                      "replayed", "provider-error"]


@pytest.mark.parametrize("case", CALLBACK_TAMPERING)
def test_callback_tampering_stays_on_site_and_logs_nobody_in(env: Env, case: str) -> None:
    bob = env.realm.users["bob"]
    with httpx.Client(timeout=30.0) as victim, httpx.Client(timeout=30.0) as other:
        flow = login_until_callback(victim, env.server.url, bob.username, bob.password,
                                    {"next": "https://evil.example/"})
        url, client = {
            "forged-state": (f"{env.server.url}/callback?code=x&state=forged"
                             "&next=https://evil.example/", victim),
            "no-state": (f"{env.server.url}/callback?code=x", victim),
            "tampered-state": (_tampered(flow.callback), victim),
            "other-browser": (flow.callback, other),  # the code and state, without the session
            "replayed": (flow.callback, victim),
            "provider-error": (f"{env.server.url}/callback?error=access_denied"
                               "&error_description=https://evil.example/", victim),
        }[case]
        if case == "replayed":
            first = victim.get(flow.callback, follow_redirects=False)
            assert first.status_code == 302 and _auth_status(victim, env)["authenticated"]
            victim.cookies.clear()
        r = client.get(url, follow_redirects=False)
        assert r.status_code in (302, 303, 307, 400, 401, 403), (case, r.status_code)
        location = r.headers.get("location", "")
        target = browser_target(url, location)
        assert origin_of(target) == origin_of(env.server.url), (case, location)
        assert "error" in location, (case, location)
        assert _auth_status(client, env).get("authenticated") is not True, case


# --------------------------------------------------------------------------------------------
# cross-site requests with a real browser session


@pytest.fixture(scope="module")
def session_cookie(env: Env, chromium: object) -> str:
    bob = env.realm.users["bob"]
    return str(browser_session_cookie(chromium, env.server.url, env.realm.issuer,
                                      bob.username, bob.password))


CROSS_SITE_ORIGINS = ["https://evil.example", "null", "http://127.0.0.1.evil.example"]
SIMPLE_TYPES = ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]


def test_cross_site_posts_with_a_session_cookie_are_refused(env: Env,
                                                            session_cookie: str) -> None:
    def post(path: str, name: str, origin: str, content_type: str) -> httpx.Response:
        return httpx.post(f"{env.server.url}{path}", timeout=30.0,
                          content=f'{{"name": "{name}"}}'.encode(),
                          headers={"Cookie": f"session={session_cookie}", "Origin": origin,
                                   "Content-Type": content_type})

    # Control: the cookie is a live session, and the server's own origin may post with it.
    own = post(f"{API}/experiments/create", _name("own"), env.server.url, "application/json")
    assert own.status_code == 200, own.text[:300]
    attempted = []
    for prefix in ("/api/2.0/mlflow", "/ajax-api/2.0/mlflow"):
        for origin in CROSS_SITE_ORIGINS:
            for content_type in [*SIMPLE_TYPES, "application/json"]:
                name = _name("csrf")
                attempted.append(name)
                r = post(f"{prefix}/experiments/create", name, origin, content_type)
                assert r.status_code == 403, (prefix, origin, content_type, r.status_code,
                                              r.text[:200])
    o = make_owned(env)
    r = httpx.put(f"{env.server.url}{o.artifact_dir}/csrf.txt", content=b"x", timeout=30.0,
                  headers={"Cookie": f"session={session_cookie}",
                           "Origin": "https://evil.example"})
    assert r.status_code == 403, r.text[:200]
    assert not (run_dir_on_disk(env, o) / "csrf.txt").exists()
    found = env.ok("alice", "POST", f"{API}/experiments/search",
                   {"filter": "name LIKE 'csrf-%'", "max_results": 1000})
    assert not found.get("experiments"), found
