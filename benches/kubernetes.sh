#!/usr/bin/env bash
# kube-apiserver, kube-controller-manager and kube-scheduler v1.36.3 on a 1-member rkv (release
# build) and, alternating round by round, on etcd 3.6.8: time to create 1,000 ConfigMaps
# through the apiserver, LIST them whole and in pages of 500, a Deployment's convergence time,
# and the backend's RSS at the end. Prints a table with ratios (rkv/etcd) and writes JSON.
#
# Environment: RKV_KUBE_BENCH_ROUNDS (3), RKV_KUBE_BENCH_CONFIGMAPS (1000),
# RKV_KUBE_BENCH_REPLICAS (50), RKV_KUBE_BENCH_JSON (target/kubernetes-bench.json).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rkv-target}"
# The same release build as `cargo bench --bench compare` (it builds the rkv binary too).
cargo bench --bench compare --no-run
export RKV_BIN="$CARGO_TARGET_DIR/release/rkv"
export RKV_KUBE_BENCH_JSON="${RKV_KUBE_BENCH_JSON:-$CARGO_TARGET_DIR/kubernetes-bench.json}"
# Builds the Kubernetes binaries and etcd (cached), runs no test suite.
scripts/kubernetes.sh build
cd tests/kubernetes
KUBE_BIN_DIR="$HOME/.cache/rkv-k8s/bin" GOTOOLCHAIN=local \
  go test -count=1 -run '^$' -bench '^BenchmarkKubernetes$' -benchtime 1x -timeout 60m ./controlplane/
echo "JSON: $RKV_KUBE_BENCH_JSON"
