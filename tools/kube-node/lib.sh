# Shared by scripts/build-node.sh and scripts/build-node-images.sh (sourced, not run).
# shellcheck shell=bash

node_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [ -n "${MLFLOW_STACK_TEST_CACHE:-}" ]; then
  node_cache="$MLFLOW_STACK_TEST_CACHE/kube-node"
else
  node_cache="$node_repo/.cache/kube-node"
fi

say() { echo "kube-node: $*" >&2; }

# Every build here runs at the lowest CPU (and idle I/O) priority: the machine's cores are shared
# with other developers' test runs, which must keep their speed.
low_priority() {
  if command -v ionice >/dev/null 2>&1; then
    nice -n 19 ionice -c 3 "$@"
  else
    nice -n 19 "$@"
  fi
}

# ensure_packages PKG...: installs the Debian packages that are missing (apt-get; sudo when not
# root). Nothing is installed when all are present.
ensure_packages() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
      || missing+=("$pkg")
  done
  [ "${#missing[@]}" = 0 ] && return 0
  local sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  say "installing Debian packages: ${missing[*]}"
  if ! low_priority "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y --no-install-recommends "${missing[@]}" >&2; then
    say "apt-get install failed; updating the package lists and retrying once"
    low_priority "${sudo[@]}" apt-get update >&2
    low_priority "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y --no-install-recommends "${missing[@]}" >&2
  fi
}

# lock_cache NAME: one build of NAME at a time per cache dir (parallel test runs share it).
lock_cache() {
  mkdir -p "$node_cache"
  exec 8>"$node_cache/$1.lock"
  if ! flock -n 8; then
    say "waiting for another $1 build in $node_cache to finish ..."
    flock 8
  fi
}

# heartbeat NAME START: prints a line a minute while a long step runs (kill the pid it prints).
# Its `sleep` must not outlive it: it would hold the cache lock (fd 8) and the caller's stderr
# pipe (a caller reading to EOF would wait up to a minute more).
heartbeat() {
  (
    exec 8>&-
    nap=""
    trap '[ -n "$nap" ] && kill "$nap" 2>/dev/null; exit 0' TERM
    while :; do
      sleep 60 &
      nap=$!
      wait "$nap"
      say "  still building $1 ($((SECONDS - $2)) s)"
    done
  ) >/dev/null &
  echo $!
}
