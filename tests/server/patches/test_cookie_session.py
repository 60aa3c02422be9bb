"""Flask's session for requests without a cookie (server/patches/cookie_session.py): the
same empty session without a signer, and every request with a cookie on Flask's own path
(a signed cookie read, a forged one refused); apply replaces only Flask's own interface."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask, request, session
from flask.sessions import SecureCookieSessionInterface

from mlflow_stack.server.guards import UpstreamChanged
from mlflow_stack.server.patches import cookie_session


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> tuple[Flask, list[int]]:
    """A Flask app with a secret key and the patched interface; how often a signer is made."""
    made = Flask("cookie-session-test")
    made.secret_key = "test-only-secret"
    made.session_interface = cookie_session._interface()()
    signers: list[int] = []
    signer = SecureCookieSessionInterface.get_signing_serializer

    def counted(self: Any, app: Flask) -> Any:
        signers.append(1)
        return signer(self, app)

    monkeypatch.setattr(SecureCookieSessionInterface, "get_signing_serializer", counted)

    @made.get("/read")
    def read() -> dict[str, Any]:
        return {"user": session.get("user"), "empty": not session}

    @made.get("/write")
    def write() -> str:
        session["user"] = "alice"
        return "ok"

    return made, signers


def test_a_request_without_cookies_gets_an_empty_session_without_a_signer(
        app: tuple[Flask, list[int]]) -> None:
    made, signers = app
    response = made.test_client(use_cookies=False).get("/read")
    assert response.json == {"user": None, "empty": True}
    assert signers == []  # Flask's own interface makes one per request
    assert "Set-Cookie" not in response.headers


def test_cookies_go_through_flask_s_signed_session(app: tuple[Flask, list[int]]) -> None:
    made, signers = app
    client = made.test_client()
    assert client.get("/write").status_code == 200  # sets the signed cookie
    assert client.get("/read").json == {"user": "alice", "empty": False}
    assert signers  # the signature was checked
    cookie = client.get_cookie("session")
    assert cookie is not None
    forged = made.test_client()
    forged.set_cookie("session", cookie.value[:-2] + "xx")
    assert forged.get("/read").json == {"user": None, "empty": True}
    other = made.test_client()
    other.set_cookie("unrelated", "1")  # a cookie, but not the session's: Flask's path
    assert other.get("/read").json == {"user": None, "empty": True}


def test_without_a_secret_key_the_session_stays_null(app: tuple[Flask, list[int]]) -> None:
    made, _ = app
    made.secret_key = None
    with made.test_request_context("/read"):
        opened = made.session_interface.open_session(made, request)
    assert opened is None  # Flask then gives its NullSession, as without the patch


def test_apply_replaces_only_flask_s_own_interface(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.server import app as flask_app

    monkeypatch.setattr(flask_app, "session_interface", SecureCookieSessionInterface())
    cookie_session.apply(None)
    assert type(flask_app.session_interface).__name__ == "CookielessFirst"

    class Custom(SecureCookieSessionInterface):
        pass

    monkeypatch.setattr(flask_app, "session_interface", Custom())
    with pytest.raises(UpstreamChanged, match="Custom"):
        cookie_session.apply(None)
