"""`plan`, `apply` (alias `deploy`): provision Keycloak, PostgreSQL and the S3 bucket.

The order and the systems live in mlflow_stack.deploy; this module only prints.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from rich.markup import escape
from rich.table import Table

from mlflow_stack import deploy as deploy_lib
from mlflow_stack.cli.console import RichProgress, out
from mlflow_stack.cli.options import ConfigOpt, Output, OutputOpt
from mlflow_stack.config.loader import load_config

_STYLE = {"create": ("+", "green"), "update": ("~", "yellow"), "delete": ("-", "red"),
          "unchanged": ("=", "dim")}


def _summary(results: list[deploy_lib.SystemResult]) -> dict[str, int]:
    counts: Counter[str] = Counter(c.action for r in results for c in r.changes)
    return {action: counts[action] for action in _STYLE}


def _as_json(command: str, results: list[deploy_lib.SystemResult]) -> dict[str, Any]:
    return {
        "command": command,
        "systems": [
            {"system": r.system, "where": r.where or None, "skipped": r.skipped,
             "changes": [{"action": c.action, "target": c.target, "detail": c.detail}
                         for c in r.changes]}
            for r in results
        ],
        "summary": _summary(results),
    }


def _print(command: str, results: list[deploy_lib.SystemResult], output: Output) -> None:
    if output == Output.json:
        out.print_json(json.dumps(_as_json(command, results)))
        return
    table = Table(show_lines=False, pad_edge=False, box=None)
    for column in ("system", "action", "target", "detail"):
        table.add_column(column, overflow="fold")
    for r in results:
        if r.skipped is not None:
            table.add_row(r.system, "[dim]skip[/]", "", f"[dim]{escape(r.skipped)}[/]")
            continue
        for c in r.changes:
            sign, style = _STYLE[c.action]
            # One difference per line: field-level details get long.
            table.add_row(r.system, f"[{style}]{sign} {c.action}[/]", escape(c.target),
                          escape(c.detail.replace("; ", "\n")))
    out.print(table)
    s = _summary(results)
    changed = s["create"] + s["update"] + s["delete"]
    ran = [r for r in results if r.skipped is None]
    if not ran:
        out.print("Nothing to provision: the config enables no external system "
                  "(auth.provider keycloak, database.backend postgresql, artifacts.backend s3).")
    elif command == "plan":
        out.print(f"Plan: {s['create']} to create, {s['update']} to update, {s['delete']} to "
                  f"delete, {s['unchanged']} unchanged." if changed else
                  f"No changes: {s['unchanged']} object(s) match the config.")
    else:
        out.print(f"Applied: {s['create']} created, {s['update']} updated, {s['delete']} "
                  f"deleted, {s['unchanged']} unchanged." if changed else
                  f"No changes: {s['unchanged']} object(s) already match the config.")


def plan(config: ConfigOpt = None, output: OutputOpt = Output.text) -> None:
    """Show every change `apply` would make, system by system. Reads only.

    Systems the config enables, in apply's order: Keycloak (auth.provider
    keycloak), PostgreSQL (database.backend postgresql), the S3 bucket
    (artifacts.backend s3).
    Secrets come from the environment: KEYCLOAK_ADMIN_PASSWORD or ADMIN_PASSWORD,
    plus the database and S3 variables (`mlflow-stack config show` lists them).

    Example:  ADMIN_PASSWORD=... mlflow-stack plan -c inventory.yaml --output json
    """
    settings = load_config(config).settings
    _print("plan", deploy_lib.plan(settings, RichProgress()), output)


def apply(config: ConfigOpt = None, output: OutputOpt = Output.text) -> None:
    """Create or repair what the config describes in Keycloak, PostgreSQL and S3.

    Every enabled system is checked (login, realm, users, bucket) before the first
    write; then they are provisioned in dependency order. Idempotent: a second run
    reports no changes, and a failed run can simply be repeated.
    The OIDC client secret is never printed.

    Example:  ADMIN_PASSWORD=... mlflow-stack apply -c mlflow-stack.yaml
    """
    settings = load_config(config).settings
    _print("apply", deploy_lib.apply(settings, RichProgress()), output)


def deploy(config: ConfigOpt = None, output: OutputOpt = Output.text) -> None:
    """Alias of `apply`: provision Keycloak, PostgreSQL and S3 from the config.

    Example:  ADMIN_PASSWORD=... mlflow-stack deploy -c inventory.yaml
    """
    apply(config, output)
