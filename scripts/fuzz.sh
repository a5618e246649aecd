#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ (nightly + cargo-fuzz), each for SECONDS seconds, and
# minimises what they found into fuzz/corpus/<target>, which tests/fuzz_corpus.rs replays.
#   scripts/fuzz.sh [SECONDS] [TARGET...]
# RocksDB's C++ is linked from the release build in $CARGO_TARGET_DIR when there is one (a
# sanitizer build of it would take ~40 minutes and the fuzzers instrument only Rust code).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(client_requests raft_entry peer_message snapshot etcd_db etcd_wal)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
main_target=${CARGO_TARGET_DIR:-$HOME/.cache/rkv-target}
export CARGO_TARGET_DIR="$HOME/.cache/rkv-fuzz-target"
lib=$(ls -t "$main_target"/release/build/librocksdb-sys-*/out/librocksdb.a 2>/dev/null | head -1 || true)
if [ -n "$lib" ]; then
  mkdir -p "$CARGO_TARGET_DIR/rocksdb-lib"
  cp -u "$lib" "$CARGO_TARGET_DIR/rocksdb-lib/"
  export ROCKSDB_LIB_DIR="$CARGO_TARGET_DIR/rocksdb-lib" ROCKSDB_STATIC=1
fi
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "== $t: ${seconds}s"
  # -detect_leaks=0: the harnesses keep a store open across inputs and its background
  # compaction threads outlive an input, which LeakSanitizer's per-input check reports (a
  # 124-byte report on the snapshot target did not reproduce with its input alone). The
  # targets look for panics, aborts, timeouts and memory blow-ups.
  cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$seconds" -max_len=4096 -rss_limit_mb=4096 \
    -detect_leaks=0 2>&1 |
    grep -E "^(#[0-9]+ *DONE|Done|==[0-9]+==|SUMMARY|thread .* panicked|artifact_prefix|Test unit written)" || true
  cargo +nightly fuzz cmin "$t" "corpus/$t" >/dev/null 2>&1 || true
  echo "   corpus: $(ls "corpus/$t" | wc -l) inputs"
done
