#!/usr/bin/env bash
# Runs the Go side of the tests against rkv: the etcd Go client (tests/kubernetes/etcdclient),
# a real kube-apiserver, kube-controller-manager and kube-scheduler on rkv
# (tests/kubernetes/controlplane) and the apiserver's own storage tests
# (k8s.io/apiserver pkg/storage/etcd3, with its test server helper replaced by one that starts
# rkv, as kine does). Kubernetes v1.36.3 and its staging modules at v0.36.3 are pinned in
# tests/kubernetes/go.mod; the binaries are cached in ~/.cache/rkv-k8s and Go's build cache, so
# only the first run pays for the build.
#
# Usage: scripts/kubernetes.sh [etcdclient|controlplane|conformance|portability|build ...]
# (default: the four suites; build: only the binaries, among them etcd, etcdctl and etcdutl
# 3.6.8 for benches/kubernetes.sh and the data-portability tests: RKV_ETCD36_BIN=$KUBE_BIN_DIR)
# RKV_BIN: the rkv binary (default: the debug build in $CARGO_TARGET_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rkv-target}"
export RKV_BIN="${RKV_BIN:-$CARGO_TARGET_DIR/debug/rkv}"
CACHE="$HOME/.cache/rkv-k8s"
export KUBE_BIN_DIR="$CACHE/bin"
KUBERNETES_VERSION=v1.36.3
APISERVER_VERSION=v0.36.3
# No network fetches of toolchains: the machine's Go 1.26 builds Kubernetes 1.36.
export GOTOOLCHAIN=local
export PATH="$PATH:/usr/local/go/bin:$HOME/go/bin"
if ! command -v go >/dev/null 2>&1; then
  echo "go not found: Kubernetes v1.36 needs Go 1.26 (https://go.dev/doc/install)" >&2
  exit 1
fi

if [ ! -x "$RKV_BIN" ] && [ "${1:-}" != build ]; then
  # The tests' own cargo command builds rkv and rctl; a plain `cargo build` would unify
  # features differently and compile RocksDB a second time.
  cargo test --workspace --no-run
fi
mkdir -p "$KUBE_BIN_DIR"
suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(etcdclient conformance controlplane portability)

build_kubernetes() {
  local started=$SECONDS
  # The version a release build stamps in (hack/lib/version.sh); without it the components
  # call themselves v0.0.0-master.
  local ldflags="" pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=36"
    ldflags+=" -X $pkg.gitTreeState=clean"
  done
  (cd tests/kubernetes && go build -ldflags "$ldflags" -o "$KUBE_BIN_DIR/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl &&
    go build -o "$KUBE_BIN_DIR/etcd" ./cmd/etcd &&
    go build -o "$KUBE_BIN_DIR/" go.etcd.io/etcd/etcdctl/v3 go.etcd.io/etcd/etcdutl/v3)
  echo "kubernetes binaries ready in $((SECONDS - started)) s"
}

# The storage tests are the apiserver module's own _test.go files: copy the module out of the
# module cache, drop our test server helper over the original and build the test binary.
run_conformance() {
  local src="$CACHE/apiserver-$APISERVER_VERSION"
  local started=$SECONDS
  if [ ! -f "$src/go.mod" ]; then
    (cd tests/kubernetes && go mod download "k8s.io/apiserver@$APISERVER_VERSION")
    local from
    from="$(go env GOMODCACHE)/k8s.io/apiserver@$APISERVER_VERSION"
    rm -rf "$src" && cp -r "$from" "$src" && chmod -R u+w "$src"
  fi
  cp tests/kubernetes/conformance/testserver/test_server.go \
    "$src/pkg/storage/etcd3/testserver/test_server.go"
  (cd "$src" && go test -c -o "$KUBE_BIN_DIR/etcd3.test" ./pkg/storage/etcd3)
  echo "storage tests built in $((SECONDS - started)) s"
  local log="$CACHE/conformance.log"
  local rc=0
  (cd "$src/pkg/storage/etcd3" && "$KUBE_BIN_DIR/etcd3.test" -test.v -test.parallel 1 \
    -test.timeout 30m) > "$log" 2>&1 || rc=$?
  grep -a -E '^(--- |=== RUN|ok|FAIL|PASS)' "$log" | grep -v '^=== RUN' || true
  echo "storage conformance: $(grep -a -c '^--- PASS' "$log" || true) passed," \
    "$(grep -a -c '^--- FAIL' "$log" || true) failed, $(grep -a -c '^--- SKIP' "$log" || true) skipped" \
    "(top-level tests; full log: $log)"
  if [ $rc -ne 0 ]; then
    grep -a -B2 -A30 -- '--- FAIL' "$log" | head -200
    return $rc
  fi
}

build_kubernetes
for suite in "${suites[@]}"; do
  case "$suite" in
    etcdclient|controlplane)
      # The portability suite runs its test out of the controlplane package on its own.
      (cd tests/kubernetes && go test -count=1 -timeout 30m -v -skip '^TestKubernetesPortability$' \
        "./$suite/" 2>&1 | \
        grep -E '^(=== RUN|--- |\s+--- |ok|FAIL|PASS|panic)|_test.go' ; exit "${PIPESTATUS[0]}")
      ;;
    portability)
      # TestKubernetesPortability (controlplane/portability_test.go): etcd 3.6.8 -> rkv (1 and 3
      # members) -> etcd under a real kube-apiserver. Unfiltered: its failures print diffs.
      (cd tests/kubernetes &&
        go test -count=1 -timeout 10m -v -run '^TestKubernetesPortability$' ./controlplane/)
      ;;
    conformance) run_conformance ;;
    build) ;;
    *) echo "unknown suite $suite" >&2; exit 2 ;;
  esac
done
