#!/usr/bin/env bash
# Builds the container images the real-node harness (tests/harness/node.py) imports into its
# containerd: nothing is pulled from a registry.
#
#   pause   the pod sandbox: tools/kube-node/pause/pause.c, gcc -static, FROM scratch.
#   base    a Debian 12 rootfs made with mmdebstrap from Debian packages (python3, venv, CA
#           certificates), imported as an image: the base the server image is built on.
#   server  the platform's server image from the project's own recipe (image/Dockerfile, the one
#           users build), with PYTHON_IMAGE=<base> as its build argument: the pinned wheels
#           from PyPI (image/constraints.txt), non-root.
#
# Each image is saved as a docker-archive tar named after the digest of its inputs and reused
# while that digest matches. The rootfs tar is cached the same way; buildah's layer cache (under
# the same cache dir) keeps the dependency layer while only src/ or README.md change.
# The build's pip trusts the same CA bundle as this host's (mounted read-only during RUN steps,
# never part of the image). Every step runs under `nice -n 19` (the cores are shared).
#
# Output: $MLFLOW_STACK_TEST_CACHE/kube-node/images (else .cache/kube-node/images); the only line
# on stdout is the path of images.json: {"pause"|"server": {"ref": ..., "tar": ...}, "base": ...}.
# Usage: scripts/build-node-images.sh [--force]
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../tools/kube-node/lib.sh
. "$repo/tools/kube-node/lib.sh"
force=0
case "${1:-}" in
  "") ;;
  --force) force=1 ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

ensure_packages mmdebstrap buildah podman gcc libc6-dev

images="$node_cache/images"
mkdir -p "$images"
lock_cache images
storage=(--root "$node_cache/containers/root" --runroot "$node_cache/containers/run"
         --storage-driver overlay)
