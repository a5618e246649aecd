//go:build tools

// Package tools pins etcdctl and etcdutl 3.7 in go.mod, so that scripts/etcd37.sh can
// `go build` their main packages from the module cache.
package tools

import (
	_ "go.etcd.io/etcd/etcdctl/v3"
	_ "go.etcd.io/etcd/etcdutl/v3"
)
