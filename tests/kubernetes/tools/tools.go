//go:build tools

// Package tools pins the Kubernetes and etcd programs the tests build and run against rkv:
// besides Kubernetes, etcd 3.6.8's etcdctl and etcdutl (the reference clients of the
// data-portability tests; etcd's own server is ./cmd/etcd). etcd's go.mod files carry replace
// lines, so `go install pkg@version` refuses them: they are built as dependencies of this module.
package tools

import (
	_ "go.etcd.io/etcd/etcdctl/v3"
	_ "go.etcd.io/etcd/etcdutl/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
