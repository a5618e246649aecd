// Command etcd is etcd 3.7's own server (go.etcd.io/etcd/server/v3), built as the third
// reference of the data-portability tests (RKV_ETCD37_BIN, scripts/etcd37.sh).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
