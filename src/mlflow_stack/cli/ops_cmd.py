"""`backup` and `restore`."""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from mlflow_stack.cli.console import RichProgress, out, program
from mlflow_stack.cli.deploy_cmd import Target
from mlflow_stack.cli.local_cmd import state_dir_for, state_dir_option
from mlflow_stack.cli.options import ConfigOpt, Output, OutputOpt, StateDirOpt
from mlflow_stack.config.loader import check_secrets, load_config
from mlflow_stack.local import backup as backups


def _counts_table(title: str, counts: dict[str, int]) -> Table:
    table = Table(title=title)
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, value in counts.items():
        table.add_row(name, str(value))
    return table


def backup(
    out_dir: Annotated[Path, typer.Option("--out", "-O", help="New directory for the backup.")],
    config: ConfigOpt = None,
    state_dir: StateDirOpt = None,
    output: OutputOpt = Output.text,
) -> None:
    """Back up both databases and the artifact store, with a manifest of counts and checksums.

    Safe while the server runs (consistent database snapshots).

    Example:  mlflow-stack backup -c mlflow-stack.yaml --out backups/2026-11-27
    """
    settings = load_config(config).settings
    manifest = backups.backup(settings, state_dir_for(state_dir), out_dir, RichProgress())
    if output == Output.json:
        out.print_json(json.dumps(asdict(manifest)))
        return
    out.print(_counts_table("backed up", manifest.counts))
    out.print(f"backup written to {escape(str(out_dir))} ({len(manifest.files)} files)")


def restore(
    from_dir: Annotated[Path, typer.Option("--from", help="A directory written by backup.")],
    config: ConfigOpt = None,
    state_dir: StateDirOpt = None,
    replace: Annotated[bool, typer.Option(
        "--replace", help="Move the current databases aside (renamed, never deleted) instead "
        "of refusing: the way back after a failed upgrade. Artifacts are never replaced.")]
    = False,
) -> None:
    """Restore a backup into an empty platform (server stopped), then compare row counts.

    Every file is checked against the manifest before anything changes; a target that already
    holds data is refused (--replace keeps its databases aside instead).

    Example:  mlflow-stack restore -c mlflow-stack.yaml --from backups/2026-11-27
    """
    settings = load_config(config).settings
    state = state_dir_for(state_dir)
    result = backups.restore(settings, state, from_dir, RichProgress(), replace=replace)
    out.print(_counts_table("restored", result.counts))
    start = f"{program()} up{f' -c {shlex.quote(str(config))}' if config else ''}" \
        f"{state_dir_option(state)}"
    out.print(f"[green]restore complete[/]: row counts match the backup; start with: "
              f"{escape(start)}")


def doctor(
    config: ConfigOpt = None,
    state_dir: StateDirOpt = None,
    output: OutputOpt = Output.text,
    target: Annotated[Target, typer.Option(
        "--target", "-t",
        help="auto: the deployed platform's checks when the config names a cluster "
             "(kubernetes.kubeconfig or kubernetes.context), as apply decides; kubernetes: "
             "those with the default kubeconfig; services: the local platform's.")] = Target.auto,
) -> None:
    """Run every troubleshooting check and say what to fix. Exit 1 on any problem.

    Local platform: server process, database, bucket, OIDC discovery, Keycloak
    client, client secret, group plugin, clock skew, public host.
    Deployed on Kubernetes (see --target): the API, pods (CrashLoopBackOff,
    ImagePullBackOff, unschedulable, not ready), PVCs bound, migration Job,
    TLS certificate (present, for the host, more than 14 days left) and the
    Deployment's allowed hosts replace the local server checks.

    Example:  mlflow-stack doctor -c mlflow-stack.yaml

    Example:  mlflow-stack doctor -c inventory.yaml --target kubernetes -o json
    """
    from mlflow_stack.ops.doctor import checklist
    from mlflow_stack.ops.doctor.findings import Finding
    from mlflow_stack.ops.doctor.settings import UNRESOLVED_SECRETS, resolve_for_doctor

    # The S3 keys may come from the cluster (their Secret missing is a finding); a missing
    # client secret is the Keycloak check's to report.
    loaded = load_config(config, require_secrets=False)
    settings, early = resolve_for_doctor(loaded.settings, target.value)
    check_secrets(settings, loaded.source, reported=UNRESOLVED_SECRETS if early else ())
    state = state_dir_for(state_dir)
    marks = {"ok": "[green]✓[/]", "problem": "[red]✗[/]", "skipped": "[dim]-[/]"}

    def show(f: Finding) -> None:
        if output == Output.text:
            out.print(f"{marks[f.status]} {escape(f.check)}: {escape(f.finding)}")
            if f.fix:
                out.print(f"    [yellow]fix:[/] {escape(f.fix)}")

    for finding in early:
        show(finding)
    findings = [*early, *checklist.run(settings, state, on_finding=show, target=target.value)]
    if output == Output.json:
        out.print_json(json.dumps([asdict(f) for f in findings]))
    problems = [f for f in findings if f.status == "problem"]
    if output == Output.text:
        out.print(f"{len(problems)} problem(s) in {len(findings)} checks")
    if problems:
        raise typer.Exit(1)