buildah_() { low_priority buildah "${storage[@]}" "$@"; }
podman_() {
  low_priority podman "${storage[@]}" --cgroup-manager=cgroupfs --events-backend=file "$@"
}
# Root here lacks CAP_SYS_RESOURCE and the hard nofile limit may be low: the runtimes' defaults
# (nofile 1048576, nproc 32768) fail in setrlimit, so stay within the hard limits.
nofile=$(ulimit -Hn)
[ "$nofile" = unlimited ] && nofile=1048576
[ "$nofile" -gt 1048576 ] && nofile=1048576
ulimits=(--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=4096:4096")

digest() { sha256sum | cut -c1-16; }
timed_start=0
step_done() { say "$1 in $((SECONDS - timed_start)) s"; }

# save REF TAR: writes the docker-archive atomically.
save() {
  rm -f "$2.tmp"
  podman_ save --format docker-archive -o "$2.tmp" "$1" >&2
  mv -f "$2.tmp" "$2"
}

# keep_latest PREFIX KEEP: removes older tars of one image (the cache would grow forever).
keep_latest() {
  find "$images" -maxdepth 1 -name "$1-*.tar" ! -name "$1-$2.tar" -delete
}

# --- pause ---------------------------------------------------------------------------------------
pause_dir="$repo/tools/kube-node/pause"
pause_key=$( { cat "$pause_dir/pause.c" "$pause_dir/Containerfile"; gcc --version | head -n 1; } | digest)
pause_ref="localhost/mlflow-stack/pause:$pause_key"
pause_tar="$images/pause-$pause_key.tar"
if [ "$force" = 1 ] || [ ! -s "$pause_tar" ]; then
  timed_start=$SECONDS
  ctx=$(mktemp -d)
  cp "$pause_dir/Containerfile" "$ctx/"
  low_priority gcc -Os -static -o "$ctx/pause" "$pause_dir/pause.c"
  strip "$ctx/pause"
  buildah_ bud --isolation chroot --layers=false "${ulimits[@]}" -t "$pause_ref" "$ctx" >&2
  rm -rf "$ctx"
  save "$pause_ref" "$pause_tar"
  keep_latest pause "$pause_key"
  step_done "pause image built"
else
  say "pause image up to date ($pause_tar)"
fi

# --- base: Debian 12 rootfs ----------------------------------------------------------------------
# The Debian mirror is whatever this machine's apt uses (mmdebstrap reads the sources file); the
# apt options this host needs for it (e.g. a snapshot mirror's Valid-Until) are passed along.
sources=/etc/apt/sources.list
[ -f /etc/apt/sources.list.d/debian.sources ] && sources=/etc/apt/sources.list.d/debian.sources
suite=bookworm
# python3-venv: the recipe's `python -m venv`; python-is-python3: `python`; passwd: groupadd and
# useradd for the non-root user; ca-certificates: TLS to Keycloak, S3 and PostgreSQL.
include=python3,python3-venv,python-is-python3,passwd,ca-certificates
aptopts=()
while IFS= read -r line; do
  aptopts+=(--aptopt="$line")
done < <(apt-config dump | grep -E '^Acquire::(Check-Valid-Until|Check-Date|http::Proxy|https::Proxy) ' || true)
# What slim images leave out: docs, man pages, translations.
dpkgopts=(--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
          --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*'
          --dpkgopt='path-exclude=/usr/share/info/*')
base_key=$( {
  echo "mmdebstrap $(dpkg-query -W -f='${Version}' mmdebstrap) variant=minbase suite=$suite include=$include"
  printf '%s\n' "${aptopts[@]}" "${dpkgopts[@]}"
  cat "$sources"
} | digest)
rootfs="$node_cache/rootfs-$base_key.tar"
base_ref="localhost/mlflow-stack/debian-python:$base_key"
if [ "$force" = 1 ] || [ ! -s "$rootfs" ]; then
  timed_start=$SECONDS
  say "building the Debian $suite rootfs ($include) ..."
  ticker=$(heartbeat rootfs "$timed_start")
  rc=0
  low_priority mmdebstrap --variant=minbase --format=tar --include="$include" "${aptopts[@]}" "${dpkgopts[@]}" \
    "$suite" "$rootfs.tmp" "$sources" >&2 || rc=$?
  kill "$ticker" 2>/dev/null || true
  if [ "$rc" != 0 ]; then rm -f "$rootfs.tmp"; say "mmdebstrap FAILED (exit $rc)"; exit "$rc"; fi
  mv -f "$rootfs.tmp" "$rootfs"
  find "$node_cache" -maxdepth 1 -name 'rootfs-*.tar' ! -name "rootfs-$base_key.tar" -delete
  step_done "rootfs built ($(du -h "$rootfs" | cut -f1))"
else
  say "rootfs up to date ($rootfs)"
fi
if [ "$force" = 1 ] || ! podman_ image exists "$base_ref"; then
  timed_start=$SECONDS
  podman_ import --change 'CMD ["python3"]' "$rootfs" "$base_ref" >&2
  step_done "base image imported"
fi

# --- server: the project's own recipe ------------------------------------------------------------
# Its inputs: the recipe, the base, and every file of the build context its ignore file lets in.
context_files() {
  (cd "$repo" && find pyproject.toml README.md image/requirements.txt image/constraints.txt src \
     -type f ! -name '*.pyc' ! -path '*/__pycache__/*' ! -path 'src/*.egg-info/*' -print0 | sort -z)
}
server_key=$( {
  echo "base=$base_key"
  (cd "$repo" && sha256sum image/Dockerfile image/Dockerfile.dockerignore)
  context_files | (cd "$repo" && xargs -0 sha256sum)
} | digest)
server_ref="localhost/mlflow-stack/server:$server_key"
server_tar="$images/server-$server_key.tar"
if [ "$force" = 1 ] || [ ! -s "$server_tar" ]; then
  timed_start=$SECONDS
  say "building the server image from image/Dockerfile on $base_ref ..."
  ticker=$(heartbeat "server image" "$timed_start")
  ca_bundle=$(python3 -c 'import ssl; print(ssl.get_default_verify_paths().cafile or "")' 2>/dev/null || true)
  [ -f "${PIP_CERT:-}" ] && ca_bundle=$PIP_CERT
  [ -f "$ca_bundle" ] || ca_bundle=/etc/ssl/certs/ca-certificates.crt
  rc=0
  buildah_ bud --isolation chroot --layers "${ulimits[@]}" \
    --volume "$ca_bundle:/etc/ssl/certs/ca-certificates.crt:ro" \
    --build-arg "PYTHON_IMAGE=$base_ref" \
    -f "$repo/image/Dockerfile" --ignorefile "$repo/image/Dockerfile.dockerignore" \
    -t "$server_ref" "$repo" >&2 || rc=$?
  kill "$ticker" 2>/dev/null || true
  if [ "$rc" != 0 ]; then say "server image build FAILED (exit $rc)"; exit "$rc"; fi
  save "$server_ref" "$server_tar"
  keep_latest server "$server_key"
  # Older server images and the layers only they used go (the storage would grow by ~1 GB with
  # every source change), but not the build stage's dependency layer: tagging the build stage
  # (all cached, a few seconds) keeps its chain out of the prune.
  build_ref="localhost/mlflow-stack/server-build:$server_key"
  buildah_ bud --isolation chroot --layers "${ulimits[@]}" --target build \
    --build-arg "PYTHON_IMAGE=$base_ref" \
    -f "$repo/image/Dockerfile" --ignorefile "$repo/image/Dockerfile.dockerignore" \
    -t "$build_ref" "$repo" >/dev/null 2>&1 || true
  podman_ images --format '{{.Repository}}:{{.Tag}}' \
    | grep -E '^localhost/mlflow-stack/server(-build)?:' | grep -vx -e "$server_ref" -e "$build_ref" \
    | xargs -r podman "${storage[@]}" rmi -f >/dev/null 2>&1 || true
  podman_ image prune -f >/dev/null 2>&1 || true
  step_done "server image built and saved ($(du -h "$server_tar" | cut -f1))"
else
  say "server image up to date ($server_tar)"
fi

manifest="$images/images.json"
cat >"$manifest.tmp" <<EOF
{
  "pause": {"ref": "$pause_ref", "tar": "$pause_tar"},
  "base": {"ref": "$base_ref", "rootfs": "$rootfs"},
  "server": {"ref": "$server_ref", "tar": "$server_tar"}
}
EOF
mv -f "$manifest.tmp" "$manifest"
echo "$manifest"
