"""What MLflow 3.17 turns on by itself, on the platform: the Assistant, the AI Gateway, the MCP
server registry and the usage-telemetry notice (src/mlflow_stack/server/surfaces.py).

Real servers: the no-auth local platform (MLflow's app through ours) and the SSO server against
a real Keycloak, once with the defaults and once with `server.assistant` and `server.ai_gateway` on.
Requests also go through a reverse proxy on 127.0.0.1 that adds no X-Forwarded-For, so the
server sees every user as a local client (as behind a sidecar or `kubectl port-forward`).
"""

from __future__ import annotations

import http.client
import json
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx
import pytest

from harness.http_server import QuietHandler, serving
from harness.keycloak import KeycloakServer
from harness.ports import free_port
from harness.sso import ADMIN_ROLE, USER_ROLE, SsoRealm, provision_realm, sso_settings
from mlflow_stack.config.model import Settings
from mlflow_stack.local import platform
from mlflow_stack.local.state import StateDir
from mlflow_stack.progress import NullProgress
from mlflow_stack.server import surfaces

REALM = f"surfaces-{uuid.uuid4().hex[:8]}"
ASSISTANT = "/ajax-api/3.0/mlflow/assistant"
GATEWAY = "/api/3.0/mlflow/gateway"
MCP = "/api/3.0/mlflow/mcp-servers"
NOTICE = "MLflow collects usage data"
# MLflow's telemetry is off in CI or under pytest whatever it is told: the servers here must
# decide from the environment the platform gives them.
_CI_MARKERS = ("PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS", "GITLAB_CI", "JENKINS_URL",
               "BUILDKITE", "TF_BUILD", "TRAVIS", "CIRCLECI", "DO_NOT_TRACK")

# Every assistant route MLflow 3.17.2 serves: (method, path under the prefix, JSON body).
ASSISTANT_CALLS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/config", None),
    ("GET", "/providers", None),
    ("PUT", "/config", {"providers": {"ollama": {"selected": True, "model": "m",
                                                 "permissions": {"full_access": True}}}}),
    ("POST", "/message", {"message": "hello"}),
    ("GET", "/sessions/00000000-0000-0000-0000-000000000000/stream", None),
    ("PATCH", "/sessions/00000000-0000-0000-0000-000000000000", {"status": "cancelled"}),
    ("POST", "/skills/install", {"type": "global"}),
    ("GET", "/providers/claude_code/health", None),
    ("GET", "/providers/ollama/models", None),
]


def call(base: str, method: str, path: str, token: str | None = None,
         body: dict[str, Any] | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method, f"{base}{path}", headers=headers, json=body, timeout=120.0)


# --------------------------------------------------------------------------------------------
# Plumbing: a same-host reverse proxy, a fake LLM, servers with a private HOME


