"""Entry point of the gc CronJob: `mlflow gc`, deleting proxied artifacts in the store itself.

    python -m mlflow_stack.server.gc_job --backend-store-uri URI --artifacts-destination DEST \\
        --older-than 30d [--all-workspaces]

It takes `mlflow gc`'s options and runs MLflow's own command, with one difference. Runs logged
through the server have `mlflow-artifacts:/<experiment>/<run>/artifacts` URIs, which plain
`mlflow gc` resolves against a tracking *server* over HTTP (MLFLOW_TRACKING_URI; with SSO it
would need a signed-in user's token); `--artifacts-destination` only sets where new experiments
put artifacts. The server keeps those artifacts at `<destination>/<path>` (workspace-scoped when
workspaces are on): this process maps the URIs there the same way and deletes with the
destination's repository, for `s3` mlflow-stack's, which adds the Content-MD5 DeleteObjects
needs on the reference's S3 (server.s3_repository). It refuses to run if that repository is not
the one registered. Passwords come from the environment (PGPASSWORD), never the URI. It is a
program, not library code: it reports on stdout/stderr and exits non-zero on failure.
"""

from __future__ import annotations

import argparse
import os
import posixpath
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

PROXIED_SCHEME = "mlflow-artifacts"


def stored_uri(artifact_uri: str, destination: str) -> str:
    """Where the server stores an `mlflow-artifacts` URI's artifacts, as a URI under
    `destination` (MLflow's handlers: destination repository + path, workspace-scoped)."""
    path = urlparse(artifact_uri).path.lstrip("/")
    from mlflow import environment_variables

    workspaces: Any = environment_variables.MLFLOW_ENABLE_WORKSPACES  # untyped upstream
    if workspaces.get():
        from mlflow.server import handlers

        scope: Any = getattr(handlers, "_get_workspace_scoped_repo_path_if_enabled", None)
        if scope is None:  # the upstream shape this relies on
            raise RuntimeError("mlflow.server.handlers has no "
                               "_get_workspace_scoped_repo_path_if_enabled: workspace-scoped "
                               "artifact paths cannot be resolved with this MLflow version")
        path = scope(path) or ""
    base = destination.rstrip("/")
    return posixpath.join(base, path) if path else base


def proxied_repository(destination: str) -> Callable[..., Any]:
    """An `mlflow-artifacts` repository factory that opens the stored location instead."""
    def factory(artifact_uri: str, tracking_uri: str | None = None,
                registry_uri: str | None = None) -> Any:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        return get_artifact_repository(stored_uri(artifact_uri, destination))
    return factory


def check_s3_repository() -> str:
    """The `s3` scheme must open mlflow-stack's repository (Content-MD5 on DeleteObjects):
    without it every artifact delete fails on S3 servers that require the header."""
    from mlflow.store.artifact.artifact_repository_registry import _artifact_repository_registry

    from mlflow_stack.server.s3_repository import S3ArtifactRepository

    registry: Any = _artifact_repository_registry
    # No network: the S3 client is made on first use.
    repo = registry.get_artifact_repository("s3://mlflow-stack-check/probe")
    if not isinstance(repo, S3ArtifactRepository):
        raise RuntimeError(
            f"the s3 artifact repository is {type(repo).__module__}.{type(repo).__name__}, not "
            "mlflow-stack's: is mlflow-stack installed in this image (its "
            "mlflow.artifact_repository entry point)?")
    return f"{type(repo).__module__}.{type(repo).__name__}"


def install(destination: str) -> str:
    """Resolve `mlflow-artifacts` URIs under `destination` in this process; says how."""
    from mlflow.store.artifact.artifact_repository_registry import _artifact_repository_registry

    registry: Any = _artifact_repository_registry
    how = f"mlflow-artifacts URIs resolved under {destination}"
    if urlparse(destination).scheme == "s3":
        how += f", deleted with {check_s3_repository()} (Content-MD5 on DeleteObjects)"
    registry.register(PROXIED_SCHEME, proxied_repository(destination))
    return how


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--backend-store-uri")
    parser.add_argument("--artifacts-destination")
    known, _ = parser.parse_known_args(args)
    if not known.backend_store_uri or not known.artifacts_destination:
        print("gc_job: --backend-store-uri and --artifacts-destination are required",
              file=sys.stderr)
        return 2
    # mlflow gc insists on a tracking URI; the store's (no password in it) is the right one.
    os.environ.setdefault("MLFLOW_TRACKING_URI", known.backend_store_uri)
    try:
        how = install(known.artifacts_destination)
    except RuntimeError as exc:
        print(f"gc_job: {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"gc: {how}", flush=True)

    import click
    from mlflow.cli import gc

    try:
        gc.main(args=args, prog_name="mlflow gc", standalone_mode=False)
    except click.ClickException as exc:  # a bad option: click's own message
        exc.show()
        return exc.exit_code
    except Exception as exc:  # the Job's log must say why, in one line
        print(f"gc failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1
    print("gc: done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
