#!/usr/bin/env bash
# From a fresh clone: install mlflow-stack into ./.venv (once) and bring the platform up
# locally on embedded defaults. Extra arguments go to `mlflow-stack up` (e.g. --detach).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/mlflow-stack ]; then
  echo "installing mlflow-stack into .venv (first run only, a few minutes) ..." >&2
  python3 -m venv .venv
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet -e .
fi
exec .venv/bin/mlflow-stack up "$@"