class _Proxy(QuietHandler):
    """Forwards every request to `upstream` from 127.0.0.1, adding no X-Forwarded-* header."""

    upstream: ClassVar[str] = ""
    protocol_version = "HTTP/1.1"

    def _forward(self) -> None:
        target = urlsplit(self.upstream)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in ("host", "connection", "content-length")}
        conn = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port,
                                          timeout=120)
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            upstream = conn.getresponse()
            data = upstream.read()
        finally:
            conn.close()
        self.send_response(upstream.status)
        for key, value in upstream.getheaders():
            if key.lower() not in ("connection", "transfer-encoding", "content-length",
                                   "keep-alive", "date", "server"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward


@contextmanager
def same_host_proxy(upstream: str) -> Iterator[str]:
    with serving(type("Proxy", (_Proxy,), {"upstream": upstream})) as url:
        yield url


class _FakeLlm(QuietHandler):
    """An OpenAI-compatible chat server that asks for one Bash call, then says it is done."""

    bash: ClassVar[str] = ""  # (BaseHTTPRequestHandler.command is the HTTP method)
    seen: ClassVar[list[dict[str, Any]]] = []
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append(request)
        if any(m.get("role") == "tool" for m in request["messages"]):
            chunks: list[dict[str, Any]] = [
                {"choices": [{"delta": {"content": "done"}, "finish_reason": "stop"}]}]
        else:
            call = {"index": 0, "id": "call_1", "type": "function",
                    "function": {"name": "Bash",
                                 "arguments": json.dumps({"command": self.bash})}}
            chunks = [{"choices": [{"delta": {"tool_calls": [call]}, "finish_reason": None}]},
                      {"choices": [{"delta": {}, "finish_reason": "tool_calls"}]}]
        raw = ("".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n").encode()
        self.send_body(200, raw, "text/event-stream")


@contextmanager
def running(settings: Settings, root: Path) -> Iterator[str]:
    """The platform with its own HOME (MLflow keeps the assistant's config in
    ~/.mlflow/assistant) and no CI markers in its environment."""
    home = root / "home"
    home.mkdir(parents=True)
    state = StateDir(root / "state")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        for name in _CI_MARKERS:
            mp.delenv(name, raising=False)
        result = platform.up(settings, state, NullProgress())
    try:
        yield result.record.url
    finally:
        platform.down(state)


# --------------------------------------------------------------------------------------------
# Unit: what the guard recognises, what the UI page carries


def test_every_gateway_and_assistant_route_is_recognised() -> None:
    from mlflow.server.assistant.api import assistant_router
    from mlflow.server.gateway_api import gateway_router
    from mlflow.server.handlers import get_endpoints

    # mlflow's handlers are untyped
    gateway_paths = [p for p, _, _ in get_endpoints()  # type: ignore[no-untyped-call]
                     if "/mlflow/gateway/" in p]
    assert len(gateway_paths) > 60  # secrets, endpoints, model definitions, budgets, ...
    assert {surfaces.surface_of(p) for p in gateway_paths} == {"ai_gateway"}
    for route in gateway_router.routes:
        assert surfaces.surface_of(route.path) == "ai_gateway", route.path  # type: ignore[attr-defined]
    for route in assistant_router.routes:
        assert surfaces.surface_of(route.path) == "assistant", route.path  # type: ignore[attr-defined]
    for other in ("/api/2.0/mlflow/experiments/search", f"{MCP}", f"{MCP}/a/b",
                  "/ajax-api/2.0/mlflow/gateway-proxy", "/ajax-api/3.0/mlflow/assistants",
                  "/gateway", "/", "/health"):
        assert surfaces.surface_of(other) is None, other


def test_static_prefix_is_seen_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_MLFLOW_STATIC_PREFIX", "/mlflow")
    assert surfaces.surface_of(f"/mlflow{ASSISTANT}/config") == "assistant"
    assert surfaces.surface_of(f"/mlflow{GATEWAY}/secrets/list") == "ai_gateway"
    assert surfaces.surface_of(f"{ASSISTANT}/config") == "assistant"


def test_ui_page_records_telemetry_off_before_the_app_starts() -> None:
    import mlflow.server

    build = Path(mlflow.server.__file__).parent / "js" / "build"
    page = (build / "index.html").read_text()
    changed = surfaces.with_telemetry_off(page)
    script = changed.index(surfaces.TELEMETRY_OFF_SCRIPT)
    assert script < changed.index('src="static-files/static/js/main.')
    assert surfaces.with_telemetry_off(changed) == changed  # once
    # The UI still reads these keys (`${key}_v${version}`, JSON): the shape the script relies on.
    bundle = next((build / "static" / "js").glob("main.*.js")).read_text()
    assert "`${e}_v${t}`" in bundle
    assert re.search(r'"mlflow\.telemetry\.info\.alert\.dismissed",\w=1\b', bundle)
    assert re.search(r'="mlflow\.settings\.telemetry\.enabled"', bundle)
    assert re.search(r"\w=1,\w=\"mlflow\.settings\.telemetry\.enabled\"", bundle)


# --------------------------------------------------------------------------------------------
# No-auth platform: MLflow's own app through mlflow-stack (server/plain_app.py)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = Settings.model_validate({"server": {"port": free_port()}})
    with running(settings, tmp_path_factory.mktemp("surfaces-plain")) as url:
        yield url


def _sse_events(text: str) -> list[dict[str, Any]]:
    events = []
    for line in text.splitlines():
        if line.startswith("data:"):
            try:
                events.append(json.loads(line[5:].strip()))
            except json.JSONDecodeError:
                continue
    return events


@pytest.mark.integration
def test_plain_platform_refuses_the_assistant_to_every_client(plain: str, tmp_path: Path) -> None:
    """Plain MLflow serves the assistant (a shell on the host) to every client that looks local,
    so to everyone behind a same-host proxy; the platform's app refuses it outright."""
    marker = tmp_path / "assistant-was-here"

    class Llm(_FakeLlm):
        bash = f"touch {marker}"
        seen: ClassVar[list[dict[str, Any]]] = []

    llm = Llm
    with serving(llm) as llm_url, same_host_proxy(plain) as proxy:
        for base in (plain, proxy):
            configured = call(base, "PUT", f"{ASSISTANT}/config", body={"providers": {"ollama": {
                "selected": True, "model": "fake", "base_url": llm_url,
                "permissions": {"full_access": True}}}})
            assert configured.status_code == 404, (base, configured.text)
            for method, path, body in ASSISTANT_CALLS:
                r = call(base, method, f"{ASSISTANT}{path}", None, body)
                assert r.status_code == 404, (base, method, path, r.text)
                assert "server.assistant: true" in r.json()["message"]
            sent = call(base, "POST", f"{ASSISTANT}/message", body={"message": "touch the file"})
            assert sent.status_code == 404
    assert llm.seen == [] and not marker.exists()


@pytest.mark.integration
def test_plain_platform_gateway_and_telemetry_are_off(plain: str) -> None:
    info = call(plain, "GET", "/api/3.0/mlflow/server-info").json()
    assert info["features_enabled"]["gateway"] is False  # the UI hides the gateway
    refused = call(plain, "POST", f"{GATEWAY}/secrets/create", body={
        "secret_name": "k", "secret_value": {"api_key": "sk-x"}, "provider": "openai"})
    assert refused.status_code == 404 and "server.ai_gateway" in refused.text, refused.text
    assert call(plain, "GET", f"{GATEWAY}/secrets/list").status_code == 404
    ui = call(plain, "GET", "/ajax-api/3.0/mlflow/ui-telemetry").json()
    assert ui["disable_ui_telemetry"] is True
    posted = call(plain, "POST", "/ajax-api/3.0/mlflow/ui-telemetry", body={"records": [
        {"event_name": "ui_event", "timestamp_ns": 1, "params": {}, "installation_id": "i",
         "session_id": "s"}]})
    assert posted.json() == {"status": "disabled"}
    page = call(plain, "GET", "/")
    assert page.status_code == 200 and surfaces.TELEMETRY_OFF_SCRIPT in page.text


@pytest.mark.integration
def test_plain_platform_has_the_same_request_limits(plain: str) -> None:
    """Without SSO the platform's app still bounds bodies, parses Host strictly and refuses bad
    artifact paths without internals."""
    big = httpx.post(f"{plain}/api/2.0/mlflow/experiments/create", timeout=30,
                     content=b"{" + b" " * (17 * 2**20) + b"}",
                     headers={"Content-Type": "application/json"})
    assert big.status_code == 413, big.text[:200]
    port = plain.rsplit(":", 1)[1]
    for host in (f"127.0.0.1:{port}@evil.example", "127.0.0.1:evil"):
        assert httpx.get(f"{plain}/api/2.0/mlflow/experiments/search?max_results=1",
                         headers={"Host": host}, timeout=30).status_code in (400, 403), host
    traversal = httpx.get(f"{plain}/api/2.0/mlflow-artifacts/artifacts/0/x/artifacts/..%5c..%5cx",
                          timeout=30)
    assert traversal.status_code == 400 and "Invalid artifact path" in traversal.text


# --------------------------------------------------------------------------------------------
# SSO: one realm, the defaults and the surfaces turned on


@dataclass
class Sso:
    realm: SsoRealm
    port: int  # of the default server: the realm's redirect URIs point there


@pytest.fixture(scope="module")
def sso(keycloak: KeycloakServer) -> Sso:
    port = free_port()
    realm = provision_realm(keycloak, REALM, f"http://127.0.0.1:{port}", users={
        "alice": [ADMIN_ROLE], "bob": [USER_ROLE], "dave": [USER_ROLE]})
    return Sso(realm, port)


@pytest.fixture(scope="module")
def sso_default(sso: Sso, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running(sso_settings(sso.realm, sso.port),
                 tmp_path_factory.mktemp("surfaces-sso")) as url:
        yield url


@pytest.fixture(scope="module")
def sso_on(sso: Sso, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = sso_settings(sso.realm, free_port(), assistant=True, ai_gateway=True)
    with running(settings, tmp_path_factory.mktemp("surfaces-sso-on")) as url:
        yield url


@pytest.mark.integration
def test_assistant_is_refused_to_everyone(sso: Sso, sso_default: str) -> None:
    with same_host_proxy(sso_default) as proxy:
        for base in (sso_default, proxy):
            for who in ("alice", "bob"):
                for method, path, body in ASSISTANT_CALLS:
                    r = call(base, method, f"{ASSISTANT}{path}", sso.realm.token(who), body)
                    assert r.status_code == 404, (base, who, method, path, r.text)
                    assert "server.assistant: true" in r.json()["message"]
            for method, path, body in ASSISTANT_CALLS:
                r = call(base, method, f"{ASSISTANT}{path}", None, body)
                assert r.status_code == 401, (base, method, path, r.text)


@pytest.mark.integration
def test_ui_is_told_what_is_off(sso: Sso, sso_default: str) -> None:
    bob = sso.realm.token("bob")
    info = call(sso_default, "GET", "/ajax-api/3.0/mlflow/server-info", bob).json()
    assert info["features_enabled"]["gateway"] is False
    ui = call(sso_default, "GET", "/ajax-api/3.0/mlflow/ui-telemetry", bob).json()
    assert ui["disable_ui_telemetry"] is True
    assert call(sso_default, "GET", f"{ASSISTANT}/config", bob).status_code == 404
    page = call(sso_default, "GET", "/", bob)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert surfaces.TELEMETRY_OFF_SCRIPT in page.text
    assert page.text.index(surfaces.TELEMETRY_OFF_SCRIPT) < page.text.index("static/js/main.")
    assert "etag" not in page.headers


@pytest.mark.integration
def test_gateway_is_refused_to_everyone(sso: Sso, sso_default: str) -> None:
    secret = {"secret_name": "k", "secret_value": {"api_key": "sk-x"}, "provider": "openai"}
    for who in ("alice", "bob"):
        token = sso.realm.token(who)
        for method, path, body in [("POST", f"{GATEWAY}/secrets/create", secret),
                                   ("GET", f"{GATEWAY}/secrets/list", None),
                                   ("GET", f"{GATEWAY}/endpoints/list", None),
                                   ("GET", "/ajax-api/3.0/mlflow/gateway/supported-providers",
                                    None)]:
            r = call(sso_default, method, path, token, body)
            assert r.status_code == 404, (who, path, r.text)
            assert "server.ai_gateway: true" in r.json()["message"]
    r = call(sso_default, "POST", "/gateway/anything/mlflow/invocations", sso.realm.token("alice"),
             {"messages": []})
    assert r.status_code == 404 and "server.ai_gateway" in r.text, r.text
    assert call(sso_default, "GET", f"{GATEWAY}/secrets/list").status_code == 401


@pytest.mark.integration
def test_mcp_registry_is_authorised(sso: Sso, sso_default: str) -> None:
    """mlflow-oidc-auth 10.1.3 (workspaces off): administrators curate the registry, signed-in
    users read it, nobody else gets in."""
    alice, bob = sso.realm.token("alice"), sso.realm.token("bob")
    name = f"team/tools-{uuid.uuid4().hex[:6]}"
    created = call(sso_default, "POST", MCP, alice, {"name": name, "description": "by alice"})
    assert created.status_code == 200, created.text
    assert call(sso_default, "POST", MCP, bob,
                {"name": f"team/bobs-{uuid.uuid4().hex[:6]}"}).status_code == 403
    assert call(sso_default, "GET", f"{MCP}/{name}", bob).status_code == 200
    assert call(sso_default, "PATCH", f"{MCP}/{name}", bob,
                {"description": "by bob"}).status_code == 403
    assert call(sso_default, "POST", f"{MCP}/{name}/tags", bob,
                {"key": "k", "value": "v"}).status_code == 403
    assert call(sso_default, "DELETE", f"{MCP}/{name}", bob).status_code == 403
    version = {"server_json": {"name": name, "version": "1.0.0"}}
    assert call(sso_default, "POST", f"{MCP}/{name}/versions", bob, version).status_code == 403
    for method, path in [("GET", MCP), ("GET", f"{MCP}/{name}"), ("DELETE", f"{MCP}/{name}")]:
        assert call(sso_default, method, path).status_code == 401, (method, path)
    assert call(sso_default, "GET", f"{MCP}/{name}", alice).json()["description"] == "by alice"
    assert call(sso_default, "DELETE", f"{MCP}/{name}", alice).status_code == 200


@pytest.mark.integration
def test_no_telemetry_notice_in_the_browser(chromium: Any, sso: Sso, sso_default: str) -> None:
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.goto(f"{sso_default}/")
        page.wait_for_url(f"{sso.realm.issuer}/**", timeout=30_000)
        user = sso.realm.users["bob"]
        page.fill("#username", user.username)
        page.fill("#password", user.password)
        page.click("#kc-login")
        page.wait_for_url(f"{sso_default}/**", timeout=30_000)
        page.goto(f"{sso_default}/#/")
        page.wait_for_selector("text=Welcome to MLflow", timeout=60_000)
        page.wait_for_timeout(1_000)
        assert NOTICE not in page.locator("body").inner_text()
        stored = page.evaluate("() => [localStorage.getItem("
                               f"{json.dumps(surfaces.TELEMETRY_NOTICE_DISMISSED)}), "
                               f"localStorage.getItem({json.dumps(surfaces.UI_TELEMETRY_ENABLED)})]")
        assert stored == ["true", "false"]
    finally:
        context.close()


@pytest.mark.integration
def test_assistant_on_is_for_administrators(sso: Sso, sso_on: str) -> None:
    with same_host_proxy(sso_on) as proxy:
        for base in (sso_on, proxy):
            for path in ("/config", "/providers"):
                admin = call(base, "GET", f"{ASSISTANT}{path}", sso.realm.token("alice"))
                assert admin.status_code == 200, (base, path, admin.text)
                user = call(base, "GET", f"{ASSISTANT}{path}", sso.realm.token("bob"))
                assert user.status_code == 403, (base, path, user.text)
                assert user.json()["message"] == surfaces.ASSISTANT_ADMINS_ONLY
                assert call(base, "GET", f"{ASSISTANT}{path}").status_code == 401
            refused = call(base, "PUT", f"{ASSISTANT}/config", sso.realm.token("bob"),
                           ASSISTANT_CALLS[2][2])
            assert refused.status_code == 403, refused.text
    info = call(sso_on, "GET", "/ajax-api/3.0/mlflow/server-info", sso.realm.token("bob")).json()
    assert info["features_enabled"]["gateway"] is True


@pytest.mark.integration
def test_gateway_on_keeps_users_out_of_each_others_records(sso: Sso, sso_on: str) -> None:
    """An mlflow-user may not change, delete or use another user's secret, model definition or
    endpoint; without a token nothing. Reading them is another matter: a gateway record nobody
    was granted falls back to auth.default_permission (READ), so every signed-in user reads
    every other user's records (masked key, provider, configuration) — why server.ai_gateway
    is off by default."""
    dave, bob = sso.realm.token("dave"), sso.realm.token("bob")
    tag = uuid.uuid4().hex[:6]
    key = f"sk-dave-{uuid.uuid4().hex}"
    secret = call(sso_on, "POST", f"{GATEWAY}/secrets/create", dave, {
        "secret_name": f"dave-{tag}", "secret_value": {"api_key": key}, "provider": "openai"})
    assert secret.status_code == 200, secret.text
    secret_id = secret.json()["secret"]["secret_id"]
    model = call(sso_on, "POST", f"{GATEWAY}/model-definitions/create", dave, {
        "name": f"dave-model-{tag}", "secret_id": secret_id, "provider": "openai",
        "model_name": "gpt-4o-mini"})
    assert model.status_code == 200, model.text
    model_id = model.json()["model_definition"]["model_definition_id"]
    endpoint = call(sso_on, "POST", f"{GATEWAY}/endpoints/create", dave, {
        "name": f"dave-endpoint-{tag}", "usage_tracking": False,
        "model_configs": [{"model_definition_id": model_id, "linkage_type": "PRIMARY"}]})
    assert endpoint.status_code == 200, endpoint.text
    endpoint_id = endpoint.json()["endpoint"]["endpoint_id"]

    writes: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "secrets/update", {"secret_id": secret_id, "secret_value": {"api_key": "sk-b"}}),
        ("DELETE", "secrets/delete", {"secret_id": secret_id}),
        ("POST", "model-definitions/update", {"model_definition_id": model_id,
                                              "model_name": "gpt-4o"}),
        ("DELETE", "model-definitions/delete", {"model_definition_id": model_id}),
        ("POST", "endpoints/update", {"endpoint_id": endpoint_id, "name": f"bobs-{tag}"}),
        ("DELETE", "endpoints/delete", {"endpoint_id": endpoint_id}),
        ("POST", "endpoints/set-tag", {"endpoint_id": endpoint_id, "key": "k", "value": "v"}),
        # Using dave's key for a model definition of one's own needs USE on the secret.
        ("POST", "model-definitions/create", {"name": f"bob-model-{tag}", "secret_id": secret_id,
                                              "provider": "openai", "model_name": "gpt-4o"}),
    ]
    for method, path, body in writes:
        r = call(sso_on, method, f"{GATEWAY}/{path}", bob, body)
        assert r.status_code == 403, (path, r.status_code, r.text)
        assert call(sso_on, method, f"{GATEWAY}/{path}", None, body).status_code == 401, path
    invoke = call(sso_on, "POST", f"/gateway/dave-endpoint-{tag}/mlflow/invocations", bob,
                  {"messages": [{"role": "user", "content": "hi"}]})
    assert invoke.status_code == 403, invoke.text
    for path in (f"secrets/get?secret_id={secret_id}", "secrets/list",
                 f"model-definitions/get?model_definition_id={model_id}",
                 f"endpoints/get?endpoint_id={endpoint_id}"):
        assert call(sso_on, "GET", f"{GATEWAY}/{path}").status_code == 401, path
        read = call(sso_on, "GET", f"{GATEWAY}/{path}", bob)
        assert read.status_code == 200, (path, read.text)  # see the docstring
        assert key not in read.text and key[8:-4] not in read.text, path
    masked = call(sso_on, "GET", f"{GATEWAY}/secrets/get?secret_id={secret_id}", bob).json()
    assert masked["secret"]["masked_values"] == {"api_key": f"{key[:3]}...{key[-4:]}"}

    # Still dave's, unchanged; dave removes them.
    got = call(sso_on, "GET", f"{GATEWAY}/endpoints/get?endpoint_id={endpoint_id}", dave)
    assert got.json()["endpoint"]["name"] == f"dave-endpoint-{tag}"
    for method, path, body in [("DELETE", "endpoints/delete", {"endpoint_id": endpoint_id}),
                               ("DELETE", "model-definitions/delete",
                                {"model_definition_id": model_id}),
                               ("DELETE", "secrets/delete", {"secret_id": secret_id})]:
        assert call(sso_on, method, f"{GATEWAY}/{path}", dave, body).status_code == 200, path
