#!/usr/bin/env bash
# The whole test suite from a fresh machine: system packages, the venv with test extras,
# lint and type checks, then pytest. The tests start their own real services (PostgreSQL,
# a JuiceFS S3 gateway, Keycloak, Chromium) on loopback and stop them by pid.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
[ -d /usr/lib/postgresql ] || need_apt+=(postgresql)
command -v chromium >/dev/null || need_apt+=(chromium)
command -v mvn >/dev/null || need_apt+=(maven)
command -v fish >/dev/null || need_apt+=(fish)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing system packages: ${need_apt[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --upgrade pip
fi
echo "installing Python dependencies ..." >&2
.venv/bin/pip install --quiet -e ".[test]"

echo "ruff ..." >&2
.venv/bin/ruff check src tests bench
echo "mypy ..." >&2
.venv/bin/mypy
echo "kube-apiserver + etcd test binaries (built once from the Go module proxy, then cached) ..." >&2
./scripts/build-kube-harness.sh >/dev/null
echo "pytest ..." >&2
exec .venv/bin/pytest "$@"
