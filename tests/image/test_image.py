"""The server image recipe: pins, non-root user, no compilers, and requirements that install.

No Docker engine here, so the image itself is not built. Instead its two `pip install` steps run,
exactly as the Dockerfile runs them, in a fresh `python3 -m venv` (the machine's Python 3.11, the
image's Python): a real install rather than `--dry-run --report`, because only an install followed
by `pip check` and an import proves the pins work together (mlflow-oidc-auth >= 10.2 resolves fine
on 3.11 and then fails to import). It takes ~2-3 minutes, most of it downloading wheels.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from mlflow_stack import MLFLOW_OIDC_AUTH_VERSION, MLFLOW_VERSION
from mlflow_stack.manifests import workload

ROOT = Path(__file__).parents[2]
IMAGE = ROOT / "image"
DOCKERFILE = (IMAGE / "Dockerfile").read_text()
PIN = re.compile(r"^([A-Za-z0-9._-]+)(\[[a-z,]+\])?==([^\s;]+)$")


def _lines(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines()
            if ln.strip() and not ln.lstrip().startswith("#")]


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in _lines(path):
        match = PIN.match(line)
        assert match, f"{path.name}: {line!r} is not pinned with =="
        pins[_canon(match.group(1))] = match.group(3)
    return pins


def _stages() -> list[str]:
    return re.split(r"^FROM ", DOCKERFILE, flags=re.M)[1:]


def test_requirements_pin_the_tested_versions() -> None:
    reqs = _pins(IMAGE / "requirements.txt")
    assert reqs["mlflow"] == MLFLOW_VERSION
    assert reqs["mlflow-oidc-auth"] == MLFLOW_OIDC_AUTH_VERSION
    assert {"psycopg", "boto3", "prometheus-flask-exporter"} <= set(reqs)
    assert "psycopg[binary]" in (IMAGE / "requirements.txt").read_text()
    # The same pair the package itself declares.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert f"mlflow=={MLFLOW_VERSION}" in project["dependencies"]
    assert f"mlflow-oidc-auth=={MLFLOW_OIDC_AUTH_VERSION}" in project["dependencies"]
    # Constraints agree with the requirements.
    constraints = _pins(IMAGE / "constraints.txt")
    for name, version in reqs.items():
        assert constraints[name] == version, name


def test_dockerfile_shape() -> None:
    stages = _stages()
    assert len(stages) == 2, "multi-stage: build, then a clean runtime stage"
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", DOCKERFILE, re.M)
    final = stages[-1]
    assert "--from=build" in final
    # Runs as the numeric non-root user the Deployment's securityContext expects.
    uid = workload.RUN_AS_UID
    assert re.search(rf"^USER {uid}:{uid}$", final, re.M)
    assert f"--uid {uid}" in final and f"--gid {uid}" in final
    # No compilers or package installs in the runtime stage; wheels only in the build stage.
    for word in ("apt-get", "gcc", "build-essential", "pip install"):
        assert word not in final, word
    assert DOCKERFILE.count("--only-binary=:all:") == 2
    assert "pip check" in DOCKERFILE
    ignore = (IMAGE / "Dockerfile.dockerignore").read_text().split()
    assert ignore.index("*") < ignore.index("!src/")  # everything out, then allow-listed
    for needed in ("!pyproject.toml", "!src/", "!image/requirements.txt",
                   "!image/constraints.txt", "!README.md"):
        assert needed in ignore


def _run(argv: list[str], cwd: Path) -> str:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=900,
                            check=False)
    assert result.returncode == 0, f"{' '.join(argv)}\n{result.stdout[-3000:]}\n" \
                                   f"{result.stderr[-3000:]}"
    return result.stdout


@pytest.mark.integration  # downloads every pinned wheel from PyPI: 2-3 minutes
@pytest.mark.timeout(1200)
def test_requirements_install_in_a_clean_venv(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    # The machine's python3 is 3.11 like the image; the test's own interpreter as a fallback.
    python = "python3" if sys.version_info[:2] == (3, 11) else sys.executable
    _run([python, "-m", "venv", str(venv)], tmp_path)
    pip, py = str(venv / "bin" / "pip"), str(venv / "bin" / "python")
    req, con = str(IMAGE / "requirements.txt"), str(IMAGE / "constraints.txt")
    # The Dockerfile's two steps, with its flags.
    _run([pip, "install", "--only-binary=:all:", "-r", req, "-c", con], tmp_path)
    _run([pip, "install", "--only-binary=:all:", "--no-binary=mlflow-stack", "-c", con,
          str(ROOT)], tmp_path)
    _run([pip, "check"], tmp_path)
    # Everything that got installed is pinned, so the image is reproducible.
    frozen = _run([pip, "list", "--format=freeze", "--exclude", "pip", "--exclude",
                   "setuptools", "--exclude", "mlflow-stack"], tmp_path)
    installed = {_canon(n): v for n, v in (ln.split("==") for ln in frozen.split())}
    constraints = _pins(IMAGE / "constraints.txt")
    unpinned = sorted(set(installed) - set(constraints))
    assert not unpinned, f"not pinned in image/constraints.txt: {unpinned} (see its header)"
    assert {n: installed[n] for n in installed} == {n: constraints[n] for n in installed}
    # The server stack imports on this Python, and the Job's program is there.
    out = _run([py, "-c", "import mlflow, mlflow_oidc_auth.db.utils, psycopg, boto3, "
                "prometheus_flask_exporter, mlflow_stack.server.migrate_job; "
                "print(mlflow.__version__)"], tmp_path)
    assert out.strip() == MLFLOW_VERSION
