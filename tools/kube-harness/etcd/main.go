// Command etcd is upstream etcd's server entry point, built from the published Go module so the
// test harness needs no prebuilt binary download (see scripts/build-kube-harness.sh).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
