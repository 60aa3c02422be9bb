"""`token`, `login`, `logout`, `helpers`: Keycloak tokens for MLflow users."""

from __future__ import annotations

import os
import shlex
import sys
import time
import webbrowser
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from mlflow_stack.cli.console import err, out
from mlflow_stack.client import helpers as shell_helpers
from mlflow_stack.client import login as flows
from mlflow_stack.client import oidc, token_cache, tokens
from mlflow_stack.errors import ConfigError


class Shell(StrEnum):
    bash = "bash"
    fish = "fish"


def export_line(token: str, shell: Shell) -> str:
    """A line that sets MLFLOW_TRACKING_TOKEN when eval'd (bash/zsh) or sourced (fish)."""
    if shell is Shell.fish:
        quoted = "'" + token.replace("\\", "\\\\").replace("'", "\\'") + "'"
        return f"set -gx MLFLOW_TRACKING_TOKEN {quoted}"
    return f"export MLFLOW_TRACKING_TOKEN={shlex.quote(token)}"


def _expiry(tokens_: oidc.TokenSet) -> str:
    left = max(0, round(tokens_.expires_at - time.time()))
    at = time.strftime("%H:%M:%S", time.localtime(tokens_.expires_at))
    return f"expires in {left} s (at {at})"


def token(
    export: Annotated[bool, typer.Option(
        "--export", help="Print `export MLFLOW_TRACKING_TOKEN=...` to eval (bash/zsh).")] = False,
    shell: Annotated[Shell | None, typer.Option(
        "--shell", help="Print the line for this shell to eval/source (implies --export).")]
    = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q",
                                        help="Don't print the expiry on stderr.")] = False,
) -> None:
    """Print a Keycloak access token for MLflow (cached, renewed shortly before it expires).

    Source: the stored login (`mlflow-stack login`); else a service account
    (MLFLOW_KEYCLOAK_TOKEN_URL, MLFLOW_KEYCLOAK_CLIENT_ID, MLFLOW_CLIENT_SECRET); else the
    password grant (those plus MLFLOW_AUTH_USERNAME and MLFLOW_AUTH_PASSWORD).

    Example:  eval "$(mlflow-stack token --export)"

    Example:  mlflow-stack token --shell fish | source
    """
    manager = tokens.manager_from_env()
    try:
        current = manager.token_set()
    finally:
        manager.close()
    line = current.access_token
    if export or shell is not None:
        line = export_line(current.access_token, shell or Shell.bash)
    # Plain stdout (not rich): the line is meant for eval.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    if not quiet:
        who = f" for {current.username}" if current.username else ""
        err.print(f"[dim]token{escape(who)} {_expiry(current)}[/]")


def _login_client(token_url: str | None, issuer: str | None, config: Path | None,
                  client_id: str | None, ca_bundle: Path | None) -> oidc.KeycloakClient:
    env = os.environ
    url = token_url
    if url is None and issuer:
        url = issuer.rstrip("/") + oidc.TOKEN_PATH_SUFFIX
    if config is not None:
        from mlflow_stack.config.loader import load_config

        settings = load_config(config, require_secrets=False).settings
        auth = settings.auth
        if not settings.sso or not auth.keycloak_url:
            raise ConfigError(f"{config} does not configure Keycloak (auth.provider: keycloak)")
        if url is None:
            url = f"{auth.keycloak_url.rstrip('/')}/realms/{auth.realm}{oidc.TOKEN_PATH_SUFFIX}"
        if client_id is None:
            if auth.cli_client_id is None:
                raise ConfigError(f"{config} sets auth.cli_client_id to null (no login client)",
                                  hint="pass --client-id with a client that allows the code "
                                       "flow or the device grant")
            client_id = auth.cli_client_id
    client_id = client_id or flows.DEFAULT_LOGIN_CLIENT_ID
    url = url or env.get(oidc.ENV_TOKEN_URL)
    if not url:
        stored = token_cache.TokenCache(token_cache.cache_path_from_env()).find_login()
        url = stored.token_url if stored else None
    if not url:
        raise ConfigError("which Keycloak? No --token-url, --issuer, --config or "
                          f"{oidc.ENV_TOKEN_URL}",
                          hint="e.g. mlflow-stack login --issuer "
                               "https://auth.example.com/realms/thinkube")
    # A confidential login client's secret comes from the environment, never from an option
    # (it would show in `ps`).
    secret = None
    if env.get(oidc.ENV_CLIENT_ID) == client_id:
        secret = env.get(oidc.ENV_CLIENT_SECRET) or None
    ca = str(ca_bundle) if ca_bundle else env.get(oidc.ENV_CA_BUNDLE) or None
    return oidc.KeycloakClient(url, client_id, secret, ca)


def _can_open_browser() -> bool:
    # Without a display, webbrowser would start a text browser in this terminal.
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                or os.environ.get("BROWSER"))


TokenUrlOpt = Annotated[str | None, typer.Option(
    "--token-url", help=f"Keycloak token endpoint (default: ${oidc.ENV_TOKEN_URL}).")]
IssuerOpt = Annotated[str | None, typer.Option(
    "--issuer", help="Keycloak realm URL, e.g. https://auth.example.com/realms/thinkube.")]
LoginConfigOpt = Annotated[Path | None, typer.Option(
    "--config", "-c", help="Platform config to take Keycloak's URL and realm from "
    "(auth.keycloak_url, auth.realm).")]


