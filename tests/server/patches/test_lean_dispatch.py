"""mlflow-oidc-auth's authentication and permission middlewares without BaseHTTPMiddleware's
task and response copy (server/patches/lean_dispatch.py): the app's answer goes out as the
app sent it, dispatch's own answers as before, a body dispatch read is replayed to the app,
routes with a permission validator keep BaseHTTPMiddleware, and a dispatch that would rewrite
a response already sent is an error. The live SSO tests (test_sso_api, test_attacks_*) run
every request through both."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from mlflow_oidc_auth.app import app as oidc_app
from mlflow_oidc_auth.middleware.auth_middleware import AuthMiddleware
from starlette.middleware.base import _CachedRequest
from starlette.responses import JSONResponse, PlainTextResponse

from harness.loops import run_alone
from mlflow_stack.server.patches import lean_dispatch

Message = dict[str, Any]


async def _echo(scope: Any, receive: Any, send: Any) -> None:
    """An app that answers with what it received and what the middleware left in the scope."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"x-user", str(scope.get("user", "")).encode())]})
    await send({"type": "http.response.body", "body": b"got " + body, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def _call(middleware: Any, path: str = "/api/2.0/mlflow/experiments/get",
          body: bytes = b"") -> list[Message]:
    sent: list[Message] = []

    async def main() -> None:
        pending = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> Message:
            if pending:
                return pending.pop()
            await asyncio.sleep(3600)  # the client stays: a read past the body would hang
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            sent.append(message)

        scope: dict[str, Any] = {"type": "http", "method": "POST" if body else "GET", "path": path,
                 "root_path": "", "query_string": b"", "http_version": "1.1", "headers": [],
                 "server": ("127.0.0.1", 5000), "client": ("127.0.0.1", 40000)}
        await asyncio.wait_for(middleware(scope, receive, send), 10)

    run_alone(main())
    return sent


class _Recording:
    """A dispatch: sets the user as AuthMiddleware does, records what call_next returned."""

    def __init__(self, read_body: bool = False, deny: bool = False,
                 rewrite: bool = False) -> None:
        self.read_body, self.deny, self.rewrite = read_body, deny, rewrite
        self.returned: list[Any] = []

    async def __call__(self, request: Any, call_next: Any) -> Any:
        if self.deny:
            return JSONResponse({"detail": "Authentication required"}, status_code=401)
        if self.read_body:
            await request.body()
        request.scope["user"] = "bob"
        response = await call_next(request)
        self.returned.append(response)
        return PlainTextResponse("rewritten") if self.rewrite else response


class _Lean:
    def __init__(self, dispatch: Any) -> None:
        self.dispatch = dispatch

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await lean_dispatch.run_lean(_echo, self.dispatch, _CachedRequest, scope, receive,
                                      send)


def test_the_apps_answer_goes_out_as_the_app_sent_it() -> None:
    dispatch = _Recording()
    sent = _call(_Lean(dispatch))
    assert sent == [
        {"type": "http.response.start", "status": 200, "headers": [(b"x-user", b"bob")]},
        {"type": "http.response.body", "body": b"got ", "more_body": True},
        {"type": "http.response.body", "body": b"", "more_body": False}]
    assert dispatch.returned == [lean_dispatch.PASSED]


def test_dispatchs_own_answer_is_sent_and_the_app_never_runs() -> None:
    sent = _call(_Lean(_Recording(deny=True)))
    assert sent[0]["status"] == 401
    assert b"Authentication required" in sent[1]["body"]


@pytest.mark.parametrize("read_body", [False, True])
def test_the_body_reaches_the_app_whether_or_not_dispatch_read_it(read_body: bool) -> None:
    sent = _call(_Lean(_Recording(read_body=read_body)), body=b"payload")
    assert sent[1]["body"] == b"got payload"


def test_rewriting_an_answer_already_sent_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="already sent"):
        _call(_Lean(_Recording(rewrite=True)))


@pytest.mark.parametrize(("path", "lean"), [
    ("/api/2.0/mlflow/runs/get", True),
    ("/ajax-api/2.0/mlflow/registered-models/search", True),
    ("/", True),
    ("/gateway/my-endpoint/mlflow/invocations", False),  # validated: BaseHTTPMiddleware
    ("/v1/traces", False),
])
def test_the_permission_middleware_is_lean_only_where_it_has_no_validator(path: str,
                                                                          lean: bool) -> None:
    dispatch = _Recording()
    sent = _call(lean_dispatch.LeanPermission(_echo, dispatch), path=path)
    assert sent[0]["status"] == 200 and b"".join(m.get("body", b"") for m in sent[1:]) == b"got "
    assert (dispatch.returned[0] is lean_dispatch.PASSED) is lean


def test_the_sso_app_has_both_middlewares_lean() -> None:
    from mlflow_stack.server import sso_app

    assert sso_app.app is oidc_app  # its ON_APP patches applied it: checked before installing
    assert getattr(AuthMiddleware.__call__, "lean_dispatch", False)
    assert lean_dispatch.LeanPermission in [entry.cls for entry in oidc_app.user_middleware]
    assert lean_dispatch.install(oidc_app)  # idempotent: nothing wrapped twice
    assert sum(entry.cls is lean_dispatch.LeanPermission for entry in oidc_app.user_middleware) == 1
    classes = [entry.cls for entry in oidc_app.user_middleware]
    assert lean_dispatch.LeanPermission in classes
    assert classes.index(lean_dispatch.LeanPermission) > classes.index(AuthMiddleware)  # inner
    assert getattr(AuthMiddleware.__call__, "lean_dispatch", False)


def test_another_mlflow_oidc_auth_keeps_base_http_middleware(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(lean_dispatch.PINS, f"{lean_dispatch.AUTH}:AuthMiddleware.dispatch",
                        "0" * 64)
    assert not lean_dispatch.install(oidc_app)
    assert "AuthMiddleware.dispatch" in caplog.text
