#!/usr/bin/env bash
# The monitoring test tools (tests/harness/monitoring.py), from published Go modules only:
#   - the Prometheus Operator's CRDs ServiceMonitor and PrometheusRule, copied out of the
#     github.com/prometheus-operator/prometheus-operator module zip
#     (example/prometheus-operator-crd/), fetched by module name and version through the Go
#     module proxy (no vendored copy);
#   - promql-check (tools/promql-check): Prometheus's own PromQL parser
#     (github.com/prometheus/prometheus/promql/parser), to parse every alert expression.
#
# Output: $MLFLOW_STACK_TEST_CACHE/monitoring when that variable is set, else
# .cache/monitoring in the repo (git-ignored); the only line on stdout is that directory. Reused
# while its stamp (Go version, operator version, the checker's go.mod, go.sum and source)
# matches. Cold: ~4.5 min on this 2-core machine (module downloads most of it); warm: instant.
# Usage: scripts/build-monitoring-tools.sh [--force]
set -euo pipefail

OPERATOR_MODULE=github.com/prometheus-operator/prometheus-operator
OPERATOR_VERSION=v0.85.0
CRDS=(monitoring.coreos.com_servicemonitors.yaml monitoring.coreos.com_prometheusrules.yaml)

repo=$(cd "$(dirname "$0")/.." && pwd)
mod="$repo/tools/promql-check"
if [ -n "${MLFLOW_STACK_TEST_CACHE:-}" ]; then
  out="$MLFLOW_STACK_TEST_CACHE/monitoring"
else
  out="$repo/.cache/monitoring"
fi
say() { echo "monitoring-tools: $*" >&2; }

go=$(bash "$repo/scripts/build-kube-harness.sh" --find-go) || {
  say "no Go >= 1.26 found (see scripts/build-kube-harness.sh --find-go)"; exit 1; }
go_version=$(GOTOOLCHAIN=local "$go" env GOVERSION)
stamp=$(
  cd "$mod"
  { echo "go=$go_version operator=$OPERATOR_VERSION ${CRDS[*]}"
    sha256sum go.mod go.sum main.go; } | sha256sum | cut -d' ' -f1
)
mkdir -p "$out"
exec 9>"$out/.lock"
flock 9  # one build at a time (several pytest sessions may ask at once)
ready=1
for f in promql-check "${CRDS[@]}"; do [ -s "$out/$f" ] || ready=0; done
if [ "$ready" = 1 ] && [ "${1:-}" != "--force" ] && [ -f "$out/stamp" ] \
    && [ "$(cat "$out/stamp")" = "$stamp" ]; then
  say "up to date ($out)"
  echo "$out"
  exit 0
fi
start=$SECONDS
say "building promql-check ($go_version) ..."
# -mod=readonly: go.sum must already cover every module (nothing resolved anew).
(cd "$mod" && GOTOOLCHAIN=local nice -n 10 "$go" build -mod=readonly -trimpath \
  -o "$out/.promql-check.tmp" .)
mv -f "$out/.promql-check.tmp" "$out/promql-check"
say "fetching $OPERATOR_MODULE@$OPERATOR_VERSION ..."
dir=$(cd "$out" && GOTOOLCHAIN=local GOFLAGS= "$go" mod download -json \
  "$OPERATOR_MODULE@$OPERATOR_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
for f in "${CRDS[@]}"; do
  if [ ! -s "$dir/example/prometheus-operator-crd/$f" ]; then
    say "no example/prometheus-operator-crd/$f in $OPERATOR_MODULE@$OPERATOR_VERSION ($dir)"
    exit 1
  fi
  cp "$dir/example/prometheus-operator-crd/$f" "$out/.$f.tmp"
  mv -f "$out/.$f.tmp" "$out/$f"
done
echo "$stamp" >"$out/stamp"
say "done in $((SECONDS - start)) s ($out)"
echo "$out"
