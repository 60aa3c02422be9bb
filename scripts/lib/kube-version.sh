# Shared by scripts/build-kube-harness.sh and scripts/build-node.sh (sourced, not run).
# shellcheck shell=bash

# kube_version_ldflags MODULE_DIR: sets kube_version, the k8s.io/kubernetes version the Go module
# in MODULE_DIR requires, and kube_ldflags, the -X flags that make the binaries report it (/version,
# and the binary version kube-apiserver's compatibility logic starts from), set the way upstream's
# hack/lib/version.sh does. Runs `go` as the caller defines it. Both go into the build stamps:
# changing a flag here rebuilds the binaries.
kube_version_ldflags() {
  local minor pkg
  kube_version=$(cd "$1" && go list -m -f '{{.Version}}' k8s.io/kubernetes)
  minor=${kube_version#v*.}
  minor=${minor%%.*}
  kube_ldflags=""
  for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    kube_ldflags+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    kube_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  kube_ldflags=${kube_ldflags# }
}
