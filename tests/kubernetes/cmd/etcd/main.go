// Command etcd is etcd's own server (go.etcd.io/etcd/server/v3, the version kube-apiserver
// v1.36 is tested with), built here as the reference beside rkv in benches/kubernetes.sh.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
