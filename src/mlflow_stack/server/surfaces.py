"""Surfaces MLflow 3.17 turns on by itself, and what the platform does with each.

MLflow 3.17.2 serves three features nobody asked for, and its UI tells every user something
untrue about a fourth:

- **Assistant** (``/ajax-api/3.0/mlflow/assistant/*``, a side panel in the UI). It runs a Bash
  tool, file tools and coding-agent CLIs (Claude Code, Codex) on the server host for clients it
  takes to be local: ``request.client`` on a loopback address. A reverse proxy or sidecar on
  127.0.0.1 in front of the server (or ``kubectl port-forward``) makes every user local, and a
  local user may also rewrite the assistant's configuration (provider, ``full_access``, project
  folder). MLflow has no switch that turns it off. Off here unless ``server.assistant: true``:
  its routes answer 404 (with SSO; then for administrators only, 403 for everyone else), and
  ``build_server_launch`` sets ``MLFLOW_ENABLE_ASSISTANT_SANDBOX=true``, which MLflow honours on
  every platform: the Bash tool and the CLI providers then run only in its Docker sandbox, never
  on the host (without Docker they fail).
- **AI Gateway** (``/api|ajax-api/3.0/mlflow/gateway/*``, ``/gateway/*``). It stores LLM provider
  API keys (encrypted with MLflow's built-in passphrase unless ``MLFLOW_CRYPTO_KEK_PASSPHRASE`` is
  set) and, under mlflow-oidc-auth 10.1.3, a gateway record nobody was granted falls back to
  ``auth.default_permission`` (``READ``): every signed-in user reads every other user's secret
  records and endpoint configurations. Off unless ``server.ai_gateway: true``: MLflow honours
  ``MLFLOW_ENABLE_AI_GATEWAY=false`` (its handlers answer 501 and the UI hides the gateway), and
  with SSO its routes answer 404 here with the setting to change.
- **MCP server registry** (``/api|ajax-api/3.0/mlflow/mcp-servers``): a catalogue of MCP servers
  (no credentials). mlflow-oidc-auth 10.1.3 authorises it like the rest: with workspaces off only
  administrators create entries or change them, signed-in users read them, no token is 401. Left
  on (tests/server/test_surfaces.py keeps that as a guard).
- **Usage telemetry notice**. The UI shows "MLflow collects usage data" on the home page until a
  user dismisses it, deciding from the browser's own ``localStorage`` only, even when the server's
  telemetry is off (``MLFLOW_DISABLE_TELEMETRY=true``, set by ``build_server_launch`` unless
  ``server.telemetry: true``). With the server's telemetry off, the UI page served here records
  that answer in the browser before the app starts: the notice is dismissed and the UI's telemetry
  setting reads off. (The UI's event logger already asks the server's ``ui-telemetry`` endpoint,
  which answers ``disable_ui_telemetry: true``.)

Without SSO the server runs MLflow's own app through ``mlflow-stack`` (server/plain_app.py): the
same route guard (the assistant, when turned on, then answers whoever reaches the server) and
the same page change.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from mlflow_stack.server.asgi import ASGIApp, Receive, Scope, Send, routed_path, send_error

logger = logging.getLogger(__name__)

# Environment variables build_server_launch sets for this module (and MLflow's own).
ASSISTANT_ENV = "MLFLOW_STACK_ASSISTANT"
AI_GATEWAY_ENV = "MLFLOW_ENABLE_AI_GATEWAY"  # MLflow's; default on

ASSISTANT_PREFIX = "/ajax-api/3.0/mlflow/assistant"
AI_GATEWAY_PREFIXES = ("/api/3.0/mlflow/gateway/", "/ajax-api/3.0/mlflow/gateway/", "/gateway/")

ASSISTANT_OFF = ("The MLflow Assistant is turned off on this platform: it runs a shell and "
                 "coding agents on the server host. Set server.assistant: true to turn it on "
                 "(administrators only).")
ASSISTANT_ADMINS_ONLY = "The MLflow Assistant is for administrators on this platform."
AI_GATEWAY_OFF = ("The AI Gateway is turned off on this platform. Set server.ai_gateway: true "
                  "to turn it on.")

# The UI's own localStorage keys (MLflow 3.17.2's bundle: `${key}_v${version}`, JSON values).
TELEMETRY_NOTICE_DISMISSED = "mlflow.telemetry.info.alert.dismissed_v1"
UI_TELEMETRY_ENABLED = "mlflow.settings.telemetry.enabled_v1"
TELEMETRY_OFF_SCRIPT = (
    "<script>/* mlflow-stack: this server's usage telemetry is off */try{"
    f"localStorage.setItem({json.dumps(TELEMETRY_NOTICE_DISMISSED)},\"true\");"
    f"localStorage.setItem({json.dumps(UI_TELEMETRY_ENABLED)},\"false\")"
    "}catch(e){}</script>"
)



def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def assistant_enabled() -> bool:
    return _flag(ASSISTANT_ENV, False)


def ai_gateway_enabled() -> bool:
    return _flag(AI_GATEWAY_ENV, True)


def _unprefixed(path: str) -> str:
    """The path without MLflow's --static-prefix (mlflow-oidc-auth mounts MLflow's FastAPI
    routers without it, the Flask routes carry it)."""
    from mlflow.server.handlers import STATIC_PREFIX_ENV_VAR

    prefix = os.environ.get(STATIC_PREFIX_ENV_VAR, "").rstrip("/")
    if prefix and (path == prefix or path.startswith(prefix + "/")):
        return path[len(prefix):] or "/"
    return path


def surface_of(path: str) -> str | None:
    """``assistant``, ``ai_gateway`` or None for a routed request path."""
    path = _unprefixed(path)
    if path == ASSISTANT_PREFIX or path.startswith(ASSISTANT_PREFIX + "/"):
        return "assistant"
    if path.startswith(AI_GATEWAY_PREFIXES):
        return "ai_gateway"
    return None


class SurfaceGuard:
    """Refuses the surfaces that are off, and the assistant to non-administrators.

    Innermost middleware of mlflow-oidc-auth's app: the caller is authenticated by then (no
    token is still 401) and ``request.state.is_admin`` is set.
    """

    def __init__(self, app: ASGIApp, assistant: bool, ai_gateway: bool,
                 admins_only: bool = True) -> None:
        self.app = app
        self.assistant = assistant
        self.ai_gateway = ai_gateway
        self.admins_only = admins_only  # without SSO there are no admins: whoever reaches it

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            surface = surface_of(routed_path(scope))
            if surface == "assistant":
                if not self.assistant:
                    await send_error(send, 404, "ENDPOINT_NOT_FOUND", ASSISTANT_OFF)
                    return
                if self.admins_only and not scope.get("state", {}).get("is_admin"):
                    await send_error(send, 403, "PERMISSION_DENIED", ASSISTANT_ADMINS_ONLY)
                    return
            elif surface == "ai_gateway" and not self.ai_gateway:
                await send_error(send, 404, "ENDPOINT_NOT_FOUND", AI_GATEWAY_OFF)
                return
        await self.app(scope, receive, send)


def _add_innermost(app: Any, cls: Any, **options: Any) -> None:
    """Add a middleware *inside* the existing ones (Starlette's add_middleware puts it outside)."""
    from starlette.middleware import Middleware

    if getattr(app, "middleware_stack", None) is not None:
        raise RuntimeError("surfaces.install must run before the app serves its first request")
    app.user_middleware.append(Middleware(cls, **options))


def with_telemetry_off(html: str) -> str:
    """The UI page with the telemetry answer recorded before the app's (deferred) bundle runs."""
    if TELEMETRY_OFF_SCRIPT in html:
        return html
    for marker in ("<head>", "<body>"):
        at = html.find(marker)
        if at >= 0:
            at += len(marker)
            return html[:at] + TELEMETRY_OFF_SCRIPT + html[at:]
    logger.warning("MLflow's index.html has no <head>: the telemetry notice stays")
    return html


def _tell_ui_telemetry_off() -> None:
    """Wrap whatever serves MLflow's UI page (its own view, or mlflow-oidc-auth's menu
    injection) so the page carries the telemetry answer."""
    import functools

    from flask import make_response
    from mlflow.server import app as flask_app

    view = flask_app.view_functions.get("serve")
    if view is None:
        raise RuntimeError("MLflow's UI page view 'serve' is gone: revisit surfaces.py for this "
                           "MLflow version")

    @functools.wraps(view)
    def serve(*args: Any, **kwargs: Any) -> Any:
        response = make_response(view(*args, **kwargs))
        if response.status_code != 200 or response.mimetype != "text/html":
            return response
        response.direct_passthrough = False  # send_from_directory streams the file
        response.set_data(with_telemetry_off(response.get_data(as_text=True)))
        # The page now differs from the file: no validators that would let a cached
        # unmodified copy stand.
        for header in ("ETag", "Last-Modified"):
            response.headers.pop(header, None)
        response.headers["Cache-Control"] = "no-cache"
        return response

    flask_app.view_functions["serve"] = serve


def install(app: Any, *, sso: bool = True) -> None:
    """Apply the platform's choices to mlflow-oidc-auth's app, or (``sso=False``) to MLflow's
    own app, before it serves."""
    global logger
    from mlflow.telemetry.utils import is_telemetry_disabled

    if sso:
        from mlflow_oidc_auth.logger import get_logger

        logger = get_logger()  # the server's configured log
    assistant, ai_gateway = assistant_enabled(), ai_gateway_enabled()
    _add_innermost(app, SurfaceGuard, assistant=assistant, ai_gateway=ai_gateway,
                   admins_only=sso)
    if is_telemetry_disabled():
        _tell_ui_telemetry_off()
    logger.info("Surfaces: assistant %s, AI gateway %s",
                ("admins only" if sso else "on") if assistant else "off",
                "on" if ai_gateway else "off")
