#!/usr/bin/env bash
# Builds the binaries of the real single-node Kubernetes the tests run (tests/harness/node.py):
# kubelet, kube-controller-manager, kube-scheduler and kube-proxy from their published Go module
# (tools/kube-node/kube), plus etcd and kube-apiserver from scripts/build-kube-harness.sh (same
# Kubernetes version, same cache scheme), and Traefik (the ingress controller, with the Gateway
# API CRDs) from tools/kube-node/traefik. The node's runtime comes from Debian (containerd, runc,
# CNI plugins, iptables, socat, openssl): the missing ones are installed with apt-get.
#
# Output: $MLFLOW_STACK_TEST_CACHE/kube-node/bin when that variable is set, else
# .cache/kube-node/bin in the repo (git-ignored); etcd and kube-apiserver are symlinked there from
# the API-server harness's bin dir. The binaries are reused while their stamp (hash of the wrapper
# module's go.mod and go.sum, the Go version and the build flags) matches; otherwise rebuilt.
# Every build runs under `nice -n 19` (idle I/O class too): the cores are shared.
#
# Progress goes to stderr; the only line on stdout is the bin directory, for callers.
# CoreDNS (`coredns`) and SeaweedFS (`weed`) are built into the same bin dir from their wrapper
# modules tools/kube-node/{coredns,seaweedfs}, each with its own stamp.
#
# Usage: scripts/build-node.sh [--force]
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../tools/kube-node/lib.sh
. "$repo/tools/kube-node/lib.sh"
# shellcheck source=lib/kube-version.sh
. "$repo/scripts/lib/kube-version.sh"
force=()
case "${1:-}" in
  "") ;;
  --force) force=(--force) ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

ensure_packages containerd runc containernetworking-plugins iptables socat openssl util-linux

# etcd + kube-apiserver: the API-server harness's build (its own lock, stamps and cache).
harness_bin=$(low_priority bash "$repo/scripts/build-kube-harness.sh" "${force[@]}" | tail -n 1)

bin="$node_cache/bin"
mkdir -p "$bin"
lock_cache binaries

# Never download another Go toolchain; static binaries; go.sum must already cover everything.
export GOTOOLCHAIN=local
export CGO_ENABLED=0
export GOFLAGS="-mod=readonly -buildvcs=false"

names=(kubelet kube-controller-manager kube-scheduler kube-proxy)
link_harness() {
  local name
  for name in etcd kube-apiserver; do
    ln -sfn "$harness_bin/$name" "$bin/$name"
  done
}

if ! command -v go >/dev/null 2>&1; then
  ok=1
  for name in "${names[@]}"; do [ -x "$bin/$name" ] || ok=0; done
  if [ "$ok" = 1 ]; then
    say "go not found; using the binaries already in $bin unchecked"
    link_harness
    echo "$bin"
    exit 0
  fi
  say "go not found: install Go >= 1.26 (the Kubernetes 1.36 modules require it) to build the node"
  exit 1
fi
go_version=$(go env GOVERSION)
mod="$repo/tools/kube-node/kube"

# The version the components report (as build-kube-harness.sh sets it for kube-apiserver).
kube_version_ldflags "$mod"
ldflags="-s -w $kube_ldflags"

stamp=$(
  cd "$mod"
  { echo "go=$go_version names=${names[*]} cgo=$CGO_ENABLED ldflags=$ldflags"; sha256sum go.mod go.sum; } \
    | sha256sum | cut -d' ' -f1
)
stamp_file="$bin/node.stamp"
up_to_date=1
for name in "${names[@]}"; do [ -x "$bin/$name" ] || up_to_date=0; done
[ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ] || up_to_date=0
[ "${#force[@]}" = 0 ] || up_to_date=0

if [ "$up_to_date" = 1 ]; then
  say "${names[*]} up to date ($bin)"
