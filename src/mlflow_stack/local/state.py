"""The state directory: where the local platform keeps its database, artifacts, pid and logs."""

from __future__ import annotations

import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mlflow_stack.errors import ConfigError
from mlflow_stack.launch.spec import ServerPaths


def default_state_dir() -> Path:
    """`MLFLOW_STACK_HOME`, else `$XDG_DATA_HOME/mlflow-stack`, else ~/.local/share/mlflow-stack."""
    explicit = os.environ.get("MLFLOW_STACK_HOME")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "mlflow-stack"


@dataclass(frozen=True)
class StateDir:
    root: Path

    @property
    def pid_file(self) -> Path:
        return self.root / "server.json"

    @property
    def log_file(self) -> Path:
        return self.root / "logs" / "server.log"

    @property
    def audit_log(self) -> Path:
        """The audit trail (JSON lines), apart from the server log."""
        return self.root / "logs" / "audit.log"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def artifacts_dir(self) -> Path:
        return self.root / "artifacts"

    @property
    def secret_key_file(self) -> Path:
        return self.root / "secret-key"

    def secret_key(self) -> str:
        """The SSO session key: generated on first use, then reused so restarts keep sessions."""
        path = self.secret_key_file
        if path.is_file():
            key = path.read_text().strip()
            if key:
                return key
        key = secrets.token_urlsafe(32)
        # Created 0600 from the start (no window where it is world-readable), then renamed in.
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key + "\n")
        os.replace(tmp, path)
        return key

    def server_paths(self) -> ServerPaths:
        return ServerPaths(
            data_dir=PurePosixPath(self.data_dir),
            artifacts_dir=PurePosixPath(self.artifacts_dir),
            prometheus_dir=PurePosixPath(self.root / "run" / "prometheus"),
            tmp_dir=PurePosixPath(self.root / "run" / "tmp"),
            audit_log=str(self.audit_log),
        )

    def prepare(self) -> None:
        """Create the layout; refuse a directory we cannot write to (exit 2, nothing changed)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".write-test-"):
                pass
        except OSError as exc:
            raise ConfigError(
                f"state directory {self.root} is not writable: {exc.strerror}",
                hint="Choose another with --state-dir DIR or MLFLOW_STACK_HOME.",
            ) from None
        paths = self.server_paths()
        for d in (self.log_file.parent, self.data_dir, self.artifacts_dir,
                  Path(paths.prometheus_dir), Path(paths.tmp_dir)):
            d.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
