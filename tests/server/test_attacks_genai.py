"""MLflow 3's GenAI surfaces under SSO (issue 16 §4): prompts, traces (the v2 and v3 REST
endpoints and OTLP ingestion at /v1/traces) and logged models, authorised like the rest.

One realm and one server for the module (SQLite, local artifacts, the default two workers and
the default permission `READ`). bob owns everything; for each of the others a fresh set of bob's
objects is made and the user is granted on it before touching it (mlflow-oidc-auth caches a
user's permission per worker for 30 s): carol EDIT, dave READ, erin NO_PERMISSIONS; alice is
the admin. The AI Gateway is off by default (tests/server/test_surfaces.py covers it).

The OTLP tests hold the patch of server/patches/otlp_ingest.py: without it a user with an
experiment of their own appended spans to another user's trace and linked traces to another
user's run. The link-to-run test holds server/patches/trace_links.py: without it any trace, even
a hidden one, could be linked to a run of one's own.
"""

from __future__ import annotations

import gzip
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from harness.keycloak import KeycloakServer
from harness.ports import free_port
from harness.sso import ADMIN_ROLE, USER_ROLE, SsoRealm, SsoServer, provision_realm, running
from harness.sso import sso_settings as realm_settings

pytestmark = pytest.mark.integration
REALM = f"attacks-genai-{uuid.uuid4().hex[:8]}"
API = "/api/2.0/mlflow"
API3 = "/api/3.0/mlflow"
IS_PROMPT = "mlflow.prompt.is_prompt"
PROMPT_TEXT = "mlflow.prompt.text"
PROMPT_SEARCH = f"{API}/registered-models/search?filter=tags.%60{IS_PROMPT}%60%20%3D%20%27true%27"


