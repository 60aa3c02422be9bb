"""Options shared by several commands, declared once."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer


class Output(StrEnum):
    text = "text"
    json = "json"


ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Config file (native YAML or the reference inventory). "
                 "Default: ./mlflow-stack.yaml if present, else embedded defaults."),
]
StateDirOpt = Annotated[
    Path | None,
    typer.Option("--state-dir", help="Where the local platform keeps its data "
                 "(default: $MLFLOW_STACK_HOME or ~/.local/share/mlflow-stack)."),
]
OutputOpt = Annotated[Output, typer.Option("--output", "-o", help="Output format.")]
BackupDirOpt = Annotated[
    Path | None,
    typer.Option("--backup-dir", help="Where the databases are backed up before a migration "
                 "(default: STATE_DIR/backups/pre-upgrade-TIMESTAMP)."),
]
NoBackupOpt = Annotated[
    bool,
    typer.Option("--no-backup", help="Migrate without the backup (when you took your own, e.g. "
                 "a volume snapshot)."),
]
