#!/usr/bin/env bash
# Builds rkv and rctl, puts them on PATH (~/.cargo/bin) and runs a single-member rkv on
# http://localhost:2379 in the foreground (Ctrl-C stops it). Extra arguments are etcd flags.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
cargo build --bins
mkdir -p "$HOME/.cargo/bin"
ln -sf "$CARGO_TARGET_DIR/debug/rkv" "$HOME/.cargo/bin/rkv"
ln -sf "$CARGO_TARGET_DIR/debug/rctl" "$HOME/.cargo/bin/rctl"
exec "$CARGO_TARGET_DIR/debug/rkv" "$@"