else
  pkgs=()
  for name in "${names[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$name"); done
  say "building ${names[*]} ($kube_version, $go_version) into $bin ..."
  start=$SECONDS
  ticker=$(heartbeat "${names[*]}" "$start")
  tmp="$bin/.build.tmp"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  rc=0
  # One go build for the four: they share most packages, compiled once.
  (cd "$mod" && low_priority go build -trimpath -ldflags="$ldflags" -o "$tmp/" "${pkgs[@]}") || rc=$?
  kill "$ticker" 2>/dev/null || true
  wait "$ticker" 2>/dev/null || true
  if [ "$rc" != 0 ]; then
    rm -rf "$tmp"
    say "building ${names[*]} FAILED (exit $rc) after $((SECONDS - start)) s"
    exit "$rc"
  fi
  for name in "${names[@]}"; do mv -f "$tmp/$name" "$bin/$name"; done
  rmdir "$tmp"
  echo "$stamp" >"$stamp_file"
  say "built ${names[*]} in $((SECONDS - start)) s ($(du -ch "${names[@]/#/$bin/}" | tail -n 1 | cut -f1))"
fi

# --- CoreDNS and SeaweedFS (tests/harness/node_services.py) ---------------------------------
# One wrapper module each (tools/kube-node/{coredns,seaweedfs}), same scheme as the kube step:
# its own stamp (hash of go.mod/go.sum, Go version, flags), built at low priority with a heartbeat,
# moved into $bin only when the build succeeded.
# build_tool NAME MODULE_DIR PACKAGE: builds PACKAGE (a `tool` of MODULE_DIR) as $bin/NAME.
build_tool() {
  local name=$1 tool_mod=$2 pkg=$3 tool_ldflags="-s -w" tool_stamp tool_start tool_ticker tool_rc=0
  tool_stamp=$(
    cd "$tool_mod"
    { echo "go=$go_version name=$name pkg=$pkg cgo=$CGO_ENABLED ldflags=$tool_ldflags trimpath"
      sha256sum go.mod go.sum; } | sha256sum | cut -d' ' -f1
  )
  if [ "${#force[@]}" = 0 ] && [ -x "$bin/$name" ] && [ -f "$bin/$name.stamp" ] \
      && [ "$(cat "$bin/$name.stamp")" = "$tool_stamp" ]; then
    say "$name up to date ($bin)"
    return 0
  fi
  say "building $name ($pkg, $go_version) into $bin ..."
  tool_start=$SECONDS
  tool_ticker=$(heartbeat "$name" "$tool_start")
  (cd "$tool_mod" && low_priority go build -trimpath -ldflags="$tool_ldflags" \
    -o "$bin/.$name.tmp" "$pkg") || tool_rc=$?
  kill "$tool_ticker" 2>/dev/null || true
  wait "$tool_ticker" 2>/dev/null || true
  if [ "$tool_rc" != 0 ]; then
    rm -f "$bin/.$name.tmp"
    say "building $name FAILED (exit $tool_rc) after $((SECONDS - tool_start)) s"
    exit "$tool_rc"
  fi
  mv -f "$bin/.$name.tmp" "$bin/$name"
  echo "$tool_stamp" >"$bin/$name.stamp"
  say "built $name in $((SECONDS - tool_start)) s ($(du -h "$bin/$name" | cut -f1))"
}
build_tool coredns "$repo/tools/kube-node/coredns" github.com/coredns/coredns
build_tool weed "$repo/tools/kube-node/seaweedfs" github.com/seaweedfs/seaweedfs/weed
# --- end CoreDNS and SeaweedFS ---------------------------------------------------------------

link_harness

# --- traefik: the node's ingress controller (tests/harness/node_ingress.py) ----------------------
# Its own wrapper module (tools/kube-node/traefik), stamp and output, under the same lock. The
# Gateway API CRDs it serves come from that module graph too: sigs.k8s.io/gateway-api's module zip
# holds config/crd/standard/*.yaml, concatenated into $bin/gateway-api-crds.yaml (no vendored copy).
build_traefik() {
  local mod="$repo/tools/kube-node/traefik" version gw_version gw_dir ldflags stamp
  local stamp_file="$bin/traefik.stamp" crds="$bin/gateway-api-crds.yaml"
  # -mod=readonly: go.sum must already cover these (no network for anything not listed).
  version=$(cd "$mod" && go list -m -f '{{.Version}}' github.com/traefik/traefik/v3)
  gw_version=$(cd "$mod" && go list -m -f '{{.Version}}' sigs.k8s.io/gateway-api)
  # What `traefik version` reports (else "dev").
  ldflags="-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=$version"
  stamp=$(
    cd "$mod"
    { echo "go=$go_version traefik cgo=$CGO_ENABLED ldflags=$ldflags crds=$gw_version/standard"
      sha256sum go.mod go.sum; } | sha256sum | cut -d' ' -f1
  )
  if [ -x "$bin/traefik" ] && [ -s "$crds" ] && [ -f "$stamp_file" ] \
      && [ "$(cat "$stamp_file")" = "$stamp" ] && [ "${#force[@]}" = 0 ]; then
    say "traefik $version, Gateway API $gw_version CRDs up to date ($bin)"
    return 0
  fi
  say "building traefik $version ($go_version) into $bin ..."
  local start=$SECONDS ticker rc=0
  ticker=$(heartbeat traefik "$start")
  (cd "$mod" && low_priority go build -trimpath -ldflags="$ldflags" -o "$bin/.traefik.tmp" \
    github.com/traefik/traefik/v3/cmd/traefik) || rc=$?
  kill "$ticker" 2>/dev/null || true
  wait "$ticker" 2>/dev/null || true
  if [ "$rc" != 0 ]; then
    rm -f "$bin/.traefik.tmp"
    say "building traefik FAILED (exit $rc) after $((SECONDS - start)) s"
    exit "$rc"
  fi
  mv -f "$bin/.traefik.tmp" "$bin/traefik"
  gw_dir=$(cd "$mod" && go mod download -json sigs.k8s.io/gateway-api \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
  if [ -z "$gw_dir" ] || ! ls "$gw_dir"/config/crd/standard/*.yaml >/dev/null 2>&1; then
    say "no config/crd/standard/*.yaml in sigs.k8s.io/gateway-api $gw_version ($gw_dir)"
    exit 1
  fi
  local file
  for file in "$gw_dir"/config/crd/standard/gateway.networking.k8s.io_*.yaml; do
    echo "---"
    cat "$file"
  done >"$crds.tmp"
  mv -f "$crds.tmp" "$crds"
  echo "$stamp" >"$stamp_file"
  say "built traefik $version in $((SECONDS - start)) s ($(du -h "$bin/traefik" | cut -f1));" \
    "Gateway API $gw_version CRDs in $crds"
}
build_traefik

echo "$bin"
