#!/usr/bin/env bash
# Builds etcd, etcdctl and etcdutl 3.7.3 from the Go module proxy (tests/etcd37/go.mod pins
# them) into ~/.cache/rkv-etcd37/bin, the third reference of the data-portability tests
# (RKV_ETCD37_BIN, see EtcdTools::each). Go's build cache makes reruns fast.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN_DIR="$HOME/.cache/rkv-etcd37/bin"
# No network fetches of toolchains: the machine's Go 1.26 builds etcd 3.7.
export GOTOOLCHAIN=local
export PATH="$PATH:/usr/local/go/bin:$HOME/go/bin"
if ! command -v go >/dev/null 2>&1; then
  echo "go not found: etcd 3.7 needs Go 1.26 (https://go.dev/doc/install)" >&2
  exit 1
fi
mkdir -p "$BIN_DIR"
started=$SECONDS
(cd tests/etcd37 &&
  go build -o "$BIN_DIR/etcd" ./cmd/etcd &&
  go build -o "$BIN_DIR/" go.etcd.io/etcd/etcdctl/v3 go.etcd.io/etcd/etcdutl/v3)
echo "etcd 3.7 binaries ready in $((SECONDS - started)) s"
