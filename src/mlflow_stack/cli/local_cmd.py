"""`up`, `down`, `status`, `logs`: the local platform."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from mlflow_stack.cli.console import RichProgress, err, out
from mlflow_stack.cli.options import ConfigOpt, Output, OutputOpt, StateDirOpt
from mlflow_stack.config.loader import load_config
from mlflow_stack.errors import ConfigError
from mlflow_stack.local import platform, process
from mlflow_stack.local.state import StateDir, default_state_dir


def state_dir_for(state_dir: Path | None) -> StateDir:
    return StateDir((state_dir or default_state_dir()).expanduser().resolve())


def up(
    config: ConfigOpt = None,
    state_dir: StateDirOpt = None,
    port: Annotated[int | None, typer.Option(help="Port to serve on (default 5000).")] = None,
    detach: Annotated[bool, typer.Option("--detach", "-d",
                                         help="Return once healthy; the server keeps running.")]
    = False,
) -> None:
    """Bring the platform up locally and print where it is.

    With no config: SQLite metadata and a local artifact folder in the state directory, on
    127.0.0.1. With a config naming PostgreSQL / S3 / Keycloak, the same server against those.

    Example:  mlflow-stack up --detach  |  mlflow-stack up -c mlflow-stack.yaml --port 5050
    """
    loaded = load_config(config)
    settings = loaded.settings
    if port is not None:
        if not 1 <= port <= 65535:
            raise ConfigError(f"--port {port} is out of range: expected 1-65535")
        settings.server.port = port
    state = state_dir_for(state_dir)
    result = platform.up(settings, state, RichProgress())
    rec = result.record
    if result.already_running:
        out.print(f"Already running (pid {rec.pid}) for {state.root}: UI {rec.url}")
        out.print(f"export MLFLOW_TRACKING_URI={rec.url}")
        return
    if result.stale_removed:
        err.print("[dim]removed a stale pid file from a server that is no longer running[/]")
    out.print(f"[bold green]MLflow is up[/]: UI {rec.url}")
    out.print(f"  metadata  {escape(rec.metadata)}\n  artifacts {escape(rec.artifacts)}")
    out.print(f"export MLFLOW_TRACKING_URI={rec.url}")
    if detach:
        out.print(f"[dim]running in the background; stop with: mlflow-stack down "
                  f"--state-dir {escape(str(state.root))}[/]")
        return
    out.print("[dim]Press Ctrl-C to stop.[/]")
    try:
        code = platform.wait_foreground(result)
        state.pid_file.unlink(missing_ok=True)
        err.print(f"[red]the MLflow server exited with code {code}; see {state.log_file}[/]")
        raise typer.Exit(1)
    except KeyboardInterrupt:
        err.print("stopping ...")
        platform.down(state)
        err.print("stopped")


def down(state_dir: StateDirOpt = None) -> None:
    """Stop the local server of a state directory (data is kept).

    Example:  mlflow-stack down --state-dir ./mlflow-state
    """
    state = state_dir_for(state_dir)
    record = platform.down(state)
    if record is None:
        out.print(f"not running ({state.root})")
    else:
        out.print(f"stopped pid {record.pid} ({record.url})")


def status(state_dir: StateDirOpt = None, output: OutputOpt = Output.text) -> None:
    """Show whether the local server runs, where, and its resting memory.

    Example:  mlflow-stack status --output json
    """
    st = platform.status(state_dir_for(state_dir))
    if output == Output.json:
        data = {
            "running": st.running, "healthy": st.healthy, "state_dir": st.state_dir,
            "processes": st.processes,
            "memory_uss_mib": round(st.memory_uss_bytes / 2**20, 1),
            "server": asdict(st.record) if st.record else None,
        }
        out.print_json(json.dumps(data))
        return
    if not st.running or st.record is None:
        out.print(f"not running ({st.state_dir})")
        return
    rec = st.record
    table = Table(show_header=False, box=None)
    table.add_row("status", "[green]healthy[/]" if st.healthy else "[yellow]not answering[/]")
    table.add_row("url", rec.url)
    table.add_row("pid", f"{rec.pid} ({st.processes} processes)")
    table.add_row("uptime", f"{time.time() - rec.started_at:.0f} s")
    table.add_row("memory", f"{st.memory_uss_bytes / 2**20:.0f} MiB (USS, whole tree)")
    table.add_row("metadata", escape(rec.metadata))
    table.add_row("artifacts", escape(rec.artifacts))
    table.add_row("auth", escape(rec.auth))
    table.add_row("state dir", escape(st.state_dir))
    out.print(table)


def logs(
    state_dir: StateDirOpt = None,
    lines: Annotated[int, typer.Option("--lines", "-n", help="Lines to show.")] = 50,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")]
    = False,
) -> None:
    """Print the local server's log.

    Example:  mlflow-stack logs -n 100 --follow
    """
    path = platform.log_path(state_dir_for(state_dir))
    if not path.exists():
        raise ConfigError(f"no log at {path}: has the platform been started with this state dir?")
    with path.open(errors="replace") as fh:
        for line in fh.readlines()[-lines:]:
            out.out(line.rstrip("\n"))
        while follow:
            line = fh.readline()
            if line:
                out.out(line.rstrip("\n"))
            else:
                time.sleep(0.5)


__all__ = ["down", "logs", "process", "status", "up"]
