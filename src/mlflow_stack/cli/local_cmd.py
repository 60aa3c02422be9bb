"""`up`, `down`, `status`, `logs`: the local platform."""

from __future__ import annotations

import json
import shlex
import signal
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from mlflow_stack.cli.console import RichProgress, err, out, program
from mlflow_stack.cli.options import ConfigOpt, Output, OutputOpt, StateDirOpt
from mlflow_stack.config.loader import load_config
from mlflow_stack.errors import ConfigError
from mlflow_stack.local import platform, process
from mlflow_stack.local.state import StateDir, default_state_dir

# `status` exit codes (like systemctl's): running and answering, running but not answering
# /health, not running.
STATUS_HEALTHY, STATUS_NOT_ANSWERING, STATUS_NOT_RUNNING = 0, 1, 3


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM/SIGHUP in the foreground: stop as on Ctrl-C; a repeat no longer interrupts the
    stop itself (a process manager follows up with SIGKILL if it will not wait)."""
    for stop_signal in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop_signal, signal.SIG_IGN)
    raise KeyboardInterrupt


def state_dir_for(state_dir: Path | None) -> StateDir:
    return StateDir((state_dir or default_state_dir()).expanduser().resolve())


def state_dir_option(state: StateDir) -> str:
    """` --state-dir DIR` for a command to print, or "" when DIR is the default anyway."""
    if state.root == state_dir_for(None).root:
        return ""
    return f" --state-dir {shlex.quote(str(state.root))}"


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
    The first start on a new database also creates its schema, which takes longer.

    Example:  mlflow-stack up --detach

    Example:  mlflow-stack up -c mlflow-stack.yaml --port 5050
    """
    loaded = load_config(config)
    settings = loaded.settings
    if port is not None:
        if not 1 <= port <= 65535:
            raise ConfigError(f"--port {port} is out of range: expected 1-65535")
        settings.server.port = port
    state = state_dir_for(state_dir)
    result = platform.up(settings, state, RichProgress(), config=loaded.source)
    rec = result.record
    stop_hint = f"{program()} down{state_dir_option(state)}"
    if result.already_running:
        out.print(f"Already running (pid {rec.pid}) for {escape(str(state.root))}: UI {rec.url}")
        out.print(f"export MLFLOW_TRACKING_URI={rec.url}")
        out.print(f"[dim]stop with: {escape(stop_hint)}[/]")
        return
    if result.stale_removed:
        err.print("[dim]removed a stale pid file from a server that is no longer running[/]")
    out.print(f"[bold green]MLflow is up[/]: UI {rec.url}")
    out.print(f"  metadata  {escape(rec.metadata)}\n  artifacts {escape(rec.artifacts)}")
    out.print(f"export MLFLOW_TRACKING_URI={rec.url}")
    if detach:
        out.print(f"[dim]running in the background; stop with: {escape(stop_hint)}[/]")
        return
    out.print("[dim]Press Ctrl-C to stop.[/]")
    try:
        # A process manager's SIGTERM or a closed terminal's SIGHUP stops the server as Ctrl-C
        # does; by default they ended `up` alone and left the server running (its own group).
        for stop_signal in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(stop_signal, _interrupt)
        code = platform.wait_foreground(result)
    except KeyboardInterrupt:
        err.print("stopping ...")
        platform.down(state)
        err.print("stopped")
        return
    ended = platform.why_ended(state, rec, timeout=settings.server.health_timeout)
    if ended.successor is not None:
        now = ended.successor
        err.print(f"the server was restarted by another command (now pid {now.pid}, "
                  f"{now.url}); it runs in the background. Stop it with: "
                  f"{escape(stop_hint)}")
        return
    if not ended.crashed:
        err.print("the server was stopped by another command")
        return
    err.print(f"[red]the MLflow server exited with code {code}; see {state.log_file}[/]")
    raise typer.Exit(1)


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

    Exit status: 0 running and answering /health, 1 running but not answering (yet), 3 not
    running.

    Example:  mlflow-stack status --output json
    """
    st = platform.status(state_dir_for(state_dir))
    code = (STATUS_NOT_RUNNING if not st.running or st.record is None
            else STATUS_HEALTHY if st.healthy else STATUS_NOT_ANSWERING)
    if output == Output.json:
        data = {
            "running": st.running, "healthy": st.healthy, "state_dir": st.state_dir,
            "processes": st.processes,
            "memory_uss_mib": round(st.memory_uss_bytes / 2**20, 1),
            "server": asdict(st.record) if st.record else None,
        }
        out.print_json(json.dumps(data))
    elif not st.running or st.record is None:
        out.print(f"not running ({escape(st.state_dir)})")
    else:
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
        table.add_row("config", escape(rec.config or "embedded defaults")
                      if rec.knows_start else "[dim]not recorded[/]")
        table.add_row("state dir", escape(st.state_dir))
        out.print(table)
    if code != STATUS_HEALTHY:
        raise typer.Exit(code)


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