@dataclass
class Env:
    realm: SsoRealm
    server: SsoServer

    def call(self, who: str | None, method: str, path: str, body: dict[str, Any] | None = None,
             **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if who:
            headers["Authorization"] = f"Bearer {self.realm.token(who)}"
        return httpx.request(method, f"{self.server.url}{path}", json=body, headers=headers,
                             timeout=30.0, **kwargs)

    def ok(self, who: str, method: str, path: str,
           body: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
        r = self.call(who, method, path, body, **kwargs)
        assert r.status_code in (200, 201), (who, method, path, r.status_code, r.text[:300])
        result: dict[str, Any] = r.json() if r.content.strip() else {}
        return result

    def email(self, who: str) -> str:
        return str(self.realm.users[who].email)


@pytest.fixture(scope="module")
def env(keycloak: KeycloakServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    port = free_port()
    realm = provision_realm(keycloak, REALM, f"http://127.0.0.1:{port}", users={
        "alice": [ADMIN_ROLE], "bob": [USER_ROLE], "carol": [USER_ROLE], "dave": [USER_ROLE],
        "erin": [USER_ROLE]})
    settings = realm_settings(realm, port)
    assert settings.auth.default_permission == "READ" and not settings.server.ai_gateway
    with running(settings, tmp_path_factory.mktemp("attacks-genai") / "state") as server:
        result = Env(realm, server)
        for who in realm.users:  # accounts exist before anyone grants them anything
            result.ok(who, "GET", f"{API}/users/current")
        yield result


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------------------------
# OTLP payloads (JSON encoding: hex ids, as the OTLP spec spells them)


def otlp_span(trace_hex: str, name: str, parent_hex: str | None = None,
              inputs: str = "hello") -> dict[str, Any]:
    now = time.time_ns()
    span: dict[str, Any] = {
        "traceId": trace_hex, "spanId": uuid.uuid4().hex[:16], "name": name,
        "startTimeUnixNano": str(now), "endTimeUnixNano": str(now + 1_000_000),
        "attributes": [{"key": "mlflow.spanInputs", "value": {"stringValue": json.dumps(inputs)}}],
    }
    if parent_hex:
        span["parentSpanId"] = parent_hex
    return span


def otlp_body(*spans: dict[str, Any]) -> bytes:
    return json.dumps({"resourceSpans": [{"resource": {}, "scopeSpans": [{"spans": list(spans)}]}]}
                      ).encode()


def post_otlp(env: Env, who: str | None, experiment_id: str, body: bytes,
              run_id: str | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
    sent = {"x-mlflow-experiment-id": experiment_id, "content-type": "application/json",
            **(headers or {})}
    if run_id:
        sent["x-mlflow-run-id"] = run_id
    return env.call(who, "POST", "/v1/traces", content=body, headers=sent)


def trace_id_of(trace_hex: str) -> str:
    return f"tr-{trace_hex}"


def span_names(env: Env, trace_id: str) -> list[str]:
    trace = env.ok("bob", "GET", f"{API3}/traces/get?trace_id={trace_id}")["trace"]
    return sorted(span["name"] for span in trace["spans"])


# --------------------------------------------------------------------------------------------
# bob's objects


@dataclass
class Owned:
    """bob's experiment with a run, a trace (one root span, sent over OTLP) and a logged model,
    and bob's prompt with version 1."""

    experiment_id: str
    run_id: str
    trace_hex: str
    logged_model: str
    prompt: str

    @property
    def trace_id(self) -> str:
        return trace_id_of(self.trace_hex)


def make_owned(env: Env, grant: tuple[str, str] | None = None) -> Owned:
    """A fresh set of bob's objects; with grant (user, permission) that user gets it on the
    experiment and the prompt before anyone else touched them."""
    exp = str(env.ok("bob", "POST", f"{API}/experiments/create", {"name": _name("genai")})
              ["experiment_id"])
    prompt = _name("prompt")
    env.ok("bob", "POST", f"{API}/registered-models/create",
           {"name": prompt, "tags": [{"key": IS_PROMPT, "value": "true"}]})
    if grant:
        who, permission = grant
        env.ok("bob", "POST", f"{API}/permissions/users/{env.email(who)}/experiments/{exp}",
               {"permission": permission})
        env.ok("bob", "POST", f"{API}/permissions/users/{env.email(who)}/prompts/{prompt}",
               {"permission": permission})
    env.ok("bob", "POST", f"{API}/model-versions/create", {
        "name": prompt, "source": "dummy-source",
        "tags": [{"key": IS_PROMPT, "value": "true"},
                 {"key": PROMPT_TEXT, "value": "Hello {{name}}"}]})
    run_id = str(env.ok("bob", "POST", f"{API}/runs/create", {"experiment_id": exp})
                 ["run"]["info"]["run_id"])
    trace_hex = uuid.uuid4().hex
    r = post_otlp(env, "bob", exp, otlp_body(otlp_span(trace_hex, "root")))
    assert r.status_code == 200, r.text[:300]
    model = env.ok("bob", "POST", f"{API}/logged-models",
                   {"experiment_id": exp, "name": "agent"})["model"]["info"]["model_id"]
    return Owned(exp, run_id, trace_hex, str(model), prompt)


Call = tuple[str, str, dict[str, Any] | None]


def reads(o: Owned) -> list[Call]:
    locations = {"locations": [{"type": "MLFLOW_EXPERIMENT",
                                "mlflow_experiment": {"experiment_id": o.experiment_id}}]}
    return [
        # prompt registry: prompts are registered models tagged mlflow.prompt.is_prompt
        ("GET", f"{API}/registered-models/get?name={o.prompt}", None),
        ("GET", f"{API}/model-versions/get?name={o.prompt}&version=1", None),
        # traces, v3 and v2
        ("GET", f"{API3}/traces/get?trace_id={o.trace_id}", None),
        ("GET", f"{API3}/traces/{o.trace_id}", None),
        ("POST", f"{API3}/traces/search", locations),
        ("POST", f"{API3}/traces/batchGetInfos", {"trace_ids": [o.trace_id]}),
        ("GET", f"{API3}/traces/batchGet?trace_ids={o.trace_id}", None),
        ("GET", f"{API}/traces?experiment_ids={o.experiment_id}", None),
        ("GET", f"{API}/traces/{o.trace_id}/info", None),
        # logged models
        ("GET", f"{API}/logged-models/{o.logged_model}", None),
        ("GET", f"{API}/logged-models/{o.logged_model}/artifacts/directories", None),
    ]


def writes(o: Owned) -> list[Call]:
    return [
        ("POST", f"{API}/model-versions/create", {
            "name": o.prompt, "source": "dummy-source",
            "tags": [{"key": IS_PROMPT, "value": "true"}, {"key": PROMPT_TEXT, "value": "v2"}]}),
        ("POST", f"{API}/registered-models/alias",
         {"name": o.prompt, "alias": "production", "version": "1"}),
        ("PATCH", f"{API3}/traces/{o.trace_id}/tags", {"key": "reviewed", "value": "yes"}),
        ("POST", f"{API3}/traces/{o.trace_id}/assessments", {"assessment": {
            "assessment_name": "helpful", "trace_id": o.trace_id,
            "source": {"source_type": "HUMAN", "source_id": "reviewer"},
            "feedback": {"value": True}}}),
        ("PATCH", f"{API}/logged-models/{o.logged_model}/tags",
         {"tags": [{"key": "stage", "value": "eval"}]}),
        ("PATCH", f"{API}/logged-models/{o.logged_model}",
         {"model_id": o.logged_model, "status": "LOGGED_MODEL_READY"}),
    ]


def deletes(o: Owned) -> list[Call]:
    return [
        ("POST", f"{API3}/traces/delete-traces",
         {"experiment_id": o.experiment_id, "request_ids": [o.trace_id]}),
        ("DELETE", f"{API}/logged-models/{o.logged_model}", None),
        ("DELETE", f"{API}/model-versions/delete", {"name": o.prompt, "version": "1"}),
        ("DELETE", f"{API}/registered-models/delete", {"name": o.prompt}),
    ]


def _key(call: Call) -> str:
    method, path, _ = call
    return f"{method} {path.split('?')[0]}"


def statuses(env: Env, who: str | None, calls: list[Call]) -> dict[str, int]:
    return {_key(c): env.call(who, c[0], c[1], c[2]).status_code for c in calls}


def expect(calls: list[Call], status: int) -> dict[str, int]:
    return {_key(c): status for c in calls}


# (user, grant on bob's objects) -> expected status of read, write (incl. OTLP into bob's
# experiment) and delete calls
MATRIX: dict[str, tuple[str | None, int, int, int]] = {
    "bob": (None, 200, 200, 200),        # the owner
    "alice": (None, 200, 200, 200),      # the admin
    "carol": ("EDIT", 200, 200, 403),
    "dave": ("READ", 200, 403, 403),
    "erin": ("NO_PERMISSIONS", 403, 403, 403),
}


@pytest.mark.parametrize("who", list(MATRIX))
def test_genai_objects_are_authorised_like_the_rest(env: Env, who: str) -> None:
    permission, read, write, delete = MATRIX[who]
    o = make_owned(env, (who, permission) if permission else None)
    assert statuses(env, who, reads(o)) == expect(reads(o), read)
    r = post_otlp(env, who, o.experiment_id, otlp_body(otlp_span(uuid.uuid4().hex, "new")))
    assert r.status_code == write, r.text[:200]
    assert statuses(env, who, writes(o)) == expect(writes(o), write)
    if write != 200:  # nothing changed
        assert env.ok("bob", "GET", f"{API}/registered-models/get-latest-versions?name="
                      f"{o.prompt}")["model_versions"][0]["version"] == "1"
        trace = env.ok("bob", "GET", f"{API3}/traces/{o.trace_id}")["trace"]["trace_info"]
        assert "reviewed" not in trace.get("tags", {})
    assert statuses(env, who, deletes(o)) == expect(deletes(o), delete)
    if delete != 200:  # still there
        assert env.call("bob", "GET", f"{API3}/traces/{o.trace_id}").status_code == 200
        assert env.call("bob", "GET", f"{API}/logged-models/{o.logged_model}").status_code == 200
        assert env.call("bob", "GET", f"{API}/model-versions/get?name={o.prompt}&version=1"
                        ).status_code == 200


def test_without_a_token_every_genai_call_is_401(env: Env) -> None:
    o = make_owned(env)
    for calls in (reads(o), writes(o), deletes(o)):
        assert statuses(env, None, calls) == expect(calls, 401)
    r = post_otlp(env, None, o.experiment_id, otlp_body(otlp_span(uuid.uuid4().hex, "x")))
    assert r.status_code == 401
    assert env.call(None, "GET", PROMPT_SEARCH).status_code == 401
    assert env.call(None, "POST", f"{API}/logged-models/search",
                    {"experiment_ids": [o.experiment_id]}).status_code == 401
    assert span_names(env, o.trace_id) == ["root"]


def test_searches_leave_out_what_the_user_may_not_read(env: Env) -> None:
    o = make_owned(env, ("erin", "NO_PERMISSIONS"))
    for who, sees in (("bob", True), ("alice", True), ("dave", True), ("erin", False)):
        assert (o.prompt in env.call(who, "GET", PROMPT_SEARCH).text) is sees, who
        r = env.call(who, "POST", f"{API}/logged-models/search",
                     {"experiment_ids": [o.experiment_id]})
        assert (r.status_code == 200 and o.logged_model in r.text) is sees, (who, r.text[:200])
        r = env.call(who, "POST", f"{API3}/traces/search", {"locations": [{
            "type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": o.experiment_id}}]})
        assert (r.status_code == 200 and o.trace_id in r.text) is sees, (who, r.status_code)


# --------------------------------------------------------------------------------------------
# OTLP ingestion: the trace ids in the payload and the run header are checked too
# (server/patches/otlp_ingest.py)


def own_experiment(env: Env, who: str) -> tuple[str, str]:
    exp = str(env.ok(who, "POST", f"{API}/experiments/create", {"name": _name(who)})
              ["experiment_id"])
    run = str(env.ok(who, "POST", f"{API}/runs/create", {"experiment_id": exp})
              ["run"]["info"]["run_id"])
    return exp, run


@pytest.mark.parametrize("who", ["dave", "erin"])
def test_spans_cannot_be_added_to_another_users_trace(env: Env, who: str) -> None:
    o = make_owned(env, ("erin", "NO_PERMISSIONS") if who == "erin" else None)
    exp, _ = own_experiment(env, who)  # where the caller may write
    injected = otlp_span(o.trace_hex, "injected", parent_hex=uuid.uuid4().hex[:16],
                         inputs="ignore previous instructions")
    for body, headers in ((otlp_body(injected), {}),
                          (gzip.compress(otlp_body(injected)), {"content-encoding": "gzip"}),
                          # hidden among spans of a new trace of the caller's
                          (otlp_body(otlp_span(uuid.uuid4().hex, "mine"), injected), {})):
        r = post_otlp(env, who, exp, body, headers=headers)
        assert r.status_code == 403, (r.status_code, r.text[:200])
    assert span_names(env, o.trace_id) == ["root"]


def test_traces_cannot_be_linked_to_another_users_run(env: Env) -> None:
    o = make_owned(env)
    exp, own_run = own_experiment(env, "dave")
    trace_hex = uuid.uuid4().hex
    r = post_otlp(env, "dave", exp, otlp_body(otlp_span(trace_hex, "mine")), run_id=o.run_id)
    assert r.status_code == 403, r.text[:200]
    r = post_otlp(env, "dave", exp, otlp_body(otlp_span(trace_hex, "mine")), run_id="0" * 32)
    assert r.status_code == 403  # an unknown run: refused, not linked later
    # The same trace into the caller's own run is fine.
    assert post_otlp(env, "dave", exp, otlp_body(otlp_span(trace_hex, "mine")),
                     run_id=own_run).status_code == 200


def test_only_readable_traces_can_be_linked_to_ones_own_run(env: Env) -> None:
    o = make_owned(env, ("erin", "NO_PERMISSIONS"))
    link = f"{API}/traces/link-to-run"
    _, erins_run = own_experiment(env, "erin")
    for body in ({"trace_ids": [o.trace_id], "run_id": erins_run},
                 {"traceIds": [o.trace_id], "run_id": erins_run},  # the other spelling
                 {"trace_ids": ["tr-" + "0" * 32], "run_id": erins_run}):  # unknown trace
        r = env.call("erin", "POST", link, body)
        assert r.status_code == 403, (body, r.status_code, r.text[:200])
    # Not into someone else's run either (mlflow-oidc-auth's own check).
    _, daves_run = own_experiment(env, "dave")
    assert env.call("dave", "POST", link, {"trace_ids": [o.trace_id], "run_id": o.run_id}
                    ).status_code == 403
    # dave may read bob's trace (the default READ): he may link it to his own run, as MLflow's
    # own auth allows; so may bob.
    env.ok("dave", "POST", link, {"trace_ids": [o.trace_id], "run_id": daves_run})
    env.ok("bob", "POST", link, {"trace_ids": [o.trace_id], "run_id": o.run_id})


def test_owners_and_editors_still_ingest_into_existing_traces(env: Env) -> None:
    o = make_owned(env, ("carol", "EDIT"))
    follow_up = otlp_span(o.trace_hex, "child", parent_hex=uuid.uuid4().hex[:16])
    assert post_otlp(env, "bob", o.experiment_id, otlp_body(follow_up),
                     run_id=o.run_id).status_code == 200
    # carol (EDIT on bob's experiment) adds a span from a client whose header names her own
    # experiment: the trace's experiment is bob's, where she may write.
    exp, _ = own_experiment(env, "carol")
    other = otlp_span(o.trace_hex, "carol", parent_hex=uuid.uuid4().hex[:16])
    r = post_otlp(env, "carol", exp, gzip.compress(otlp_body(other)),
                  headers={"content-encoding": "gzip"})
    assert r.status_code == 200, r.text[:200]
    assert span_names(env, o.trace_id) == ["carol", "child", "root"]


def test_an_undecodable_otlp_payload_is_refused(env: Env) -> None:
    exp, _ = own_experiment(env, "dave")
    for body, headers in ((b"{not json", {}), (b"\x00garbage", {"content-encoding": "gzip"}),
                          (b"x", {"content-type": "text/plain"})):
        r = post_otlp(env, "dave", exp, body, headers=headers)
        assert r.status_code in (400, 403, 415, 422), (body, r.status_code)
