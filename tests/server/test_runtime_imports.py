"""The server runtime stands apart: what runs inside the MLflow server process imports nothing
of the tool around it (config, components, launch, local, kubernetes, ops, cli, deploy), so the
image's server never pulls them in and they can change without touching it."""

from __future__ import annotations

import ast
from pathlib import Path

import mlflow_stack.server

SERVER = Path(mlflow_stack.server.__file__).parent


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            names.append(node.module or "")
    return names


def test_the_server_runtime_imports_only_itself_of_mlflow_stack() -> None:
    modules = sorted(SERVER.rglob("*.py"))
    assert len(modules) > 20
    outside = {f"{path.relative_to(SERVER)}: {name}" for path in modules
               for name in _imports(path)
               if name.split(".")[0] == "mlflow_stack"
               and not (name + ".").startswith("mlflow_stack.server.")}
    assert not outside, sorted(outside)
