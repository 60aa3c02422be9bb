"""Flask's session opened without a signer for requests that carry no cookie (speed).

mlflow-oidc-auth gives MLflow's Flask app a secret key, so Flask opens a signed-cookie session
on every request: a new itsdangerous serializer (salted HMAC key set-up) and the Cookie header
parsed, ~35 µs of a metric-history call. API clients send no Cookie header at all, and for
them Flask ends with an empty session anyway. Here such a request gets that empty session
directly; a request with any cookie goes through Flask's own code (the signature is checked
as before). Saving is Flask's: an untouched empty session sets no cookie.
tests/server/patches/test_cookie_session.py.
"""

from __future__ import annotations

from typing import Any

from mlflow_stack.server.guards import Shape, UpstreamChanged

INTERFACE = Shape("flask.sessions", "SecureCookieSessionInterface.open_session",
                  ("self", "app", "request"))
UPSTREAM = (INTERFACE,)


def _interface() -> type:
    from flask.sessions import SecureCookieSessionInterface

    class CookielessFirst(SecureCookieSessionInterface):
        def open_session(self, app: Any, request: Any) -> Any:
            if app.secret_key and not request.environ.get("HTTP_COOKIE"):
                return self.session_class()  # what Flask returns when the cookie is absent
            return super().open_session(app, request)

    return CookielessFirst


def apply(app: Any) -> None:
    """On MLflow's Flask app (``app`` is the FastAPI app serving it; unused)."""
    INTERFACE.require()
    from flask.sessions import SecureCookieSessionInterface
    from mlflow.server import app as flask_app

    current = flask_app.session_interface
    if type(current) is not SecureCookieSessionInterface:
        raise UpstreamChanged(f"MLflow's Flask app uses {type(current).__name__} for sessions, "
                              "not Flask's own: the cookie session patch must be revisited")
    flask_app.session_interface = _interface()()
