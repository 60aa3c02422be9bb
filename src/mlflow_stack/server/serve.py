"""`mlflow server`, but the server it starts replaces this process instead of running under it.

``mlflow server`` parses its options, prepares the stores, computes the server's environment and
then runs the HTTP server as a child, waiting for it: a whole Python process with MLflow's server
imported (~190 MiB USS) that does nothing else for the server's life. Here MLflow's own CLI does
all of that unchanged, and only its last call, the spawn, becomes an ``exec`` of the same command
line with the same environment, so nothing stays behind.

The exception is MLflow's job runner (``server.job_execution``): MLflow then starts it from this
process after the spawn and waits for both, so the spawn stays a spawn.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Sequence
from typing import Any

from mlflow_stack.server.log import quiet_known_warnings

# MLflow passes this to the server only when its job runner starts next (mlflow/server/__init__.py).
_JOB_RUNNER_ENV = "_MLFLOW_HUEY_STORAGE_PATH"


def _exec_server(cmd: Sequence[str], *, extra_env: dict[str, str] | None = None,
                 **kwargs: Any) -> Any:
    """`_exec_cmd(cmd, extra_env=..., capture_output=False, synchronous=False)` as an exec."""
    from mlflow.utils import process

    env = {**os.environ, **(extra_env or {})}
    if kwargs.get("synchronous", True) or _JOB_RUNNER_ENV in env:
        return process._exec_cmd(cmd, extra_env=extra_env, **kwargs)  # type: ignore[no-untyped-call]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(cmd[0], list(cmd), env)


def _require_shape() -> None:
    """Stop here, not at run time, if MLflow no longer starts its server through `_exec_cmd`."""
    import mlflow.server
    from mlflow.server.constants import HUEY_STORAGE_PATH_ENV_VAR

    source = inspect.getsource(mlflow.server._run_server)
    if "_exec_cmd(" not in source or "synchronous=False" not in source:
        raise RuntimeError("mlflow.server._run_server no longer spawns its server with "
                           "_exec_cmd(..., synchronous=False); mlflow_stack.server.serve needs "
                           "updating for this MLflow version")
    if HUEY_STORAGE_PATH_ENV_VAR != _JOB_RUNNER_ENV:
        raise RuntimeError(f"MLflow's job runner variable is now {HUEY_STORAGE_PATH_ENV_VAR}")


def main(argv: Sequence[str] | None = None) -> None:
    """`mlflow-stack-server server ...`: the arguments of `mlflow server`, after `server`."""
    quiet_known_warnings()
    import mlflow.server
    from mlflow.cli import cli

    _require_shape()
    mlflow.server._exec_cmd = _exec_server  # type: ignore[attr-defined]
    cli.main(args=list(sys.argv[1:] if argv is None else argv), prog_name="mlflow")


if __name__ == "__main__":
    main()