def login(
    token_url: TokenUrlOpt = None,
    issuer: IssuerOpt = None,
    config: LoginConfigOpt = None,
    client_id: Annotated[str | None, typer.Option(
        "--client-id", help="Keycloak client to sign in with (default: the config's "
        f"auth.cli_client_id, else {flows.DEFAULT_LOGIN_CLIENT_ID}, the public client `apply` "
        "creates): the standard flow (PKCE) and/or the device grant, redirect URI "
        f"http://127.0.0.1/*. Its secret, if confidential, is read from "
        f"${oidc.ENV_CLIENT_SECRET}.")] = None,
    device: Annotated[bool, typer.Option(
        "--device", help="Device flow: sign in on another device with a short code.")] = False,
    offline: Annotated[bool, typer.Option(
        "--offline", help="Ask for an offline token: the login outlives the Keycloak session "
        "(until revoked or unused for the realm's offline idle time).")] = False,
    port: Annotated[int, typer.Option(
        help="Loopback port for the browser redirect (0: any free port).", min=0, max=65535)]
    = 0,
    no_browser: Annotated[bool, typer.Option(
        "--no-browser", help="Only print the URL; don't try to open a browser.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the sign-in.", min=1)]
    = flows.DEFAULT_TIMEOUT,
    ca_bundle: Annotated[Path | None, typer.Option(
        "--ca-bundle", help=f"CA file for Keycloak's certificate (default: "
        f"${oidc.ENV_CA_BUNDLE}).")] = None,
) -> None:
    """Sign in to Keycloak in a browser and keep the login for MLflow clients.

    Authorization code + PKCE with a redirect to 127.0.0.1; --device for the device flow. The
    refresh token is stored in the token cache (0600); `MLFLOW_TRACKING_AUTH=keycloak` and
    `mlflow-stack token` then use it.

    Example:  mlflow-stack login --issuer https://auth.example.com/realms/thinkube
    """
    client = _login_client(token_url, issuer, config, client_id, ca_bundle)
    skew = tokens.max_skew_from_env()
    if device:
        flow = flows.DeviceLogin(client, offline=offline, max_skew=skew)
        code = flow.start()
        err.print(f"To sign in, open [bold]{escape(code.verification_uri)}[/] on any device and "
                  f"enter the code [bold]{escape(code.user_code)}[/]")
        if code.verification_uri_complete:
            err.print(f"  or open {escape(code.verification_uri_complete)}")
        err.print(f"[dim]waiting up to {min(timeout, code.expires_in):.0f} s ...[/]")
        result = flow.wait(timeout)
    else:
        with flows.BrowserLogin(client, offline=offline, port=port, max_skew=skew) as browser:
            err.print("Open this URL in a browser on this machine to sign in:")
            err.print(f"  {escape(browser.authorization_url)}")
            if not no_browser and _can_open_browser():
                webbrowser.open(browser.authorization_url)
            err.print(f"[dim]waiting up to {timeout:.0f} s for the sign-in ...[/]")
            result = browser.wait(timeout)
    cache = token_cache.TokenCache(token_cache.cache_path_from_env())
    token_cache.store_login(cache, client, result)
    who = result.username or "(unknown user)"
    out.print(f"Logged in as [bold]{escape(who)}[/] at {escape(client.issuer)} "
              f"(client {escape(client.client_id)}).")
    out.print(f"[dim]login stored in {escape(str(cache.path))}; MLflow clients with "
              "MLFLOW_TRACKING_AUTH=keycloak and `mlflow-stack token` use it[/]")


def logout(
    token_url: TokenUrlOpt = None,
    issuer: IssuerOpt = None,
    client_id: Annotated[str | None, typer.Option(
        "--client-id", help="The login's client (default: any login for that Keycloak).")]
    = None,
) -> None:
    """Revoke the stored login at Keycloak and delete it from the token cache.

    Without --token-url/--issuer: the login for $MLFLOW_KEYCLOAK_TOKEN_URL, else the most recent.

    Example:  mlflow-stack logout
    """
    cache = token_cache.TokenCache(token_cache.cache_path_from_env())
    url = token_url or (issuer.rstrip("/") + oidc.TOKEN_PATH_SUFFIX if issuer else None) \
        or os.environ.get(oidc.ENV_TOKEN_URL)
    client = cache.find_login(url, client_id)
    if client is None:
        out.print("Not logged in" + (f" to {escape(url)}" if url else "") + "; nothing to do.")
        return
    result = flows.logout(cache, client)
    if result.error is not None:
        raise oidc.TokenError(
            f"deleted the stored login, but could not revoke it at Keycloak: "
            f"{result.error.message}",
            hint="the refresh token stays valid until the Keycloak session ends; an "
                 "administrator can end it in Keycloak (Users → Sessions)")
    out.print(f"Logged out of {escape(client.issuer)}: the refresh token is revoked and deleted.")


def helpers(
    out_dir: Annotated[Path, typer.Option("--out", "-O",
                                          help="Directory to write the helpers into.")],
) -> None:
    """Write the shell helpers mlflow-auth.sh (bash) and mlflow-auth.fish.

    `source` one to get MLFLOW_TRACKING_TOKEN from Keycloak's password grant (variables
    MLFLOW_KEYCLOAK_TOKEN_URL, MLFLOW_KEYCLOAK_CLIENT_ID, MLFLOW_AUTH_USERNAME,
    MLFLOW_AUTH_PASSWORD, optional MLFLOW_CLIENT_SECRET and MLFLOW_CA_BUNDLE).

    Example:  mlflow-stack helpers --out ~  &&  source ~/mlflow-auth.sh
    """
    for path in shell_helpers.write_helpers(out_dir.expanduser()):
        out.print(f"wrote {escape(str(path))}")
    out.print("[dim]use: source <dir>/mlflow-auth.sh (bash) or source <dir>/mlflow-auth.fish[/]")
